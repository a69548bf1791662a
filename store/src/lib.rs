//! The outlet agent's session store: whatsapp-rust's storage `Backend` on one
//! SQLite file, so a reboot or a power cut never costs a re-scan of the QR.
//!
//! # Layout
//!
//! - [`lock`]: one process per data directory — `flock` on `agent.lock`,
//!   holding the holder's PID ([`DataDir::lock`] → [`DataDirLock`]).
//! - `open`: opening `session.db`; detection of garbage, truncated, emptied
//!   and foreign files; moving them aside ([`OpenOutcome`],
//!   [`CorruptionReason`]).
//! - [`schema`]: the tables, `PRAGMA user_version` and the forward
//!   [`schema::MIGRATIONS`]; connection pragmas.
//! - `writer`: the dedicated thread that owns the connection; group commit
//!   with one savepoint per operation; per-commit durability.
//! - `store`: [`SqliteStore`] itself — open, [`SqliteStore::flush`],
//!   [`SqliteStore::close`].
//! - `signal`, `app_sync`, `protocol`, `msg_secret`, `device`: one module per
//!   whatsapp-rust storage trait (`SignalStore`, `AppSyncStore`,
//!   `ProtocolStore`, `MsgSecretStore`, `DeviceStore`; together `Backend`).
//! - `agent`: the agent's own tables — last known [`Identity`], bounded
//!   [`Transition`] history, and [`SqliteStore::wipe_whatsapp_keys`].
//! - `error`: [`StoreError`] and its mapping to wacore's error type.
//!
//! # Use
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use outlet_store::{DataDir, OpenOutcome, SqliteStore};
//!
//! let lock = DataDir::lock("/var/lib/outlet-agent")?; // LockError::Held if another agent runs
//! let (store, outcome) = SqliteStore::open(&lock).await?;
//! if let OpenOutcome::Recovered { moved_to, reason } = &outcome {
//!     eprintln!("session database unusable ({reason}); kept at {}", moved_to.display());
//! }
//! let store = Arc::new(store);
//! let backend: Arc<dyn wacore::store::traits::Backend> = store.clone();
//! // ... hand `backend` to whatsapp-rust's Bot builder ...
//! # drop(backend);
//! store.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Durability
//!
//! WAL mode with `synchronous=NORMAL`: every answered write survives a crash
//! of the process (the crash tests kill it), and a power cut loses at most the
//! commits since the last checkpoint, never consistency. Commits that the
//! outside world already relies on are fsynced before the call returns
//! (`synchronous=FULL` for that commit): a paired device record
//! (`DeviceStore::save` with a JID), pre-keys marked as uploaded, signed
//! pre-keys, the agent's identity record, and the logout wipe; and, in
//! `messages`, a batch of received messages and a queued send. A status
//! change of a send is fsynced within `writer::SYNC_AT_MOST` together with
//! whatever else comes, and held back from the publisher until then
//! ([`SyncGate`]): the library acknowledges a receipt to WhatsApp without
//! waiting for the agent's commit, so an fsync of its own never made a
//! status safe from a power cut, and a `sent` lost to one sends the message
//! again with the same id, which WhatsApp's clients drop as a repeat.
//!
//! The one write answered before its commit: deleting publications the
//! broker acked (`delete_publications`). They leave every read at once and
//! go with the next commit that writes anyway, within `writer::DEFER_AT_MOST`;
//! a crash before then publishes them once more (at least once).
//!
//! Bytes: 512-byte pages, so a commit's WAL frames are small
//! (`schema::PAGE_SIZE`; BENCHMARKS.md, "What the SD card pays per message").

pub mod lock;
pub mod schema;

mod agent;
mod app_sync;
mod device;
mod error;
mod media;
mod messages;
mod msg_secret;
mod open;
mod protocol;
mod signal;
mod store;
mod writer;

pub use agent::{HISTORY_LIMIT, Identity, Transition};
pub use error::{Result, StoreError};
pub use lock::{DataDir, DataDirLock, LockError};
pub use media::{MediaJob, MediaJobRow, MediaState};
pub use messages::{
    Depths, Enqueued, InboundCommit, InboundRow, Limits, OutboundRequest, OutboxEntry, Publication,
    PublicationKind,
};
pub use open::{CorruptionReason, CreateNotice, OpenOutcome};
pub use store::SqliteStore;
pub use writer::SyncGate;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use wacore::store::traits::Backend;

    fn assert_backend<T: Backend + Send + Sync + 'static>() {}

    #[test]
    fn sqlite_store_is_a_backend() {
        assert_backend::<SqliteStore>();
    }

    #[tokio::test]
    async fn coerces_to_arc_dyn_backend() {
        let tmp = tempfile::tempdir().unwrap();
        let lock = DataDir::lock(tmp.path()).unwrap();
        let (store, outcome) = SqliteStore::open(&lock).await.unwrap();
        assert_eq!(outcome, OpenOutcome::Created { notice: None });
        let store = Arc::new(store);
        let backend: Arc<dyn Backend> = store.clone();
        assert!(!backend.exists().await.unwrap());
        store.close().await.unwrap();
    }
}
