//! The MQTT link against brokers that misbehave or insist: one that
//! restarts, one with TLS, a client certificate and passwords, none at all;
//! and `outlet-agent fleet` reading what the agents left retained.

mod common;
#[path = "common/mqtt.rs"]
mod mqtt;

use std::time::{Duration, Instant};

use common::*;
use mqtt::*;
use outlet_agent::config::MqttConfig;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

/// The broker goes away and comes back empty (no persistence): the agent
/// republishes availability, state and discovery by itself, and the
/// WhatsApp session never notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_is_invisible_to_the_session() {
    let mut broker = Broker::start("allow_anonymous true").await;
    let url = broker.url(false);
    let id = unique("restart");
    let prefix = format!("outlet/{id}");
    let server = server().await;
    let mut agent = Agent::start(
        &server,
        &[
            ("OUTLET_AGENT__OUTLET__ID", &id),
            ("OUTLET_AGENT__MQTT__BROKER", &url),
            ("OUTLET_AGENT__MQTT__KEEPALIVE_SECS", "2"),
            ("OUTLET_AGENT__MQTT__RECONNECT_FIRST_DELAY_MS", "100"),
            ("OUTLET_AGENT__MQTT__RECONNECT_MAX_DELAY_SECS", "1"),
        ],
    );
    let connected = agent.pair(&server).await;
    let mut sub = Subscriber::connect(&url, &[&format!("{prefix}/state")]).await;
    sub.wait_for("connected on MQTT", WAIT, |m| {
        m.json()["state"] == "connected"
    })
    .await;
    drop(sub);
    let attempts = server.stats().attempts.len();

    broker.kill();
    let gone = Instant::now();
    while !agent.log().contains("connection lost") {
        assert!(
            gone.elapsed() < WAIT,
            "the agent never noticed\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.spawn().await;

    let mut sub = Subscriber::connect(
        &url,
        &[&format!("{prefix}/#"), "homeassistant/+/+/+/config"],
    )
    .await;
    sub.wait_for("state again", WAIT, |m| {
        m.topic == format!("{prefix}/state")
    })
    .await;
    // The restarted broker kept nothing: what a new dashboard finds now,
    // retained, the agent published again by itself.
    let discovery_filter = format!("homeassistant/+/outlet-agent-{id}/+/config");
    let mut fresh = Subscriber::connect(&url, &[&format!("{prefix}/#"), &discovery_filter]).await;
    let availability = fresh
        .wait_for("availability again", WAIT, |m| {
            m.topic == format!("{prefix}/availability")
        })
        .await;
    assert!(availability.retain);
    assert_eq!(availability.text(), "online");
    let state = fresh
        .wait_for("state again", WAIT, |m| {
            m.topic == format!("{prefix}/state")
        })
        .await;
    assert!(state.retain);
    assert_eq!(state.json()["state"], "connected");
    assert_eq!(state.json()["since"], connected["since"]);
    let discovery = fresh
        .wait_for("discovery again", WAIT, |m| {
            m.topic.contains(&format!("/outlet-agent-{id}/"))
        })
        .await;
    assert!(discovery.retain);

    let health = agent.status().await.expect("the agent answers");
    assert_eq!(health["state"], "connected");
    assert_eq!(
        health["since"], connected["since"],
        "health never left connected"
    );
    assert_eq!(
        server.stats().attempts.len(),
        attempts,
        "no new WhatsApp connection"
    );
    assert!(
        !sub.seen
            .iter()
            .any(|m| m.topic == format!("{prefix}/event")),
        "no transition"
    );
    assert_eq!(server.stats().max_concurrent(), 1);

    // A clean stop says goodbye itself: `offline` (retained), then a
    // DISCONNECT, so the broker never has to send the last will.
    assert_eq!(agent.stop().await.code(), Some(0));
    let availability_topic = format!("{prefix}/availability");
    fresh
        .wait_for("offline on a clean stop", WAIT, |m| {
            m.topic == availability_topic && m.text() == "offline"
        })
        .await;
    let mut later = Subscriber::connect(&url, &[&availability_topic]).await;
    let kept = later
        .wait_for("the retained availability", WAIT, |_| true)
        .await;
    assert!(kept.retain && kept.text() == "offline", "{}", kept.text());
    let client = format!("outlet-agent-{id}");
    let log = broker.log();
    assert!(
        log.contains(&format!("Client {client} disconnected.")),
        "no clean DISCONNECT from {client}:\n{log}"
    );
    assert!(
        !log.contains(&format!("Client {client} closed its connection")),
        "{log}"
    );
}

/// TLS with a private CA, a client certificate and a password file; a
/// wrong password is a clear, retried error that heals when the password
/// file is corrected — no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_and_a_password() {
    let dir = tempfile::tempdir().expect("temp dir").keep();
    make_readable(&dir);
    let pki = Pki::generate(&dir);
    let passwd = dir.join("passwd");
    write_password_file(
        &passwd,
        &[("agent", "right-password"), ("dashboard", "dash-password")],
    );
    let broker = Broker::start(&format!(
        "cafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate true\n\
         allow_anonymous false\npassword_file {passwd}",
        ca = pki.ca.display(),
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
        passwd = passwd.display(),
    ))
    .await;
    let url = broker.url(true);
    let id = unique("tls");
    let prefix = format!("outlet/{id}");
    let agent_password = dir.join("agent-password");
    std::fs::write(&agent_password, "wrong-password\n").expect("write");

    let server = server().await;
    let ca = pki.ca.display().to_string();
    let cert = pki.client_cert.display().to_string();
    let key = pki.client_key.display().to_string();
    let pw = agent_password.display().to_string();
    let mut agent = Agent::start(
        &server,
        &[
            ("OUTLET_AGENT__OUTLET__ID", &id),
            ("OUTLET_AGENT__MQTT__BROKER", &url),
            ("OUTLET_AGENT__MQTT__CA_FILE", &ca),
            ("OUTLET_AGENT__MQTT__CLIENT_CERT_FILE", &cert),
            ("OUTLET_AGENT__MQTT__CLIENT_KEY_FILE", &key),
            ("OUTLET_AGENT__MQTT__USERNAME", "agent"),
            ("OUTLET_AGENT__MQTT__PASSWORD_FILE", &pw),
            ("OUTLET_AGENT__MQTT__RECONNECT_FIRST_DELAY_MS", "100"),
            ("OUTLET_AGENT__MQTT__RECONNECT_MAX_DELAY_SECS", "1"),
        ],
    );

    // Refused: said clearly once, then retried quietly.
    let started = Instant::now();
    let refusals = |log: &str| {
        log.lines()
            .filter(|l| l.contains("refused the login"))
            .count()
    };
    while refusals(&agent.log()) < 3 {
        assert!(
            started.elapsed() < WAIT,
            "no retried refusal in the log\n{}\n--- broker ---\n{}",
            agent.log(),
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = agent.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("refused the login"))
        .collect();
    assert_eq!(warnings.len(), 1, "warned once, then debug:\n{log}");
    assert!(
        warnings[0].contains("user name or password"),
        "{}",
        warnings[0]
    );
    // The refusal is in the health too, for whoever asks the outlet itself.
    let refused = agent
        .wait_for("the MQTT error in the health", |h| {
            h["state"] == "pairing" && h["mqtt"].as_str().is_some_and(|m| m.starts_with("error:"))
        })
        .await;
    assert!(
        refused["mqtt"]
            .as_str()
            .is_some_and(|m| m.contains("user name or password")),
        "{refused}"
    );

    // A dashboard with its own login watches…
    let dashboard = MqttConfig {
        broker: outlet_agent::config::Brokers::one(&url),
        username: "dashboard".into(),
        password_file: Some(dir.join("dashboard-password")),
        ca_file: Some(pki.ca.clone()),
        client_cert_file: Some(pki.client_cert.clone()),
        client_key_file: Some(pki.client_key.clone()),
        ..MqttConfig::default()
    };
    std::fs::write(dir.join("dashboard-password"), "dash-password").expect("write");
    let mut sub = Subscriber::connect_with(&dashboard, &[&format!("{prefix}/#")]).await;
    assert!(
        sub.drain(Duration::from_millis(300)).await.is_empty(),
        "nothing from a refused agent"
    );

    // …and the corrected password file is picked up at the next retry.
    std::fs::write(&agent_password, "right-password\n").expect("write");
    let online = sub
        .wait_for("online over TLS", WAIT, |m| {
            m.topic == format!("{prefix}/availability") && m.text() == "online"
        })
        .await;
    assert_eq!(online.text(), "online");
    sub.wait_for("state over TLS", WAIT, |m| {
        m.topic == format!("{prefix}/state") && m.json()["state"] == "pairing"
    })
    .await;
    let r = sub.request(&prefix, "status", json!({})).await;
    assert_eq!(r["status"], "ok", "{r}");
    assert!(agent.log().contains("MQTT connected"), "{}", agent.log());
    agent
        .wait_for("mqtt ok in the health", |h| h["mqtt"] == "ok")
        .await;
    agent.stop().await;
}

/// A developer's machine without a broker: the agent runs normally and the
/// MQTT link says so once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_broker_costs_one_warning_and_nothing_else() {
    // Port 1: nothing listens there, and unlike a free port picked now it
    // cannot be taken a moment later by another test's broker (ephemeral
    // ports only), which made this test see a broker one run in forty.
    let url = "mqtt://127.0.0.1:1".to_string();
    let id = unique("nobroker");
    let server = server().await;
    let mut agent = Agent::start(
        &server,
        &[
            ("OUTLET_AGENT__OUTLET__ID", &id),
            ("OUTLET_AGENT__MQTT__BROKER", &url),
            ("OUTLET_AGENT__MQTT__RECONNECT_FIRST_DELAY_MS", "50"),
            ("OUTLET_AGENT__MQTT__RECONNECT_MAX_DELAY_SECS", "1"),
        ],
    );
    agent.wait_state("pairing").await;
    let started = Instant::now();
    let attempts = |log: &str| {
        log.lines()
            .filter(|l| l.contains("MQTT") && l.contains("cannot reach the broker"))
            .count()
    };
    while attempts(&agent.log()) < 4 {
        assert!(started.elapsed() < WAIT, "no retries\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = agent.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("MQTT"))
        .count();
    assert_eq!(warnings, 1, "{log}");
    let health = agent
        .wait_for("the MQTT error in the health", |h| {
            h["mqtt"].as_str().is_some_and(|m| m.starts_with("error:"))
        })
        .await;
    assert_eq!(health["state"], "pairing");
    assert_eq!(agent.stop().await.code(), Some(0), "a clean, quick exit");
}

/// `outlet-agent fleet` lists the retained states under a prefix, masks
/// numbers and flags stale snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_lists_outlets_and_flags_stale_ones() {
    let prefix = unique("fleet");
    let now = chrono::Utc::now();
    let state = |id: &str, state: &str, valid_for: i64| {
        json!({
            "outlet": id, "state": state, "phone": "+6281234567890",
            "since": (now - chrono::Duration::minutes(5)).to_rfc3339(),
            "valid_until": (now + chrono::Duration::seconds(valid_for)).to_rfc3339(),
        })
        .to_string()
    };
    let publisher = Subscriber::connect(&shared_broker(), &[]).await;
    for (id, availability, s, valid_for) in [
        ("jkt-01", "online", "connected", 60),
        ("sby-02", "offline", "connected", -600),
        ("bdg-03", "online", "pairing", 60),
    ] {
        publisher
            .publish(
                &format!("{prefix}/{id}/wa/availability"),
                availability,
                true,
            )
            .await;
        publisher
            .publish(
                &format!("{prefix}/{id}/wa/state"),
                state(id, s, valid_for),
                true,
            )
            .await;
    }
    // The broker stores a retained message before it forwards it: once a
    // subscriber saw all three (live or retained), fleet will too.
    let mut check = Subscriber::connect(&shared_broker(), &[&format!("{prefix}/+/wa/state")]).await;
    for _ in 0..3 {
        check.wait_for("the states", WAIT, |_| true).await;
    }

    // Outlets configured with `mqtt.topic_prefix = "<prefix>/{outlet_id}/wa"`.
    let template = format!("{prefix}/{{outlet_id}}/wa");
    let args = ["fleet", "--broker", &shared_broker(), "--prefix", &template];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&args, &[])
    })
    .await
    .expect("fleet runs");
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("bdg-03"), "sorted by id: {stdout}");
    let jkt = lines.iter().find(|l| l.starts_with("jkt-01")).expect("jkt");
    assert!(jkt.contains("online") && jkt.contains("connected"), "{jkt}");
    assert!(jkt.contains("+*********7890"), "{jkt}");
    assert!(!jkt.contains("STALE"), "{jkt}");
    let sby = lines.iter().find(|l| l.starts_with("sby-02")).expect("sby");
    assert!(sby.contains("offline") && sby.contains("STALE"), "{sby}");
    assert!(!stdout.contains("6281234567890"), "{stdout}");

    clear_retained(&shared(), &[&format!("{prefix}/#")]).await;
}
