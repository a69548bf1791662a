//! When the backlight may go dark.
//!
//! A lit panel in a closed shop burns power and the LED's life for nobody, but a dark panel
//! while pairing or in trouble hides exactly what staff must see. So the backlight only times
//! out in `connected`, and any state change or button press lights it again.

use std::time::{Duration, Instant};

/// The backlight rule as a small state machine, driven with explicit instants for testing.
#[derive(Clone, Debug)]
pub struct BacklightPolicy {
    timeout: Option<Duration>,
    last_activity: Instant,
    connected: bool,
}

impl BacklightPolicy {
    /// A policy that turns the light off after `timeout` of quiet in `connected`
    /// (`None`: never).
    pub fn new(timeout: Option<Duration>, now: Instant) -> Self {
        Self {
            timeout,
            last_activity: now,
            connected: false,
        }
    }

    /// Something happened that staff should see (state change, button press).
    pub fn activity(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// Whether the session is in `connected` (the only state the light may time out in).
    pub fn set_connected(&mut self, connected: bool) {
        self.connected = connected;
    }

    /// Whether the backlight should be on at `now`.
    pub fn wanted(&self, now: Instant) -> bool {
        match (self.connected, self.timeout) {
            (true, Some(t)) => now.saturating_duration_since(self.last_activity) < t,
            _ => true,
        }
    }

    /// When [`Self::wanted`] will turn false if nothing happens, if it will.
    pub fn off_at(&self, now: Instant) -> Option<Instant> {
        match (self.connected, self.timeout) {
            (true, Some(t)) if self.wanted(now) => self.last_activity.checked_add(t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_out_only_when_connected() {
        let t = Instant::now();
        let mut p = BacklightPolicy::new(Some(Duration::from_secs(60)), t);
        assert!(
            p.wanted(t + Duration::from_secs(3600)),
            "not connected: stays on"
        );
        p.set_connected(true);
        p.activity(t);
        assert!(p.wanted(t + Duration::from_secs(59)));
        assert_eq!(p.off_at(t), Some(t + Duration::from_secs(60)));
        assert!(!p.wanted(t + Duration::from_secs(60)));
        assert_eq!(p.off_at(t + Duration::from_secs(61)), None);
        p.activity(t + Duration::from_secs(100));
        assert!(p.wanted(t + Duration::from_secs(101)), "button wakes it");
        p.set_connected(false);
        assert!(p.wanted(t + Duration::from_secs(1000)));
        let never = BacklightPolicy::new(None, t);
        assert!(never.wanted(t + Duration::from_secs(1 << 30)));
    }
}
