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
use outlet_display::lang::{self, Strings};
use outlet_display::render::Renderer;

fn snapshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screens")
}

/// Where a language's snapshots live: English at `docs/screens/<size>/`,
/// every other language at `docs/screens/<code>/<size>/`.
fn language_dir(code: &str) -> PathBuf {
    if code == "en" {
        snapshot_dir()
    } else {
        snapshot_dir().join(code)
    }
}

fn languages() -> Vec<(&'static str, &'static Strings)> {
    lang::codes()
        .into_iter()
        .map(|c| (c, lang::lookup(c).expect("listed")))
        .collect()
}

#[test]
fn every_screen_at_every_size_matches_its_snapshot() {
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for (code, t) in languages() {
        for (w, h) in common::SIZES {
            let dir = language_dir(code).join(format!("{w}x{h}"));
            if update {
                std::fs::create_dir_all(&dir).unwrap();
            }
            let mut renderer =
                Renderer::new(w, h, UtcOffset::from_minutes(7 * 60)).with_language(t);
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
                    let actual = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                        .join(format!("{code}-{w}x{h}-{name}.png"));
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
                let path = PathBuf::from(dir).join(format!("sheet-{code}-{w}x{h}.png"));
                std::fs::write(path, encode_png(&contact_sheet(&sheet, 4)).unwrap()).unwrap();
            }
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
    for (code, t) in languages() {
        for (w, h) in common::SIZES {
            let mut renderer = Renderer::new(w, h, UtcOffset::UTC).with_language(t);
            for (name, screen) in common::screens() {
                let r = renderer.render(&screen, common::t0());
                let name = format!("{code} {name}");
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
}

/// "No word is clipped" in any language at any size: nothing of our own
/// words is cut short with an ellipsis, and no word is broken across lines
/// (every word drawn is a whole word of the screen's text). Only the
/// outlet's name, which HQ chooses, may be shortened.
#[test]
fn every_word_of_every_screen_fits_in_every_language_and_size() {
    let mut problems = Vec::new();
    for (code, t) in languages() {
        for (w, h) in common::SIZES {
            let mut renderer =
                Renderer::new(w, h, UtcOffset::from_minutes(7 * 60)).with_language(t);
            for (name, screen) in common::screens().into_iter().chain(agent_words(t)) {
                let r = renderer.render(&screen, common::t0());
                let c = &r.content;
                let mut sources: Vec<String> = vec![c.title.clone(), "NET".into(), "MQTT".into()];
                sources.extend(c.body.iter().cloned());
                sources.extend(c.hint.map(str::to_string));
                sources.push(t.scan_hint.clone());
                sources.push(t.scan_hint_short.clone());
                if let Some(cd) = &c.countdown {
                    sources.push(format!("{} {}", cd.label, cd.text()));
                }
                if let Some(q) = &c.qr {
                    sources.push(outlet_display::content::code_number(q.index, q.count, t));
                    // Small screens show the number as "2/6".
                    sources.push(format!("{}/{}", q.index, q.count));
                }
                let headline = c
                    .headline
                    .as_ref()
                    .map(|(h, _)| h.clone())
                    .unwrap_or_default();
                sources.push(headline.clone());
                // A link code is drawn in its two halves.
                sources.extend(headline.split('-').map(str::to_string));
                let words: std::collections::HashSet<String> = sources
                    .iter()
                    .flat_map(|s| {
                        s.split([' ', '\u{a0}'])
                            .map(str::to_string)
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let outlet_name = name.starts_with("connected");
                for (line, cut) in &r.lines {
                    let of_the_name = outlet_name && headline.contains(line.as_str());
                    if *cut && !of_the_name {
                        problems.push(format!("{code} {w}x{h} {name}: {line:?} is cut short"));
                    }
                    for word in line.split(' ').filter(|w| !w.is_empty()) {
                        // A path (the data directory) is data, and may be longer
                        // than any line: it breaks where it must.
                        let of_a_path = words.iter().any(|s| s.contains('/') && s.contains(word));
                        if !words.contains(word) && !of_the_name && !of_a_path {
                            problems.push(format!(
                                "{code} {w}x{h} {name}: {word:?} of {line:?} is a broken word"
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
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

/// The screens whose words the agent supplies in the outlet's language (a
/// full disk), as it fills them in.
fn agent_words(t: &Strings) -> Vec<(&'static str, outlet_display::Screen)> {
    use outlet_display::{Screen, State};
    vec![
        (
            "fault_disk_full",
            Screen::new(State::Fault {
                what: lang::fill(
                    &t.fault_disk_full,
                    &[("dir", "/var/lib/outlet-agent"), ("free", "0 B")],
                ),
                action: t.fault_disk_full_advice.clone(),
            }),
        ),
        (
            "fault_store",
            Screen::new(State::Fault {
                what: t.fault_store.clone(),
                action: t.fault_store_advice.clone(),
            }),
        ),
    ]
}
