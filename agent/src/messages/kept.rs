//! Records kept on the Pi because they could not go to HQ as they were: the
//! whole of a message cut to fit a packet (`truncated/`), a record the broker
//! kept refusing (`set-aside/`). Nothing a customer wrote is lost before HQ
//! can take it some other way; a technician finds them in the data
//! directory.
//!
//! Bounded: at most [`KEPT`] files a directory, the oldest go first. A
//! failure is logged and returned: a cut message goes to HQ all the same, a
//! refused record stays in the queue.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::Messages;

/// Whole records of messages cut to fit a packet.
pub const TRUNCATED: &str = "truncated";
/// Records the broker refused, replaced in the queue by a notice.
pub const SET_ASIDE: &str = "set-aside";
/// Files kept in each directory at most.
pub const KEPT: usize = 100;

/// Writes `bytes` to `<data_dir>/<dir>/<name>.json` (directory 0700, file
/// 0600, fsynced), after removing the oldest files beyond [`KEPT`]. A name
/// already there is not overwritten (its first record is the one to keep).
/// On a blocking thread: the inbox hook and the publisher are async.
pub async fn keep(
    messages: &Messages,
    dir: &str,
    name: &str,
    bytes: Vec<u8>,
) -> std::io::Result<()> {
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(128)
        .collect();
    let dir = messages.config.storage.data_dir.join(dir);
    let path = dir.join(format!("{safe}.json"));
    let shown = path.display().to_string();
    let result = super::blocking_io(move || write_kept(&dir, &path, &bytes)).await;
    if let Err(e) = &result {
        tracing::warn!(error = %e, path = %shown, "messages: cannot keep a record in the data directory");
    }
    result
}

fn write_kept(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut kept: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    kept.sort();
    let excess = (kept.len() + 1).saturating_sub(KEPT);
    for (_, old) in kept.into_iter().take(excess) {
        let _ = std::fs::remove_file(old);
    }
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.sync_all()
}
