//! Linking a plain whatsapp-rust client by code ("link with phone number
//! instead") through the fake server and the simulated phone.

mod common;

use std::time::Duration;

use common::*;
use fake_whatsapp::{FakeServer, LinkCodeError, Purpose, ServerConfig, ServerEvent};
use whatsapp_rust::pair_code::{PairCodeOptions, PairCodeRejection};
use whatsapp_rust::types::events::Event;

/// Asks the client for a code once its registration connection is up (the
/// first QR says so).
async fn request_code(client: &mut TestClient, phone: &str) -> Result<String, String> {
    client.next_qr().await;
    let options = PairCodeOptions {
        phone_number: phone.to_string(),
        ..Default::default()
    };
    client
        .client
        .pair_with_code(options)
        .await
        .map_err(|e| format!("{e} ({:?})", e.rejection()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_links_by_code_then_connects() {
    let server = server().await;
    let mut events = server.subscribe();
    let mut client = start_client(&server, memory_store()).await;
    let phone = server.config().account.phone.clone();

    let code = request_code(&mut client, &phone).await.expect("a code");
    assert_eq!(code.len(), 8, "{code}");
    server_event(&mut events, "companion_hello", |e| {
        matches!(e, ServerEvent::LinkCodeRequested { .. })
    })
    .await;

    // Typed as a person would read it off a screen: lower case, dashed.
    let typed = format!("{}-{}", &code[..4], &code[4..]).to_lowercase();
    let paired = server.phone().enter_code(&typed).await.expect("links");
    let jid = client
        .wait_for("PairSuccess", |e| match e {
            Event::PairSuccess(p) => Some(p.id.to_string()),
            _ => None,
        })
        .await;
    assert_eq!(jid, paired.jid);
    assert!(jid.starts_with(&phone), "{jid}");
    client.connected().await;

    let stats = server.stats();
    let registrations = stats
        .attempts
        .iter()
        .filter(|a| a.purpose == Some(Purpose::Registration))
        .count();
    assert_eq!(registrations, 1, "{:?}", stats.attempts);
    // Two at most: after the 515 a plain whatsapp-rust client can hold its
    // registration and its login (or two logins) for a moment, as in the
    // QR pairing test (pairing.rs says why). Seen once in a full suite run
    // on a loaded machine. The agent's own link-by-code tests hold it to one.
    assert!(stats.max_concurrent() <= 2, "{:?}", stats.attempts);
    assert_eq!(server.phone().linked_devices(), vec![paired.jid]);
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_code_links_nothing_and_the_right_one_still_works() {
    let server = server().await;
    let mut client = start_client(&server, memory_store()).await;
    let phone = server.config().account.phone.clone();
    let code = request_code(&mut client, &phone).await.expect("a code");

    // Same alphabet, one character off.
    let mut wrong: Vec<char> = code.chars().collect();
    wrong[0] = if wrong[0] == 'A' { 'B' } else { 'A' };
    let wrong: String = wrong.into_iter().collect();
    match server.phone().enter_code(&wrong).await {
        Err(LinkCodeError::Rejected(why)) => assert!(why.contains("code"), "{why}"),
        other => panic!("a wrong code must not link: {other:?}"),
    }
    assert!(server.phone().linked_devices().is_empty());

    let paired = server.phone().enter_code(&code).await.expect("links");
    client.connected().await;
    assert_eq!(server.phone().linked_devices(), vec![paired.jid]);
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_for_other_numbers_are_refused_by_the_server() {
    let server = server().await;
    let mut client = start_client(&server, memory_store()).await;
    let error = request_code(&mut client, "6289999999999")
        .await
        .expect_err("not this account's number");
    assert!(
        error.contains(&format!("{:?}", Some(PairCodeRejection::BadRequest))),
        "{error}"
    );
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_refuses_codes_nobody_asked_for_or_that_expired() {
    init_logs();
    let server = FakeServer::start(ServerConfig {
        link_code_lifetime: Duration::ZERO,
        ..ServerConfig::default()
    })
    .await
    .expect("server starts");
    assert_eq!(
        server.phone().enter_code("ABCD1234").await,
        Err(LinkCodeError::NoRequest)
    );
    assert!(matches!(
        server.phone().enter_code("not a code").await,
        Err(LinkCodeError::Malformed(_))
    ));

    let mut client = start_client(&server, memory_store()).await;
    let phone = server.config().account.phone.clone();
    let code = request_code(&mut client, &phone).await.expect("a code");
    assert_eq!(
        server.phone().enter_code(&code).await,
        Err(LinkCodeError::Expired)
    );
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_code_is_refreshed_on_the_device_and_refused_by_the_phone() {
    let server = server().await;
    let mut client = start_client(&server, memory_store()).await;
    let phone = server.config().account.phone.clone();
    let code = request_code(&mut client, &phone).await.expect("a code");

    assert!(server.refresh_link_code());
    let force_manual = client
        .wait_for("PairingCodeRefresh", |e| match e {
            Event::PairingCodeRefresh(r) => Some(r.force_manual),
            _ => None,
        })
        .await;
    assert!(force_manual);
    assert_eq!(
        server.phone().enter_code(&code).await,
        Err(LinkCodeError::NoRequest)
    );
    assert!(!server.refresh_link_code(), "nothing left to withdraw");
    client.stop().await;
}
