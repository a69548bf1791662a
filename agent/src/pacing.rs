//! Turns paced by a token bucket: `burst` at once, then `per_minute`.
//!
//! Two things take turns here. The outlet's number lookups, behind
//! `whatsapp.lookups_per_minute` and `lookup_burst`, and the dashboard's
//! wrong tokens, one bucket per address (`dashboard::login`).
//!
//! A number lookup (usync) is what a spammer's tool does thousands of times
//! a minute, and WhatsApp bans accounts for it, as for sends at machine
//! speed. Every lookup the agent makes (`check_number`, the check before a
//! send to a new number, a customer's number behind a LID) takes a turn
//! here: `burst` at once, then `per_minute`, in the order they asked. A
//! caller that would wait longer than [`MAX_WAIT`] gets no turn and is told
//! when to ask again, so a flood cannot queue hours of lookups.
//!
//! Plain data and one lock; the caller sleeps. It must not import anything
//! from the crate but the config values.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest a lookup waits for its turn; beyond, it is refused.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// Turns: `burst` at once, refilled at `per_minute`.
#[derive(Debug)]
pub struct Pacer {
    per_sec: f64,
    burst: f64,
    /// Tokens left (negative: turns promised to callers still waiting)
    /// as of `at`.
    state: Mutex<(f64, Instant)>,
}

impl Pacer {
    /// `per_minute` 0: no pacing (benchmarks, tests that count nothing).
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self::new_at(per_minute, burst, Instant::now())
    }

    /// A full bucket as of `now`.
    pub fn new_at(per_minute: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_sec: f64::from(per_minute) / 60.0,
            burst,
            state: Mutex::new((burst, now)),
        }
    }

    /// Takes a turn at `now`: how long to wait for it (zero: at once), or,
    /// when that would be longer than [`MAX_WAIT`], `Err` with how long
    /// until a turn is free (no turn is taken then).
    pub fn take_at(&self, now: Instant) -> Result<Duration, Duration> {
        if self.per_sec <= 0.0 {
            return Ok(Duration::ZERO);
        }
        let mut state = self.lock();
        let (tokens, at) = self.refilled(&state, now);
        // With this turn taken, the tokens would be `tokens - 1`; a
        // negative count is the wait until the refill reaches it.
        let after = tokens - 1.0;
        let wait = Duration::from_secs_f64((-after / self.per_sec).max(0.0));
        if wait > MAX_WAIT {
            *state = (tokens, now.max(at));
            let free = Duration::from_secs_f64(((1.0 - tokens) / self.per_sec).max(0.0));
            return Err(free.saturating_sub(MAX_WAIT));
        }
        *state = (after, now.max(at));
        Ok(wait)
    }

    /// Takes a turn only if one is free right now (for lookups that must
    /// not wait, such as those of the inbox).
    pub fn try_now(&self) -> bool {
        self.try_at(Instant::now())
    }

    /// [`Self::try_now`] at `now`.
    pub fn try_at(&self, now: Instant) -> bool {
        if self.per_sec <= 0.0 {
            return true;
        }
        let mut state = self.lock();
        let (tokens, at) = self.refilled(&state, now);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now.max(at));
            true
        } else {
            *state = (tokens, now.max(at));
            false
        }
    }

    /// How long until a turn is free at `now`, without taking it (zero: one
    /// is free).
    pub fn free_in(&self, now: Instant) -> Duration {
        if self.per_sec <= 0.0 {
            return Duration::ZERO;
        }
        let (tokens, _) = self.refilled(&self.lock(), now);
        Duration::from_secs_f64(((1.0 - tokens) / self.per_sec).max(0.0))
    }

    /// Whether the bucket is back to its whole burst at `now`.
    pub fn is_full_at(&self, now: Instant) -> bool {
        self.refilled(&self.lock(), now).0 >= self.burst
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (f64, Instant)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The tokens at `now` (refilled since the last turn, at most `burst`),
    /// and when they were last counted.
    fn refilled(&self, state: &(f64, Instant), now: Instant) -> (f64, Instant) {
        let (tokens, at) = *state;
        let elapsed = now.saturating_duration_since(at).as_secs_f64();
        ((tokens + elapsed * self.per_sec).min(self.burst), at)
    }

    /// Waits for a turn; `Err` (at once) with when to ask again when the
    /// wait would be longer than [`MAX_WAIT`].
    pub async fn turn(&self) -> Result<(), Duration> {
        let wait = self.take_at(Instant::now())?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_at_once_then_the_rate_then_refusals() {
        let pacer = Pacer::new(60, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(pacer.take_at(t0), Ok(Duration::ZERO));
        }
        // One a second after the burst, in line.
        let waits: Vec<u64> = (0..30)
            .map(|_| pacer.take_at(t0).map(|w| w.as_secs()).unwrap_or(999))
            .collect();
        assert_eq!(waits[0], 1);
        assert_eq!(waits[29], 30);
        // The 31st would wait 31 s: refused, and told to come back later.
        let refused = pacer.take_at(t0);
        assert!(refused.is_err(), "{refused:?}");
        // Time refills the bucket; it never holds more than the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(pacer.take_at(later), Ok(Duration::ZERO));
        }
        assert!(pacer.take_at(later).is_ok_and(|w| w > Duration::ZERO));
    }

    #[test]
    fn a_caller_that_cannot_wait_gets_only_a_free_turn() {
        let pacer = Pacer::new(60, 2);
        assert!(pacer.try_now());
        assert!(pacer.try_now());
        assert!(!pacer.try_now());
    }

    #[test]
    fn zero_per_minute_is_no_pacing() {
        let pacer = Pacer::new(0, 1);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(pacer.take_at(t0), Ok(Duration::ZERO));
        }
    }
}
