//! The outlet's phone keeps ringing: WhatsApp stops notifying the primary
//! phone while a companion says `available`, and whatsapp-rust says so at
//! every login. The agent announces `unavailable` after every connect —
//! the first, after a dropped connection, after a restart — unless
//! `whatsapp.presence = "available"`. The fake server records what each
//! companion announced.

mod common;

use std::time::Duration;

use common::*;
use fake_whatsapp::{FakeServer, ServerEvent};

/// Waits until the account's one connected companion has announced `want`
/// on its current connection.
async fn presence_becomes(server: &FakeServer, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let report = server.presence(None).expect("the account");
        if report.presence == want
            && !report.devices.is_empty()
            && report.devices.values().all(|p| p.as_deref() == Some(want))
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the account's presence never became {want}: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The last presence each connection announced, from the server's events.
fn last_presence_per_connection(events: &[ServerEvent]) -> Vec<String> {
    let mut last: std::collections::BTreeMap<u64, String> = Default::default();
    for event in events {
        if let ServerEvent::Presence {
            connection,
            presence,
            ..
        } = event
        {
            last.insert(connection.0, presence.clone());
        }
    }
    last.into_values().collect()
}

fn drain(events: &mut tokio::sync::broadcast::Receiver<ServerEvent>, into: &mut Vec<ServerEvent>) {
    while let Ok(event) = events.try_recv() {
        into.push(event);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_stays_unavailable_after_every_connect() {
    let server = server().await;
    let mut events = server.subscribe();
    let mut seen = Vec::new();
    let mut agent = Agent::start(&server, &[]);

    agent.pair(&server).await;
    presence_becomes(&server, "unavailable").await;

    // The server drops the connection; the agent reconnects by itself.
    server.drop_connections();
    agent.wait_state("reconnecting").await;
    agent.wait_state("connected").await;
    presence_becomes(&server, "unavailable").await;
    drain(&mut events, &mut seen);

    // A restart from the saved keys.
    assert!(agent.stop().await.success());
    agent.spawn();
    agent.wait_state("connected").await;
    presence_becomes(&server, "unavailable").await;
    drain(&mut events, &mut seen);

    // Nothing later said otherwise on any of the three connections. (Sends,
    // receipts and customers' messages while unavailable are the message
    // tests' business: they run with this default.)
    assert!(agent.stop().await.success());
    drain(&mut events, &mut seen);

    let last = last_presence_per_connection(&seen);
    assert!(last.len() >= 2, "{seen:?}");
    assert!(
        last.iter().all(|p| p == "unavailable"),
        "a connection ended available: {last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_available_is_kept_when_configured() {
    let server = server().await;
    let mut agent = Agent::start(
        &server,
        &[("OUTLET_AGENT__WHATSAPP__PRESENCE", "available")],
    );
    agent.pair(&server).await;
    presence_becomes(&server, "available").await;
    server.drop_connections();
    agent.wait_state("reconnecting").await;
    agent.wait_state("connected").await;
    presence_becomes(&server, "available").await;
    assert!(agent.stop().await.success());
}
