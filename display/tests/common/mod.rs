//! Deterministic screens and helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outlet_display::frame::Frame;
use outlet_display::screen::{Mark, Qr, QrPayload, Screen, State};

/// 2026-11-23T08:00:00Z: every screen is rendered at a fixed instant.
pub fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_420_800)
}

pub fn at(secs: i64) -> SystemTime {
    if secs >= 0 {
        t0() + Duration::from_secs(secs as u64)
    } else {
        t0() - Duration::from_secs((-secs) as u64)
    }
}

/// Logical picture sizes: the four panel sizes plus the 320×480 panel turned sideways.
pub const SIZES: [(u32, u32); 5] = [(240, 240), (240, 320), (320, 240), (320, 480), (480, 320)];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_32(rng: &mut Rng) -> String {
    // 32 bytes encode to 43 base64 characters plus one '=' of padding.
    let mut s: String = (0..43)
        .map(|_| B64[(rng.next() % 64) as usize] as char)
        .collect();
    s.push('=');
    s
}

/// A WhatsApp-shaped QR string of exactly `len` characters:
/// `ref,b64(noise pub),b64(identity pub),b64(adv secret),client_type`.
pub fn payload(len: usize, seed: u64) -> String {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let keys = format!(
        "{},{},{},1",
        b64_32(&mut rng),
        b64_32(&mut rng),
        b64_32(&mut rng)
    );
    let ref_len = len.saturating_sub(keys.len() + 1).max(3);
    let mut r = String::from("2@");
    while r.len() < ref_len {
        r.push(B64[(rng.next() % 64) as usize] as char);
    }
    let p = format!("{r},{keys}");
    assert_eq!(p.len(), len, "payload length");
    p
}

/// QR number `seed` (1–6 of 6, cycling) with a payload derived from `seed`.
pub fn qr(len: usize, seed: u32) -> Qr {
    Qr {
        payload: QrPayload::new(payload(len, u64::from(seed))),
        index: seed.saturating_sub(1) % 6 + 1,
        count: 6,
        issued_at: at(-18),
        expires_at: at(42),
    }
}

/// Every state of DESIGN.md, plus the variants that stress the layout.
pub fn screens() -> Vec<(&'static str, Screen)> {
    use Mark::{Down, Unknown, Up};
    vec![
        (
            "starting",
            Screen::new(State::Starting {
                version: "0.1.0".into(),
            }),
        ),
        (
            "waiting_for_clock",
            Screen::new(State::WaitingForClock).with_marks(Up, Unknown),
        ),
        (
            "connecting",
            Screen::new(State::Connecting { attempt: 3 }).with_marks(Up, Up),
        ),
        (
            "pairing",
            Screen::new(State::Pairing(qr(260, 1))).with_marks(Up, Up),
        ),
        (
            "pairing_code",
            Screen::new(State::PairingCode {
                code: "K7QP2M9X".into(),
                expires_at: Some(at(160)),
            })
            .with_marks(Up, Up),
        ),
        (
            "pairing_idle",
            Screen::new(State::PairingIdle {
                next_round_at: Some(at(252)),
            })
            .with_marks(Up, Up),
        ),
        (
            "connected",
            Screen::new(State::Connected {
                outlet_name: "Toko Sinar Jaya".into(),
                phone: "+62 812-3456-7890".into(),
                since: at(-3 * 3600 - 25 * 60),
                last_message_at: Some(at(-2 * 60 - 10)),
            })
            .with_marks(Up, Up),
        ),
        (
            "connected_long_name",
            Screen::new(State::Connected {
                outlet_name: "Apotek Sehat Sentosa Jakarta Selatan Kemang Raya Nomor 12B".into(),
                phone: "+62 812-3456-7890".into(),
                since: at(-26 * 3600),
                last_message_at: None,
            })
            .with_marks(Up, Down),
        ),
        (
            "reconnecting",
            Screen::new(State::Reconnecting {
                reason: "Server closed the connection".into(),
                attempt: 4,
                next_retry_at: at(12),
            })
            .with_marks(Down, Down),
        ),
        (
            "logged_out",
            Screen::new(State::LoggedOut { qr: None }).with_marks(Up, Up),
        ),
        (
            "logged_out_qr",
            Screen::new(State::LoggedOut {
                qr: Some(qr(240, 2)),
            })
            .with_marks(Up, Up),
        ),
        (
            "replaced",
            Screen::new(State::Replaced {
                retry_at: Some(at(280)),
            })
            .with_marks(Up, Up),
        ),
        (
            "banned",
            Screen::new(State::Banned {
                code: Some(402),
                until: Some(at(6 * 3600)),
            })
            .with_marks(Up, Up),
        ),
        ("outdated", Screen::new(State::Outdated).with_marks(Up, Up)),
        (
            "paused",
            Screen::new(State::Paused).with_marks(Up, Mark::Hidden),
        ),
        (
            "fault",
            Screen::new(State::Fault {
                what: "Disk full: /var/lib/outlet-agent has 0 bytes free".into(),
                action: "Call HQ support to replace the SD card".into(),
            })
            .with_marks(Up, Down),
        ),
    ]
}

/// Decodes every QR in a greyscale image; returns the decoded strings.
pub fn decode_all(w: usize, h: usize, luma: impl Fn(usize, usize) -> u8) -> Vec<String> {
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, luma);
    img.detect_grids()
        .into_iter()
        .filter_map(|g| g.decode().ok().map(|(_, s)| s))
        .collect()
}

/// Decodes the QR of a frame at full resolution.
pub fn decode_frame(frame: &Frame) -> Vec<String> {
    decode_all(frame.width() as usize, frame.height() as usize, |x, y| {
        frame.luma(x as u32, y as u32)
    })
}
