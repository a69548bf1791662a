//! How the agent keeps its memory small on a Pi.
//!
//! Measured (BENCHMARKS.md, "Where the memory goes"): of the idle agent's
//! resident memory, about two thirds is the binary's own code and read-only
//! data, paged in from the file while starting, pairing and logging in and
//! then left mapped though most of it never runs again while idle; shared
//! libraries are most of the rest; the heap, the malloc arenas and the
//! thread stacks together are under 2 MiB. So:
//!
//! - glibc gives every thread that allocates its own malloc arena (up to
//!   eight per core), and memory freed into an arena stays resident. The
//!   agent asks for at most two arenas, and hands freed memory back after
//!   the login burst (`malloc_trim`).
//! - Once a connection has settled, the agent tells the kernel that the
//!   file-backed, read-only pages mapped so far are cold (`MADV_PAGEOUT`):
//!   they leave the resident set, the idle loop pulls back the few it uses,
//!   and anything else faults back in from the page cache (or the SD card)
//!   if it is ever needed. Nothing anonymous is touched, so no state can be
//!   lost: these pages are copies of the binary and the libraries on disk.
//!
//! All are Linux calls (the first two glibc's); elsewhere they do nothing.
//!
//! Plain rules (the bottom layer): it imports nothing of the agent.

/// Most arenas glibc may create: one would serialise the threads on one
/// lock; two keep the runtime's workers apart.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// Call once, first thing in `main`, before any thread starts.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Returns the free memory of every arena to the kernel. Cheap (a walk of
/// the free lists); for after a burst of allocations, not a hot path.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Hands the read-only, file-backed pages mapped so far (code and constant
/// data of the binary and its libraries) back to the kernel. Safe at any
/// time: such a page is a copy of its file, and the next access maps it
/// again. Returns how many mappings were advised.
pub fn release_code_pages() -> usize {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut advised = 0;
    for line in maps.lines() {
        let Some((start, len)) = read_only_file_mapping(line) else {
            continue;
        };
        // SAFETY: the range is a whole mapping of this process, from its own
        // maps file; MADV_PAGEOUT only drops clean, file-backed pages from
        // the page tables (they are refaulted on access) and never changes
        // the mapping's contents. An error (an old kernel without it) is
        // harmless: the pages simply stay.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT) };
        if rc == 0 {
            advised += 1;
        }
    }
    advised
}

/// `start-end perms offset dev inode path`: the start and length of a
/// mapping that is backed by a file and neither writable nor private
/// anonymous (`r--p`, `r-xp`).
fn read_only_file_mapping(line: &str) -> Option<(usize, usize)> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    let path = fields.nth(3)?;
    if !path.starts_with('/') || perms.as_bytes().get(1) != Some(&b'-') || !perms.starts_with('r') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    (end > start).then(|| (start, end - start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_only_file_mappings_are_released() {
        assert_eq!(
            read_only_file_mapping(
                "5581d000-5581e000 r-xp 00001000 fd:01 42 /usr/bin/outlet-agent"
            ),
            Some((0x5581d000, 0x1000))
        );
        assert!(
            read_only_file_mapping("5581d000-5581e000 r--p 00000000 fd:01 42 /usr/lib/libc.so.6")
                .is_some()
        );
        // Writable data, anonymous memory, the heap and stacks stay.
        assert!(
            read_only_file_mapping(
                "5581d000-5581e000 rw-p 00003000 fd:01 42 /usr/bin/outlet-agent"
            )
            .is_none()
        );
        assert!(read_only_file_mapping("7f00a000-7f00b000 rw-p 00000000 00:00 0").is_none());
        assert!(read_only_file_mapping("55a0c000-55a2d000 rw-p 00000000 00:00 0 [heap]").is_none());
        assert!(read_only_file_mapping("7ffd1000-7ffd2000 r-xp 00000000 00:00 0 [vdso]").is_none());
    }

    #[test]
    fn released_code_still_runs() {
        assert!(
            release_code_pages() > 0,
            "the test binary has code mappings"
        );
        // Running anything at all after the advice proves the pages came back.
        let sum: u64 = (1..=1000).sum();
        assert_eq!(sum, 500_500);
        assert!(format!("{sum}").len() == 6);
    }

    #[test]
    fn tuning_and_trimming_leave_the_allocator_working() {
        tune_allocator();
        let big: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 * 1024]).collect();
        drop(big);
        release_free_memory();
        let again = vec![7u8; 1024 * 1024];
        assert_eq!(
            again.iter().map(|b| *b as usize).sum::<usize>(),
            7 * 1024 * 1024
        );
    }
}
