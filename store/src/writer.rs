//! The one thread that owns the SQLite connection.
//!
//! rusqlite is blocking, and a blocking call on a tokio worker stalls every task
//! scheduled there (on a 2-core Pi: half the runtime). So no async method of the
//! store touches SQLite: each one packages its work as a closure, sends it over
//! a channel to this thread, and awaits a oneshot reply.
//!
//! Why one thread for reads *and* writes: whatsapp-rust keeps its own cache in
//! front of the backend (`SignalStoreCache`), so the store sees mostly writes
//! and cache misses; one connection gives every caller read-your-writes and a
//! single, total order of operations (what the contract tests compare against
//! the in-memory reference) with no cross-connection visibility questions.
//!
//! Group commit: when several jobs are queued, the thread runs them in one
//! transaction, each inside its own `SAVEPOINT`, so a failing job is rolled back
//! alone while the others commit together. One commit instead of N means fewer
//! WAL frames for shared pages (page 1, interior pages) — fewer bytes on the SD
//! card — and no one waits behind N separate commits. Nobody is answered before
//! the commit that contains their work, so an answer always means "on disk in
//! the WAL" (and synced, for [`Durability::Full`] jobs).
//!
//! Deferred work: a job sent with [`WriterHandle::call_deferring`] records
//! work for later instead of writing the database (the store's one use:
//! publications the broker acked, noted in a TEMP table, which SQLite keeps
//! in memory). The thread then runs the store's `flush_deferred` inside the
//! next group that writes the database, so that work costs no commit of its
//! own and usually no page of its own either (the acked rows share a leaf
//! with the rows being added), or after [`DEFER_AT_MOST`] without such a
//! group, or before a checkpoint and at close. A process crash before then
//! loses only what the deferred work would have undone.
//!
//! Soon-synced work: a [`Durability::Soon`] job commits at once (durable
//! against a process crash) and names what must not be seen before it is on
//! disk in the [`SyncGate`] (the store's publication seq); readers hold back
//! everything from the lowest such key. The WAL is then fsynced within
//! [`SYNC_AT_MOST`], by one `fdatasync` for whatever else came meanwhile,
//! or earlier by a [`Durability::Full`] commit. Why: each fsynced commit
//! also rewrites the WAL's last, partly filled 4 KiB block, which was most
//! of what a send's statuses cost the SD card (BENCHMARKS.md, "Statuses
//! share an fsync"); statuses that come close together now share one.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::error::{Result, StoreError};

/// Largest number of jobs folded into one transaction. Bounds the time a reply
/// can wait behind others' work.
const MAX_GROUP: usize = 256;

/// The longest deferred work waits for a group that writes anyway.
pub(crate) const DEFER_AT_MOST: std::time::Duration = std::time::Duration::from_secs(2);

/// The longest a [`Durability::Soon`] commit waits for its fsync.
pub(crate) const SYNC_AT_MOST: std::time::Duration = std::time::Duration::from_millis(200);

/// Runs the deferred work inside a transaction.
pub(crate) type FlushDeferred = fn(&Connection) -> Result<()>;

/// How hard a job's commit must push the data towards the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// `synchronous=NORMAL`: durable against a process crash at once, against
    /// a power cut from the next checkpoint on.
    Normal,
    /// `synchronous=FULL` for this commit: the WAL is fsynced before anyone in
    /// the group is answered. For state the server or the phone already relies
    /// on (pairing credentials, uploaded pre-keys, a logout wipe).
    Full,
    /// `synchronous=NORMAL` now, and the WAL fsynced within
    /// [`SYNC_AT_MOST`] of the job naming a key in the [`SyncGate`] (the
    /// module docs): for records that may be lost to a power cut in that
    /// time but must not be shown to anyone before they are on disk.
    Soon,
}

/// What [`Durability::Soon`] work waits for: the lowest key (the store's
/// publication seq) a job committed but the disk may not have yet, and a
/// wake for whoever held back because of it. The writer does not know what
/// the keys mean; it releases them all at each fsync.
#[derive(Debug)]
pub struct SyncGate {
    lowest_unsynced: std::sync::atomic::AtomicI64,
    synced: tokio::sync::Notify,
}

impl SyncGate {
    fn new() -> Self {
        Self {
            lowest_unsynced: std::sync::atomic::AtomicI64::new(i64::MAX),
            synced: tokio::sync::Notify::new(),
        }
    }

    /// `key` is committed but may not be on disk: hold back from it until
    /// the next fsync. Call it from inside the [`Durability::Soon`] job that
    /// writes it (on the writer thread), so that no read between its commit
    /// and the fsync can miss the hold.
    pub(crate) fn hold(&self, key: i64) {
        self.lowest_unsynced
            .fetch_min(key, std::sync::atomic::Ordering::SeqCst);
    }

    /// Keys from this one on may not be on disk yet (`i64::MAX`: none held).
    pub(crate) fn held_from(&self) -> i64 {
        self.lowest_unsynced
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Wakes once after an fsync released held keys (a permit is kept for
    /// a waiter that comes later, as [`tokio::sync::Notify::notify_one`]).
    pub fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.synced.notified()
    }

    /// Everything committed so far is on disk.
    fn release(&self) {
        let was = self
            .lowest_unsynced
            .swap(i64::MAX, std::sync::atomic::Ordering::SeqCst);
        if was != i64::MAX {
            self.synced.notify_one();
        }
    }
}

/// What the thread runs inside a transaction.
trait Task: Send {
    /// Run the work. Returns what to do once the commit outcome is known,
    /// and whether the transaction is now unusable (a failed job could not be
    /// rolled back to its savepoint: the whole group must not commit).
    fn run(self: Box<Self>, conn: &Connection) -> (Box<dyn Finish>, bool);
    /// The work could not even start (the transaction failed to begin).
    fn abort(self: Box<Self>, err: StoreError);
    /// Whether the job writes (runs in a savepoint).
    fn writes(&self) -> bool;
}

/// Delivers a job's result once its transaction's fate is known.
trait Finish: Send {
    fn finish(self: Box<Self>, commit: std::result::Result<(), &Arc<rusqlite::Error>>);
}

struct TypedTask<T, F> {
    f: F,
    write: bool,
    reply: oneshot::Sender<Result<T>>,
}

struct TypedFinish<T> {
    result: Result<T>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Task for TypedTask<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> (Box<dyn Finish>, bool) {
        let TypedTask { f, write, reply } = *self;
        let (result, poisoned) = if write {
            run_in_savepoint(conn, f)
        } else {
            (catch(conn, f), false)
        };
        (Box::new(TypedFinish { result, reply }), poisoned)
    }

    fn abort(self: Box<Self>, err: StoreError) {
        let _ = self.reply.send(Err(err));
    }

    fn writes(&self) -> bool {
        self.write
    }
}

impl<T: Send> Finish for TypedFinish<T> {
    fn finish(self: Box<Self>, commit: std::result::Result<(), &Arc<rusqlite::Error>>) {
        let result = match commit {
            Ok(()) => self.result,
            Err(e) => Err(StoreError::Sqlite(Arc::clone(e))),
        };
        // The caller may have given up (its future was dropped); that is fine.
        let _ = self.reply.send(result);
    }
}

fn catch<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| f(conn))) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            tracing::error!(%msg, "store job panicked; its changes are rolled back");
            Err(StoreError::Panicked(msg))
        }
    }
}

/// A write job is all-or-nothing even inside a group: its savepoint is rolled
/// back when it fails (or panics), leaving the group's other work intact.
/// Returns the job's result and whether the enclosing transaction is poisoned.
fn run_in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> (Result<T>, bool) {
    if let Err(e) = conn.execute_batch("SAVEPOINT job") {
        return (Err(e.into()), false);
    }
    let result = catch(conn, f);
    if result.is_err()
        && let Err(e) = conn.execute_batch("ROLLBACK TO job")
    {
        tracing::error!(error = %e, "rollback to savepoint failed; abandoning the group");
        return (result, true);
    }
    match conn.execute_batch("RELEASE job") {
        Ok(()) => (result, false),
        Err(e) => (Err(e.into()), true),
    }
}

/// Work that must run outside any transaction (checkpoints, shutdown).
type Standalone = Box<dyn FnOnce(&mut Connection) + Send>;

enum Msg {
    Txn {
        durability: Durability,
        task: Box<dyn Task>,
        /// Records deferred work (see the module docs) rather than writing
        /// the database.
        defers: bool,
    },
    Standalone(Standalone),
    /// Stop after the jobs queued before this one; reply once the connection
    /// is closed.
    Close(oneshot::Sender<Result<()>>),
}

/// The sending side, held by the store (and its per-session handles).
#[derive(Clone)]
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Msg>,
    gate: Arc<SyncGate>,
}

impl WriterHandle {
    /// What [`Durability::Soon`] jobs hold back until their fsync.
    pub(crate) fn gate(&self) -> &Arc<SyncGate> {
        &self.gate
    }

    /// Run `f` in a transaction on the writer thread.
    pub(crate) async fn call<T, F>(&self, durability: Durability, write: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.send_txn(durability, write, false, f).await
    }

    /// Run `f`, which records deferred work, in a transaction on the writer
    /// thread; the deferred work itself runs later (module docs).
    pub(crate) async fn call_deferring<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.send_txn(Durability::Normal, true, true, f).await
    }

    async fn send_txn<T, F>(
        &self,
        durability: Durability,
        write: bool,
        defers: bool,
        f: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let task = Box::new(TypedTask { f, write, reply });
        self.tx
            .send(Msg::Txn {
                durability,
                task,
                defers,
            })
            .map_err(|_| StoreError::Closed)?;
        // A dropped reply means the thread went away with our job still
        // queued: the store was closed (or the thread died).
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Run `f` outside any transaction (needed for `wal_checkpoint`).
    pub(crate) async fn standalone<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Standalone = Box::new(move |conn| {
            let r = match std::panic::catch_unwind(AssertUnwindSafe(|| f(conn))) {
                Ok(r) => r,
                Err(_) => Err(StoreError::Panicked("standalone job".to_string())),
            };
            let _ = reply.send(r);
        });
        self.tx
            .send(Msg::Standalone(job))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) async fn close(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(reply)).is_err() {
            return Ok(()); // already closed
        }
        rx.await.unwrap_or(Ok(()))
    }
}

/// Spawn the thread. `open` runs first, on the thread (opening can mean an
/// integrity check and migrations: blocking work); its outcome is returned
/// through the oneshot and, on success, the thread starts serving jobs.
/// `keep_alive` (the data directory lock) is dropped only after the
/// connection is closed. `flush_deferred` runs the work that
/// [`WriterHandle::call_deferring`] jobs leave for later.
pub(crate) fn spawn<O, K>(
    open: impl FnOnce() -> Result<(Connection, O)> + Send + 'static,
    keep_alive: K,
    flush_deferred: FlushDeferred,
) -> Result<(WriterHandle, oneshot::Receiver<Result<O>>)>
where
    O: Send + 'static,
    K: Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Msg>();
    let (opened_tx, opened_rx) = oneshot::channel();
    let gate = Arc::new(SyncGate::new());
    let thread_gate = Arc::clone(&gate);
    std::thread::Builder::new()
        .name("outlet-store".to_string())
        .spawn(move || {
            let conn = match open() {
                Ok((conn, outcome)) => {
                    let _ = opened_tx.send(Ok(outcome));
                    conn
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            let closed = serve(conn, rx, flush_deferred, &thread_gate);
            // Release the lock before answering close(), so a caller that
            // drops its own lock handle next finds the directory free.
            drop(keep_alive);
            if let Some((reply, result)) = closed {
                let _ = reply.send(result);
            }
        })
        .map_err(|e| StoreError::io("spawn writer thread for", "session.db", e))?;
    Ok((WriterHandle { tx, gate }, opened_rx))
}

/// Serve jobs until close() (returns its reply channel and the shutdown
/// result) or until every handle is dropped (returns None).
fn serve(
    mut conn: Connection,
    rx: mpsc::Receiver<Msg>,
    flush_deferred: FlushDeferred,
    gate: &SyncGate,
) -> Option<(oneshot::Sender<Result<()>>, Result<()>)> {
    let mut next: Option<Msg> = None;
    // Since when deferred work waits, if any does.
    let mut deferred_since: Option<Instant> = None;
    // When the WAL must be fsynced for `Soon` work, if any waits.
    let mut sync_due: Option<Instant> = None;
    loop {
        // Checked between jobs too: a busy queue never lets recv time out.
        if sync_due.is_some_and(|due| Instant::now() >= due) {
            sync_due = sync_wal(&conn, gate);
        }
        let msg = match next.take() {
            Some(m) => m,
            None => {
                let deferred_due = deferred_since.map(|since| since + DEFER_AT_MOST);
                let wake = match (deferred_due, sync_due) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let received = match wake {
                    None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                    Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                };
                match received {
                    Ok(m) => m,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if deferred_due.is_some_and(|due| Instant::now() >= due) {
                            deferred_since = if run_deferred_alone(&conn, flush_deferred) {
                                None
                            } else {
                                // Try again a full period later.
                                Some(Instant::now())
                            };
                        }
                        continue;
                    }
                    // Every handle dropped without close(): close quietly.
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        match msg {
            Msg::Standalone(job) => {
                // A checkpoint must find the deferred work done.
                if deferred_since.is_some() && run_deferred_alone(&conn, flush_deferred) {
                    deferred_since = None;
                }
                job(&mut conn)
            }
            Msg::Close(reply) => {
                if deferred_since.is_some() {
                    run_deferred_alone(&conn, flush_deferred);
                }
                let closed = shutdown(conn);
                if closed.is_ok() {
                    // The checkpoint synced everything.
                    gate.release();
                }
                return Some((reply, closed));
            }
            Msg::Txn {
                durability,
                task,
                defers,
            } => {
                let mut full = durability == Durability::Full;
                let mut any_defers = defers;
                // Whether a job writes the database itself.
                let mut writes = !defers && task.writes();
                let mut group = vec![task];
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(Msg::Txn {
                            durability,
                            task,
                            defers,
                        }) => {
                            full |= durability == Durability::Full;
                            any_defers |= defers;
                            writes |= !defers && task.writes();
                            group.push(task);
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                // The deferred work rides along with a group that writes
                // the database anyway (not with one that only defers).
                let flush = (deferred_since.is_some() || any_defers) && writes;
                let flushed = run_group(&conn, group, full, flush.then_some(flush_deferred), gate);
                if flushed {
                    deferred_since = None;
                } else if any_defers && deferred_since.is_none() {
                    deferred_since = Some(Instant::now());
                }
                // An fsync is due while something is held back for one (a
                // fsynced commit, run_group's own sync included, released it).
                sync_due = if gate.held_from() == i64::MAX {
                    None
                } else {
                    sync_due.or_else(|| Some(Instant::now() + SYNC_AT_MOST))
                };
            }
        }
    }
    if deferred_since.is_some() {
        run_deferred_alone(&conn, flush_deferred);
    }
    match shutdown(conn) {
        Ok(()) => gate.release(),
        Err(e) => tracing::warn!(error = %e, "closing the session store failed"),
    }
    None
}

thread_local! {
    /// When the writer thread last logged a failed fsync (once a minute).
    static LAST_SYNC_WARNING: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Fsyncs the WAL, which makes every commit so far durable (a commit under
/// `synchronous=NORMAL` has written its frames but not synced them), and
/// releases the gate. Returns when to try again if it failed.
fn sync_wal(conn: &Connection, gate: &SyncGate) -> Option<Instant> {
    let Some(db) = conn.path().filter(|p| !p.is_empty()) else {
        // An in-memory database has no disk to wait for.
        gate.release();
        return None;
    };
    let wal = format!("{db}-wal");
    let synced = match std::fs::File::open(&wal) {
        Ok(file) => file.sync_data(),
        // No WAL: a checkpoint folded it into the (synced) main file.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    match synced {
        Ok(()) => {
            gate.release();
            None
        }
        Err(e) => {
            // Held until an fsync succeeds. (After a failed fsync Linux may
            // have dropped the pages it could not write and report the next
            // one clean; the disk is failing then, and the log says so.)
            let now = Instant::now();
            let last = LAST_SYNC_WARNING.with(|w| w.replace(Some(now)));
            if last.is_none_or(|at| now.duration_since(at) >= std::time::Duration::from_secs(60)) {
                tracing::error!(error = %e, "store: cannot fsync the WAL; statuses wait for it");
            } else {
                LAST_SYNC_WARNING.with(|w| w.set(last));
            }
            Some(now + SYNC_AT_MOST)
        }
    }
}

/// The deferred work in a transaction of its own. True if it committed.
fn run_deferred_alone(conn: &Connection, flush_deferred: FlushDeferred) -> bool {
    let result = conn
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(StoreError::from)
        .and_then(|()| match catch(conn, flush_deferred) {
            Ok(()) => conn.execute_batch("COMMIT").map_err(StoreError::from),
            Err(e) => Err(e),
        });
    match result {
        Ok(()) => true,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            tracing::warn!(error = %e, "store: deferred work failed; it is tried again");
            false
        }
    }
}

/// Runs one group in one transaction; with `flush`, the deferred work too,
/// after the jobs (in its own savepoint). Returns true if the deferred work
/// was committed. A fsynced commit releases `gate`.
fn run_group(
    conn: &Connection,
    group: Vec<Box<dyn Task>>,
    full: bool,
    flush: Option<FlushDeferred>,
    gate: &SyncGate,
) -> bool {
    // `synchronous` cannot change inside a transaction, so it is set for the
    // whole group before BEGIN and put back after COMMIT.
    if full && let Err(e) = conn.execute_batch("PRAGMA synchronous = FULL") {
        let e = Arc::new(e);
        for t in group {
            t.abort(StoreError::Sqlite(Arc::clone(&e)));
        }
        return false;
    }
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let e = Arc::new(e);
        for t in group {
            t.abort(StoreError::Sqlite(Arc::clone(&e)));
        }
        restore_normal(conn, full);
        return false;
    }
    let mut poisoned = false;
    let finishes: Vec<Box<dyn Finish>> = group
        .into_iter()
        .map(|t| {
            let (finish, p) = t.run(conn);
            poisoned |= p;
            finish
        })
        .collect();
    let mut flushed = false;
    if let Some(flush) = flush
        && !poisoned
    {
        let (result, p) = run_in_savepoint(conn, flush);
        poisoned |= p;
        match result {
            Ok(()) => flushed = true,
            Err(e) => tracing::warn!(error = %e, "store: deferred work failed; it is tried again"),
        }
    }
    let commit = if poisoned {
        Err(Arc::new(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
            Some("transaction abandoned after a failed savepoint rollback".to_string()),
        )))
    } else {
        conn.execute_batch("COMMIT").map_err(Arc::new)
    };
    if commit.is_err() {
        // A failed COMMIT can leave the transaction open; close it so the
        // next group starts clean. Nothing of this group was committed.
        let _ = conn.execute_batch("ROLLBACK");
    }
    restore_normal(conn, full);
    let committed = commit.is_ok();
    if full && committed && gate.held_from() != i64::MAX {
        // A commit that wrote frames fsynced the WAL, and with it every
        // earlier frame; one that changed nothing fsynced nothing. So sync
        // here (a no-op on a clean file), before anyone is answered: an
        // answered Full write means no older Soon work is held.
        sync_wal(conn, gate);
    }
    for f in finishes {
        f.finish(commit.as_ref().map(|_| ()));
    }
    flushed && committed
}

fn restore_normal(conn: &Connection, full: bool) {
    if full && let Err(e) = conn.execute_batch("PRAGMA synchronous = NORMAL") {
        tracing::warn!(error = %e, "could not restore synchronous=NORMAL");
    }
}

/// Checkpoint everything into the main file (so the file on disk is complete
/// by itself and the WAL is empty), then close.
fn shutdown(conn: Connection) -> Result<()> {
    checkpoint_truncate(&conn)?;
    conn.close().map_err(|(_, e)| StoreError::from(e))?;
    tracing::debug!("session store closed");
    Ok(())
}

/// `wal_checkpoint(TRUNCATE)`: copies the WAL into the database, fsyncs it and
/// empties the WAL. Returns an error if the checkpoint could not complete.
pub(crate) fn checkpoint_truncate(conn: &Connection) -> Result<()> {
    let (busy, _log, _done): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    if busy != 0 {
        return Err(StoreError::invalid(
            "checkpoint",
            "the WAL checkpoint was blocked",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn spawn_on(dir: &std::path::Path) -> WriterHandle {
        let path = dir.join("w.db");
        let (handle, opened) = spawn(
            move || {
                let conn = Connection::open(path)?;
                crate::schema::apply_pragmas(&conn)?;
                conn.execute_batch(
                    "CREATE TABLE t (x INTEGER NOT NULL);
                     CREATE TEMP TABLE later (x INTEGER NOT NULL);",
                )?;
                Ok((conn, ()))
            },
            (),
            |c| {
                c.execute_batch("INSERT INTO t SELECT x FROM temp.later; DELETE FROM temp.later;")?;
                Ok(())
            },
        )
        .unwrap();
        drop(opened);
        handle
    }

    async fn values(h: &WriterHandle) -> Vec<i64> {
        h.call(Durability::Normal, false, |c| {
            let mut s = c.prepare("SELECT x FROM t ORDER BY x")?;
            Ok(s.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?)
        })
        .await
        .unwrap()
    }

    /// Jobs queued together share one transaction, but a job that fails or
    /// panics is rolled back alone; the others commit, and the thread lives on.
    #[tokio::test]
    async fn failing_and_panicking_jobs_roll_back_alone_in_a_group() {
        let tmp = tempfile::tempdir().unwrap();
        let h = Arc::new(spawn_on(tmp.path()));
        // Hold the thread inside a job until the others are queued behind it,
        // so they are run as one group.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let h = Arc::clone(&h);
            tokio::spawn(async move {
                h.call(Durability::Normal, true, move |_| {
                    gate.recv().ok();
                    Ok(())
                })
                .await
            })
        };
        let insert = |x: i64, outcome: u8| {
            let h = Arc::clone(&h);
            tokio::spawn(async move {
                h.call(Durability::Full, true, move |c| {
                    c.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
                    match outcome {
                        0 => Ok(x),
                        1 => Err(StoreError::invalid("test", "fails after writing")),
                        _ => panic!("job panics after writing"),
                    }
                })
                .await
            })
        };
        let jobs = vec![insert(1, 0), insert(2, 1), insert(3, 2), insert(4, 0)];
        // Queued once each task has run up to its await; then release.
        tokio::task::yield_now().await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        let mut results = Vec::new();
        for j in jobs {
            results.push(j.await.unwrap());
        }
        assert_eq!(results[0].as_ref().ok(), Some(&1));
        assert!(matches!(results[1], Err(StoreError::Invalid { .. })));
        assert!(matches!(results[2], Err(StoreError::Panicked(_))));
        assert_eq!(results[3].as_ref().ok(), Some(&4));
        assert_eq!(values(&h).await, vec![1, 4]);
        h.close().await.unwrap();
        assert!(matches!(
            values_after_close(&h).await,
            Err(StoreError::Closed)
        ));
    }

    /// A `Soon` job's key is held back until an fsync: a `Full` commit
    /// right after releases it at once and wakes the waiter; without one,
    /// the writer fsyncs the WAL by itself within SYNC_AT_MOST.
    #[tokio::test]
    async fn soon_commits_hold_their_keys_until_the_wal_is_synced() {
        let tmp = tempfile::tempdir().unwrap();
        let h = spawn_on(tmp.path());
        async fn soon(h: &WriterHandle, key: i64) -> Result<()> {
            let gate = Arc::clone(h.gate());
            h.call(Durability::Soon, true, move |c| {
                c.execute("INSERT INTO t (x) VALUES (?1)", [key])?;
                gate.hold(key);
                Ok(())
            })
            .await
        }
        soon(&h, 7).await.unwrap();
        soon(&h, 5).await.unwrap();
        // Committed (readable) whether or not it is synced yet.
        assert_eq!(values(&h).await, vec![5, 7]);
        // The lowest unsynced key, unless the writer's own fsync came
        // first (on a slow machine): then nothing is held.
        let held = h.gate().held_from();
        assert!(held == 5 || held == i64::MAX, "held from {held}");

        // A fsynced commit covers what came before it.
        soon(&h, 9).await.unwrap();
        h.call(Durability::Full, true, |c| {
            c.execute("INSERT INTO t (x) VALUES (10)", [])?;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(h.gate().held_from(), i64::MAX);
        tokio::time::timeout(std::time::Duration::from_secs(10), h.gate().released())
            .await
            .expect("the release wakes a waiter");

        // A fsynced job that changes nothing makes SQLite sync nothing: the
        // writer syncs the WAL itself before answering it.
        soon(&h, 10).await.unwrap();
        h.call(Durability::Full, true, |_| Ok(())).await.unwrap();
        assert_eq!(h.gate().held_from(), i64::MAX);

        // Alone, the writer syncs within SYNC_AT_MOST.
        soon(&h, 11).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            // A wake may be left over from the release above.
            while h.gate().held_from() != i64::MAX {
                h.gate().released().await;
            }
        })
        .await
        .expect("the writer fsyncs Soon work by itself");
        h.close().await.unwrap();
    }

    async fn values_after_close(h: &WriterHandle) -> Result<()> {
        h.call(Durability::Normal, false, |_| Ok(())).await
    }
}
