//! The display task as the agent sees it: never blocks, reports faults, retries with backoff,
//! keeps only the latest screen, drives the backlight and the button. Every wait here has a
//! deadline and is woken by the event it waits for; nothing sleeps a fixed time.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use embedded_graphics::primitives::Rectangle;
use outlet_display::button::{ButtonEvent, ButtonInput, ButtonOpener, ButtonTiming};
use outlet_display::config::{DisplayConfig, DriverChoice, UtcOffset};
use outlet_display::driver::spi::SpiOptions;
use outlet_display::driver::{Driver, DriverError};
use outlet_display::panel::{PanelModel, Rotation};
use outlet_display::render::Rendered;
use outlet_display::screen::{Mark, Screen, State};
use outlet_display::task::{DisplayStatus, DriverOpener, TaskOptions, spawn, spawn_with};
use outlet_display::testing::{Failure, FakeBus};
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(5);

fn options() -> TaskOptions {
    TaskOptions {
        size: (240, 320),
        utc_offset: UtcOffset::UTC,
        strings: outlet_display::lang::english(),
        backlight_timeout: None,
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(160),
        button: ButtonTiming {
            poll: Duration::from_millis(2),
            settle: Duration::from_millis(6),
            retry: Duration::from_millis(20),
        },
    }
}

fn wait_status(
    rx: &mut watch::Receiver<DisplayStatus>,
    what: &str,
    pred: impl FnMut(&DisplayStatus) -> bool,
) -> DisplayStatus {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let got = rt.block_on(async {
        match tokio::time::timeout(DEADLINE, rx.wait_for(pred)).await {
            Ok(Ok(s)) => Some(s.clone()),
            Ok(Err(_)) => panic!("status channel closed while waiting for {what}"),
            Err(_) => None,
        }
    });
    got.unwrap_or_else(|| panic!("no {what} within {DEADLINE:?}; status {:?}", *rx.borrow()))
}

/// Polls `cond` every millisecond until it holds, failing after [`DEADLINE`].
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn pairing() -> Screen {
    Screen::new(State::Pairing(common::qr(260, 3))).with_marks(Mark::Up, Mark::Up)
}

fn connected() -> Screen {
    Screen::new(State::Connected {
        outlet_name: "Toko Sinar Jaya".into(),
        phone: "+62 812-3456-7890".into(),
        since: common::t0(),
        last_message_at: None,
    })
}

fn spi_opener(bus: &FakeBus, opens: Arc<Mutex<Vec<Instant>>>, fail_opens: usize) -> DriverOpener {
    let bus = bus.clone();
    Box::new(move || {
        let mut o = opens.lock().unwrap();
        o.push(Instant::now());
        if o.len() <= fail_opens {
            return Err(DriverError::Open {
                what: "/dev/spidev0.0".into(),
                reason: "No such file or directory".into(),
            });
        }
        let opts = SpiOptions::for_model(PanelModel::Ili9341, Rotation::Deg0);
        bus.open_panel(&opts)
    })
}

#[test]
fn missing_panel_is_a_fault_retried_with_backoff_until_it_appears() {
    let bus = FakeBus::new(PanelModel::Ili9341);
    let opens = Arc::new(Mutex::new(Vec::new()));
    let display =
        spawn_with(spi_opener(&bus, Arc::clone(&opens), 4), None, options()).expect("spawn");
    let mut status = display.watch_status();
    display.show(pairing());
    let s = wait_status(&mut status, "fault", |s| {
        matches!(s, DisplayStatus::Fault(_))
    });
    assert_eq!(
        s.to_string(),
        "fault: cannot open /dev/spidev0.0: No such file or directory"
    );
    wait_status(&mut status, "recovery", |s| *s == DisplayStatus::Ok);
    let opens = opens.lock().unwrap().clone();
    assert_eq!(opens.len(), 5, "4 failures then success");
    let gaps: Vec<Duration> = opens.windows(2).map(|w| w[1] - w[0]).collect();
    // 20, 40, 80, 160 ms: each at least the scheduled delay, and growing.
    for (i, gap) in gaps.iter().enumerate() {
        let min = Duration::from_millis(20 << i).min(Duration::from_millis(160));
        assert!(*gap >= min, "retry {i} after {gap:?}, expected ≥ {min:?}");
    }
    // The frame shown after recovery is complete.
    // The backlight comes on only after a complete frame.
    eventually("backlight on", || bus.lock().backlight == Some(true));
    let glass = bus.lock().panel.glass((240, 320), (0, 0));
    assert_eq!(common::decode_frame(&glass).len(), 1);
    assert!(display.shutdown(DEADLINE));
}

#[test]
fn write_failing_midway_is_a_fault_then_a_full_redraw() {
    let bus = FakeBus::new(PanelModel::Ili9341);
    // The panel dies 20 kB into the first frame (an unplugged ribbon cable).
    bus.lock().failure = Failure::AfterBytes(20_000);
    let opens = Arc::new(Mutex::new(Vec::new()));
    let display =
        spawn_with(spi_opener(&bus, Arc::clone(&opens), 0), None, options()).expect("spawn");
    let mut status = display.watch_status();
    display.show(pairing());
    let s = wait_status(&mut status, "fault", |s| {
        matches!(s, DisplayStatus::Fault(_))
    });
    assert!(s.to_string().starts_with("fault: SPI write failed"), "{s}");
    // It keeps retrying (and failing) while the panel is gone.
    eventually("two retries", || opens.lock().unwrap().len() >= 3);
    assert!(bus.lock().failed_writes >= 2);
    assert_eq!(bus.lock().backlight, Some(false), "dark while broken");
    // Plugged back in: the next retry initialises it and draws the whole frame again.
    bus.lock().failure = Failure::None;
    wait_status(&mut status, "recovery", |s| *s == DisplayStatus::Ok);
    eventually("backlight on", || bus.lock().backlight == Some(true));
    let glass = bus.lock().panel.glass((240, 320), (0, 0));
    assert_eq!(
        common::decode_frame(&glass).len(),
        1,
        "QR incomplete after recovery"
    );
    assert!(display.shutdown(DEADLINE));
}

/// A driver that reports what it is asked to do and can be held inside `present`.
struct Probe {
    events: std_mpsc::Sender<(String, Option<bool>)>,
    gate: Arc<Mutex<()>>,
}

impl Driver for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn present(&mut self, r: &Rendered, _dirty: &[Rectangle]) -> Result<(), DriverError> {
        let _held = self.gate.lock().unwrap();
        let _ = self.events.send((r.content.title.clone(), None));
        Ok(())
    }

    fn set_backlight(&mut self, on: bool) -> Result<(), DriverError> {
        let _ = self.events.send(("backlight".into(), Some(on)));
        Ok(())
    }
}

fn probe(gate: Arc<Mutex<()>>) -> (DriverOpener, std_mpsc::Receiver<(String, Option<bool>)>) {
    let (tx, rx) = std_mpsc::channel();
    let opener: DriverOpener = Box::new(move || {
        Ok(Box::new(Probe {
            events: tx.clone(),
            gate: Arc::clone(&gate),
        }) as Box<dyn Driver>)
    });
    (opener, rx)
}

fn next_event(
    rx: &std_mpsc::Receiver<(String, Option<bool>)>,
    what: &str,
) -> (String, Option<bool>) {
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"))
}

/// The title of the next frame drawn, skipping backlight switches.
fn next_frame(rx: &std_mpsc::Receiver<(String, Option<bool>)>, what: &str) -> String {
    loop {
        let (t, on) = next_event(rx, what);
        if on.is_none() {
            return t;
        }
    }
}

#[test]
fn show_never_blocks_and_only_the_latest_screen_is_drawn() {
    let gate = Arc::new(Mutex::new(()));
    let (opener, events) = probe(Arc::clone(&gate));
    let display = spawn_with(opener, None, options()).expect("spawn");
    display.show(Screen::new(State::Paused));
    assert_eq!(next_frame(&events, "first frame"), "Paused by HQ");
    // Hold the driver inside its next frame, as a hung SPI write would.
    let held = gate.lock().unwrap();
    display.show(Screen::new(State::Outdated));
    // The driver stays held through all 201 calls: each returning at all
    // proves show() never waits for the panel (one that did would hang
    // here). How fast they return is a benchmark's question, not a test's.
    for attempt in 1..=200 {
        display.show(Screen::new(State::Connecting { attempt }));
    }
    display.show(connected());
    assert!(matches!(display.status(), DisplayStatus::Ok));
    drop(held);
    // What gets drawn: the frame that was in progress, then only the newest screen.
    let mut titles = Vec::new();
    loop {
        let t = next_frame(&events, "frames after release");
        titles.push(t.clone());
        if t == "Connected" {
            break;
        }
    }
    assert!(titles.len() <= 2, "intermediate screens drawn: {titles:?}");
    assert!(display.shutdown(DEADLINE));
}

struct FakeButton(Arc<AtomicBool>);

impl ButtonInput for FakeButton {
    fn is_pressed(&mut self) -> Result<bool, DriverError> {
        Ok(self.0.load(Ordering::Relaxed))
    }
}

#[test]
fn backlight_times_out_in_connected_and_the_button_wakes_it() {
    let (opener, events) = probe(Arc::new(Mutex::new(())));
    let pressed = Arc::new(AtomicBool::new(false));
    let opens = Arc::new(AtomicUsize::new(0));
    let (p, o) = (Arc::clone(&pressed), Arc::clone(&opens));
    let button: ButtonOpener = Box::new(move || {
        o.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(FakeButton(Arc::clone(&p))) as Box<dyn ButtonInput>)
    });
    let mut opts = options();
    opts.backlight_timeout = Some(Duration::from_millis(150));
    let mut display = spawn_with(opener, Some(button), opts).expect("spawn");
    let mut presses = display.take_button_events().expect("button channel");
    assert!(display.take_button_events().is_none());

    let backlight = |want: bool| loop {
        let (t, on) = next_event(
            &events,
            if want {
                "backlight on"
            } else {
                "backlight off"
            },
        );
        if t == "backlight" && on == Some(want) {
            return Instant::now();
        }
    };
    display.show(pairing());
    backlight(true); // after the first frame
    display.show(connected());
    let shown = Instant::now();
    let off = backlight(false);
    assert!(
        off - shown >= Duration::from_millis(140),
        "went dark after {:?}",
        off - shown
    );

    // A press while dark: light on, and the event says it woke the screen.
    pressed.store(true, Ordering::Relaxed);
    backlight(true);
    let ev = presses.blocking_recv().expect("event");
    assert_eq!(ev, ButtonEvent::Press { woke_screen: true });
    pressed.store(false, Ordering::Relaxed);
    backlight(false);

    // A state change lights it too; outside `connected` it stays on.
    display.show(pairing());
    backlight(true);
    let quiet = events.recv_timeout(Duration::from_millis(400));
    assert!(
        !matches!(quiet, Ok((ref t, Some(false))) if t == "backlight"),
        "backlight went off while pairing"
    );
    assert_eq!(opens.load(Ordering::Relaxed), 1);
    assert!(display.shutdown(DEADLINE));
}

#[test]
fn none_driver_reports_none_and_accepts_screens() {
    let config = DisplayConfig {
        driver: DriverChoice::None,
        ..DisplayConfig::default()
    };
    let display = spawn(&config).expect("spawn");
    assert_eq!(display.status(), DisplayStatus::None);
    assert_eq!(display.status().to_string(), "none");
    display.show(pairing());
    assert_eq!(display.driver(), DriverChoice::None);
}

#[test]
fn spi_without_a_spidev_is_a_fault_not_a_panic() {
    let config = DisplayConfig {
        driver: DriverChoice::Spi,
        spidev: "/nonexistent/spidev9.9".into(),
        ..DisplayConfig::default()
    };
    let display = spawn(&config).expect("spawn");
    let mut status = display.watch_status();
    let s = wait_status(&mut status, "fault", |s| {
        matches!(s, DisplayStatus::Fault(_))
    });
    assert!(
        s.to_string()
            .starts_with("fault: cannot open /nonexistent/spidev9.9"),
        "{s}"
    );
    let json = format!("\"{s}\"");
    assert_eq!(serde_json_like(&s), json);
    assert!(display.shutdown(DEADLINE));
}

/// `DisplayStatus` serialises to the health snapshot's string.
fn serde_json_like(s: &DisplayStatus) -> String {
    let t: toml::Value = toml::Value::try_from(Wrapper { display: s.clone() }).expect("serialise");
    format!("\"{}\"", t["display"].as_str().expect("string"))
}

#[derive(serde::Serialize)]
struct Wrapper {
    display: DisplayStatus,
}

#[test]
fn png_driver_writes_the_screen_atomically() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("png-driver");
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("screen.png");
    let config = DisplayConfig {
        driver: DriverChoice::Png,
        png_path: path.clone(),
        model: PanelModel::St7789,
        width: Some(240),
        height: Some(240),
        ..DisplayConfig::default()
    };
    let display = spawn(&config).expect("spawn");
    let mut status = display.watch_status();
    display.show(pairing());
    eventually("PNG written", || path.exists());
    wait_status(&mut status, "ok", |s| *s == DisplayStatus::Ok);
    assert!(display.shutdown(DEADLINE));
    let frame = outlet_display::driver::png::decode_png(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!((frame.width(), frame.height()), (240, 240));
    assert_eq!(common::decode_frame(&frame).len(), 1);
    assert!(
        !dir.join("screen.png.tmp").exists(),
        "temporary file left behind"
    );
    // It shows the QR: the owner's only, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

/// A driver that panics on its first frame: the task reports it and comes back.
struct Explosive(Arc<AtomicUsize>);

impl Driver for Explosive {
    fn name(&self) -> &'static str {
        "explosive"
    }

    fn present(&mut self, _r: &Rendered, _dirty: &[Rectangle]) -> Result<(), DriverError> {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("driver bug");
        }
        Ok(())
    }
}

#[test]
fn a_panicking_driver_is_reported_and_the_task_restarts() {
    let presents = Arc::new(AtomicUsize::new(0));
    let p = Arc::clone(&presents);
    let opener: DriverOpener =
        Box::new(move || Ok(Box::new(Explosive(Arc::clone(&p))) as Box<dyn Driver>));
    let mut opts = options();
    opts.retry_max = Duration::from_millis(50);
    let display = spawn_with(opener, None, opts).expect("spawn");
    let mut status = display.watch_status();
    display.show(pairing());
    let s = wait_status(&mut status, "crash report", |s| {
        matches!(s, DisplayStatus::Fault(_))
    });
    assert_eq!(s.to_string(), "fault: display task crashed: driver bug");
    wait_status(&mut status, "restart", |s| *s == DisplayStatus::Ok);
    eventually("redraw after restart", || {
        presents.load(Ordering::SeqCst) >= 2
    });
    assert!(display.shutdown(DEADLINE));
}

#[test]
fn the_task_ticks_countdowns_by_itself_without_resending_the_qr() {
    let bus = FakeBus::new(PanelModel::Ili9341);
    let opens = Arc::new(Mutex::new(Vec::new()));
    let display = spawn_with(spi_opener(&bus, opens, 0), None, options()).expect("spawn");
    let now = std::time::SystemTime::now();
    let qr = outlet_display::screen::Qr {
        issued_at: now,
        expires_at: now + Duration::from_secs(60),
        ..common::qr(260, 4)
    };
    display.show(Screen::new(State::Pairing(qr)));
    eventually("first frame", || bus.lock().backlight == Some(true));
    let full = bus.lock().bytes;
    bus.lock().panel.clear_touched();
    // Two ticks arrive on their own (the agent sent nothing more).
    eventually("two countdown ticks", || {
        bus.lock().panel.windows.len() >= 2
    });
    let b = bus.lock();
    let tick_bytes = b.bytes - full;
    assert!(
        tick_bytes * 10 < full,
        "ticks cost {tick_bytes} B vs full frame {full} B"
    );
    assert!(
        b.panel.touched_count() < 240 * 40,
        "ticks touched {} px",
        b.panel.touched_count()
    );
    drop(b);
    assert!(display.shutdown(DEADLINE));
}
