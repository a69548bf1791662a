//! Every fault the server can inject gives the client event the protocol
//! implies. One test each; every test starts from a freshly linked device,
//! logged in by a client of its own (`linked_client`): the faults are about
//! a logged-in device, not the pairing before it.

mod common;

use std::time::Duration;

use common::*;
use fake_whatsapp::{Admission, FakeServer, LoginFailure, ServerEvent, StreamErrorKind};
use whatsapp_rust::types::events::Event;

/// Pairs a client, injects `fault`, and waits for the event `expected`
/// matches.
async fn fault_gives(fault: impl FnOnce(&FakeServer), what: &str, expected: fn(&Event) -> bool) {
    let server = server().await;
    let mut paired = linked_client(&server).await;
    fault(&server);
    paired
        .client
        .wait_for(what, |e| expected(e).then_some(()))
        .await;
    paired.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_replaced_gives_stream_replaced() {
    fault_gives(
        |server| assert_eq!(server.send_stream_error(StreamErrorKind::Replaced), 1),
        "StreamReplaced",
        |e| matches!(e, Event::StreamReplaced(_)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlinking_on_the_phone_logs_the_device_out_and_it_cannot_log_in_again() {
    let server = server().await;
    let Paired {
        mut client,
        store,
        jid,
    } = linked_client(&server).await;
    server.phone().unlink(&jid).expect("device is linked");
    let on_connect = client
        .wait_for("LoggedOut", |e| match e {
            Event::LoggedOut(l) => Some(l.on_connect),
            _ => None,
        })
        .await;
    assert!(!on_connect, "a live session is ended by a stream error");
    client.stop().await;

    // The same keys again: the server no longer knows the device (401).
    let mut events = server.subscribe();
    let mut again = start_client(&server, store).await;
    let on_connect = again
        .wait_for("LoggedOut at login", |e| match e {
            Event::LoggedOut(l) => Some(l.on_connect),
            _ => None,
        })
        .await;
    assert!(on_connect);
    server_event(&mut events, "the 401 refusal", |e| {
        matches!(e, ServerEvent::LoginRefused { reason: 401, .. })
    })
    .await;
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_error_401_device_removed_gives_logged_out() {
    fault_gives(
        |server| assert_eq!(server.send_stream_error(StreamErrorKind::DeviceRemoved), 1),
        "LoggedOut",
        |e| matches!(e, Event::LoggedOut(_)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_402_gives_a_temporary_ban_with_its_expiry() {
    let server = server().await;
    let mut paired = linked_client(&server).await;
    let until_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 3600;
    server.set_login_failure(Some(LoginFailure::TemporaryBan {
        code: 101,
        until_unix,
    }));
    server.drop_connections();
    let expire = paired
        .client
        .wait_for("TemporaryBan", |e| match e {
            Event::TemporaryBan(ban) => Some(ban.expire),
            _ => None,
        })
        .await;
    let secs = expire.num_seconds();
    assert!(
        (3590..=3600).contains(&secs),
        "ban lasts about an hour: {secs}s"
    );
    paired.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_405_gives_client_outdated() {
    fault_gives(
        |server| {
            server.set_login_failure(Some(LoginFailure::ClientOutdated));
            server.drop_connections();
        },
        "ClientOutdated",
        |e| matches!(e, Event::ClientOutdated(_)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_and_503_connections_are_reconnected_by_the_client() {
    let server = server().await;
    let mut paired = linked_client(&server).await;

    assert_eq!(server.drop_connections(), 1);
    paired
        .client
        .wait_for("Disconnected", |e| {
            matches!(e, Event::Disconnected(_)).then_some(())
        })
        .await;
    paired.client.connected().await;

    assert_eq!(server.send_stream_error(StreamErrorKind::Unavailable), 1);
    paired.client.connected().await;
    assert_eq!(server.stats().max_concurrent(), 1);
    paired.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_blackholed_and_closing_connections_are_retried_until_the_server_recovers() {
    let server = server().await;
    let mut paired = linked_client(&server).await;
    let mut events = server.subscribe();

    // Refuse: the client keeps trying.
    server.set_refuse(true);
    server.drop_connections();
    for _ in 0..2 {
        server_event(&mut events, "a refused attempt", |e| {
            matches!(
                e,
                ServerEvent::Accepted {
                    admission: Admission::Refused,
                    ..
                }
            )
        })
        .await;
    }
    // Blackhole: accepted, never answered.
    server.set_blackhole(true);
    server.set_refuse(false);
    server_event(&mut events, "a blackholed attempt", |e| {
        matches!(
            e,
            ServerEvent::Accepted {
                admission: Admission::Blackholed,
                ..
            }
        )
    })
    .await;
    // Close after two frames, and every frame slowed down.
    server.set_blackhole(false);
    server.set_close_after_frames(Some(2));
    server.set_delay(Some(Duration::from_millis(20)));
    server_event(
        &mut events,
        "a connection closed after 2 frames",
        |e| matches!(e, ServerEvent::Closed { reason, .. } if reason.contains("after N frames")),
    )
    .await;
    server.set_close_after_frames(None);
    server.set_delay(None);
    paired.client.connected().await;

    let stats = server.stats();
    assert_eq!(
        stats.max_concurrent(),
        1,
        "never two at once: {:?}",
        stats.devices
    );
    paired.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_on_the_same_credentials_read_two_on_the_concurrency_counter() {
    let server = server().await;
    let Paired {
        mut client,
        store,
        jid,
    } = linked_client(&server).await;

    // A second client on the same keys while the first is connected: the
    // mistake the old system made. The newer login replaces the older one.
    let mut second = start_client(&server, store).await;
    client
        .wait_for("StreamReplaced on the first client", |e| {
            matches!(e, Event::StreamReplaced(_)).then_some(())
        })
        .await;
    let stats = server.stats();
    assert!(
        stats.device(&jid).is_some_and(|d| d.stats.max >= 2),
        "{:?}",
        stats.devices
    );
    client.stop().await;
    second.stop().await;
}
