//! The terminal driver: the half-block QR scans, and a countdown tick rewrites one line.

mod common;

use std::time::Duration;

use outlet_display::config::UtcOffset;
use outlet_display::driver::terminal::TerminalDriver;
use outlet_display::present::Presenter;
use outlet_display::render::Renderer;
use outlet_display::screen::{Screen, State};

/// Turns half-block text back into modules and decodes it.
fn decode_half_blocks(lines: &[&str]) -> Vec<String> {
    let w = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let h = lines.len() * 2;
    let dark = |x: usize, y: usize| {
        let c = lines[y / 2].chars().nth(x).unwrap_or(' ');
        matches!((c, y % 2), ('█', _) | ('▀', 0) | ('▄', 1))
    };
    // 4×4 pixels per module so the finder search has something to work with.
    let s = 4;
    common::decode_all(
        w * s,
        h * s,
        |x, y| if dark(x / s, y / s) { 0 } else { 255 },
    )
}

#[test]
fn plain_output_has_a_scannable_qr_and_the_status_text() {
    let qr = common::qr(260, 11);
    let payload = qr.payload.expose().to_string();
    let screen = Screen::new(State::Pairing(qr));
    let mut p = Presenter::new(Renderer::new(240, 320, UtcOffset::UTC));
    let mut t = TerminalDriver::new(Vec::new(), false);
    p.show(&mut t, &screen, common::t0()).expect("print");
    let out = String::from_utf8(t.get_ref().clone()).expect("utf8");
    assert!(out.starts_with("Scan with WhatsApp\nQR 5 of 6\n"), "{out}");
    assert!(
        out.contains("Expires in 0:42  [##############......]"),
        "{out}"
    );
    assert!(
        out.contains("WhatsApp > Linked devices > Link a device"),
        "{out}"
    );
    assert!(!out.contains('\u{a0}'));
    let qr_lines: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.contains('█')
                || l.contains('▀')
                || l.contains('▄')
                || (l.len() > 60 && l.trim().is_empty())
        })
        .collect();
    assert_eq!(decode_half_blocks(&qr_lines), vec![payload]);
}

#[test]
fn ansi_tick_rewrites_only_the_countdown_line() {
    let screen = Screen::new(State::Pairing(common::qr(260, 12)));
    let mut p = Presenter::new(Renderer::new(240, 320, UtcOffset::UTC));
    let mut t = TerminalDriver::new(Vec::new(), true);
    p.show(&mut t, &screen, common::t0()).expect("print");
    let first = t.get_ref().len();
    p.show(&mut t, &screen, common::t0() + Duration::from_secs(1))
        .expect("tick");
    let tick = String::from_utf8(t.get_ref()[first..].to_vec()).expect("utf8");
    assert_eq!(
        tick.matches("\x1b[").count(),
        3,
        "position + clear + park: {tick:?}"
    );
    assert!(tick.contains("Expires in 0:41"), "{tick:?}");
    assert!(!tick.contains('█'), "QR resent on a tick");
}
