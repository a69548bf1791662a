//! The display task: its own thread, fed with the latest [`Screen`], reporting a status.
//!
//! The agent's supervisor must never wait on the display: SPI writes are blocking syscalls,
//! a full frame takes tens of milliseconds at 32 MHz, and a broken panel can take longer to
//! fail. So the display runs on a dedicated OS thread and the agent only ever
//!
//! - calls [`DisplayHandle::show`], which stores the screen in a one-slot mailbox (latest value
//!   wins; intermediate screens are skipped, never queued) and returns at once;
//! - reads [`DisplayHandle::status`] or awaits changes on [`DisplayHandle::watch_status`]
//!   (a `tokio::sync::watch`), to put `display: ok | fault: … | none` into its health;
//! - receives [`ButtonEvent`]s from a bounded `tokio::sync::mpsc` channel (presses are
//!   dropped, not queued without bound, if the agent stops reading).
//!
//! Inside, the thread opens the driver, renders, sends only what changed, wakes itself for
//! countdown ticks and the backlight timeout, and on any driver error reports a fault, drops the
//! driver and reopens it with exponential backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::{Serialize, Serializer};
use tokio::sync::{mpsc, watch};

use crate::backlight::BacklightPolicy;
use crate::button::{self, ButtonEvent, ButtonOpener, ButtonTiming};
use crate::config::{ConfigError, DisplayConfig, DriverChoice, UtcOffset};
use crate::driver::{self, Driver, DriverError};
use crate::present::Presenter;
use crate::render::Renderer;
use crate::screen::{Screen, State};

/// The display's health, as the agent reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisplayStatus {
    /// The last frame reached the driver.
    Ok,
    /// The driver failed; it is being retried.
    Fault(String),
    /// No display configured (or `auto` found none).
    None,
}

impl std::fmt::Display for DisplayStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisplayStatus::Ok => f.write_str("ok"),
            DisplayStatus::Fault(reason) => write!(f, "fault: {reason}"),
            DisplayStatus::None => f.write_str("none"),
        }
    }
}

/// Serialises as the health snapshot's `"display"` string: `"ok"`, `"fault: …"`, `"none"`.
impl Serialize for DisplayStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Opens (or reopens) the driver; called on the display thread.
pub type DriverOpener = Box<dyn FnMut() -> Result<Box<dyn Driver>, DriverError> + Send>;

/// Tuning of the display task.
#[derive(Clone, Debug)]
pub struct TaskOptions {
    /// Picture size after rotation.
    pub size: (u32, u32),
    /// Offset for times on screen.
    pub utc_offset: UtcOffset,
    /// The screens' language.
    pub strings: &'static crate::lang::Strings,
    /// Backlight timeout in `connected` (`None`: never).
    pub backlight_timeout: Option<Duration>,
    /// First retry delay after a fault; doubles per failure.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Button sampling.
    pub button: ButtonTiming,
}

impl TaskOptions {
    /// Options for `config`.
    pub fn from_config(config: &DisplayConfig) -> Self {
        let (w, h) = config.logical_size();
        Self {
            size: (u32::from(w), u32::from(h)),
            utc_offset: config.utc_offset,
            strings: config.strings(),
            backlight_timeout: config.backlight_timeout(),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            button: ButtonTiming::default(),
        }
    }
}

/// The display task could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The `[display]` config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The OS refused a thread.
    #[error("cannot start display thread: {0}")]
    Thread(#[from] std::io::Error),
}

#[derive(Default)]
struct Inbox {
    /// Newest screen not yet taken by the display thread.
    screen: Option<Screen>,
    /// Newest screen taken, kept so a restarted thread can redraw it.
    current: Option<Screen>,
    wake: bool,
    stop: bool,
}

struct Shared {
    inbox: Mutex<Inbox>,
    cv: Condvar,
    backlight_on: AtomicBool,
    stop_button: Arc<AtomicBool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        // A panic on the display thread must not take the agent down with a poisoned lock.
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The agent's side of the display task. Dropping it stops the task.
pub struct DisplayHandle {
    shared: Arc<Shared>,
    status: watch::Receiver<DisplayStatus>,
    buttons: Option<mpsc::Receiver<ButtonEvent>>,
    driver: DriverChoice,
    thread: Option<JoinHandle<()>>,
    button_thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DisplayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DisplayHandle")
            .field("driver", &self.driver)
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl DisplayHandle {
    /// Shows `screen` as soon as the display thread gets to it. Never blocks: only the newest
    /// screen is kept.
    pub fn show(&self, screen: Screen) {
        let mut inbox = self.shared.lock();
        inbox.screen = Some(screen);
        drop(inbox);
        self.shared.cv.notify_one();
    }

    /// Lights the backlight as if the button had been pressed (e.g. on a command from HQ).
    pub fn wake(&self) {
        self.shared.lock().wake = true;
        self.shared.cv.notify_one();
    }

    /// The current status.
    pub fn status(&self) -> DisplayStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change (latest value semantics).
    pub fn watch_status(&self) -> watch::Receiver<DisplayStatus> {
        self.status.clone()
    }

    /// The button events; `Some` once (the receiver moves to the caller).
    pub fn take_button_events(&mut self) -> Option<mpsc::Receiver<ButtonEvent>> {
        self.buttons.take()
    }

    /// The driver this display resolved to.
    pub fn driver(&self) -> DriverChoice {
        self.driver
    }

    /// Stops the task and waits up to `timeout` for the thread to finish its current frame.
    /// Returns whether it finished; a thread stuck in a hung write is left detached.
    pub fn shutdown(mut self, timeout: Duration) -> bool {
        self.signal_stop();
        let end = Instant::now() + timeout;
        let mut done = true;
        for t in [self.thread.take(), self.button_thread.take()]
            .into_iter()
            .flatten()
        {
            while !t.is_finished() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(2));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                done = false;
            }
        }
        done
    }

    fn signal_stop(&self) {
        self.shared.lock().stop = true;
        self.shared.stop_button.store(true, Ordering::Relaxed);
        self.shared.cv.notify_one();
    }
}

impl Drop for DisplayHandle {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// Starts the display described by `config`: resolves `auto`, opens the driver on the display
/// thread (failures become `fault` and are retried), and starts the button thread when a
/// button line is configured.
///
/// The status starts as `ok` (`none` for no display) and turns to `fault: …` as soon as the
/// first open fails: for a missing spidev that is within milliseconds, a present panel takes
/// its init time (~0.3 s) to confirm.
pub fn spawn(config: &DisplayConfig) -> Result<DisplayHandle, SpawnError> {
    config.validate()?;
    let choice = driver::resolve(config);
    tracing::info!(driver = ?choice, "display driver selected");
    let button = config
        .button_line
        .map(|line| button::linux_button(config.gpiochip.clone(), line, config.button_active_low));
    if choice == DriverChoice::None {
        return spawn_inner(None, button, TaskOptions::from_config(config), choice);
    }
    let cfg = config.clone();
    let opener: DriverOpener = Box::new(move || driver::open(choice, &cfg));
    spawn_inner(
        Some(opener),
        button,
        TaskOptions::from_config(config),
        choice,
    )
}

/// Starts a display task with a custom driver opener (tests, other hardware).
pub fn spawn_with(
    opener: DriverOpener,
    button: Option<ButtonOpener>,
    options: TaskOptions,
) -> Result<DisplayHandle, SpawnError> {
    spawn_inner(Some(opener), button, options, DriverChoice::Spi)
}

fn spawn_inner(
    opener: Option<DriverOpener>,
    button: Option<ButtonOpener>,
    options: TaskOptions,
    choice: DriverChoice,
) -> Result<DisplayHandle, SpawnError> {
    let initial = if opener.is_some() {
        DisplayStatus::Ok
    } else {
        DisplayStatus::None
    };
    let (status_tx, status_rx) = watch::channel(initial);
    let (button_tx, button_rx) = mpsc::channel(16);
    let shared = Arc::new(Shared {
        inbox: Mutex::new(Inbox::default()),
        cv: Condvar::new(),
        backlight_on: AtomicBool::new(false),
        stop_button: Arc::new(AtomicBool::new(false)),
    });
    let thread = match opener {
        Some(opener) => {
            let s = Arc::clone(&shared);
            let opts = options.clone();
            Some(
                std::thread::Builder::new()
                    .name("display".into())
                    .spawn(move || supervise(&s, opener, &opts, &status_tx))?,
            )
        }
        None => None,
    };
    let button_thread = match button {
        Some(open) => {
            let s = Arc::clone(&shared);
            let stop = Arc::clone(&shared.stop_button);
            let timing = options.button;
            Some(
                std::thread::Builder::new()
                    .name("display-button".into())
                    .spawn(move || {
                        button::run(open, timing, stop, || {
                            let woke_screen = !s.backlight_on.load(Ordering::Relaxed);
                            if button_tx
                                .try_send(ButtonEvent::Press { woke_screen })
                                .is_err()
                            {
                                tracing::debug!("button event dropped: agent not reading");
                            }
                            s.lock().wake = true;
                            s.cv.notify_one();
                        })
                    })?,
            )
        }
        None => None,
    };
    Ok(DisplayHandle {
        shared,
        status: status_rx,
        buttons: Some(button_rx),
        driver: choice,
        thread,
        button_thread,
    })
}

fn set_status(tx: &watch::Sender<DisplayStatus>, status: DisplayStatus) {
    tx.send_if_modified(|cur| {
        if *cur == status {
            return false;
        }
        match &status {
            DisplayStatus::Fault(reason) => tracing::warn!(%reason, "display fault"),
            DisplayStatus::Ok if matches!(cur, DisplayStatus::Fault(_)) => {
                tracing::info!("display recovered")
            }
            _ => {}
        }
        *cur = status;
        true
    });
}

/// Exponential backoff without jitter: one device, nobody to stampede.
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Runs the display loop; a panic in it (a bug, or a driver crate's) is reported as a fault
/// and the loop restarts with the last screen, like the agent's supervisor restarts a session.
fn supervise(
    shared: &Shared,
    mut opener: DriverOpener,
    opts: &TaskOptions,
    status: &watch::Sender<DisplayStatus>,
) {
    loop {
        let run_once = std::panic::AssertUnwindSafe(|| run(shared, &mut opener, opts, status));
        let Err(panic) = std::panic::catch_unwind(run_once) else {
            return;
        };
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        set_status(
            status,
            DisplayStatus::Fault(format!("display task crashed: {what}")),
        );
        let mut inbox = shared.lock();
        if inbox.stop {
            return;
        }
        if inbox.screen.is_none() {
            inbox.screen = inbox.current.clone();
        }
        let (guard, _) = match shared.cv.wait_timeout(inbox, opts.retry_max) {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        if guard.stop {
            return;
        }
    }
}

fn run(
    shared: &Shared,
    opener: &mut DriverOpener,
    opts: &TaskOptions,
    status: &watch::Sender<DisplayStatus>,
) {
    let mut presenter = Presenter::new(
        Renderer::new(opts.size.0, opts.size.1, opts.utc_offset).with_language(opts.strings),
    );
    let mut driver: Option<Box<dyn Driver>> = None;
    let mut screen: Option<Screen> = None;
    let mut backoff = Backoff {
        initial: opts.retry_initial,
        max: opts.retry_max,
        next: opts.retry_initial,
    };
    let mut retry_at = Instant::now();
    let mut render_due = false;
    let mut next_change: Option<SystemTime> = None;
    let mut rendered_at = Instant::now();
    let mut policy = BacklightPolicy::new(opts.backlight_timeout, Instant::now());
    let mut backlight: Option<bool> = None;

    loop {
        let (new_screen, wake) = {
            let mut inbox = shared.lock();
            if inbox.stop {
                return;
            }
            let new = inbox.screen.take();
            if new.is_some() {
                inbox.current.clone_from(&new);
            }
            (new, std::mem::take(&mut inbox.wake))
        };
        let now = Instant::now();
        if let Some(s) = new_screen {
            if screen.as_ref().is_none_or(|old| old.state != s.state) {
                policy.activity(now);
            }
            policy.set_connected(matches!(s.state, State::Connected { .. }));
            render_due |= screen.as_ref() != Some(&s);
            screen = Some(s);
        }
        if wake {
            policy.activity(now);
        }
        // A countdown is re-rendered when its second is up, and at least once a second of
        // monotonic time, so a wall-clock step backwards cannot freeze it. An unchanged render
        // costs a fraction of a millisecond and sends nothing.
        if next_change.is_some_and(|t| {
            SystemTime::now() >= t || now.duration_since(rendered_at) >= Duration::from_secs(1)
        }) {
            render_due = true;
        }

        let mut fault: Option<DriverError> = None;
        if driver.is_none() && now >= retry_at {
            match opener() {
                Ok(d) => {
                    tracing::info!(driver = d.name(), "display opened");
                    driver = Some(d);
                    presenter.invalidate();
                    backlight = None;
                    render_due = true;
                    set_status(status, DisplayStatus::Ok);
                }
                Err(e) => fault = Some(e),
            }
        }
        if let (Some(d), Some(s)) = (driver.as_mut(), screen.as_ref())
            && render_due
        {
            rendered_at = Instant::now();
            match presenter.show(d.as_mut(), s, SystemTime::now()) {
                Ok(p) => {
                    next_change = p.rendered.next_change();
                    render_due = false;
                    backoff.reset();
                    set_status(status, DisplayStatus::Ok);
                }
                Err(e) => fault = Some(e),
            }
        }
        if let Some(d) = driver.as_mut()
            && fault.is_none()
        {
            // Dark until the first complete frame, so nobody sees power-on garbage.
            let want = policy.wanted(Instant::now()) && presenter.has_frame();
            if backlight != Some(want) {
                match d.set_backlight(want) {
                    Ok(()) => {
                        backlight = Some(want);
                        shared.backlight_on.store(want, Ordering::Relaxed);
                        tracing::debug!(on = want, "display backlight");
                    }
                    Err(e) => fault = Some(e),
                }
            }
        }
        if let Some(e) = fault {
            let delay = backoff.next();
            set_status(status, DisplayStatus::Fault(e.to_string()));
            tracing::debug!(error = %e, retry_in = ?delay, "display driver closed");
            driver = None;
            presenter.invalidate();
            shared.backlight_on.store(false, Ordering::Relaxed);
            retry_at = Instant::now() + delay;
            render_due = screen.is_some();
        }

        // Sleep until the next thing that needs doing, or until the agent sends something.
        let now = Instant::now();
        let mut deadline: Option<Instant> = None;
        let mut consider = |t: Instant| deadline = Some(deadline.map_or(t, |d| d.min(t)));
        if driver.is_none() {
            consider(retry_at);
        } else {
            if let Some(t) = next_change {
                // Countdowns tick once a second; re-read the wall clock at least that often so
                // a clock step (NTP after `waiting_for_clock`) cannot stall them.
                let wait = t
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
                    .min(Duration::from_secs(1));
                consider(now + wait + Duration::from_millis(2));
            }
            if let Some(t) = policy.off_at(now) {
                consider(t);
            }
        }
        let mut inbox = shared.lock();
        while inbox.screen.is_none() && !inbox.wake && !inbox.stop {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                break;
            }
            inbox = match shared.cv.wait_timeout(inbox, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
    }
}
