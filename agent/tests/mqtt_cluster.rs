//! `mqtt.broker` as a list: the agent on a three-node NATS cluster (its
//! JetStream MQTT listener), losing the node it is connected to.

mod common;
#[path = "common/mqtt.rs"]
mod mqtt;
#[path = "common/nats.rs"]
mod nats;

use std::time::{Duration, Instant};

use common::*;
use mqtt::*;
use nats::Cluster;

const WAIT: Duration = Duration::from_secs(90);

/// The node the agent's log says it connected to last, once it says so
/// after `from` (a byte offset into the log).
async fn node_after(agent: &Agent, cluster: &Cluster, from: usize, what: &str) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = agent.log();
        if let Some(node) = cluster.node_named_last_in(log.get(from..).unwrap_or_default()) {
            return node;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no \"MQTT connected to\" in the agent's log\n{log}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh subscriber on `url` sees `connected` and `online`, as HQ would.
///
/// Subscribes again while it does not: a NATS node learns of a retained
/// message published on another node asynchronously, and a subscription
/// made before that learns of it never (ARCHITECTURE.md, "What differs on
/// NATS"). Every node must serve both within the deadline.
async fn retained_on(url: &str, name: &str, state: &str, availability: &str) {
    let deadline = Instant::now() + WAIT;
    let mut subscriptions = 0;
    loop {
        subscriptions += 1;
        let mut sub = Subscriber::connect(url, &[state, availability]).await;
        let attempt_ends = Instant::now() + Duration::from_secs(5);
        loop {
            let connected = sub
                .seen
                .iter()
                .any(|m| m.topic == state && m.json()["state"] == "connected");
            let online = sub
                .seen
                .iter()
                .any(|m| m.topic == availability && m.payload == b"online");
            if connected && online {
                if subscriptions > 1 {
                    eprintln!("{name}: connected and online on subscription {subscriptions}");
                }
                return;
            }
            if Instant::now() >= attempt_ends {
                break;
            }
            sub.drain(Duration::from_millis(250)).await;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: no connected and online after {subscriptions} subscriptions; the last saw:\n{}",
            sub.describe()
        );
    }
}

/// State and availability are right on every node; killing the node the
/// agent is on moves it to another, where it says `online` again; and a
/// dead agent is marked `offline` by its will wherever HQ listens.
///
/// Not "retained" in the checks: NATS 2.9 hands a node's first QoS 1
/// subscriber the subject's earlier messages as live ones, without the
/// retained copy (ARCHITECTURE.md, "Decisions"); the latest value is right
/// either way, and that is what HQ reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_moves_to_another_node_when_its_node_dies() {
    let mut cluster = Cluster::start(3).await;
    let id = unique("cluster");
    let prefix = format!("outlet/{id}");
    let state = format!("{prefix}/state");
    let availability = format!("{prefix}/availability");
    let brokers = cluster
        .urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let brokers = format!("[{brokers}]");
    let server = server().await;
    let mut agent = Agent::start(
        &server,
        &[
            ("OUTLET_AGENT__OUTLET__ID", &id),
            ("OUTLET_AGENT__MQTT__BROKER", &brokers),
            ("OUTLET_AGENT__MQTT__KEEPALIVE_SECS", "2"),
            ("OUTLET_AGENT__MQTT__RECONNECT_FIRST_DELAY_MS", "100"),
            ("OUTLET_AGENT__MQTT__RECONNECT_MAX_DELAY_SECS", "1"),
        ],
    );
    agent.pair(&server).await;

    for node in &cluster.nodes {
        retained_on(&node.url(), &node.name, &state, &availability).await;
    }

    let on = node_after(&agent, &cluster, 0, "the first connection").await;
    // HQ's health views subscribe at QoS 0: on NATS a QoS 1 subscription
    // is a JetStream consumer, and one on a surviving node once stopped
    // delivering when another node died (ARCHITECTURE.md, "What differs
    // on NATS").
    let mut survivors = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        if i != on {
            let sub = Subscriber::connect_qos0(&node.url(), &[&state, &availability]).await;
            survivors.push((node.name.clone(), sub));
        }
    }
    let marks: Vec<usize> = survivors.iter().map(|(_, s)| s.mark()).collect();
    let log_len = agent.log().len();
    let killed = Instant::now();
    cluster.nodes[on].kill();

    let moved = node_after(&agent, &cluster, log_len, "after the node died").await;
    eprintln!(
        "killed {}; the agent was on {} {:.1} s later",
        cluster.nodes[on].name,
        cluster.nodes[moved].name,
        killed.elapsed().as_secs_f64()
    );
    assert_ne!(moved, on, "it cannot be on the dead node");
    for ((name, sub), mark) in survivors.iter_mut().zip(marks) {
        heard_after(
            sub,
            mark,
            &format!("online again, on {name}"),
            &cluster,
            |m| m.topic == availability && m.payload == b"online",
        )
        .await;
    }
    let health = agent.status().await.expect("the agent answers");
    assert_eq!(health["state"], "connected", "WhatsApp never noticed");

    // The agent dies: the node it is on now publishes its will, and HQ
    // hears it on every surviving node.
    let marks: Vec<usize> = survivors.iter().map(|(_, s)| s.mark()).collect();
    agent.signal("KILL");
    agent.wait_exit().await;
    for ((name, sub), mark) in survivors.iter_mut().zip(marks) {
        heard_after(
            sub,
            mark,
            &format!("offline (the will), on {name}"),
            &cluster,
            |m| m.topic == availability && m.payload == b"offline",
        )
        .await;
    }
}

/// A message matching `pick` after `mark`, or a panic with what `sub` saw
/// and every node's log.
async fn heard_after(
    sub: &mut Subscriber,
    mark: usize,
    what: &str,
    cluster: &Cluster,
    pick: impl Fn(&Msg) -> bool,
) {
    if sub.seen[mark.min(sub.seen.len())..].iter().any(&pick) {
        return;
    }
    if sub.try_wait_for(WAIT, &pick).await.is_none() {
        panic!(
            "no {what} within {WAIT:?}; seen:\n{}\n{}",
            sub.describe(),
            cluster.logs()
        );
    }
}

/// Received files over NATS' MQTT listener: told the broker takes 1 MB, the
/// agent still sends chunks of at most 256 KiB, which NATS delivers, and HQ
/// puts the file together from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_file_reaches_hq_in_chunks_over_nats() {
    let cluster = Cluster::start(3).await;
    let url = cluster.urls()[0].clone();
    let id = unique("nats-media");
    let prefix = format!("outlet/{id}");
    let server = server().await;
    let (_ca_dir, ca) = media_ca(&server);
    let announcements = format!("{prefix}/message/media");
    let chunks = format!("{prefix}/media/");
    let mut hq = Subscriber::connect(&url, &[&announcements, &format!("{prefix}/media/#")]).await;
    let mut agent = Agent::start(
        &server,
        &[
            ("OUTLET_AGENT__OUTLET__ID", &id),
            ("OUTLET_AGENT__MQTT__BROKER", &url),
            ("OUTLET_AGENT__MQTT__DISCOVERY", "false"),
            ("OUTLET_AGENT__MQTT__MAX_PACKET_BYTES", "1048576"),
            ("OUTLET_AGENT__WHATSAPP__MEDIA_CA_FILE", &ca),
        ],
    );
    agent.pair(&server).await;
    reachable(&server).await;
    let file = file_bytes(700_000, 9);
    server
        .contacts()
        .send_file("6281111111111", "katalog.pdf", &file, "")
        .await
        .expect("Budi sends a PDF");
    let announced = sub_wait(&mut hq, &announcements).await;
    let (count, size) = (
        announced["chunks"].as_u64().expect("chunks") as usize,
        announced["chunk_size"].as_u64().expect("chunk_size") as usize,
    );
    assert_eq!((count, size), (3, 256 * 1024), "{announced}");
    let mut parts: Vec<Option<Vec<u8>>> = vec![None; count];
    while parts.iter().any(Option::is_none) {
        let m = hq
            .wait_for("a chunk", WAIT, |m| m.topic.starts_with(&chunks))
            .await;
        let index: usize = m.topic[chunks.len()..]
            .rsplit('/')
            .next()
            .and_then(|i| i.parse().ok())
            .expect("an index");
        parts[index] = Some(m.payload);
    }
    let whole: Vec<u8> = parts.into_iter().flatten().flatten().collect();
    assert!(
        whole == file,
        "the chunks do not make the file\n{}",
        agent.log()
    );
}

async fn sub_wait(hq: &mut Subscriber, topic: &str) -> serde_json::Value {
    hq.wait_for("the announcement", WAIT, |m| m.topic == topic)
        .await
        .json()
}
