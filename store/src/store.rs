//! [`SqliteStore`]: the handle the agent keeps and whatsapp-rust writes through.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rusqlite::Connection;

use crate::error::{Result, StoreError};
use crate::lock::DataDirLock;
use crate::open::{OpenOutcome, Paths, open_or_recover};
use crate::writer::{self, Durability, WriterHandle};

/// whatsapp-rust's storage [`Backend`](wacore::store::traits::Backend) on one
/// SQLite file, plus the agent's own tables.
///
/// All SQLite work happens on one dedicated thread (see the `writer` module);
/// every method here only sends work there and awaits the answer, so it never
/// blocks an async runtime. `Send + Sync`: wrap it in an `Arc` and hand a clone
/// to whatsapp-rust as `Arc<dyn Backend>`.
pub struct SqliteStore {
    writer: WriterHandle,
    db_path: PathBuf,
    /// `Some(n)` for the handle of WhatsApp session `n`
    /// ([`SqliteStore::for_session`]); `None` for the agent's own.
    session: Option<u64>,
    /// The session whose handle may write; 0 for none. Shared by all
    /// handles of one store.
    writing_session: Arc<AtomicU64>,
    /// Whether the last write failed for lack of disk space (cleared by the
    /// next write that commits). Shared by all handles of one store.
    disk_full: Arc<AtomicBool>,
    /// The message tables' in-memory state (`messages.rs`), shared by all
    /// handles of one store.
    pub(crate) message_state: Arc<crate::messages::MessageState>,
}

/// No session may write.
const NO_SESSION: u64 = 0;

impl SqliteStore {
    /// Open (creating, migrating or recovering as needed) `session.db` in the
    /// locked data directory. The store keeps a clone of `lock`, so the data
    /// directory stays locked at least until the store is closed or dropped.
    ///
    /// Opening runs `PRAGMA quick_check` and possibly migrations; that happens
    /// on the store's own thread, not the caller's.
    pub async fn open(lock: &DataDirLock) -> Result<(SqliteStore, OpenOutcome)> {
        let paths = Paths::new(lock.dir());
        let db_path = paths.db.clone();
        let (writer, opened) = writer::spawn(
            move || {
                let (conn, outcome) = open_or_recover(&paths)?;
                let state = crate::messages::prepare_connection(&conn)?;
                Ok((conn, (outcome, state)))
            },
            lock.clone(),
            crate::messages::journal_acked_publications,
        )?;
        let (outcome, message_state) = opened.await.map_err(|_| StoreError::WriterGone)??;
        let store = SqliteStore {
            writer,
            db_path,
            session: None,
            writing_session: Arc::new(AtomicU64::new(NO_SESSION)),
            disk_full: Arc::new(AtomicBool::new(false)),
            message_state: Arc::new(message_state),
        };
        Ok((store, outcome))
    }

    /// A handle for WhatsApp session `session` (> 0) to use as its backend.
    /// Taking it ends the write access of every earlier session's handle;
    /// [`Self::end_sessions`] ends this one's. Reads are never fenced.
    ///
    /// Why: a whatsapp-rust client keeps detached tasks that can still save
    /// its device state after its connection closed. Unfenced, such a late
    /// write lands after a logout's wipe and brings the unlinked device (and
    /// its phone number) back; fenced, it fails with
    /// [`StoreError::SessionEnded`] and the database keeps what the agent
    /// decided.
    pub fn for_session(&self, session: u64) -> SqliteStore {
        let session = session.max(1);
        self.writing_session.store(session, Ordering::SeqCst);
        SqliteStore {
            writer: self.writer.clone(),
            db_path: self.db_path.clone(),
            session: Some(session),
            writing_session: self.writing_session.clone(),
            disk_full: self.disk_full.clone(),
            message_state: self.message_state.clone(),
        }
    }

    /// No session handle may write from now on (until the next
    /// [`Self::for_session`]).
    pub fn end_sessions(&self) {
        self.writing_session.store(NO_SESSION, Ordering::SeqCst);
    }

    /// True while writes fail because the filesystem is full: the last
    /// write through any handle of this store failed with
    /// [`StoreError::is_disk_full`], and none has committed since. Keys the
    /// library could not save are at risk, so the agent stops its session
    /// and reports the fault rather than carrying on.
    pub fn disk_full(&self) -> bool {
        self.disk_full.load(Ordering::SeqCst)
    }

    /// Commits a small, real change (a table created and dropped again,
    /// fsynced) to learn whether the database accepts writes: how the agent
    /// finds out that space came back after [`Self::disk_full`].
    pub async fn probe_write(&self) -> Result<()> {
        self.write_synced(|conn| {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS write_probe (x INTEGER); DROP TABLE write_probe;",
            )?;
            Ok(())
        })
        .await
    }

    /// Path of the database file.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Make everything written so far durable against a power cut, and fold the
    /// WAL into the main file (`wal_checkpoint(TRUNCATE)`). Call it on graceful
    /// shutdown (`close` does) or after something the agent must not lose.
    pub async fn flush(&self) -> Result<()> {
        self.writer
            .standalone(|conn| writer::checkpoint_truncate(conn))
            .await
    }

    /// Finish the queued work, checkpoint, close the database. Later calls on
    /// this store (or its `Arc` clones held by whatsapp-rust) fail with
    /// [`StoreError::Closed`]. The data directory lock is released once the
    /// agent's own [`DataDirLock`] is dropped too.
    pub async fn close(&self) -> Result<()> {
        self.writer.close().await
    }

    /// Run a read-only closure on the writer thread.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.writer.call(Durability::Normal, false, f).await
    }

    /// Run a writing closure atomically (own savepoint inside a group commit).
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.write_with(Durability::Normal, f).await
    }

    /// Run a closure that records deferred work (the writer's module docs):
    /// it writes only TEMP tables, and the database changes it stands for
    /// are made in the next commit that writes anyway, within
    /// [`writer::DEFER_AT_MOST`]. Not fenced: only the agent's own handle
    /// uses it, for the agent's tables.
    pub(crate) async fn write_deferring<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.writer.call_deferring(f).await
    }

    /// Like [`Self::write`], but the commit is fsynced before returning.
    pub(crate) async fn write_synced<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.write_with(Durability::Full, f).await
    }

    /// Like [`Self::write`], but the commit is fsynced within
    /// [`writer::SYNC_AT_MOST`] together with whatever else comes
    /// ([`Durability::Soon`]). The job names what readers must not see
    /// before that in [`writer::WriterHandle::gate`].
    pub(crate) async fn write_soon<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.write_with(Durability::Soon, f).await
    }

    /// What [`Durability::Soon`] writes hold back until the WAL is
    /// fsynced; its [`writer::SyncGate::released`] wakes once they are on
    /// disk (the publisher waits on it for held-back statuses). An `Arc`,
    /// so a job can take it along.
    pub fn sync_gate(&self) -> &Arc<writer::SyncGate> {
        self.writer.gate()
    }

    /// Like [`Self::write`] with the durability decided by the caller.
    ///
    /// A session handle's fence is checked on the writer thread, when the
    /// write runs: jobs run in order, so a write queued after the agent's
    /// wipe can never undo it.
    pub(crate) async fn write_with<T, F>(&self, durability: Durability, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let fence = self
            .session
            .map(|session| (session, self.writing_session.clone()));
        let result = self
            .writer
            .call(durability, true, move |conn| match fence {
                Some((session, writing)) if writing.load(Ordering::SeqCst) != session => {
                    Err(StoreError::SessionEnded)
                }
                _ => f(conn),
            })
            .await;
        match &result {
            Ok(_) => self.disk_full.store(false, Ordering::SeqCst),
            Err(e) if e.is_disk_full() => {
                if !self.disk_full.swap(true, Ordering::SeqCst) {
                    tracing::error!(path = %self.db_path.display(), "the disk is full: writes to the session store fail");
                }
            }
            Err(_) => {}
        }
        result
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("db_path", &self.db_path)
            .finish_non_exhaustive()
    }
}

/// Translate the crate's result into the one the whatsapp-rust traits return.
pub(crate) fn wa<T>(r: Result<T>) -> wacore::store::error::Result<T> {
    r.map_err(Into::into)
}

/// `u32` ids are stored as SQLite integers (i64): always representable.
pub(crate) fn id_from_sql(v: i64, what: &'static str) -> Result<u32> {
    u32::try_from(v).map_err(|_| StoreError::invalid(what, format!("id {v} out of range")))
}

/// Row counts returned to the library as `u32`.
pub(crate) fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
