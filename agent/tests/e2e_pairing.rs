//! Fresh start → QR on the screen → scanned by the phone → connected with the
//! right number; restarts (SIGTERM, SIGKILL) come back without a QR.

mod common;

use common::*;
use fake_whatsapp::Purpose;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_qr_on_the_screen_links_the_outlet_and_its_number_is_known() {
    let server = server().await;
    let mut agent = Agent::start(&server, &[]);

    let pairing = agent.wait_state("pairing").await;
    assert_eq!(pairing["qr"]["index"], 1);
    assert_eq!(pairing["mqtt"], "off", "MQTT is off in this test");
    assert!(
        pairing["qr"].get("code").is_none(),
        "the QR string is not in the health"
    );
    let qr = agent.qr_from_screen(None).await;
    let reply = agent
        .request(json!({"command": "qr"}))
        .await
        .expect("agent answers");
    assert_eq!(reply["data"]["qr"], qr, "the screen shows the current code");

    server
        .phone()
        .scan(&qr)
        .await
        .expect("the phone scans the screen");
    let connected = agent.wait_state("connected").await;
    assert_eq!(connected["phone"], "+6281234567890");
    assert_eq!(connected["push_name"], "Outlet Jakarta");
    assert_eq!(connected["attempt"], 0);
    assert!(connected["last_connected_at"].is_string());
    assert_eq!(server.stats().max_concurrent(), 1);
    // The phone lists the device under the outlet's name, not the library's.
    let registration = server
        .stats()
        .attempts
        .into_iter()
        .find(|a| a.purpose == Some(Purpose::Registration))
        .expect("a registration");
    assert_eq!(registration.device_name.as_deref(), Some("E2E Outlet"));

    // The `status` command prints the same.
    let config = agent.config.display().to_string();
    let (code, stdout, _) = run_cli(&["--config", &config, "status"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("\"state\": \"connected\""), "{stdout}");
    assert!(
        agent.log().contains("*********7890"),
        "the log masks the number"
    );
    assert!(
        !agent.log().contains("6281234567890"),
        "no full number in the log"
    );
    assert!(!agent.log().contains(&qr), "no QR string in the log");
    assert_eq!(agent.stop().await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_after_sigterm_and_sigkill_reconnect_without_a_qr() {
    let server = server().await;
    let mut agent = Agent::start(&server, &[]);
    agent.pair(&server).await;

    for signal in ["TERM", "KILL"] {
        agent.signal(signal);
        let status = agent.wait_exit().await;
        if signal == "TERM" {
            assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");
        }
        let registrations_before = registrations(&server);
        agent.spawn();
        let health = agent
            .wait_for("connected or pairing", |h| {
                h["state"] == "connected" || h["state"] == "pairing"
            })
            .await;
        assert_eq!(health["state"], "connected", "no QR after {signal}");
        assert_eq!(health["phone"], "+6281234567890");
        assert_eq!(
            registrations(&server),
            registrations_before,
            "no pairing after {signal}"
        );
    }
    assert_eq!(
        server.stats().max_concurrent(),
        1,
        "{:?}",
        server.stats().devices
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_from_the_cli_unlinks_and_shows_a_new_qr() {
    let server = server().await;
    let mut agent = Agent::start(&server, &[]);
    agent.pair(&server).await;
    let config = agent.config.display().to_string();

    let (code, _, stderr) = run_cli(&["--config", &config, "logout"], &[]);
    assert_eq!(code, 2, "refused without --yes: {stderr}");
    let (code, _, stderr) = run_cli(&["--config", &config, "logout", "--yes"], &[]);
    assert_eq!(code, 0, "{stderr}");
    agent
        .wait_for("a new QR after logout", |h| {
            h["state"] == "logged_out" && h["qr"].is_object()
        })
        .await;
    assert!(
        server.phone().linked_devices().is_empty(),
        "the server forgot the device"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_codes_run_out_pairing_idles_until_refresh_qr() {
    // One ref per round: the client shows it for its fixed 60 s, then gives up.
    let server = one_ref_server().await;
    let mut agent = Agent::start(&server, &[]);
    agent.wait_state("pairing").await;
    let first = agent.qr_from_screen(None).await;
    let idle = agent.wait_state("pairing_idle").await;
    assert!(
        idle["next_retry_at"].is_string(),
        "the next round is announced: {idle}"
    );
    assert!(idle["qr"].is_null());

    let reply = agent
        .request(json!({"command": "refresh_qr"}))
        .await
        .expect("agent answers");
    assert_eq!(reply["status"], "ok", "{reply}");
    agent.wait_state("pairing").await;
    let second = agent.qr_from_screen(Some(&first)).await;
    assert_ne!(first, second, "a new round has new codes");
    server.phone().scan(&second).await.expect("scan");
    agent.wait_state("connected").await;
}
