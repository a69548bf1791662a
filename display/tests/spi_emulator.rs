//! What the `spi` driver puts on the bus: init sequence, address windows, and how many bytes a
//! full QR frame and a countdown tick cost.

mod common;

use std::time::Duration;

use embedded_graphics::prelude::*;
use outlet_display::config::UtcOffset;
use outlet_display::driver::Driver;
use outlet_display::driver::spi::{SpiOptions, open_panel};
use outlet_display::panel::{PanelModel, Rotation};
use outlet_display::present::Presenter;
use outlet_display::render::Renderer;
use outlet_display::screen::{Mark, Screen, State};
use outlet_display::testing::{FakeBus, NoDelay, PinRole, dcs, rect_to_glass};

fn open(
    model: PanelModel,
    native: (u16, u16),
    rotation: Rotation,
) -> (FakeBus, Box<dyn Driver>, Presenter) {
    let mut opts = SpiOptions::for_model(model, rotation);
    opts.native_size = native;
    let bus = FakeBus::new(model);
    let driver = bus.open_panel(&opts).expect("init");
    let (w, h) = rotation.logical_size(native);
    (
        bus,
        driver,
        Presenter::new(Renderer::new(w.into(), h.into(), UtcOffset::UTC)),
    )
}

#[test]
fn init_sequence_sets_rotation_colour_order_and_pixel_format() {
    for model in PanelModel::ALL {
        for rotation in Rotation::ALL {
            let (bus, _driver, _) = open(model, model.default_size(), rotation);
            let b = bus.lock();
            let p = &b.panel;
            let label = format!("{} rot {}", model.name(), rotation.degrees());
            assert!(b.resets >= 1, "{label}: no hardware reset");
            assert!(
                p.awake && p.display_on,
                "{label}: not awake/on: {:02x?}",
                p.commands
            );
            assert_eq!(p.colmod, Some(0x55), "{label}: not RGB565");
            assert_eq!(p.inverted, model.default_invert(), "{label}: inversion");
            let rot_bits = match rotation {
                Rotation::Deg0 => 0x00,
                Rotation::Deg90 => 0x60,  // MV | MX
                Rotation::Deg180 => 0xC0, // MY | MX
                Rotation::Deg270 => 0xA0, // MV | MY
            };
            let bgr = if model.default_bgr() { 0x08 } else { 0 };
            assert_eq!(p.madctl, rot_bits | bgr, "{label}: MADCTL");
            let order: Vec<u8> = p
                .commands
                .iter()
                .copied()
                .filter(|c| [dcs::SLPOUT, dcs::MADCTL, dcs::COLMOD, dcs::DISPON].contains(c))
                .collect();
            assert!(
                order.contains(&dcs::MADCTL) && order.last() == Some(&dcs::DISPON),
                "{label}: {order:02x?}"
            );
        }
    }
}

#[test]
fn software_reset_without_a_reset_line() {
    let bus = FakeBus::new(PanelModel::St7789);
    let opts = SpiOptions::for_model(PanelModel::St7789, Rotation::Deg0);
    let none: Option<outlet_display::testing::FakePin> = None;
    let _d = open_panel(
        &opts,
        bus.spi(),
        bus.pin(PinRole::Dc),
        none,
        None::<outlet_display::testing::FakePin>,
        &mut NoDelay::default(),
    )
    .expect("init");
    let b = bus.lock();
    assert_eq!(b.panel.commands.first(), Some(&dcs::SWRESET));
    assert!(b.panel.display_on);
}

/// The numbers behind "a tick is far smaller than a full frame": printed for BENCHMARKS.md.
#[test]
fn countdown_tick_costs_a_fraction_of_a_full_frame_and_never_touches_the_qr() {
    let panels = [
        (PanelModel::St7789, (240, 240), Rotation::Deg0),
        (PanelModel::Ili9341, (240, 320), Rotation::Deg0),
        (PanelModel::Ili9341, (240, 320), Rotation::Deg90),
        (PanelModel::St7796, (320, 480), Rotation::Deg0),
        (PanelModel::St7796, (320, 480), Rotation::Deg270),
    ];
    for (model, native, rotation) in panels {
        let (bus, mut driver, mut presenter) = open(model, native, rotation);
        let screen = Screen::new(State::Pairing(common::qr(260, 7))).with_marks(Mark::Up, Mark::Up);
        let label = format!(
            "{} {}x{} rot {}",
            model.name(),
            native.0,
            native.1,
            rotation.degrees()
        );

        let before = bus.lock().bytes;
        let first = presenter
            .show(driver.as_mut(), &screen, common::t0())
            .expect("frame");
        let full = bus.lock().bytes - before;
        let (w, h) = (first.rendered.frame.width(), first.rendered.frame.height());
        assert!(
            full >= u64::from(w * h * 2),
            "{label}: full frame of {full} bytes"
        );
        let qr_glass = rect_to_glass(
            rotation,
            native,
            first.rendered.qr.clone().expect("qr").rect,
        );

        let mut ticks = Vec::new();
        for s in 1..=5u64 {
            bus.lock().panel.clear_touched();
            let before = bus.lock().bytes;
            let t = presenter
                .show(
                    driver.as_mut(),
                    &screen,
                    common::t0() + Duration::from_secs(s),
                )
                .expect("tick");
            let bytes = bus.lock().bytes - before;
            let b = bus.lock();
            assert_eq!(
                b.panel.touched_in(qr_glass, (0, 0)),
                0,
                "{label}: tick {s} wrote inside the QR"
            );
            assert!(!t.dirty.is_empty(), "{label}: tick {s} changed nothing");
            assert!(
                t.dirty.len() <= 3,
                "{label}: tick {s} used {} windows",
                t.dirty.len()
            );
            ticks.push(bytes);
        }
        let worst = *ticks.iter().max().unwrap_or(&0);
        assert!(
            worst * 20 < full,
            "{label}: tick of {worst} bytes vs full {full}"
        );

        // Same screen, same second: nothing on the bus.
        let before = bus.lock().bytes;
        presenter
            .show(
                driver.as_mut(),
                &screen,
                common::t0() + Duration::from_secs(5),
            )
            .expect("idle");
        assert_eq!(
            bus.lock().bytes,
            before,
            "{label}: unchanged frame sent bytes"
        );

        // A state change is one full window.
        bus.lock().panel.clear_touched();
        let before = bus.lock().bytes;
        let connected = Screen::new(State::Connected {
            outlet_name: "Toko Sinar Jaya".into(),
            phone: "+62 812-3456-7890".into(),
            since: common::t0(),
            last_message_at: None,
        });
        let change = presenter
            .show(driver.as_mut(), &connected, common::t0())
            .expect("change");
        let change_bytes = bus.lock().bytes - before;
        assert_eq!(change.dirty.len(), 1, "{label}");
        let b = bus.lock();
        eprintln!(
            "{label}: full QR frame {full} B, countdown tick {:?} B (max {worst}), state change {change_bytes} B, {} windows, largest write {} B",
            ticks,
            b.panel.windows.len(),
            b.largest_write
        );
        assert!(b.largest_write <= 4096);
        assert_eq!(b.panel.out_of_range, 0);
        let _ = Point::zero();
    }
}

#[test]
fn transfer_buffer_size_is_respected() {
    for size in [64usize, 1000, 4096, 100_000] {
        let bus = FakeBus::new(PanelModel::Ili9341);
        let mut opts = SpiOptions::for_model(PanelModel::Ili9341, Rotation::Deg0);
        opts.buffer_bytes = size;
        let mut d = bus.open_panel(&opts).expect("init");
        let mut p = Presenter::new(Renderer::new(240, 320, UtcOffset::UTC));
        p.show(d.as_mut(), &Screen::new(State::Paused), common::t0())
            .expect("frame");
        let b = bus.lock();
        assert!(
            b.largest_write <= size.min(4096),
            "buffer {size}: write of {}",
            b.largest_write
        );
        assert_eq!(
            b.panel.glass((240, 320), (0, 0)).pixel(0, 0),
            p_first_pixel()
        );
    }
}

fn p_first_pixel() -> embedded_graphics::pixelcolor::Rgb565 {
    let mut r = Renderer::new(240, 320, UtcOffset::UTC);
    r.render(&Screen::new(State::Paused), common::t0())
        .frame
        .pixel(0, 0)
}
