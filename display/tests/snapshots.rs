//! Every screen at every size, compared pixel for pixel with the PNGs under `docs/screens/`.
//!
//! `UPDATE_SNAPSHOTS=1 cargo test -p outlet-display --test snapshots` rewrites them after an
//! intended change; review the images before committing.

mod common;

use std::path::PathBuf;

use embedded_graphics::pixelcolor::Rgb565;
use outlet_display::config::UtcOffset;
use outlet_display::driver::png::{decode_png, encode_png, encode_png_small};
use outlet_display::frame::Frame;
use outlet_display::render::Renderer;

fn snapshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screens")
}

#[test]
fn every_screen_at_every_size_matches_its_snapshot() {
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for (w, h) in common::SIZES {
        let dir = snapshot_dir().join(format!("{w}x{h}"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let mut renderer = Renderer::new(w, h, UtcOffset::from_minutes(7 * 60));
        let mut sheet: Vec<Frame> = Vec::new();
        for (name, screen) in common::screens() {
            let rendered = renderer.render(&screen, common::t0());
            sheet.push(rendered.frame.clone());
            let path = dir.join(format!("{name}.png"));
            if update {
                std::fs::write(&path, encode_png_small(&rendered.frame).unwrap()).unwrap();
                continue;
            }
            let expected = match std::fs::read(&path) {
                Ok(bytes) => decode_png(&bytes).unwrap(),
                Err(e) => {
                    failures.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let changed = rendered.frame.diff(&expected);
            if !changed.is_empty() {
                let actual =
                    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{w}x{h}-{name}.png"));
                std::fs::write(&actual, encode_png(&rendered.frame).unwrap()).unwrap();
                failures.push(format!(
                    "{}: differs in {changed:?}; actual written to {}",
                    path.display(),
                    actual.display()
                ));
            }
        }
        // A contact sheet per size makes reviewing a layout change one glance per size.
        if let Some(dir) = std::env::var_os("SNAPSHOT_SHEET_DIR") {
            let path = PathBuf::from(dir).join(format!("sheet-{w}x{h}.png"));
            std::fs::write(path, encode_png(&contact_sheet(&sheet, 4)).unwrap()).unwrap();
        }
    }
    assert!(
        failures.is_empty(),
        "{} snapshot(s) differ (run with UPDATE_SNAPSHOTS=1 if intended):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// "No clipped text at any size": every text box lies inside the frame, no two overlap, and
/// none touches the QR (its quiet zone included).
#[test]
fn text_stays_inside_the_screen_and_off_the_qr() {
    for (w, h) in common::SIZES {
        let mut renderer = Renderer::new(w, h, UtcOffset::UTC);
        for (name, screen) in common::screens() {
            let r = renderer.render(&screen, common::t0());
            let bounds = r.frame.bounds();
            for (i, b) in r.text_boxes.iter().enumerate() {
                assert!(
                    bounds.intersection(b) == *b,
                    "{w}x{h} {name}: text box {b:?} leaves the screen"
                );
                for other in &r.text_boxes[i + 1..] {
                    assert!(
                        b.intersection(other).is_zero_sized(),
                        "{w}x{h} {name}: text boxes {b:?} and {other:?} overlap"
                    );
                }
                if let Some(q) = &r.qr {
                    assert!(
                        q.rect.intersection(b).is_zero_sized(),
                        "{w}x{h} {name}: text {b:?} inside the QR area {:?}",
                        q.rect
                    );
                }
            }
            if let Some(q) = &r.qr {
                assert!(
                    bounds.intersection(&q.rect) == q.rect,
                    "{w}x{h} {name}: QR leaves the screen"
                );
            }
            assert!(!r.text_boxes.is_empty(), "{w}x{h} {name}: no text");
        }
    }
}

fn contact_sheet(frames: &[Frame], cols: u32) -> Frame {
    let (w, h) = (frames[0].width(), frames[0].height());
    let rows = (frames.len() as u32).div_ceil(cols);
    let gap = 6;
    let mut sheet = Frame::new(
        cols * (w + gap) + gap,
        rows * (h + gap) + gap,
        Rgb565::new(16, 32, 16),
    );
    for (i, f) in frames.iter().enumerate() {
        let (cx, cy) = (i as u32 % cols, i as u32 / cols);
        let (ox, oy) = (gap + cx * (w + gap), gap + cy * (h + gap));
        for y in 0..h {
            for x in 0..w {
                sheet.set_pixel(ox + x, oy + y, f.pixel(x, y));
            }
        }
    }
    sheet
}

/// Odd sizes (a misconfigured panel) degrade, they never panic.
#[test]
fn odd_sizes_never_panic() {
    for (w, h) in [
        (1, 1),
        (40, 40),
        (100, 400),
        (400, 100),
        (200, 200),
        (135, 240),
    ] {
        let mut renderer = Renderer::new(w, h, UtcOffset::UTC);
        for (_, screen) in common::screens() {
            let r = renderer.render(&screen, common::t0());
            assert_eq!((r.frame.width(), r.frame.height()), (w, h));
        }
    }
}
