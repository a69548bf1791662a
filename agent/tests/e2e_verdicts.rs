//! The server's verdicts each get their own handling: unlinked, replaced,
//! banned, outdated.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use fake_whatsapp::{FakeServer, LoginFailure, Purpose, StreamErrorKind};

fn logins(server: &FakeServer) -> usize {
    server
        .stats()
        .attempts
        .iter()
        .filter(|a| a.purpose == Some(Purpose::Login))
        .count()
}

/// The device key of the newest registration (a connection asking for QR
/// codes).
fn last_registration_key(server: &FakeServer) -> Option<fake_whatsapp::DeviceKey> {
    server
        .stats()
        .attempts
        .iter()
        .rev()
        .find(|a| a.purpose == Some(Purpose::Registration))
        .expect("a registration")
        .device
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlinked_on_the_phone_wipes_the_keys_and_shows_a_new_qr() {
    let server = server().await;
    let mut agent = Agent::start(&server, &[]);
    agent.pair(&server).await;
    let jid = server.phone().linked_devices().pop().expect("linked");
    let old_key = server.stats().device(&jid).expect("known").device;

    server.phone().unlink(&jid).expect("unlink");
    let health = agent
        .wait_for("logged_out with a new QR", |h| {
            h["state"] == "logged_out" && h["qr"].is_object()
        })
        .await;
    assert_eq!(
        health["phone"], "+6281234567890",
        "the dashboard still sees which number"
    );

    // The keys are gone: the new registration comes from a new device key.
    assert_ne!(
        last_registration_key(&server),
        Some(old_key),
        "new keys after the wipe"
    );

    // And linking again works.
    let qr = agent.qr_from_screen(None).await;
    server.phone().scan(&qr).await.expect("scan again");
    agent.wait_state("connected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_while_offline_wipes_the_keys_and_pairs_anew_once_back() {
    let server = server().await;
    // Slow retries (1 s, 2 s, 4 s…), so the logout lands while the agent
    // waits between them (4 s from the third on) rather than during a
    // (millisecond) refused attempt.
    let mut agent = Agent::start(
        &server,
        &[("OUTLET_AGENT__RECONNECT__FIRST_DELAY_MS", "1000")],
    );
    agent.pair(&server).await;
    let jid = server.phone().linked_devices().pop().expect("linked");
    let old_key = server.stats().device(&jid).expect("known").device;

    server.set_refuse(true);
    server.drop_connections();
    agent
        .wait_for("the third wait between refused attempts", |h| {
            h["state"] == "reconnecting" && h["attempt"].as_u64() >= Some(3)
        })
        .await;
    let reply = agent
        .request(serde_json::json!({"command": "logout", "confirm": true}))
        .await
        .expect("answers");
    assert_eq!(reply["status"], "ok", "{reply}");
    assert!(
        reply["data"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("no connection")),
        "the caller learns the phone was not told: {reply}"
    );

    server.set_refuse(false);
    agent
        .wait_for("a new QR after the offline logout", |h| {
            h["state"] == "logged_out" && h["qr"].is_object()
        })
        .await;
    assert_ne!(
        last_registration_key(&server),
        Some(old_key),
        "new keys after the wipe"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_waits_a_cool_down_before_its_one_retry() {
    let server = server().await;
    let mut agent = Agent::start(
        &server,
        &[("OUTLET_AGENT__PAIRING__REPLACED_COOLDOWN_SECS", "3")],
    );
    agent.pair(&server).await;
    let before = logins(&server);

    server.send_stream_error(StreamErrorKind::Replaced);
    let health = agent.wait_state("replaced").await;
    assert!(health["next_retry_at"].is_string());
    let replaced_at = std::time::Instant::now();
    agent.wait_state("connected").await;
    assert!(
        replaced_at.elapsed() >= Duration::from_millis(2500),
        "retried before the cool-down: {:?}",
        replaced_at.elapsed()
    );
    assert_eq!(
        logins(&server),
        before + 1,
        "exactly one attempt after the cool-down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_ban_is_waited_out_then_the_agent_reconnects() {
    let server = server().await;
    let mut agent = Agent::start(&server, &[]);
    agent.pair(&server).await;

    let until = unix_now() + 4;
    server.set_login_failure(Some(LoginFailure::TemporaryBan {
        code: 101,
        until_unix: until,
    }));
    server.drop_connections();
    let health = agent.wait_state("banned").await;
    assert!(health["banned_until"].is_string(), "{health}");
    let refused = logins(&server);
    agent.wait_state("connected").await;
    assert!(unix_now() >= until, "reconnected before the ban ended");
    assert_eq!(logins(&server), refused + 1, "no attempts during the ban");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outdated_client_is_reported_and_retried_slowly() {
    let server = server().await;
    let mut agent = Agent::start(
        &server,
        &[("OUTLET_AGENT__PAIRING__OUTDATED_RETRY_SECS", "2")],
    );
    agent.pair(&server).await;

    server.set_login_failure(Some(LoginFailure::ClientOutdated));
    server.drop_connections();
    let health = agent.wait_state("outdated").await;
    assert!(health["next_retry_at"].is_string());
    server.set_login_failure(None);
    agent.wait_state("connected").await;
    assert_eq!(server.stats().max_concurrent(), 1);
}
