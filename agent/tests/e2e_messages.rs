//! Messages end to end: the real agent binary, the fake server's contacts
//! (real Signal parties), and Mosquitto, observed the way HQ would.
//!
//! Budi (6281111111111) and Sari (6282222222222) are the fake server's
//! contacts. Pacing is off (`max_per_minute = 0`) unless a test is about it.

mod common;
#[path = "common/hq.rs"]
mod hq;
#[path = "common/mqtt.rs"]
mod mqtt;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use hq::*;
use mqtt::*;
use serde_json::json;

const BUDI: &str = "6281111111111";
const SARI: &str = "6282222222222";

/// A private Mosquitto that keeps its sessions across a restart (SIGTERM
/// saves them), so HQ's persistent session outlives a broker outage.
async fn persistent_broker() -> Broker {
    let dir = tempfile::tempdir().unwrap().keep();
    let store = dir.join("broker-db");
    std::fs::create_dir_all(&store).unwrap();
    make_readable(&dir);
    std::fs::set_permissions(&store, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    Broker::start(&format!(
        "allow_anonymous true\npersistence true\npersistence_location {}/\n",
        store.display()
    ))
    .await
}

/// The ids of the first `n` distinct messages on `topic`, in arrival
/// order (a message published again after a reconnect counts once).
async fn distinct_ids(hq: &mut Subscriber, topic: &str, n: usize, what: &str) -> Vec<String> {
    fn add(got: &mut Vec<String>, m: &Msg) {
        let id = m.json()["id"].as_str().unwrap_or_default().to_string();
        if !got.contains(&id) {
            got.push(id);
        }
    }
    // A persistent session's queued messages can arrive before the SUBACK
    // of the reconnect's subscription: those are in `seen` already.
    let mut got = Vec::new();
    for m in hq.seen.iter().filter(|m| m.topic == topic) {
        add(&mut got, m);
    }
    while got.len() < n {
        let m = hq.wait_for(what, WAIT, |m| m.topic == topic).await;
        add(&mut got, &m);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_message_reaches_hq_and_hq_replies_with_statuses() {
    let server = server().await;
    let outlet = Outlet::new("msg", &shared_broker());
    let (agent, mut hq) = linked(&server, &outlet, &[]).await;

    let id = server
        .contacts()
        .send_text(BUDI, "Halo, apakah toko buka?")
        .await
        .expect("Budi sends");
    let msg = wait_inbound(&mut hq, &outlet, "Halo, apakah toko buka?").await;
    assert_eq!(msg["id"], json!(id));
    assert_eq!(msg["kind"], "text");
    assert_eq!(msg["from"], format!("+{BUDI}"));
    assert_eq!(msg["chat"], format!("{BUDI}@s.whatsapp.net"));
    assert!(
        msg["at"].as_str().is_some_and(|at| at.ends_with('Z')),
        "{msg}"
    );

    // HQ replies, quoting it; the answer comes once the send is durable.
    let answer = hq
        .request(
            &outlet.prefix,
            "send",
            json!({"to": msg["chat"], "text": "Buka sampai jam 9", "client_id": "reply-1", "quoted_id": id}),
        )
        .await;
    assert_eq!(answer["status"], "ok", "{answer}");
    let sent_id = answer["data"]["id"].as_str().expect("an id").to_string();
    assert_eq!(answer["data"]["client_id"], "reply-1");
    assert!(answer["data"]["queued_at"].is_string(), "{answer}");

    wait_received(&server, BUDI, "Buka sampai jam 9").await;
    let entry = server
        .contacts()
        .inbox(BUDI)
        .unwrap()
        .into_iter()
        .find(|e| e.text.as_deref() == Some("Buka sampai jam 9"))
        .unwrap();
    assert_eq!(entry.id, sent_id);
    assert_eq!(entry.quoted_id.as_deref(), Some(id.as_str()));
    for status in ["queued", "sent", "delivered", "read"] {
        let s = wait_status(&mut hq, &outlet, &sent_id, status).await;
        assert_eq!(s["client_id"], "reply-1");
        assert_eq!(s["to"], format!("+{BUDI}"));
    }

    // A number in local form works too; the same client_id is never sent
    // twice and gets the first answer.
    let local = format!("0{}", &SARI[2..]);
    let first = hq
        .request(
            &outlet.prefix,
            "send",
            json!({"to": local, "text": "Promo hari ini", "client_id": "promo-7"}),
        )
        .await;
    let again = hq
        .request(
            &outlet.prefix,
            "send",
            json!({"to": local, "text": "Promo hari ini", "client_id": "promo-7"}),
        )
        .await;
    assert_eq!(first["data"]["id"], again["data"]["id"], "{first} {again}");
    assert_eq!(again["data"]["duplicate"], true);
    wait_received(&server, SARI, "Promo hari ini").await;

    // A group message names its group; HQ replies to the chat.
    let group = "120363000000000001@g.us";
    server
        .contacts()
        .send_group_text(group, SARI, "Siapa yang jaga hari ini?")
        .await
        .expect("Sari posts in the group");
    let in_group = wait_inbound(&mut hq, &outlet, "Siapa yang jaga hari ini?").await;
    assert_eq!(in_group["group"], group);
    assert_eq!(in_group["chat"], group);
    assert_eq!(in_group["from"], format!("+{SARI}"));

    // The technician's terminal uses the same outbox.
    let config = agent.config.display().to_string();
    let (code, stdout, stderr) = run_cli(
        &[
            "--config",
            &config,
            "send",
            &format!("+{BUDI}"),
            "Dari kasir",
            "--client-id",
            "till-1",
        ],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("queued 3EB0"), "{stdout}");
    wait_received(&server, BUDI, "Dari kasir").await;

    // The state says when messages last moved, never what they said.
    let state = hq
        .wait_topic(&outlet.topic("state"), WAIT, |m| {
            m.json()["last_message_in_at"].is_string()
                && m.json()["last_message_out_at"].is_string()
        })
        .await;
    let text = state.text();
    assert!(!text.contains("toko") && !text.contains(BUDI), "{text}");
    // Nor does the log (info level and up).
    let log = agent.log();
    assert!(
        !log.contains("Halo, apakah") && !log.contains("Buka sampai"),
        "{log}"
    );
    assert!(!log.contains(BUDI), "a full number in the log");
    // Sari got it exactly once.
    assert_eq!(received_by(&server, SARI, "Promo hari ini"), 1);
    outlet.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_clear_errors_and_nothing_is_sent() {
    let server = server().await;
    server
        .contacts()
        .set_on_whatsapp(SARI, false)
        .expect("Sari");
    let outlet = Outlet::new("refuse", &shared_broker());
    let mut hq = outlet.hq().await;
    // A retained send waits on the broker for the agent: it is refused
    // like any retained request (it would run again on every reconnect).
    hq.publish(
        &outlet.topic("request/send"),
        json!({"to": BUDI, "text": "retained"}).to_string(),
        true,
    )
    .await;
    let mut agent = Agent::start(&server, &outlet.env(&[]));
    let topic = outlet.topic("response/send");
    let refused = hq
        .wait_topic(&topic, WAIT, |m| {
            m.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains("retained"))
        })
        .await;
    assert_eq!(refused.json()["status"], "error");
    hq.publish(&outlet.topic("request/send"), Vec::new(), true)
        .await;
    agent.wait_state("pairing").await;
    let p = outlet.prefix.clone();
    // Not linked yet.
    let r = hq
        .request(&p, "send", json!({"to": BUDI, "text": "hi"}))
        .await;
    assert!(
        r["error"].as_str().unwrap_or("").starts_with("not_linked"),
        "{r}"
    );
    agent.pair(&server).await;

    let long = "a".repeat(65_537);
    for (payload, error) in [
        (json!({"to": "12", "text": "hi"}), "invalid_format"),
        (
            json!({"to": "abc@example.com", "text": "hi"}),
            "invalid_format",
        ),
        (json!({"to": BUDI, "text": ""}), "invalid_format"),
        (
            json!({"to": BUDI, "text": "\u{200B}\u{2060} \u{FEFF}"}),
            "invalid_format",
        ),
        (json!({"to": "+6281234567890", "text": "hi"}), "own number"),
        (json!({"to": BUDI, "text": long}), "text_too_long"),
        (json!({"to": SARI, "text": "hi"}), "not_on_whatsapp"),
        (json!({"to": BUDI}), "bad request"),
        (
            json!({"to": BUDI, "text": "hi", "colour": "red"}),
            "unknown field",
        ),
        (json!({"to": BUDI, "text": 5}), "bad request"),
    ] {
        let r = hq.request(&p, "send", payload.clone()).await;
        assert_eq!(r["status"], "error", "{payload} → {r}");
        assert!(
            r["error"].as_str().is_some_and(|e| e.contains(error)),
            "{payload} → {r}, expected {error}"
        );
    }
    // 1000 malformed requests: all refused, nothing sent, still connected.
    for i in 0..1000 {
        let payload = match i % 4 {
            0 => "{not json".to_string(),
            1 => json!({"to": i, "text": "x"}).to_string(),
            2 => json!({"to": "+", "text": "x"}).to_string(),
            _ => "[1,2,3]".to_string(),
        };
        hq.publish(&outlet.topic("request/send"), payload, false)
            .await;
    }
    let mut errors = 0;
    while errors < 1000 {
        hq.wait_for("1000 refusals", WAIT, |m| {
            m.topic == topic && m.json()["status"] == "error"
        })
        .await;
        errors += 1;
    }
    let status = agent.status().await.expect("the agent answers");
    assert_eq!(status["state"], "connected");
    assert!(
        server
            .contacts()
            .inbox(BUDI)
            .unwrap()
            .iter()
            .all(|e| e.device != 0),
        "something reached Budi: {:?}",
        server.contacts().inbox(BUDI)
    );
    outlet.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_messages_during_a_broker_outage_arrive_in_order_after_it() {
    let server = server().await;
    let mut broker = persistent_broker().await;
    let outlet = Outlet::new("outage", &broker.url(false));
    let hq_id = unique("hq");
    // HQ keeps a persistent session: the broker holds its messages while
    // HQ itself is away.
    let hq = Subscriber::connect_persistent(&outlet.broker, &hq_id, &[&outlet.topic("message/in")])
        .await;
    drop(hq);
    let mut agent = Agent::start(&server, &outlet.env(&[]));
    agent.pair(&server).await;
    reachable(&server).await;

    broker.stop();
    let ids = server
        .contacts()
        .send_burst(BUDI, 50, "pesanan")
        .await
        .expect("Budi sends 50");
    // All 50 committed to the inbox while the broker is away.
    agent
        .wait_for("50 messages in the inbox", |s| s["inbox_pending"] == 50)
        .await;
    broker.spawn().await;
    let mut hq =
        Subscriber::connect_persistent(&outlet.broker, &hq_id, &[&outlet.topic("message/in")])
            .await;
    let topic = outlet.topic("message/in");
    let got = distinct_ids(&mut hq, &topic, 50, "the 50 messages").await;
    assert_eq!(got, ids, "in the order Budi sent them");
    agent
        .wait_for("an empty inbox", |s| s["inbox_pending"] == 0)
        .await;
    drop(agent);
    broker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_during_a_burst_of_200_loses_no_message() {
    let server = server().await;
    let outlet = Outlet::new("burst", &shared_broker());
    let (mut agent, mut hq) = linked(&server, &outlet, &[]).await;
    let contacts = server.contacts();
    let burst = tokio::spawn(async move { contacts.send_burst(BUDI, 200, "burst").await });
    let topic = outlet.topic("message/in");
    // Killed once some (not all) have reached HQ.
    for _ in 0..20 {
        hq.wait_for("the burst's first messages", WAIT, |m| m.topic == topic)
            .await;
    }
    agent.signal("KILL");
    agent.wait_exit().await;
    let ids = burst.await.unwrap().expect("Budi sends 200");
    agent.spawn();
    agent.wait_state("connected").await;
    let want: HashSet<String> = ids.into_iter().collect();
    let deadline = std::time::Instant::now() + WAIT * 2;
    loop {
        let got: HashSet<String> = hq
            .seen
            .iter()
            .filter(|m| m.topic == topic)
            .filter_map(|m| m.json()["id"].as_str().map(str::to_string))
            .collect();
        if want.is_subset(&got) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of 200 missing after the restart",
            want.difference(&got).count()
        );
        let _ = hq.drain(Duration::from_millis(500)).await;
    }
    assert_eq!(
        inbound_texts(&hq, &outlet)
            .iter()
            .filter(|t| t.starts_with("burst "))
            .collect::<HashSet<_>>()
            .len(),
        200
    );
    // Each record has one seq and each seq one record, in one epoch, from
    // 1 to 200 without a gap: a record published again after the kill
    // comes with the seq it had.
    let mut by_seq: std::collections::BTreeMap<u64, String> = Default::default();
    let mut epochs = HashSet::new();
    for m in hq.seen.iter().filter(|m| m.topic == topic) {
        let record = m.json();
        let seq = record["seq"].as_u64().expect("a seq");
        let id = record["id"].as_str().expect("an id").to_string();
        epochs.insert(record["epoch"].as_str().expect("an epoch").to_string());
        let first = by_seq.entry(seq).or_insert_with(|| id.clone());
        assert_eq!(*first, id, "seq {seq} used twice");
    }
    assert_eq!(epochs.len(), 1, "{epochs:?}");
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (1..=200).collect::<Vec<_>>()
    );
    assert_eq!(by_seq.values().collect::<HashSet<_>>().len(), 200);
    outlet.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_answered_then_sigkilled_reaches_the_customer_exactly_once() {
    let server = server().await;
    let outlet = Outlet::new("once", &shared_broker());
    let (mut agent, mut hq) = linked(&server, &outlet, &[]).await;
    let answer = hq
        .request(
            &outlet.prefix,
            "send",
            json!({"to": BUDI, "text": "Pesanan siap", "client_id": "order-42"}),
        )
        .await;
    assert_eq!(answer["status"], "ok", "{answer}");
    agent.signal("KILL");
    agent.wait_exit().await;
    agent.spawn();
    agent.wait_state("connected").await;
    wait_received(&server, BUDI, "Pesanan siap").await;
    let id = answer["data"]["id"].as_str().unwrap().to_string();
    wait_status(&mut hq, &outlet, &id, "sent").await;
    // The same client_id after the restart is still the first send.
    let again = hq
        .request(
            &outlet.prefix,
            "send",
            json!({"to": BUDI, "text": "Pesanan siap", "client_id": "order-42"}),
        )
        .await;
    assert_eq!(again["data"]["id"], json!(id));
    // Nothing left to send (a send the kill caught unacked went again, with
    // its id), and Budi's phone shows it once. (Its `read` status may be
    // lost: a receipt that whatsapp-rust acked just before the kill is not
    // sent again; ARCHITECTURE.md, "Decisions".)
    agent
        .wait_for("an empty outbox", |s| s["outbox_pending"] == 0)
        .await;
    assert_eq!(received_by(&server, BUDI, "Pesanan siap"), 1);

    // The Signal sessions continue across restarts, both ways.
    agent.stop().await;
    agent.spawn();
    agent.wait_state("connected").await;
    server
        .contacts()
        .send_text(BUDI, "Terima kasih")
        .await
        .expect("Budi sends");
    wait_inbound(&mut hq, &outlet, "Terima kasih").await;
    let reply = hq
        .request(
            &outlet.prefix,
            "send",
            json!({"to": BUDI, "text": "Sama-sama"}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    wait_received(&server, BUDI, "Sama-sama").await;
    outlet.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queues_push_back_and_nothing_is_dropped() {
    let server = server().await;
    server
        .contacts()
        .set_on_whatsapp(SARI, false)
        .expect("Sari");
    let mut broker = persistent_broker().await;
    let outlet = Outlet::new("full", &broker.url(false));
    let hq_id = unique("hq");
    let filters = [outlet.topic("message/#"), outlet.topic("response/+")];
    let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
    drop(Subscriber::connect_persistent(&outlet.broker, &hq_id, &filters).await);
    let mut agent = Agent::start(
        &server,
        &outlet.env(&[
            ("OUTLET_AGENT__MESSAGES__INBOX_MAX_MESSAGES", "5"),
            ("OUTLET_AGENT__MESSAGES__OUTBOX_MAX_MESSAGES", "2"),
        ]),
    );
    agent.pair(&server).await;
    reachable(&server).await;

    // The broker is away and the inbox fills: WhatsApp is not told about
    // the rest, so it keeps them.
    broker.stop();
    let ids = server
        .contacts()
        .send_burst(BUDI, 10, "antre")
        .await
        .expect("Budi sends 10");
    let full = agent
        .wait_for("a full inbox", |s| {
            s["inbox_full"] == true && s["inbox_pending"] == 5
        })
        .await;
    assert_eq!(full["state"], "connected");
    broker.spawn().await;
    let mut hq = Subscriber::connect_persistent(&outlet.broker, &hq_id, &filters).await;
    let topic = outlet.topic("message/in");
    let mut got = distinct_ids(&mut hq, &topic, 10, "all 10 messages").await;
    let mut want = ids.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    agent
        .wait_for("the inbox drained", |s| {
            s["inbox_pending"] == 0 && s["inbox_full"] == false
        })
        .await;

    // WhatsApp is away: sends queue (up to the limit), and go once it is back.
    server.set_refuse(true);
    server.drop_connections();
    agent.wait_state("reconnecting").await;
    let p = outlet.prefix.clone();
    let a = hq
        .request(&p, "send", json!({"to": BUDI, "text": "Nanti dikirim"}))
        .await;
    assert_eq!(a["status"], "ok", "{a}");
    // Not checked while away: it fails later, with the reason.
    let b = hq
        .request(&p, "send", json!({"to": SARI, "text": "Tidak terkirim"}))
        .await;
    assert_eq!(b["status"], "ok", "{b}");
    let c = hq
        .request(&p, "send", json!({"to": BUDI, "text": "Terlalu banyak"}))
        .await;
    assert!(
        c["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("outbox_full")),
        "{c}"
    );
    let waiting = agent
        .wait_for("two queued", |s| s["outbox_pending"] == 2)
        .await;
    assert!(waiting["outbox_oldest_at"].is_string(), "{waiting}");
    server.set_refuse(false);
    wait_received(&server, BUDI, "Nanti dikirim").await;
    let b_id = b["data"]["id"].as_str().unwrap().to_string();
    let failed = wait_status(&mut hq, &outlet, &b_id, "failed").await;
    assert_eq!(failed["error"], "not_on_whatsapp");
    assert_eq!(received_by(&server, BUDI, "Terlalu banyak"), 0);
    drop(agent);
    broker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_messages_off_the_session_runs_and_send_is_refused() {
    let server = server().await;
    let outlet = Outlet::new("off", &shared_broker());
    let mut hq = outlet.hq().await;
    let mut agent = Agent::start(
        &server,
        &outlet.env(&[("OUTLET_AGENT__MESSAGES__ENABLED", "false")]),
    );
    agent.pair(&server).await;
    let r = hq
        .request(&outlet.prefix, "send", json!({"to": BUDI, "text": "hi"}))
        .await;
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("disabled")),
        "{r}"
    );
    reachable(&server).await;
    server
        .contacts()
        .send_text(BUDI, "tidak diteruskan")
        .await
        .expect("Budi sends");
    // Not forwarded; nothing published on message/*.
    let published: Vec<_> = hq
        .drain(Duration::from_secs(2))
        .await
        .into_iter()
        .filter(|m| m.topic.contains("/message/"))
        .collect();
    assert!(published.is_empty(), "{published:?}");
    outlet.clean_up().await;
}

/// HQ's sends published while the agent is down (SIGKILL, then a restart)
/// wait on the broker for the agent's persistent session: every one is
/// answered, with its client_id, and reaches the customer exactly once,
/// without a retry from HQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_published_while_the_agent_is_down_are_answered_and_sent_once() {
    let server = server().await;
    let outlet = Outlet::new("down", &shared_broker());
    let (mut agent, mut hq) = linked(&server, &outlet, &[]).await;
    agent.signal("KILL");
    agent.wait_exit().await;

    let n = 20;
    for i in 0..n {
        hq.publish(
            &outlet.topic("request/send"),
            json!({"to": BUDI, "text": format!("saat mati {i}"), "client_id": format!("down-{i}")})
                .to_string(),
            false,
        )
        .await;
    }
    agent.spawn();
    let topic = outlet.topic("response/send");
    for i in 0..n {
        let client_id = format!("down-{i}");
        let answer = hq
            .seen_or_wait(&format!("the answer to {client_id}"), WAIT, |m| {
                m.topic == topic && m.json()["client_id"] == json!(client_id)
            })
            .await
            .json();
        assert_eq!(answer["status"], "ok", "{answer}");
        assert_eq!(answer["data"]["client_id"], json!(client_id), "{answer}");
    }
    for i in 0..n {
        wait_received(&server, BUDI, &format!("saat mati {i}")).await;
    }
    // Once each: the statuses of all are final, and nothing came twice.
    for i in 0..n {
        assert_eq!(received_by(&server, BUDI, &format!("saat mati {i}")), 1);
    }
    agent.stop().await;
    outlet.clean_up().await;
}

/// Number lookups are paced like sends (WhatsApp bans accounts that look
/// numbers up at machine speed): with 120 a minute after a burst of 3,
/// eight `check_number` asked at once (as many as the link runs at a
/// time; more are answered `busy`) are all answered, and the k-th answer
/// comes no earlier than the pace allows ((k - 2) half-seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn number_lookups_are_paced() {
    let server = server().await;
    let outlet = Outlet::new("lookups", &shared_broker());
    let (mut agent, mut hq, started) = lookups_at_once(&server, &outlet, 8).await;
    let topic = outlet.topic("response/check_number");
    let mut at = Vec::new();
    while at.len() < 8 {
        let answer = hq
            .wait_for("the lookups' answers", WAIT, |m| m.topic == topic)
            .await;
        let body = answer.json();
        assert_eq!(body["status"], "ok", "{body}");
        assert_eq!(body["data"]["registered"], true, "{body}");
        at.push(answer.at.duration_since(started));
    }
    at.sort();
    for (k, when) in at.iter().enumerate().skip(3) {
        let earliest = Duration::from_millis(500 * (k as u64 - 2));
        assert!(
            *when + Duration::from_millis(50) >= earliest,
            "answer {k} came {when:?} after the first request, before its turn at {earliest:?}"
        );
    }
    agent.stop().await;
}

/// HQ publishes 100 sends while the broker restarts (with persistence, as
/// docs/deploy.md asks) and while the agent is SIGKILLed and restarted:
/// each is answered with its client_id and reaches Budi exactly once, with
/// no retry from HQ (its MQTT client only resends what the broker never
/// acknowledged, as QoS 1 does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_sends_through_a_broker_restart_and_a_kill_are_each_sent_once() {
    let server = server().await;
    let mut broker = persistent_broker().await;
    let url = broker.url(false);
    let outlet = Outlet::new("storm", &url);
    let mut agent = Agent::start(&server, &outlet.env(&[]));
    agent.pair(&server).await;
    reachable(&server).await;
    let mut hq =
        Subscriber::connect_persistent(&url, &unique("hq"), &[&outlet.topic("response/send")])
            .await;
    let topic = outlet.topic("request/send");
    let text = |i: usize| format!("badai {i}");
    let publish = async |hq: &Subscriber, range: std::ops::Range<usize>| {
        for i in range {
            hq.publish(
                &topic,
                json!({"to": BUDI, "text": text(i), "client_id": format!("storm-{i}")}).to_string(),
                false,
            )
            .await;
        }
    };
    let answers = outlet.topic("response/send");
    let answered = async |hq: &mut Subscriber, i: usize| {
        let client_id = format!("storm-{i}");
        hq.seen_or_wait(&format!("the answer to {client_id}"), WAIT, |m| {
            m.topic == answers && m.json()["client_id"] == json!(client_id)
        })
        .await;
    };
    // The broker stops while the agent works through the first third, and
    // the second third is published while it is down (HQ's client holds
    // them until it is back).
    publish(&hq, 0..34).await;
    answered(&mut hq, 10).await;
    broker.stop();
    publish(&hq, 34..67).await;
    broker.spawn().await;
    // The agent is killed while it works through the second third, and the
    // last third is published while it is down.
    answered(&mut hq, 40).await;
    agent.signal("KILL");
    agent.wait_exit().await;
    publish(&hq, 67..100).await;
    agent.spawn();

    for i in 0..100 {
        let client_id = format!("storm-{i}");
        let answer = hq
            .seen_or_wait(&format!("the answer to {client_id}"), WAIT, |m| {
                m.topic == answers && m.json()["client_id"] == json!(client_id)
            })
            .await
            .json();
        assert_eq!(answer["status"], "ok", "{answer}");
    }
    for i in 0..100 {
        wait_received(&server, BUDI, &text(i)).await;
    }
    for i in 0..100 {
        assert_eq!(received_by(&server, BUDI, &text(i)), 1, "{}", text(i));
    }
    agent.stop().await;
}

/// HQ was away, the broker restarted without persistence and lost what it
/// held for HQ: HQ sees the gap by the seqs and asks for a replay, and gets
/// every record again, with its id and seq, marked `replay`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hq_replays_what_a_broker_restart_lost() {
    let server = server().await;
    let mut broker = Broker::start("allow_anonymous true\n").await;
    let outlet = Outlet::new("replay", &broker.url(false));
    // Sees what the agent publishes, so the test knows it was handed over.
    let mut observer = outlet.hq().await;
    let (mut agent, hq) = linked(&server, &outlet, &[]).await;
    drop(hq);
    let contacts = server.contacts();
    let ids = contacts
        .send_burst(BUDI, 20, "hilang")
        .await
        .expect("Budi sends 20");
    distinct_ids(&mut observer, &outlet.topic("message/in"), 20, "the burst").await;
    drop(observer);

    // The broker restarts and keeps nothing.
    broker.stop();
    broker.spawn().await;
    let mut hq = outlet.hq().await;
    // Once the agent is back on the broker, a new message arrives, with
    // the next seq: HQ sees 20 are missing.
    contacts.send_text(BUDI, "kembali").await.expect("sent");
    let back = wait_inbound(&mut hq, &outlet, "kembali").await;
    assert_eq!(back["seq"], 21, "{back}");

    let answer = hq
        .request(
            &outlet.prefix,
            "replay",
            json!({"from_seq": 1, "to_seq": 20}),
        )
        .await;
    assert_eq!(answer["status"], "ok", "{answer}");
    assert_eq!(answer["data"]["replayed"], 20, "{answer}");
    assert_eq!(answer["data"]["first_held"], 1, "{answer}");
    assert_eq!(answer["data"]["epoch"], back["epoch"], "{answer}");
    let topic = outlet.topic("message/in");
    let mut replayed = std::collections::BTreeMap::new();
    while replayed.len() < 20 {
        let m = hq
            .seen_or_wait("replayed records", WAIT, |m| {
                m.topic == topic
                    && m.json()["replay"] == true
                    && !replayed.contains_key(&m.json()["seq"].as_u64().unwrap_or(0))
            })
            .await
            .json();
        replayed.insert(
            m["seq"].as_u64().expect("a seq"),
            m["id"].as_str().expect("an id").to_string(),
        );
    }
    assert_eq!(
        replayed.keys().copied().collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    let mut got: Vec<String> = replayed.into_values().collect();
    let mut want = ids;
    got.sort();
    want.sort();
    assert_eq!(got, want, "the same ids");
    agent.stop().await;
}

/// The finding: 200 `check_number` in 1.5 s all reached WhatsApp. Now 200
/// at once are each answered (registered, `busy` beyond the link's eight
/// in flight, or `rate_limited`), and the answers from WhatsApp keep to the
/// burst and the rate: the k-th no sooner than its turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_lookups_at_once_reach_whatsapp_paced() {
    let server = server().await;
    let outlet = Outlet::new("lookups200", &shared_broker());
    let (mut agent, mut hq, started) = lookups_at_once(&server, &outlet, 200).await;
    let topic = outlet.topic("response/check_number");
    let mut answered = std::collections::HashSet::new();
    let (mut registered, mut refused) = (Vec::new(), 0);
    while answered.len() < 200 {
        let answer = hq
            .wait_for("the 200 lookups' answers", WAIT, |m| {
                m.topic == topic && !answered.contains(&m.json()["transaction"].to_string())
            })
            .await;
        let body = answer.json();
        answered.insert(body["transaction"].to_string());
        if body["status"] == "ok" {
            assert_eq!(body["data"]["registered"], true, "{body}");
            registered.push(answer.at.duration_since(started));
        } else {
            let error = body["error"].as_str().unwrap_or_default();
            assert!(
                error.starts_with("busy") || error.starts_with("rate_limited"),
                "{body}"
            );
            refused += 1;
        }
    }
    let elapsed = started.elapsed();
    assert!(
        registered.len() >= 3,
        "{} answered, {refused} refused",
        registered.len()
    );
    registered.sort();
    // The burst at once, then one per 500 ms.
    for (k, at) in registered.iter().enumerate().skip(3) {
        let earliest = Duration::from_millis(500 * (k as u64 - 2));
        assert!(
            *at + Duration::from_millis(50) >= earliest,
            "lookup {k} answered {at:?} after the first request, before its turn at {earliest:?}"
        );
    }
    let allowed = 3 + (elapsed.as_millis() / 500) as usize + 1;
    assert!(
        registered.len() <= allowed,
        "{} lookups in {elapsed:?}: more than the pace allows",
        registered.len()
    );
    agent.stop().await;
}

/// An outlet paced at 120 lookups a minute after a burst of 3, and `n`
/// `check_number` for Budi published at once; returns when they were.
async fn lookups_at_once(
    server: &fake_whatsapp::FakeServer,
    outlet: &Outlet,
    n: usize,
) -> (Agent, Subscriber, std::time::Instant) {
    let (agent, hq) = linked(
        server,
        outlet,
        &[
            ("OUTLET_AGENT__WHATSAPP__LOOKUPS_PER_MINUTE", "120"),
            ("OUTLET_AGENT__WHATSAPP__LOOKUP_BURST", "3"),
        ],
    )
    .await;
    let started = std::time::Instant::now();
    for i in 0..n {
        hq.publish(
            &outlet.topic("request/check_number"),
            json!({"phone": BUDI, "transaction": format!("look-{i}")}).to_string(),
            false,
        )
        .await;
    }
    (agent, hq, started)
}
