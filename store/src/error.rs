//! The crate's error type, and its translation into wacore's `StoreError`.
//!
//! Two error types meet here. The store's own API (open, agent tables, close)
//! returns [`StoreError`], which keeps the SQLite error and the path involved so
//! the agent can report *what* is broken. The whatsapp-rust traits must return
//! `wacore::store::error::StoreError`; the `From` impl at the bottom is the single
//! place that decides how each of our failures looks to the library.

use std::path::PathBuf;
use std::sync::Arc;

use wacore::store::error::StoreError as WaStoreError;

/// Result alias for the store's own API.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong inside the store (after the data directory
/// lock was taken; see [`crate::LockError`] for that step).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A filesystem operation on one of the store's files failed. This is an
    /// environment problem (permissions, full or read-only disk, I/O error),
    /// never a reason to move the database aside.
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// SQLite reported an error. Shared behind an `Arc` because one failed
    /// group commit is reported to every caller whose work was in it.
    #[error("SQLite error: {0}")]
    Sqlite(#[source] Arc<rusqlite::Error>),

    /// A stored value could not be encoded or decoded (e.g. the serialized
    /// device record). Not expected unless the file was edited by hand.
    #[error("stored {what} could not be encoded or decoded")]
    Codec {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// A stored value has an impossible shape (e.g. an identity key that is
    /// not 32 bytes long).
    #[error("stored {what} is invalid: {detail}")]
    Invalid { what: &'static str, detail: String },

    /// The writer thread is gone (it panicked outside a job, or could not be
    /// spawned). The store cannot be used any more; reopen it.
    #[error("the store's writer thread has stopped")]
    WriterGone,

    /// [`crate::SqliteStore::close`] was called; later calls get this.
    #[error("the store is closed")]
    Closed,

    /// A write through the handle of a WhatsApp session that has ended
    /// (see [`crate::SqliteStore::for_session`]); it was dropped.
    #[error("write from an ended WhatsApp session dropped")]
    SessionEnded,

    /// A job panicked on the writer thread. Its savepoint was rolled back, so
    /// the database is unchanged by it; the thread keeps serving other jobs.
    #[error("a store operation panicked: {0}")]
    Panicked(String),

    /// The database could not be brought to a usable state at open, and
    /// moving it aside did not help either (should not happen).
    #[error("the database at {path} is still unusable after recovery: {detail}")]
    Unrecoverable { path: PathBuf, detail: String },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(Arc::new(e))
    }
}

impl StoreError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        StoreError::Invalid {
            what,
            detail: detail.into(),
        }
    }

    /// True when the write failed because the filesystem has no space left
    /// (SQLite's `SQLITE_FULL`, or `ENOSPC` from a file operation). The
    /// agent reports that as a local fault ("disk full"), not as a
    /// connection problem, and waits for space instead of reconnecting.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Sqlite(e) => e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
            // std maps ENOSPC to StorageFull.
            StoreError::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        }
    }

    /// True when SQLite says the file content is damaged (as opposed to an
    /// environment failure). Used by the open path to decide between "move the
    /// file aside" and "report the error and leave the file alone".
    pub(crate) fn sqlite_code(&self) -> Option<rusqlite::ErrorCode> {
        match self {
            StoreError::Sqlite(e) => e.sqlite_error_code(),
            _ => None,
        }
    }
}

/// How the library sees our failures. The variants chosen matter: wacore's
/// retry layers look at `Database` errors' text for "busy"/"locked", and treat
/// `Connection` as "the backend is gone".
impl From<StoreError> for WaStoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io { source, .. } => WaStoreError::Io(source),
            StoreError::Codec { source, .. } => WaStoreError::Serialization(Box::new(source)),
            StoreError::Invalid { what, detail } => {
                WaStoreError::Validation(format!("stored {what} is invalid: {detail}"))
            }
            e @ (StoreError::WriterGone | StoreError::Closed) => {
                WaStoreError::Connection(Box::new(e))
            }
            e => WaStoreError::Database(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_from_other_failures() {
        let enospc = StoreError::io("write", "session.db", std::io::Error::from_raw_os_error(28));
        assert!(enospc.is_disk_full());
        let full = StoreError::from(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        ));
        assert!(full.is_disk_full());
        let eacces = StoreError::io("write", "session.db", std::io::Error::from_raw_os_error(13));
        assert!(!eacces.is_disk_full());
        let busy = StoreError::from(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        ));
        assert!(!busy.is_disk_full());
        assert!(!StoreError::SessionEnded.is_disk_full());
    }
}
