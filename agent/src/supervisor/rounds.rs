//! Pairing rounds: each round is one connection showing the QR codes the
//! server hands out. When they run out the agent goes idle; a new round
//! starts after a cool-down or at once on the button or `refresh_qr`, but
//! never more than a configured number of times per hour, so a stuck button
//! or a script cannot make the outlet hammer the servers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub struct Rounds {
    max_per_hour: u32,
    started: VecDeque<Instant>,
}

impl Rounds {
    pub fn new(max_per_hour: u32) -> Self {
        Self {
            max_per_hour: max_per_hour.max(1),
            started: VecDeque::new(),
        }
    }

    /// When the next round may start (now, or when the oldest round of the
    /// last hour ages out).
    pub fn next_allowed(&mut self, now: Instant) -> Instant {
        while self
            .started
            .front()
            .is_some_and(|t| now.duration_since(*t) >= HOUR)
        {
            self.started.pop_front();
        }
        if self.started.len() < self.max_per_hour as usize {
            now
        } else {
            self.started.front().map_or(now, |oldest| *oldest + HOUR)
        }
    }

    /// Records that a round started.
    pub fn start(&mut self, now: Instant) {
        self.started.push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_n_rounds_start_per_hour() {
        let t0 = Instant::now();
        let mut rounds = Rounds::new(3);
        for i in 0..3 {
            let at = t0 + Duration::from_secs(i * 60);
            assert_eq!(rounds.next_allowed(at), at);
            rounds.start(at);
        }
        let later = t0 + Duration::from_secs(600);
        assert_eq!(
            rounds.next_allowed(later),
            t0 + HOUR,
            "the fourth waits for the first to age out"
        );
        assert_eq!(rounds.next_allowed(t0 + HOUR), t0 + HOUR);
    }
}
