//! A full disk is a local fault, said in words, not a connection problem:
//! the agent stops connecting, says which directory is full and how much is
//! free, checks for room less and less often, and carries on by itself —
//! still linked — once there is room again.
//!
//! The data directory is a small tmpfs of its own (see
//! `Agent::start_on_small_disk`), filled for real by the test. (It lives as
//! long as the agent's mount namespace, so restarts are tested elsewhere.)

mod common;

use std::io::Write;

use common::*;
use serde_json::Value;

const DISK: u64 = 16 * 1024 * 1024;

/// Writes `path` until the filesystem refuses: ENOSPC, for real.
fn fill(path: &std::path::Path) {
    let mut file = std::fs::File::create(path).expect("filler file");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // The last partial chunk may leave a few bytes: take them too.
    let byte = [0u8; 1];
    while file.write(&byte).is_ok_and(|n| n == 1) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_fault_in_words_and_the_agent_recovers_when_space_returns() {
    let server = server().await;
    let mut agent = Agent::start_on_small_disk(&server, DISK);
    let linked = agent.pair(&server).await;
    let filler = agent.data_dir().join("filler");

    fill(&filler);
    // The connection drops; what follows needs the store.
    server.drop_connections();
    let fault = agent
        .wait_for("the disk-full fault", |h| {
            h["state"] == "fault" && h["fault"]["kind"] == "disk_full"
        })
        .await;
    let data_dir = agent.dir.join("data").display().to_string();
    let what = fault["fault"]["what"].as_str().expect("what");
    assert!(what.contains("disk is full"), "{fault:#}");
    assert!(what.contains(&data_dir), "names the directory: {fault:#}");
    assert!(what.contains("free"), "says how much is free: {fault:#}");
    assert!(fault["fault"]["free_bytes"].is_u64(), "{fault:#}");
    assert!(
        fault["fault"]["action"]
            .as_str()
            .is_some_and(|a| a.contains("Free space")),
        "{fault:#}"
    );
    assert!(agent.log().contains("the disk is full"), "logged");

    // No WhatsApp connection while the disk is full, and the checks for
    // room come less and less often.
    let attempts = server.stats().attempts.len();
    let mut checks: Vec<chrono::DateTime<chrono::Utc>> = Vec::new();
    while checks.len() < 3 {
        let health = agent
            .wait_for("the next check for room", |h| {
                h["state"] == "fault"
                    && parse_time(&h["next_retry_at"]).is_some_and(|t| checks.last() != Some(&t))
            })
            .await;
        checks.extend(parse_time(&health["next_retry_at"]));
    }
    let gaps: Vec<i64> = checks
        .windows(2)
        .map(|w| (w[1] - w[0]).num_milliseconds())
        .collect();
    assert!(gaps[1] > gaps[0], "checks slow down: {checks:?}");
    assert_eq!(
        server.stats().attempts.len(),
        attempts,
        "no connection while the disk is full"
    );
    assert_eq!(agent.wait_state("fault").await["phone"], linked["phone"]);

    // Room again: connected with the same keys, no new pairing.
    let before = registrations(&server);
    std::fs::remove_file(&filler).expect("free the disk");
    let connected = agent.wait_state("connected").await;
    assert_eq!(connected["phone"], linked["phone"]);
    assert!(connected["fault"].is_null(), "{connected:#}");
    assert_eq!(registrations(&server), before, "no new QR was needed");
    assert_eq!(server.stats().max_concurrent(), 1);
}

fn parse_time(value: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    value
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}
