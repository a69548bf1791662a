//! The dashboard and `fleet` against hostile or unlucky clients: half-sent
//! requests, a page that stops reading, an outlet with oversized retained
//! messages, and HTTPS. The real binary, the shared Mosquitto, raw sockets.

mod common;
#[path = "common/dashboard.rs"]
mod dashboard;
#[path = "common/mqtt.rs"]
mod mqtt;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dashboard::Dashboard;
use mqtt::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the peer has closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn wait_for_log(dashboard: &Dashboard, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !dashboard.log_text().contains(what) {
        assert!(
            Instant::now() < deadline,
            "no {what:?} in the dashboard's log:\n{}",
            dashboard.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 260 connections that never finish their request head (more than the
/// 256 slots) no longer lock everyone out: a real request is answered,
/// the half-requests give way, and hyper's header timeout ends the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_cannot_lock_out_a_real_one() {
    let fleet = unique("dash-half");
    let dashboard = Dashboard::start(&shared_broker(), &["127.0.0.1:0", "--prefix", &fleet]);
    let half = format!(
        "GET /api/outlets HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n",
        dashboard.port
    );
    let mut idle = Vec::new();
    for _ in 0..260 {
        let mut stream = TcpStream::connect(("127.0.0.1", dashboard.port))
            .await
            .expect("connect");
        stream
            .write_all(half.as_bytes())
            .await
            .expect("half a head");
        idle.push(stream);
    }
    let (status, _, body) = dashboard.http(&dashboard.get("/api/session", "")).await;
    assert_eq!(status, 200, "a real request among 260 half ones: {body}");
    assert!(
        closed_within(&mut idle[0], Duration::from_secs(20)).await,
        "the oldest half-request gave way"
    );
    let last = idle.last_mut().expect("a connection");
    assert!(
        closed_within(last, Duration::from_secs(30)).await,
        "the header timeout ended the newest half-request"
    );
    let (status, _, _) = dashboard.http(&dashboard.get("/api/session", "")).await;
    assert_eq!(status, 200);
}

/// A page that stops reading its feed while the fleet changes fast (and a
/// hostile outlet publishes 500 KB events) is cut off, and the dashboard's
/// memory stays under 64 MiB; a page that reads gets every change. Before,
/// each change was the outlet's whole view (up to 10 MB) and 4 096 of them
/// waited for the stalled page: 531 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_stops_reading_is_cut_off_and_memory_stays_bounded() {
    const BOUND: u64 = 64 * 1024 * 1024;
    let fleet = unique("dash-slow");
    let dashboard = Dashboard::start(&shared_broker(), &["127.0.0.1:0", "--prefix", &fleet]);
    let feed_request = dashboard.get("/events", "");
    let feed_request = feed_request.replace("Connection: close\r\n", "");

    // A page that reads everything, counting the changes it sees.
    let mut reader = TcpStream::connect(("127.0.0.1", dashboard.port))
        .await
        .expect("connect");
    reader
        .write_all(feed_request.as_bytes())
        .await
        .expect("GET /events");
    let seen_last = Arc::new(tokio::sync::Notify::new());
    let reading = tokio::spawn({
        let seen_last = Arc::clone(&seen_last);
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut tail = String::new();
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        tail.push_str(&String::from_utf8_lossy(&buf[..n]));
                        if tail.contains("the-last-change") {
                            seen_last.notify_one();
                        }
                        let keep = tail.len().saturating_sub(64);
                        tail.drain(..keep);
                    }
                }
            }
        }
    });
    // A page that asks for the feed and never reads a byte.
    let mut stalled = TcpStream::connect(("127.0.0.1", dashboard.port))
        .await
        .expect("connect");
    stalled
        .write_all(feed_request.as_bytes())
        .await
        .expect("GET /events");

    let outlet = Subscriber::connect(&shared_broker(), &[]).await;
    let filler = "x".repeat(3_500);
    let hostile = json!({ "to": "y".repeat(500_000) }).to_string();
    for round in 0..300 {
        for id in ["o1", "o2", "o3"] {
            let event = json!({ "from": "connecting", "to": "connected", "reason": filler, "round": round });
            outlet
                .publish(&format!("{fleet}/{id}/event"), event.to_string(), false)
                .await;
        }
        if round % 5 == 0 {
            outlet
                .publish(&format!("{fleet}/evil/event"), hostile.clone(), false)
                .await;
        }
    }
    let last = json!({ "from": "a", "to": "the-last-change", "reason": "" });
    outlet
        .publish(&format!("{fleet}/o1/event"), last.to_string(), false)
        .await;
    if tokio::time::timeout(DEADLINE, seen_last.notified())
        .await
        .is_err()
    {
        panic!(
            "the reading page never got the last change; the dashboard's log:\n{}",
            dashboard.log_text()
        );
    }
    let rss = rss_bytes(dashboard.pid());
    assert!(
        rss < BOUND,
        "the dashboard holds {} MiB with a stalled page",
        rss / (1024 * 1024)
    );
    wait_for_log(
        &dashboard,
        "a page stopped reading its feed",
        Duration::from_secs(60),
    )
    .await;
    assert!(
        dashboard
            .log_text()
            .contains("refused messages since the last report"),
        "the hostile events were refused and counted"
    );
    let rss = rss_bytes(dashboard.pid());
    assert!(rss < BOUND, "{} MiB after the cut", rss / (1024 * 1024));
    reading.abort();
    drop(stalled);
}

/// An outlet's 600 KB retained state (any outlet may write its own under
/// the documented ACL) neither disconnects the dashboard nor `fleet`, and
/// the other outlets are shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_retained_state_leaves_the_dashboard_and_fleet_working() {
    let fleet = unique("dash-evil");
    let outlet = Subscriber::connect(&shared_broker(), &[]).await;
    let evil = json!({ "state": "connected", "junk": "z".repeat(600_000) }).to_string();
    outlet
        .publish(&format!("{fleet}/evil/state"), evil, true)
        .await;
    let good = json!({ "state": "connected", "since": "2026-12-08T00:00:00Z" }).to_string();
    outlet
        .publish(&format!("{fleet}/good/state"), good, true)
        .await;
    outlet
        .publish(&format!("{fleet}/good/availability"), "online", true)
        .await;

    let dashboard = Dashboard::start(&shared_broker(), &["127.0.0.1:0", "--prefix", &fleet]);
    let deadline = Instant::now() + DEADLINE;
    let doc = loop {
        let (status, _, body) = dashboard.http(&dashboard.get("/api/outlets", "")).await;
        assert_eq!(status, 200, "{body}");
        let doc: Value = serde_json::from_str(&body).expect("JSON");
        let has_good = doc["outlets"].as_array().is_some_and(|o| {
            o.iter()
                .any(|v| v["id"] == "good" && v["state"].is_object())
        });
        if has_good && doc["broker"]["connected"] == true {
            break doc;
        }
        assert!(
            Instant::now() < deadline,
            "the good outlet never showed: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        !doc.to_string().contains("zzzzzzzz"),
        "the oversized state never reaches a page"
    );
    // Still connected a while later: no disconnect-and-resubscribe loop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, _, body) = dashboard.http(&dashboard.get("/api/outlets", "")).await;
    let doc: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(doc["broker"]["connected"], true, "{doc}");
    let log = dashboard.log_text();
    assert_eq!(log.matches("MQTT connected to").count(), 1, "{log}");

    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let fleet = fleet.clone();
        move || {
            run_cli(
                &["fleet", "--prefix", &fleet],
                &[("OUTLET_AGENT__MQTT__BROKER", &shared_broker())],
            )
        }
    })
    .await
    .expect("fleet runs");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("good"), "{stdout}");
    assert!(
        stdout.lines().all(|l| l.chars().count() <= 301),
        "every line is cut: {} bytes",
        stdout.len()
    );
    clear_retained(&shared(), &[&format!("{fleet}/#")]).await;
}

/// Given a certificate, the dashboard speaks HTTPS only, and its login
/// cookie is `Secure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_dashboard_is_https_and_its_cookie_secure() {
    let fleet = unique("dash-tls");
    let dir = tempfile::tempdir().expect("a dir");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).expect("cert");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("key");
    let token_path = dir.path().join("token");
    let token = "hq-dashboard-token-0123456789";
    std::fs::write(&token_path, token).expect("token");
    let paths = [&cert_path, &key_path, &token_path].map(|p| p.display().to_string());
    let dashboard = Dashboard::start(
        &shared_broker(),
        &[
            "127.0.0.1:0",
            "--prefix",
            &fleet,
            "--tls-cert",
            &paths[0],
            "--tls-key",
            &paths[1],
            "--token-file",
            &paths[2],
        ],
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("a root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let https = |request: String| {
        let connector = connector.clone();
        let port = dashboard.port;
        async move {
            let tcp = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
            let mut tls = connector.connect(name, tcp).await.expect("a TLS handshake");
            tls.write_all(request.as_bytes()).await.expect("send");
            let mut response = Vec::new();
            let _ = tokio::time::timeout(DEADLINE, tls.read_to_end(&mut response)).await;
            String::from_utf8_lossy(&response).into_owned()
        }
    };
    let login = dashboard.post("/api/login", "", &format!(r#"{{"token":"{token}"}}"#));
    let response = https(login).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let set_cookie = response
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie: "))
        .expect("a cookie");
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
    let cookie = set_cookie["set-cookie: ".len()..]
        .split(';')
        .next()
        .expect("the cookie")
        .to_string();
    let response = https(dashboard.get("/api/outlets", &format!("Cookie: {cookie}\r\n"))).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // Plain HTTP to the HTTPS port gets no page.
    let mut plain = TcpStream::connect(("127.0.0.1", dashboard.port))
        .await
        .expect("connect");
    plain
        .write_all(dashboard.get("/api/session", "").as_bytes())
        .await
        .expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, plain.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "plain HTTP was served"
    );
}
