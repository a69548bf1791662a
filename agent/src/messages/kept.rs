//! Records kept on the Pi because they could not go to HQ as they were: the
//! whole of a message cut to fit a packet (`truncated/`), a record the broker
//! kept refusing (`set-aside/`). Nothing a customer wrote is lost before HQ
//! can take it some other way; a technician finds them in the data
//! directory.
//!
//! Bounded: at most [`KEPT`] files a directory, the oldest go first. Best
//! effort: a failure is logged, and what goes to HQ goes all the same.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::PathBuf;
use std::time::SystemTime;

use super::Messages;

/// Whole records of messages cut to fit a packet.
pub const TRUNCATED: &str = "truncated";
/// Records the broker refused, replaced in the queue by a notice.
pub const SET_ASIDE: &str = "set-aside";
/// Files kept in each directory at most.
pub const KEPT: usize = 100;

/// Writes `bytes` to `<data_dir>/<dir>/<name>.json` (directory 0700, file
/// 0600), after removing the oldest files beyond [`KEPT`].
pub fn keep(messages: &Messages, dir: &str, name: &str, bytes: &[u8]) {
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(128)
        .collect();
    let dir = messages.config.storage.data_dir.join(dir);
    let path = dir.join(format!("{safe}.json"));
    let result = (|| -> std::io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let mut kept: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .filter(|(_, p)| *p != path)
            .collect();
        kept.sort();
        let excess = (kept.len() + 1).saturating_sub(KEPT);
        for (_, old) in kept.into_iter().take(excess) {
            let _ = std::fs::remove_file(old);
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        std::io::Write::write_all(&mut file, bytes)?;
        file.sync_all()
    })();
    if let Err(e) = result {
        tracing::warn!(error = %e, path = %path.display(), "messages: cannot keep a record in the data directory");
    }
}
