//! Logins: sessions that expire, and a limit on wrong tokens per address.
//!
//! The page's cookie is a session, not the token: a random id the
//! dashboard keeps for [`SESSION_TTL`], so a cookie that leaks (a shared
//! browser, a proxy's log) stops working by itself and never reveals the
//! token. A restart of the dashboard ends every session; the page then
//! shows its login again.
//!
//! Wrong tokens (at the login or as a bearer header) are limited per
//! address: [`TRIES_BURST`] at once, then [`TRIES_PER_MINUTE`]; beyond
//! that the address is answered 429 without its token being looked at.
//! The limit is per address only: a limit shared by everyone would let one
//! guesser lock everyone out. Failures are logged as a count at most every
//! [`LOG_EVERY`], not one line each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::pacing::Pacer;

/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; the oldest go first.
pub const MAX_SESSIONS: usize = 1024;
/// Wrong tokens an address may try at once...
pub const TRIES_BURST: u32 = 5;
/// ...and then per minute.
pub const TRIES_PER_MINUTE: u32 = 5;
/// Addresses whose tries are counted at once.
const MAX_ADDRESSES: usize = 4096;
/// Failed logins are summed into one log line this often.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The sessions logins opened, by id, with when each ends.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Instant>>,
}

/// Counts only: the ids are secrets.
impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sessions({} open)", lock(&self.open).len())
    }
}

impl Sessions {
    /// A new session, valid for [`SESSION_TTL`] from `now`.
    pub fn open(&self, now: Instant) -> String {
        let id = format!("{:032x}", rand::random::<u128>());
        let mut open = lock(&self.open);
        open.retain(|_, ends| *ends > now);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, ends)| **ends)
                .map(|(id, _)| id.clone())
        {
            open.remove(&oldest);
        }
        open.insert(id.clone(), now + SESSION_TTL);
        id
    }

    pub fn is_open(&self, id: &str, now: Instant) -> bool {
        lock(&self.open).get(id).is_some_and(|ends| *ends > now)
    }

    pub fn close(&self, id: &str) {
        lock(&self.open).remove(id);
    }
}

/// Wrong tokens per address: a [`Pacer`] each, whose turns are tries.
#[derive(Default)]
pub struct Tries {
    buckets: Mutex<HashMap<IpAddr, Pacer>>,
    log: Mutex<FailureLog>,
}

#[derive(Default)]
struct FailureLog {
    since_logged: u64,
    refused: u64,
    logged_at: Option<Instant>,
}

impl Tries {
    /// Whether `addr` may try a token now; `Err` with when it may again.
    pub fn may_try(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let wait = lock(&self.buckets)
            .get(&addr)
            .map_or(Duration::ZERO, |bucket| bucket.free_in(now));
        if wait.is_zero() {
            return Ok(());
        }
        self.note(now, |log| log.refused += 1);
        Err(wait.max(Duration::from_secs(1)))
    }

    /// A wrong token from `addr`.
    pub fn failed(&self, addr: IpAddr, now: Instant) {
        {
            let mut buckets = lock(&self.buckets);
            if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&addr) {
                // Forget the addresses that are back to a full bucket.
                buckets.retain(|_, b| !b.is_full_at(now));
            }
            if buckets.len() < MAX_ADDRESSES || buckets.contains_key(&addr) {
                // A try that finds no turn free takes none (it was refused).
                buckets
                    .entry(addr)
                    .or_insert_with(|| Pacer::new_at(TRIES_PER_MINUTE, TRIES_BURST, now))
                    .try_at(now);
            }
        }
        self.note(now, |log| log.since_logged += 1);
    }

    /// Counts, and logs the counts at most every [`LOG_EVERY`].
    fn note(&self, now: Instant, count: impl FnOnce(&mut FailureLog)) {
        let mut log = lock(&self.log);
        count(&mut log);
        if log
            .logged_at
            .is_some_and(|at| now.saturating_duration_since(at) < LOG_EVERY)
        {
            return;
        }
        tracing::warn!(
            wrong_tokens = log.since_logged,
            refused_for_too_many = log.refused,
            "dashboard: wrong tokens since the last report"
        );
        *log = FailureLog {
            logged_at: Some(now),
            ..FailureLog::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_when_their_time_is_up_or_when_closed() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let a = sessions.open(now);
        let b = sessions.open(now);
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(sessions.is_open(&a, now + SESSION_TTL - Duration::from_secs(1)));
        assert!(!sessions.is_open(&a, now + SESSION_TTL));
        sessions.close(&b);
        assert!(!sessions.is_open(&b, now));
        assert!(!sessions.is_open("not-a-session", now));
    }

    #[test]
    fn sessions_are_bounded_oldest_first() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let first = sessions.open(start);
        for i in 1..=MAX_SESSIONS as u64 {
            sessions.open(start + Duration::from_millis(i));
        }
        assert!(!sessions.is_open(&first, start), "the oldest went");
        assert_eq!(lock(&sessions.open).len(), MAX_SESSIONS);
    }

    #[test]
    fn an_address_gets_a_burst_of_tries_then_a_few_a_minute() {
        let tries = Tries::default();
        let guesser = IpAddr::from([10, 0, 0, 9]);
        let other = IpAddr::from([10, 0, 0, 8]);
        let now = Instant::now();
        for _ in 0..TRIES_BURST {
            assert!(tries.may_try(guesser, now).is_ok());
            tries.failed(guesser, now);
        }
        let wait = tries.may_try(guesser, now).expect_err("out of tries");
        assert!(wait >= Duration::from_secs(11) && wait <= Duration::from_secs(13));
        assert!(
            tries.may_try(other, now).is_ok(),
            "others are not locked out"
        );
        let later = now + Duration::from_secs(12);
        assert!(tries.may_try(guesser, later).is_ok(), "one more after 12 s");
        tries.failed(guesser, later);
        assert!(tries.may_try(guesser, later).is_err());
    }
}
