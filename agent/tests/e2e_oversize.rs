//! No message too large stops the ones after it: every record the agent
//! publishes fits in one MQTT packet of the broker's limit
//! (`mqtt.max_packet_bytes`), a text too long for it is cut and marked, the
//! whole of it is kept in the data directory, and the messages after it
//! reach HQ — also after a restart.

mod common;
#[path = "common/hq.rs"]
mod hq;
#[path = "common/mqtt.rs"]
mod mqtt;

use common::*;
use hq::*;
use mqtt::*;

const BUDI: &str = "6281111111111";

/// The size of the `message/in` HQ received with `text` as its start.
async fn inbound_starting_with(
    hq: &mut Subscriber,
    outlet: &Outlet,
    start: &str,
) -> (serde_json::Value, usize) {
    let topic = outlet.topic("message/in");
    let msg = hq
        .seen_or_wait(&format!("message/in starting {start:?}"), WAIT, |m| {
            m.topic == topic
                && m.json()["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(start))
        })
        .await;
    (msg.json(), msg.payload.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_too_large_for_a_packet_arrives_cut_and_the_next_ones_follow() {
    let server = server().await;
    let outlet = Outlet::new("huge", &shared_broker());
    let (mut agent, mut hq) = linked(&server, &outlet, &[]).await;
    let contacts = server.contacts();

    // 200 000 control characters: 1.2 MB of JSON, over the MQTT client's
    // own 1 MiB limit, and three times WhatsApp's text limit.
    let huge = format!("X{}", "\u{1}".repeat(200_000));
    contacts.send_text(BUDI, &huge).await.expect("Budi sends");
    contacts
        .send_text(BUDI, "sesudahnya")
        .await
        .expect("Budi sends");
    let (cut, size) = inbound_starting_with(&mut hq, &outlet, "X").await;
    assert_eq!(cut["text_truncated"], true, "marked");
    assert!(size <= 256 * 1024, "a record of {size} bytes");
    assert_eq!(cut["from"], format!("+{BUDI}"));
    wait_inbound(&mut hq, &outlet, "sesudahnya").await;

    // The whole of it is kept on the Pi.
    let kept = agent.data_dir().join("truncated");
    let files: Vec<_> = std::fs::read_dir(&kept)
        .expect("the truncated/ directory")
        .filter_map(Result::ok)
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let whole: serde_json::Value =
        serde_json::from_slice(&std::fs::read(files[0].path()).expect("readable")).expect("JSON");
    assert_eq!(whole["text"].as_str(), Some(huge.as_str()), "kept whole");
    assert_eq!(whole["id"], cut["id"]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &files[0].metadata().expect("metadata").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // And after a restart nothing waits behind it.
    assert!(agent.stop().await.success());
    agent.spawn();
    agent.wait_state("connected").await;
    contacts
        .send_text(BUDI, "setelah restart")
        .await
        .expect("Budi sends");
    wait_inbound(&mut hq, &outlet, "setelah restart").await;
    agent.stop().await;
    outlet.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_with_a_small_packet_limit_gets_records_below_it() {
    let server = server().await;
    let broker = Broker::start("allow_anonymous true\nmax_packet_size 131072\n").await;
    let outlet = Outlet::new("small", &broker.url(false));
    let (mut agent, mut hq) = linked(
        &server,
        &outlet,
        &[("OUTLET_AGENT__MQTT__MAX_PACKET_BYTES", "131072")],
    )
    .await;
    let contacts = server.contacts();

    // 35 000 emoji: within WhatsApp's limit, 140 KB of JSON.
    let emoji = format!("Y{}", "😀".repeat(35_000));
    contacts.send_text(BUDI, &emoji).await.expect("Budi sends");
    contacts
        .send_text(BUDI, "yang berikutnya")
        .await
        .expect("Budi sends");
    let (cut, size) = inbound_starting_with(&mut hq, &outlet, "Y").await;
    assert_eq!(cut["text_truncated"], true);
    assert!(size < 131_072, "a record of {size} bytes");
    assert!(size > 100 * 1024, "cut no more than needed: {size} bytes");
    wait_inbound(&mut hq, &outlet, "yang berikutnya").await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_broker_keeps_refusing_is_set_aside_and_the_queue_moves_on() {
    let server = server().await;
    // The broker's limit is lower than the agent was told (256 KiB).
    let broker = Broker::start("allow_anonymous true\nmax_packet_size 131072\n").await;
    let outlet = Outlet::new("refused", &broker.url(false));
    let (mut agent, mut hq) = linked(&server, &outlet, &[]).await;
    let contacts = server.contacts();

    let emoji = format!("Z{}", "😀".repeat(35_000));
    let id = contacts.send_text(BUDI, &emoji).await.expect("Budi sends");
    contacts
        .send_text(BUDI, "tetap sampai")
        .await
        .expect("Budi sends");
    // The notice comes in its place, with the same id; the next follows.
    let topic = outlet.topic("message/in");
    let notice = hq
        .seen_or_wait("the set-aside notice", WAIT, |m| {
            m.topic == topic && m.json()["id"] == serde_json::json!(id)
        })
        .await
        .json();
    assert_eq!(notice["set_aside"], true, "{notice}");
    assert_eq!(notice["from"], format!("+{BUDI}"), "{notice}");
    assert!(notice.get("text").is_none(), "{notice}");
    assert!(
        notice["bytes"].as_u64().is_some_and(|b| b > 131_072),
        "{notice}"
    );
    wait_inbound(&mut hq, &outlet, "tetap sampai").await;

    // Kept whole on the Pi.
    let kept = agent.data_dir().join("set-aside");
    let files: Vec<_> = std::fs::read_dir(&kept)
        .expect("the set-aside/ directory")
        .filter_map(Result::ok)
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let whole: serde_json::Value =
        serde_json::from_slice(&std::fs::read(files[0].path()).expect("readable")).expect("JSON");
    assert_eq!(whole["text"].as_str(), Some(emoji.as_str()));
    agent.stop().await;
}
