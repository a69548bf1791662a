//! A Pi without a real-time clock boots at a stale time: the agent must wait
//! in `waiting_for_clock` without touching WhatsApp, and start on its own
//! once the clock is right.
//!
//! The agent's wall clock is moved with libfaketime (Debian's `faketime`
//! package), whose time can be changed while the process runs; the monotonic
//! clock the agent's timers use is left alone.

mod common;

use std::path::PathBuf;

use common::*;

/// Debian's libfaketime, the variant for multi-threaded programs, under
/// the machine's multiarch directory (`x86_64-linux-gnu`,
/// `aarch64-linux-gnu`, `arm-linux-gnueabihf`, …).
fn libfaketime() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib").ok().and_then(|dirs| {
        dirs.flatten()
            .map(|dir| dir.path().join("faketime/libfaketimeMT.so.1"))
            .find(|path| path.exists())
    });
    found
        .expect("libfaketimeMT.so.1 is missing: install Debian's faketime package (tests/run does)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_before_the_build_waits_without_connecting_then_pairs_once_it_is_set() {
    let server = server().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let fake_time = dir.path().join("faketime");
    // A Pi back from a power cut with no network time yet.
    std::fs::write(&fake_time, "@2020-06-01 12:00:00").expect("write fake time");
    let preload = libfaketime().display().to_string();
    let fake_time_file = fake_time.display().to_string();
    let mut agent = Agent::start(
        &server,
        &[
            ("OUTLET_AGENT__CLOCK__CHECK", "build_date"),
            ("LD_PRELOAD", &preload),
            ("FAKETIME_TIMESTAMP_FILE", &fake_time_file),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            // libfaketime reads the time above as local time.
            ("TZ", "UTC"),
        ],
    );

    let agent_png = agent.png();
    let waiting = agent.wait_state("waiting_for_clock").await;
    assert!(
        waiting["since"]
            .as_str()
            .is_some_and(|t| t.starts_with("2020-")),
        "the agent runs on the stale clock: {waiting}"
    );
    // It stays alive and reports while it waits: its health is renewed...
    let first_valid_until = waiting["valid_until"].clone();
    let renewed = agent
        .wait_for("the health to be renewed while waiting", |h| {
            h["valid_until"] != first_valid_until
        })
        .await;
    assert_eq!(renewed["state"], "waiting_for_clock", "{renewed}");
    // ...the screen says so rather than showing a QR...
    agent
        .wait_for("the screen to be drawn", |_| agent_png.exists())
        .await;
    assert!(fake_whatsapp::phone::decode_qr_png(&agent_png).is_err());
    // ...and WhatsApp has not been asked anything on a clock TLS would reject.
    assert!(
        server.stats().attempts.is_empty(),
        "no connection while the clock is wrong: {:?}",
        server.stats().attempts
    );

    // Network time arrives.
    // Replaced whole, so libfaketime never reads a half-written file.
    let next = dir.path().join("faketime.next");
    std::fs::write(&next, "+0").expect("write fake time");
    std::fs::rename(&next, &fake_time).expect("set fake time");
    let pairing = agent.wait_state("pairing").await;
    assert!(
        pairing["since"]
            .as_str()
            .is_some_and(|t| !t.starts_with("2020-")),
        "{pairing}"
    );
    let connected = agent.pair(&server).await;
    assert!(connected["phone"].is_string(), "{connected}");
    assert_eq!(server.stats().max_concurrent(), 1);
}
