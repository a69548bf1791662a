//! The account's presence as WhatsApp derives it from its companions'
//! `<presence>` announcements: a companion that says `available` keeps the
//! primary phone from being notified, so the agent must be able to see
//! what it announced. A plain whatsapp-rust client, real stanzas.

mod common;

use common::*;
use fake_whatsapp::ServerEvent;
use fake_whatsapp::control::handle_line;

/// Waits for `jid` to announce `presence`.
async fn announced(
    events: &mut tokio::sync::broadcast::Receiver<ServerEvent>,
    jid: &str,
    presence: &str,
) {
    server_event(events, &format!("{jid} announces {presence}"), |e| {
        matches!(e, ServerEvent::Presence { jid: j, presence: p, .. } if j == jid && p == presence)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reflects_what_each_companion_announced() {
    let server = server().await;
    let paired = linked_client(&server).await;
    let jid = paired.jid.clone();
    let client = paired.client.client.clone();

    // whatsapp-rust announces `available` by itself on every login with a
    // known push name: the very announcement that silences the outlet's
    // phone. It may have been recorded before this test could subscribe,
    // so the server's record is read until it shows.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let report = server.presence(None).expect("the account");
        if report.devices.get(&jid) == Some(&Some("available".into())) {
            assert_eq!(report.presence, "available", "{report:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client never announced itself: {report:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let mut events = server.subscribe();
    client
        .presence()
        .set_unavailable()
        .await
        .expect("client says unavailable");
    announced(&mut events, &jid, "unavailable").await;
    let report = server.presence(None).expect("the account");
    assert_eq!(report.presence, "unavailable", "{report:?}");
    assert_eq!(report.devices.get(&jid), Some(&Some("unavailable".into())));

    // The control port answers the same, for the account named by number
    // in any format; another number is not an account here.
    let phone = server.config().account.phone.clone();
    let reply = handle_line(&server, &format!("presence +{phone}")).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["presence"], "unavailable", "{reply}");
    assert_eq!(reply["devices"][&jid], "unavailable", "{reply}");
    let reply = handle_line(&server, "presence 6289999999999").await;
    assert_eq!(reply["ok"], false, "{reply}");

    client
        .presence()
        .set_available()
        .await
        .expect("client says available");
    announced(&mut events, &jid, "available").await;
    assert_eq!(
        server.presence(None).expect("the account").presence,
        "available"
    );

    // A companion that is not connected announces nothing: its last word
    // went with its connection.
    let mut client = paired.client;
    client.stop().await;
    wait_until(&server, "the client's connection closed", |s| {
        s.open_attempts() == 0
    })
    .await;
    let report = server.presence(None).expect("the account");
    assert_eq!(report.presence, "unavailable", "{report:?}");
    assert_eq!(report.devices.get(&jid), Some(&None), "{report:?}");
}
