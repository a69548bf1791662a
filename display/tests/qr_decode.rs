//! The QR on screen decodes back to exactly the payload, at every size and rotation, both from
//! the rendered frame and from the bytes the `spi` driver puts on the bus.

mod common;

use embedded_graphics::prelude::*;
use outlet_display::config::UtcOffset;
use outlet_display::driver::spi::SpiOptions;
use outlet_display::frame::Frame;
use outlet_display::panel::{PanelModel, Rotation};
use outlet_display::present::Presenter;
use outlet_display::qr::{Level, QUIET_ZONE};
use outlet_display::render::{QrPlacement, Renderer};
use outlet_display::screen::{Screen, State};
use outlet_display::testing::{FakeBus, logical_to_glass};

/// Panels and sizes of the emulator runs: every supported controller at its usual sizes.
const PANELS: [(PanelModel, (u16, u16)); 5] = [
    (PanelModel::St7789, (240, 240)),
    (PanelModel::St7789, (240, 320)),
    (PanelModel::Ili9341, (240, 320)),
    (PanelModel::Ili9342c, (320, 240)),
    (PanelModel::St7796, (320, 480)),
];

fn pairing(len: usize, seed: u32) -> (Screen, String) {
    let qr = common::qr(len, seed);
    let payload = qr.payload.expose().to_string();
    (Screen::new(State::Pairing(qr)), payload)
}

/// Samples the centre of every module (quiet zone included) into a 1-px-per-module image, so
/// the decoder works on ~73×73 pixels instead of a whole screen. Also checks that every module
/// is a solid square of exactly black or white: integer pixels per module, nothing smeared.
fn modules_of(frame: &Frame, q: &QrPlacement, map: impl Fn(u32, u32) -> (u32, u32)) -> Frame {
    let n = q.modules + 2 * QUIET_ZONE;
    let px = q.module_px;
    let mut out = Frame::new(n, n, embedded_graphics::pixelcolor::Rgb565::WHITE);
    let (x0, y0) = (q.rect.top_left.x as u32, q.rect.top_left.y as u32);
    for my in 0..n {
        for mx in 0..n {
            let at = |dx: u32, dy: u32| {
                let (x, y) = map(x0 + mx * px + dx, y0 + my * px + dy);
                frame.luma(x, y)
            };
            let v = at(px / 2, px / 2);
            assert!(v == 0 || v == 255, "module ({mx},{my}) is grey: {v}");
            for dy in 0..px {
                for dx in 0..px {
                    assert_eq!(at(dx, dy), v, "module ({mx},{my}) is not solid");
                }
            }
            if v == 0 {
                out.set_pixel(mx, my, embedded_graphics::pixelcolor::Rgb565::BLACK);
            }
        }
    }
    // A 1-px module is too small for the finder search; scale up by 3 (cheap: ~220×220).
    let mut big = Frame::new(
        n * 3 + 6,
        n * 3 + 6,
        embedded_graphics::pixelcolor::Rgb565::WHITE,
    );
    for y in 0..n * 3 {
        for x in 0..n * 3 {
            big.set_pixel(x + 3, y + 3, out.pixel(x / 3, y / 3));
        }
    }
    big
}

#[test]
fn rendered_qr_decodes_at_every_size() {
    for code in outlet_display::lang::codes() {
        let t = outlet_display::lang::lookup(code).expect("listed");
        for (i, (w, h)) in common::SIZES.into_iter().enumerate() {
            decodes_at(w, h, i, t);
        }
    }
}

/// The QR is as large in every language as in English: longer words must
/// never cost the QR its size (or a phone its scan).
#[test]
fn the_qr_is_as_large_in_every_language() {
    let en = outlet_display::lang::english();
    for code in outlet_display::lang::codes() {
        let t = outlet_display::lang::lookup(code).expect("listed");
        for (i, (w, h)) in common::SIZES.into_iter().enumerate() {
            let (screen, _) = pairing(260, 300 + i as u32);
            let size = |t| {
                let mut r = Renderer::new(w, h, UtcOffset::UTC).with_language(t);
                let q = r.render(&screen, common::t0()).qr.expect("a QR");
                (q.module_px, q.rect.size)
            };
            assert_eq!(size(t), size(en), "{code} at {w}x{h}");
        }
    }
}

fn decodes_at(w: u32, h: u32, i: usize, t: &'static outlet_display::lang::Strings) {
    {
        let (screen, payload) = pairing(260, 100 + i as u32);
        assert_eq!(payload.len(), 260);
        let mut r = Renderer::new(w, h, UtcOffset::UTC).with_language(t);
        let rendered = r.render(&screen, common::t0());
        let q = rendered.qr.clone().expect("pairing screen has a QR");
        // Centred horizontally (portrait) or vertically (landscape), fully on screen.
        let (cx, cy) = (q.rect.center().x, q.rect.center().y);
        if w > h {
            assert!(
                (cy - h as i32 / 2).abs() <= 1,
                "{w}x{h}: QR not centred vertically"
            );
        } else {
            assert!(
                (cx - w as i32 / 2).abs() <= 1,
                "{w}x{h}: QR not centred horizontally"
            );
        }
        assert!(q.module_px >= 3, "{w}x{h}: modules of {} px", q.module_px);
        let small = modules_of(&rendered.frame, &q, |x, y| (x, y));
        assert_eq!(
            common::decode_frame(&small),
            vec![payload.clone()],
            "{w}x{h}"
        );
        eprintln!(
            "{w}x{h}: {:?} level {:?} v{} {} px/module, QR {}x{} px",
            q.arrangement, q.level, q.version, q.module_px, q.rect.size.width, q.rect.size.height
        );
    }
}

/// One full-resolution decode per size, without any knowledge of the layout: proves the QR is
/// findable on the real picture, not only at the coordinates the renderer reports.
#[test]
fn full_screen_decode_without_layout_knowledge() {
    for code in outlet_display::lang::codes() {
        let t = outlet_display::lang::lookup(code).expect("listed");
        for (i, (w, h)) in common::SIZES.into_iter().enumerate() {
            let (screen, payload) = pairing(260, 200 + i as u32);
            let mut r = Renderer::new(w, h, UtcOffset::UTC).with_language(t);
            let rendered = r.render(&screen, common::t0());
            assert_eq!(
                common::decode_frame(&rendered.frame),
                vec![payload],
                "{code} {w}x{h}"
            );
        }
    }
}

#[test]
fn level_m_is_preferred_when_modules_are_equal() {
    // 240×320: the 260-byte payload is version 12-M (73 modules with quiet zone) or 10-L (65);
    // both give 3 px modules in the 240 px width, so M must win.
    let (screen, _) = pairing(260, 1);
    let q = Renderer::new(240, 320, UtcOffset::UTC)
        .render(&screen, common::t0())
        .qr
        .expect("qr");
    assert_eq!((q.level, q.module_px), (Level::M, 3));
    // 320×480: 4 px either way, M.
    let q = Renderer::new(320, 480, UtcOffset::UTC)
        .render(&screen, common::t0())
        .qr
        .expect("qr");
    assert_eq!((q.level, q.module_px), (Level::M, 4));
    // 240×240 with a title and countdown row: 196 px left for the QR, so L (3 px) beats M (2 px).
    let q = Renderer::new(240, 240, UtcOffset::UTC)
        .render(&screen, common::t0())
        .qr
        .expect("qr");
    assert_eq!((q.level, q.module_px), (Level::L, 3));
}

/// The bytes on the bus, replayed by the panel emulator, show the same picture (rotated onto
/// the glass) and a QR that decodes to the payload, for every panel and rotation.
#[test]
fn spi_bytes_show_a_scannable_qr_for_every_panel_and_rotation() {
    let mut n = 0;
    for (model, native) in PANELS {
        for rotation in Rotation::ALL {
            n += 1;
            let (screen, payload) = pairing(260, 300 + n);
            let mut opts = SpiOptions::for_model(model, rotation);
            opts.native_size = native;
            let bus = FakeBus::new(model);
            let mut driver = bus.open_panel(&opts).expect("init");
            let (lw, lh) = rotation.logical_size(native);
            let mut presenter = Presenter::new(Renderer::new(lw.into(), lh.into(), UtcOffset::UTC));
            let shown = presenter
                .show(driver.as_mut(), &screen, common::t0())
                .expect("present");
            let frame = &shown.rendered.frame;
            let q = shown.rendered.qr.clone().expect("qr");
            let b = bus.lock();
            let label = format!(
                "{} {}x{} rot {}",
                model.name(),
                native.0,
                native.1,
                rotation.degrees()
            );
            assert_eq!(b.panel.premature_pixels, 0, "{label}: pixels before init");
            assert_eq!(b.panel.out_of_range, 0, "{label}: pixels outside memory");
            assert!(
                b.largest_write <= 4096,
                "{label}: write of {} bytes",
                b.largest_write
            );
            let glass = b.panel.glass(native, (0, 0));
            // Pixel-exact: logical (x, y) is at its rotated place on the glass.
            for y in 0..frame.height() {
                for x in 0..frame.width() {
                    let (gx, gy) = logical_to_glass(rotation, native, x, y);
                    assert_eq!(
                        glass.pixel(gx, gy),
                        frame.pixel(x, y),
                        "{label}: pixel ({x},{y}) -> glass ({gx},{gy})"
                    );
                }
            }
            // And the QR read from the glass (module-sampled through the rotation) decodes.
            let small = modules_of(&glass, &q, |x, y| logical_to_glass(rotation, native, x, y));
            assert_eq!(common::decode_frame(&small), vec![payload], "{label}");
        }
    }
}

#[test]
fn long_payload_too_big_for_screen_is_reported_not_panicked() {
    let qr = outlet_display::screen::Qr {
        payload: outlet_display::screen::QrPayload::new("x".repeat(1500)),
        ..common::qr(260, 9)
    };
    let r = Renderer::new(240, 240, UtcOffset::UTC)
        .render(&Screen::new(State::Pairing(qr)), common::t0());
    assert!(r.qr.is_none());
    assert_eq!(r.content.title, "Screen too small for QR");
    let qr = outlet_display::screen::Qr {
        payload: outlet_display::screen::QrPayload::new("x".repeat(5000)),
        ..common::qr(260, 9)
    };
    let r = Renderer::new(240, 240, UtcOffset::UTC)
        .render(&Screen::new(State::Pairing(qr)), common::t0());
    assert!(r.qr.is_none());
    assert_eq!(r.content.title, "QR code too long");
}
