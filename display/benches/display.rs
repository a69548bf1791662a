//! Display cost: render time, RGB565 conversion, and bytes over SPI per screen change with
//! their transfer time at the configured clock.
//!
//! Run: `cargo bench -p outlet-display --bench display` (add `-- 40000000` for another SPI
//! clock in Hz). No criterion: a median over enough runs is plenty for numbers in the
//! millisecond range, and it keeps the dependency tree small.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use embedded_hal::digital::OutputPin;
use embedded_hal::spi::{Operation, SpiDevice};
use outlet_display::config::UtcOffset;
use outlet_display::driver::Driver;
use outlet_display::driver::spi::{SpiOptions, open_panel};
use outlet_display::panel::{PanelModel, Rotation};
use outlet_display::present::Presenter;
use outlet_display::qr::QrPair;
use outlet_display::render::Renderer;
use outlet_display::screen::{Mark, Qr, QrPayload, Screen, State};
use outlet_display::testing::NoDelay;

/// Counts bytes; stands in for spidev so only our CPU cost is timed.
#[derive(Clone, Default)]
struct CountingSpi(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl embedded_hal::spi::ErrorType for CountingSpi {
    type Error = Infallible;
}

impl SpiDevice for CountingSpi {
    fn transaction(&mut self, ops: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
        for op in ops {
            if let Operation::Write(b) = op {
                black_box(&b);
                self.0
                    .fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

struct Pin;
impl embedded_hal::digital::ErrorType for Pin {
    type Error = Infallible;
}
impl OutputPin for Pin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_420_800)
}

fn payload() -> String {
    // A WhatsApp-shaped 260-character QR string.
    let b64 = |c: char| std::iter::repeat_n(c, 43).collect::<String>() + "=";
    let keys = format!("{},{},{},1", b64('A'), b64('B'), b64('C'));
    let r: String = "2@"
        .chars()
        .chain(('a'..='z').cycle().take(260 - keys.len() - 3))
        .collect();
    format!("{r},{keys}")
}

fn pairing() -> Screen {
    Screen::new(State::Pairing(Qr {
        payload: QrPayload::new(payload()),
        index: 1,
        count: 6,
        issued_at: t0() - Duration::from_secs(18),
        expires_at: t0() + Duration::from_secs(42),
    }))
    .with_marks(Mark::Up, Mark::Up)
}

fn median(mut f: impl FnMut(), runs: usize) -> Duration {
    for _ in 0..runs.min(5) {
        f();
    }
    let mut v: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let hz: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(32_000_000);
    let runs = 200;
    let p = payload();
    assert_eq!(p.len(), 260);
    println!("## outlet-display benchmark");
    println!();
    println!(
        "SPI clock for transfer times: {:.1} MHz; median of {runs} runs.",
        hz as f64 / 1e6
    );
    println!();
    let enc = median(|| drop(black_box(QrPair::encode(p.as_bytes()))), runs);
    println!(
        "QR encode (levels M and L, 260 bytes, once per new code): {}",
        ms(enc)
    );
    println!();
    println!(
        "| panel | picture | render QR screen | diff vs previous | RGB565 bytes | full frame over SPI (CPU) | full frame bytes | at clock | tick bytes | at clock | state change bytes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let panels = [
        (PanelModel::St7789, (240, 240), Rotation::Deg0),
        (PanelModel::Ili9341, (240, 320), Rotation::Deg0),
        (PanelModel::Ili9342c, (320, 240), Rotation::Deg0),
        (PanelModel::St7796, (320, 480), Rotation::Deg0),
        (PanelModel::St7796, (320, 480), Rotation::Deg90),
    ];
    let screen = pairing();
    for (model, native, rotation) in panels {
        let (w, h) = rotation.logical_size(native);
        let (w, h) = (u32::from(w), u32::from(h));
        let mut renderer = Renderer::new(w, h, UtcOffset::UTC);
        let render = median(|| drop(black_box(renderer.render(&screen, t0()))), runs);
        let frame = renderer.render(&screen, t0()).frame;
        let next = renderer
            .render(&screen, t0() + Duration::from_secs(1))
            .frame;
        let diff = median(|| drop(black_box(next.diff(&frame))), runs);
        let bytes = median(|| drop(black_box(frame.to_rgb565_be())), runs);

        let mut opts = SpiOptions::for_model(model, rotation);
        opts.native_size = native;
        let spi = CountingSpi::default();
        let count = spi.0.clone();
        let mut driver: Box<dyn Driver> = open_panel(
            &opts,
            spi,
            Pin,
            Some(Pin),
            Some(Pin),
            &mut NoDelay::default(),
        )
        .expect("init");
        let sent = || count.load(std::sync::atomic::Ordering::Relaxed);
        // CPU time of a whole-frame present (rendering excluded).
        let rendered = renderer.render(&screen, t0());
        let full_rect = [rendered.frame.bounds()];
        let present = median(
            || driver.present(&rendered, &full_rect).expect("present"),
            runs / 4,
        );
        let mut presenter = Presenter::new(Renderer::new(w, h, UtcOffset::UTC));
        let b0 = sent();
        presenter
            .show(driver.as_mut(), &screen, t0())
            .expect("full");
        let full = sent() - b0;
        let mut tick_max = 0;
        for s in 1..=10 {
            let b = sent();
            presenter
                .show(driver.as_mut(), &screen, t0() + Duration::from_secs(s))
                .expect("tick");
            tick_max = tick_max.max(sent() - b);
        }
        let b = sent();
        presenter
            .show(driver.as_mut(), &Screen::new(State::Paused), t0())
            .expect("change");
        let change = sent() - b;
        let wire = |n: u64| ms(Duration::from_secs_f64(n as f64 * 8.0 / hz as f64));
        println!(
            "| {} {}x{} rot {} | {w}x{h} | {} | {} | {} | {} | {full} | {} | {tick_max} | {} | {change} |",
            model.name(),
            native.0,
            native.1,
            rotation.degrees(),
            ms(render),
            ms(diff),
            ms(bytes),
            ms(present),
            wire(full),
            wire(tick_max),
        );
    }
    println!();
    println!(
        "Tick = worst of 10 countdown seconds; state change = pairing → paused (whole screen)."
    );
}
