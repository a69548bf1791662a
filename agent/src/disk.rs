//! The data directory's filesystem: how much room is left on it.
//!
//! Shared by the supervisor (the `fault` state says how much is free when
//! the disk is full) and telemetry (`disk_free_bytes`).
//!
//! Plain rules (the bottom layer): it imports nothing of the agent.

use std::path::Path;

/// Bytes available to the agent on the filesystem holding `dir`
/// (`statvfs`'s `f_bavail`: what an unprivileged writer may still use).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `stat` is plain data the call fills; `path` is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    if rc != 0 {
        return None;
    }
    // Field widths differ between targets (32-bit ARM): widen explicitly.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let free = u64::from(stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64);
    Some(free)
}

/// `512 B`, `12 KiB`, `3.4 MiB`: sizes as people read them.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: &[&str] = &["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12 * 1024), "12 KiB");
        assert_eq!(human_bytes(3_565_158), "3.4 MiB");
    }

    #[test]
    fn the_free_space_of_an_existing_directory_is_known() {
        assert!(free_bytes(Path::new(".")).is_some());
        assert!(free_bytes(Path::new("/nonexistent/outlet-agent")).is_none());
    }
}
