//! Reconnect timing for transient failures: exponential, jittered, capped,
//! forever.
//!
//! The old services gave up after three tries or retried instantly in a
//! loop. Here the first retry comes within a second, each next one waits
//! twice as long up to the cap (5 min by default), and the count only resets
//! after a connection stayed up for a while, so a server that accepts and
//! drops at once cannot pull the agent into a tight loop.
//!
//! Plain rules (the bottom layer): it may use the config's values only; the
//! supervisor, the MQTT link, the messages' publisher and the dashboard use it.
//! It must not import any working part or entry point.

use std::time::Duration;

use rand::RngExt as _;

use crate::config::ReconnectConfig;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    jitter: f64,
    stable_after: Duration,
    /// Failed attempts since the last stable connection.
    failures: u32,
}

impl Backoff {
    pub fn new(config: &ReconnectConfig) -> Self {
        Self {
            first: Duration::from_millis(config.first_delay_ms),
            max: Duration::from_secs(config.max_delay_secs),
            jitter: config.jitter,
            stable_after: Duration::from_secs(config.stable_after_secs),
            failures: 0,
        }
    }

    /// Attempts that failed since the last stable connection.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay before the next attempt, counting this failure.
    pub fn next_delay(&mut self) -> Duration {
        let exponent = self.failures.min(20);
        self.failures = self.failures.saturating_add(1);
        let base = self
            .first
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.max);
        let factor = 1.0 + rand::rng().random_range(-self.jitter..=self.jitter);
        base.mul_f64(factor.max(0.0)).min(self.max)
    }

    /// A connection ended after lasting `uptime`: a stable one resets the
    /// count.
    pub fn connection_ended(&mut self, uptime: Duration) {
        if uptime >= self.stable_after {
            self.failures = 0;
        }
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ReconnectConfig {
        ReconnectConfig {
            first_delay_ms: 500,
            max_delay_secs: 300,
            jitter: 0.2,
            stable_after_secs: 30,
            connect_timeout_secs: 45,
        }
    }

    #[test]
    fn delays_start_under_a_second_grow_and_stay_capped_forever() {
        let mut backoff = Backoff::new(&config());
        let first = backoff.next_delay();
        assert!(first <= Duration::from_secs(1), "{first:?}");
        let mut previous_base = Duration::from_millis(500);
        for attempt in 1..200 {
            let delay = backoff.next_delay();
            assert!(
                delay <= Duration::from_secs(300),
                "attempt {attempt}: {delay:?}"
            );
            let base = (previous_base * 2).min(Duration::from_secs(300));
            assert!(
                delay >= base.mul_f64(0.8),
                "attempt {attempt}: {delay:?} < 0.8×{base:?}"
            );
            previous_base = base;
        }
        assert_eq!(backoff.failures(), 200, "never gives up");
    }

    #[test]
    fn only_a_stable_connection_resets_the_count() {
        let mut backoff = Backoff::new(&config());
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.connection_ended(Duration::from_secs(3));
        assert_eq!(
            backoff.failures(),
            5,
            "a flapping connection keeps backing off"
        );
        backoff.connection_ended(Duration::from_secs(31));
        assert_eq!(backoff.failures(), 0);
    }

    #[test]
    fn jitter_spreads_a_fleet() {
        let delays: std::collections::BTreeSet<_> = (0..20)
            .map(|_| {
                let mut b = Backoff::new(&config());
                b.next_delay();
                b.next_delay().as_millis()
            })
            .collect();
        assert!(delays.len() > 5, "{delays:?}");
    }
}
