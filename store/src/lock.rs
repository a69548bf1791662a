//! One process per data directory: an exclusive `flock` on `<data_dir>/agent.lock`.
//!
//! Two agents on one WhatsApp session is exactly the failure the previous systems
//! had ("duplicate session", the device removed a minute after pairing). SQLite's
//! own locking would not prevent it: both processes could take turns writing the
//! same keys. So the data directory itself is locked before the database is
//! touched, and [`crate::SqliteStore::open`] only accepts a [`DataDirLock`].
//!
//! `flock` (not `fcntl`/POSIX locks) because it belongs to the open file
//! description: closing some other descriptor of the same file in this process
//! (SQLite opens and closes files freely) does not drop it, and the kernel drops
//! it when the process dies, however it dies — a SIGKILL or a power cut never
//! leaves a stale lock behind. The holder writes its PID into the file so the
//! second process can say *who* holds it; the PID is informational only (the
//! lock, not the file content, is the truth).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the lock file inside the data directory.
pub const LOCK_FILE_NAME: &str = "agent.lock";

/// Name of the SQLite database inside the data directory.
pub const DB_FILE_NAME: &str = "session.db";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process (or another handle in this process) holds the lock.
    /// `pid` is what the holder wrote into the lock file, if it was readable.
    #[error("data directory {} is in use by another agent (pid {})", .dir.display(), .pid.map_or_else(|| "unknown".to_string(), |p| p.to_string()))]
    Held { dir: PathBuf, pid: Option<u32> },

    /// The directory or lock file could not be created, opened or locked.
    #[error("cannot {action} {}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Entry point for taking the data directory.
pub struct DataDir;

impl DataDir {
    /// Create `dir` if missing (mode 0700), tighten it to 0700 if it is open to
    /// group/other, and take the exclusive lock on `dir/agent.lock` without
    /// waiting.
    ///
    /// This does a few small blocking filesystem calls; call it at start-up
    /// before the runtime is busy (or in `spawn_blocking`).
    pub fn lock(dir: impl AsRef<Path>) -> Result<DataDirLock, LockError> {
        let dir = dir.as_ref().to_path_buf();
        prepare_dir(&dir)?;
        let path = dir.join(LOCK_FILE_NAME);
        let io = |action, source| LockError::Io {
            action,
            path: path.clone(),
            source,
        };
        // No O_TRUNC: truncating before we hold the lock would erase the
        // holder's PID that a losing process wants to report.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io("open lock file", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    pid: read_pid(&mut file),
                    dir,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io("lock", e)),
        }
        let pid = std::process::id();
        file.set_len(0).map_err(|e| io("truncate lock file", e))?;
        file.seek(SeekFrom::Start(0))
            .and_then(|_| writeln!(file, "{pid}"))
            .map_err(|e| io("write PID into lock file", e))?;
        tracing::debug!(dir = %dir.display(), pid, "data directory locked");
        Ok(DataDirLock {
            inner: Arc::new(LockInner { dir, _file: file }),
        })
    }
}

fn prepare_dir(dir: &Path) -> Result<(), LockError> {
    let io = |action, source| LockError::Io {
        action,
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io("create data directory", e))?;
    let meta = std::fs::metadata(dir).map_err(|e| io("stat data directory", e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        // Keys live here: nobody but the agent's user may list or read them.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("restrict permissions (0700) of data directory", e))?;
    }
    Ok(())
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

struct LockInner {
    dir: PathBuf,
    // Held only for its open file description: the flock lives as long as it.
    _file: File,
}

/// Proof that this process owns the data directory. Cheap to clone; the lock is
/// released when the last clone is dropped (the store keeps one for as long as
/// its writer thread has the database open, so the lock always outlives the
/// connection).
#[derive(Clone)]
pub struct DataDirLock {
    inner: Arc<LockInner>,
}

impl DataDirLock {
    /// The locked data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// `<data_dir>/session.db`.
    pub fn db_path(&self) -> PathBuf {
        self.inner.dir.join(DB_FILE_NAME)
    }
}

impl std::fmt::Debug for DataDirLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDirLock")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_handle_in_process_is_refused_and_names_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let first = DataDir::lock(tmp.path()).unwrap();
        match DataDir::lock(tmp.path()) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        DataDir::lock(tmp.path()).expect("lock is free again after drop");
    }

    #[test]
    fn creates_missing_dir_0700_and_tightens_existing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let lock = DataDir::lock(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let lock_mode = std::fs::metadata(dir.join(LOCK_FILE_NAME))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(lock_mode & 0o077, 0);
        drop(lock);

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _lock = DataDir::lock(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn clone_keeps_lock_until_last_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let a = DataDir::lock(tmp.path()).unwrap();
        let b = a.clone();
        drop(a);
        assert!(matches!(
            DataDir::lock(tmp.path()),
            Err(LockError::Held { .. })
        ));
        drop(b);
        DataDir::lock(tmp.path()).unwrap();
    }
}
