//! Transient failures: the agent reconnects by itself, with the backoff it
//! reports, and never holds two connections for its device.

mod common;

use common::*;
use fake_whatsapp::{Admission, FakeServer};

fn refused_attempt_times(server: &FakeServer) -> Vec<u64> {
    server
        .stats()
        .attempts
        .iter()
        .filter(|a| a.admission == Admission::Refused)
        .map(|a| a.at_ms)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_reconnected_and_refusals_follow_the_backoff() {
    let server = server().await;
    let mut agent = Agent::start(&server, &[("OUTLET_AGENT__RECONNECT__MAX_DELAY_SECS", "3")]);
    agent.pair(&server).await;

    // A network drop: back to connected, with the disconnect on record.
    server.drop_connections();
    let health = agent
        .wait_for("connected again after the drop", |h| {
            h["state"] == "connected" && h["last_disconnect"].is_object()
        })
        .await;
    assert_eq!(health["attempt"], 0);

    // The server refuses for a while: attempts follow the backoff.
    server.set_refuse(true);
    server.drop_connections();
    let deadline = std::time::Instant::now() + DEADLINE;
    while refused_attempt_times(&server).len() < 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "too few attempts\n{}",
            agent.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Between two attempts (during one, the state is `connecting`: a
    // single snapshot could land in either).
    let health = agent
        .wait_for("reconnecting after 6 refused attempts", |h| {
            h["state"] == "reconnecting" && h["attempt"].as_u64().unwrap_or(0) >= 6
        })
        .await;
    assert!(health["next_retry_at"].is_string(), "{health}");
    assert!(health["last_error"].is_string(), "{health}");
    server.set_refuse(false);
    agent.wait_state("connected").await;

    // Each wait doubles (±15 % jitter) until the 3 s cap, and stays there.
    // Overhead on a loaded machine only ever adds, so bounds below are tight
    // and bounds above are generous.
    let times = refused_attempt_times(&server);
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let cap = 3000u64;
    for pair in gaps.windows(2) {
        let (previous, gap) = (pair[0], pair[1]);
        let expected = (previous.min(cap) * 2).min(cap);
        assert!(
            gap * 100 >= expected * 70,
            "a wait shrank: {gap} ms after {previous} ms: {gaps:?}"
        );
    }
    assert!(
        gaps.iter().all(|g| *g <= cap * 115 / 100 + 1500),
        "capped: {gaps:?}"
    );
    assert!(
        gaps.iter().any(|g| *g >= cap * 85 / 100),
        "the cap is reached: {gaps:?}"
    );
    assert_eq!(
        server.stats().max_concurrent(),
        1,
        "{:?}",
        server.stats().devices
    );
}

/// A panic while handling a session (a bug in the agent or in a library
/// callback it runs) costs that session only: its connection is closed, a
/// new one follows, and there is never a second connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_session_costs_one_session_not_the_agent() {
    let server = server().await;
    let mut agent = Agent::start(
        &server,
        &[(outlet_agent::supervisor::PANIC_ONCE_ENV, "connected")],
    );
    // Pairing, then the first `Connected` panics in the supervisor.
    agent.wait_state("pairing").await;
    let qr = agent.qr_from_screen(None).await;
    server.phone().scan(&qr).await.expect("scan");
    // The panic comes before the state is set: `connected` can only be
    // the next session's.
    let recovered = agent.wait_state("connected").await;
    assert_eq!(recovered["phone"], "+6281234567890");
    let log = agent.log();
    assert!(
        log.contains("the session panicked; starting a new one"),
        "{log}"
    );
    let stats = server.stats();
    let logins = stats
        .attempts
        .iter()
        .filter(|a| a.purpose == Some(fake_whatsapp::Purpose::Login))
        .count();
    assert!(
        logins >= 2,
        "a new session after the panic: {:?}",
        stats.attempts
    );
    assert_eq!(stats.max_concurrent(), 1, "{:?}", stats.attempts);
    assert_eq!(agent.stop().await.code(), Some(0));
}
