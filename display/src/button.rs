//! The optional push button: a GPIO line, polled and debounced, reported as events.
//!
//! Polling every 10 ms (one `GPIOHANDLE_GET_LINE_VALUES` ioctl) costs nothing measurable on a
//! Pi and works with every gpiochip, unlike edge events whose availability depends on the
//! kernel and the line. A press counts once the line has been stable for the settle time, so
//! contact bounce (typically 1–10 ms) never produces two presses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use embedded_hal::digital::InputPin;

use crate::driver::DriverError;

/// What the button did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ButtonEvent {
    /// A debounced press.
    Press {
        /// The backlight was off: this press woke the screen. The agent may treat such a press
        /// as "wake" only and not, say, request a new QR.
        woke_screen: bool,
    },
}

/// Debounces raw samples into presses.
#[derive(Clone, Debug)]
pub struct Debouncer {
    settle: Duration,
    stable: bool,
    candidate: bool,
    since: Option<Instant>,
}

impl Debouncer {
    /// A debouncer that needs `settle` of a steady level before accepting it.
    pub fn new(settle: Duration) -> Self {
        Self {
            settle,
            stable: false,
            candidate: false,
            since: None,
        }
    }

    /// Feeds one sample; returns `true` when it completes a press (released → pressed).
    pub fn sample(&mut self, pressed: bool, now: Instant) -> bool {
        if pressed != self.candidate || self.since.is_none() {
            self.candidate = pressed;
            self.since = Some(now);
        }
        let steady = self
            .since
            .is_some_and(|s| now.saturating_duration_since(s) >= self.settle);
        if steady && self.candidate != self.stable {
            self.stable = self.candidate;
            return self.stable;
        }
        false
    }
}

/// A button line that can be sampled.
pub trait ButtonInput: Send {
    /// Whether the button is held down now.
    fn is_pressed(&mut self) -> Result<bool, DriverError>;
}

/// An embedded-hal input pin as a button.
pub struct PinButton<P> {
    pin: P,
    active_low: bool,
}

impl<P: InputPin> PinButton<P> {
    /// `active_low`: pressed pulls the line to ground (the usual wiring with a pull-up).
    pub fn new(pin: P, active_low: bool) -> Self {
        Self { pin, active_low }
    }
}

impl<P: InputPin + Send> ButtonInput for PinButton<P> {
    fn is_pressed(&mut self) -> Result<bool, DriverError> {
        let high = self
            .pin
            .is_high()
            .map_err(|e| DriverError::Gpio(format!("button: {e:?}")))?;
        Ok(high != self.active_low)
    }
}

/// Opens the button line; called again after a failure.
pub type ButtonOpener = Box<dyn FnMut() -> Result<Box<dyn ButtonInput>, DriverError> + Send>;

/// An opener for `line` on the GPIO character device `chip`.
pub fn linux_button(chip: std::path::PathBuf, line: u32, active_low: bool) -> ButtonOpener {
    Box::new(move || {
        use linux_embedded_hal::CdevPin;
        use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
        let what = format!("{} line {line} (button)", chip.display());
        let err = |e: &dyn std::fmt::Display| DriverError::Open {
            what: what.clone(),
            reason: e.to_string(),
        };
        let handle = Chip::new(&chip)
            .and_then(|mut c| c.get_line(line))
            .and_then(|l| l.request(LineRequestFlags::INPUT, 0, "outlet-display"))
            .map_err(|e| err(&e))?;
        let pin = CdevPin::new(handle).map_err(|e| err(&e))?;
        Ok(Box::new(PinButton::new(pin, active_low)) as Box<dyn ButtonInput>)
    })
}

/// Timing of the button thread.
#[derive(Clone, Copy, Debug)]
pub struct ButtonTiming {
    /// Sampling period.
    pub poll: Duration,
    /// Steady time that makes a level count.
    pub settle: Duration,
    /// First retry delay after the line failed to open or read (doubles up to a minute).
    pub retry: Duration,
}

impl Default for ButtonTiming {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(10),
            settle: Duration::from_millis(30),
            retry: Duration::from_secs(1),
        }
    }
}

/// Polls the button until `stop`, calling `on_press` for every debounced press.
pub(crate) fn run(
    mut open: ButtonOpener,
    timing: ButtonTiming,
    stop: Arc<AtomicBool>,
    mut on_press: impl FnMut(),
) {
    let mut retry = timing.retry;
    let mut warned = false;
    while !stop.load(Ordering::Relaxed) {
        let mut input = match open() {
            Ok(i) => {
                retry = timing.retry;
                warned = false;
                i
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "display button unavailable; retrying");
                    warned = true;
                }
                sleep_unless(&stop, retry);
                retry = (retry * 2).min(Duration::from_secs(60));
                continue;
            }
        };
        let mut debouncer = Debouncer::new(timing.settle);
        while !stop.load(Ordering::Relaxed) {
            match input.is_pressed() {
                Ok(p) => {
                    if debouncer.sample(p, Instant::now()) {
                        on_press();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "display button read failed; reopening");
                    break;
                }
            }
            std::thread::sleep(timing.poll);
        }
    }
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let end = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounces_make_one_press() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut d = Debouncer::new(Duration::from_millis(30));
        let mut presses = 0;
        // Bouncing contact for 8 ms, then held for 100 ms, bouncing release, idle.
        let samples = [
            (0, false),
            (10, true),
            (12, false),
            (14, true),
            (16, false),
            (18, true),
            (30, true),
            (40, true),
            (50, true),
            (60, true),
            (110, false),
            (112, true),
            (114, false),
            (150, false),
            (200, false),
        ];
        for (at, level) in samples {
            presses += usize::from(d.sample(level, ms(at)));
        }
        assert_eq!(presses, 1);
        // A 5 ms glitch is not a press.
        let mut d = Debouncer::new(Duration::from_millis(30));
        let mut n = 0;
        for (at, level) in [
            (0, false),
            (40, false),
            (50, true),
            (55, false),
            (100, false),
        ] {
            n += usize::from(d.sample(level, ms(at)));
        }
        assert_eq!(n, 0);
    }
}
