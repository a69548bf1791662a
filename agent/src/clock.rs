//! Whether the system clock can be trusted yet.
//!
//! A Raspberry Pi has no real-time clock: after a power cut it boots at the
//! last saved time (or 1970) until NTP answers, and TLS and the WhatsApp
//! handshake fail with a wrong clock. The agent waits in
//! `waiting_for_clock` instead of burning reconnect attempts.
//!
//! Plain rules (the bottom layer): it may use the config's values only; it must
//! not import any working part or entry point.

use crate::config::ClockCheck;

/// A lower bound for a sane clock: 2026-09, before this version was
/// released (raise it with each release; a Pi that boots at 1970 or at its
/// last saved time from long ago is caught either way).
const BUILD_FLOOR_UNIX: i64 = 1_790_000_000;

pub fn is_trustworthy(check: ClockCheck) -> bool {
    match check {
        ClockCheck::Off => true,
        ClockCheck::BuildDate => chrono::Utc::now().timestamp() >= BUILD_FLOOR_UNIX,
        ClockCheck::Ntp => ntp_synchronised(),
    }
}

/// The kernel's view: `adjtimex` returns `TIME_ERROR` while unsynchronised.
fn ntp_synchronised() -> bool {
    // SAFETY: `timex` is plain data; a zeroed struct with `modes = 0` asks
    // the kernel to read the state without changing anything.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    state >= 0 && state != libc::TIME_ERROR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_answer() {
        assert!(is_trustworthy(ClockCheck::Off));
        assert!(
            is_trustworthy(ClockCheck::BuildDate),
            "this machine's clock is after the build floor"
        );
        let _ = is_trustworthy(ClockCheck::Ntp);
    }
}
