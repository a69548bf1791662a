//! The media spool: fetched files under `<data_dir>/media/`, each named by
//! its SHA-256 (so a picture forwarded by ten customers is kept once),
//! directory 0700 and files 0600 (they are customers' pictures and papers).
//!
//! A download writes `<sha256>.part` and renames it once checked and
//! fsynced, so a file under its final name is always whole: a crash
//! mid-download leaves only a `.part`, which the next try starts afresh.
//! The spool is pruned by age (`messages.media_keep_days`) and size
//! (`messages.media_spool_max_bytes`), oldest first, never a file a job
//! still needs.

use std::collections::HashSet;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::CHUNK_BYTES;
use crate::messages::inbound::hex;

/// The spool directory of a data directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// A file in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    pub sha256: String,
    pub bytes: u64,
    pub modified: SystemTime,
}

/// Only lower-case hex SHA-256 names are spool files: a name from HQ or a
/// message can never reach outside the directory.
pub fn is_sha256(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn invalid(sha256: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!(
            "not a SHA-256 name: {:?}",
            sha256.chars().take(70).collect::<String>()
        ),
    )
}

impl Spool {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("media"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, sha256: &str) -> std::io::Result<PathBuf> {
        if !is_sha256(sha256) {
            return Err(invalid(sha256));
        }
        Ok(self.dir.join(sha256))
    }

    /// The length of the spooled file `sha256`, if it is there.
    pub fn len_of(&self, sha256: &str) -> Option<u64> {
        let path = self.path(sha256).ok()?;
        std::fs::metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// A new, empty `<sha256>.part` to download into.
    pub fn start(&self, sha256: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
        let part = self.path(sha256)?.with_extension("part");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&part)?;
        Ok((part, file))
    }

    /// Checks the downloaded `.part` against `sha256` and, when it matches,
    /// makes it the spooled file (fsynced, renamed, directory fsynced).
    /// `Ok(false)`: the content is not what the sender declared; the part
    /// is deleted.
    pub fn finish(
        &self,
        sha256: &str,
        part: &Path,
        mut file: std::fs::File,
    ) -> std::io::Result<bool> {
        file.seek(SeekFrom::Start(0))?;
        let got = sha256_of(&mut file)?;
        if got != sha256 {
            drop(file);
            let _ = std::fs::remove_file(part);
            return Ok(false);
        }
        file.sync_all()?;
        drop(file);
        std::fs::rename(part, self.path(sha256)?)?;
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(true)
    }

    /// Chunk `index` (of `size` bytes each) of the spooled file `sha256`.
    pub fn chunk(&self, sha256: &str, index: u32, size: usize) -> std::io::Result<Vec<u8>> {
        let mut file = std::fs::File::open(self.path(sha256)?)?;
        let offset = u64::from(index) * size as u64;
        file.seek(SeekFrom::Start(offset))?;
        let mut chunk = Vec::with_capacity(size.min(CHUNK_BYTES));
        file.take(size as u64).read_to_end(&mut chunk)?;
        Ok(chunk)
    }

    /// The spooled files (not `.part`s), oldest first.
    pub fn files(&self) -> std::io::Result<Vec<Spooled>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut files = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| is_sha256(n)) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_file() {
                files.push(Spooled {
                    sha256: name.to_string(),
                    bytes: meta.len(),
                    modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
        files.sort_by_key(|f| f.modified);
        Ok(files)
    }

    /// Deletes files older than `keep`, then the oldest until the spool
    /// holds at most `max_bytes - room` bytes; never one in `in_use`, and
    /// leftover `.part`s of files no job downloads. Returns the bytes the
    /// spool holds afterwards.
    pub fn prune(
        &self,
        in_use: &HashSet<String>,
        keep: Duration,
        max_bytes: u64,
        room: u64,
    ) -> std::io::Result<u64> {
        let files = self.files()?;
        let mut total: u64 = files.iter().map(|f| f.bytes).sum();
        let target = max_bytes.saturating_sub(room);
        let now = SystemTime::now();
        for file in files {
            if in_use.contains(&file.sha256) {
                continue;
            }
            let old = now
                .duration_since(file.modified)
                .is_ok_and(|age| age > keep);
            if !old && total <= target {
                continue;
            }
            if std::fs::remove_file(self.dir.join(&file.sha256)).is_ok() {
                total = total.saturating_sub(file.bytes);
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".part")) else {
                    continue;
                };
                if !in_use.contains(stem) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(total)
    }
}

/// The SHA-256 of what `reader` holds, lower-case hex, read 64 KiB at a
/// time.
pub fn sha256_of(mut reader: impl std::io::Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn sha(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    fn spool_file(spool: &Spool, content: &[u8]) -> String {
        let sha = sha(content);
        let (part, mut file) = spool.start(&sha).unwrap();
        file.write_all(content).unwrap();
        assert!(spool.finish(&sha, &part, file).unwrap());
        sha
    }

    #[test]
    fn a_checked_file_is_kept_whole_and_read_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        let content: Vec<u8> = (0..CHUNK_BYTES + 10).map(|i| i as u8).collect();
        let sha = spool_file(&spool, &content);
        assert_eq!(spool.len_of(&sha), Some(content.len() as u64));
        assert_eq!(
            spool.chunk(&sha, 0, CHUNK_BYTES).unwrap(),
            content[..CHUNK_BYTES]
        );
        assert_eq!(
            spool.chunk(&sha, 1, CHUNK_BYTES).unwrap(),
            content[CHUNK_BYTES..]
        );
        assert!(spool.chunk(&sha, 2, CHUNK_BYTES).unwrap().is_empty());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(spool.dir().join(&sha))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_file_unlike_its_hash_is_refused_and_names_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        let claimed = sha(b"the real content");
        let (part, mut file) = spool.start(&claimed).unwrap();
        file.write_all(b"something else").unwrap();
        assert!(!spool.finish(&claimed, &part, file).unwrap());
        assert_eq!(spool.len_of(&claimed), None);
        assert!(!part.exists());
        assert!(spool.start("../../etc/passwd").is_err());
        assert!(spool.chunk("../x", 0, 1024).is_err());
    }

    #[test]
    fn pruning_goes_oldest_first_and_spares_what_jobs_need() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        let a = spool_file(&spool, &[1u8; 100]);
        let b = spool_file(&spool, &[2u8; 100]);
        let c = spool_file(&spool, &[3u8; 100]);
        let old = SystemTime::now() - Duration::from_secs(3600);
        for (i, name) in [&a, &b, &c].iter().enumerate() {
            let f = std::fs::File::options()
                .write(true)
                .open(spool.dir().join(name))
                .unwrap();
            f.set_modified(old + Duration::from_secs(i as u64)).unwrap();
        }
        let in_use: HashSet<String> = [a.clone()].into();
        let keep = Duration::from_secs(24 * 3600);
        // Room for 100 more in 300: the oldest not in use (b) goes.
        let left = spool.prune(&in_use, keep, 300, 100).unwrap();
        assert_eq!(left, 200);
        assert!(spool.len_of(&a).is_some() && spool.len_of(&b).is_none());
        // Older than kept: c goes, a (in use) stays.
        let left = spool
            .prune(&in_use, Duration::from_secs(60), 1000, 0)
            .unwrap();
        assert_eq!(left, 100);
        assert!(spool.len_of(&a).is_some() && spool.len_of(&c).is_none());
    }
}
