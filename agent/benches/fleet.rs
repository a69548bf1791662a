//! Fleet simulation: N real agents (default 200, small data dirs of their
//! own) against one fake WhatsApp server and one private Mosquitto.
//!
//! 1. Start: from the first spawn until every agent is linked (QR scanned
//!    by the fake phone from its screen) and its `state` says `connected`
//!    on the broker.
//! 2. Broker restart: the broker is killed, stays away for
//!    `BENCH_OUTAGE_SECS`, and comes back empty; how long until every
//!    agent is `online` again, and how the reconnects spread over time
//!    (CONNECTs per second from the broker's log: the backoff's jitter must
//!    keep the fleet from arriving at once).
//! 3. `outlet-agent fleet` over N outlets: time to the full table.
//! 4. Idle: what the connected fleet sends the broker per second, the
//!    broker's CPU for it, and the agents' memory.
//!
//! `cargo bench -p outlet-agent --bench fleet`; `BENCH_AGENTS` (200),
//! `BENCH_OUTAGE_SECS` (10) and `BENCH_IDLE_SECS` (120) change the sizes.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/mqtt.rs"]
mod mqtt;
mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::Agent;
use mqtt::{Broker, Subscriber};
use support::{cpu_ticks, env_u64, proc_field};

/// Agents linked at once: the fake phone scans one QR after another, and
/// a real outlet rollout links a handful of outlets at a time too.
const PAIRING_AT_ONCE: usize = 10;

async fn run() {
    let n = usize::try_from(env_u64("BENCH_AGENTS", 200)).unwrap_or(200);
    let outage = Duration::from_secs(env_u64("BENCH_OUTAGE_SECS", 10));
    let idle_secs = env_u64("BENCH_IDLE_SECS", 120);
    let wait = Duration::from_secs(300 + n as u64);

    let mut broker = Broker::start("allow_anonymous true\nset_tcp_nodelay true").await;
    let url = broker.url(false);
    let server = common::server().await;
    let ids: Vec<String> = (0..n).map(|i| format!("fleet-{i:04}")).collect();
    let mut watch = Subscriber::connect(&url, &["outlet/+/state", "outlet/+/availability"]).await;

    // 1. Start and link.
    let started = Instant::now();
    let mut agents: Vec<Agent> = ids
        .iter()
        .map(|id| {
            Agent::start(
                &server,
                &[
                    ("OUTLET_AGENT__OUTLET__ID", id),
                    ("OUTLET_AGENT__MQTT__BROKER", &url),
                    // The outlet's real MQTT backoff (the harness shortens
                    // only WhatsApp's first retry).
                    ("OUTLET_AGENT__MQTT__RECONNECT_FIRST_DELAY_MS", "500"),
                    ("OUTLET_AGENT__MQTT__RECONNECT_MAX_DELAY_SECS", "60"),
                ],
            )
        })
        .collect();
    let spawned = started.elapsed();
    for batch in agents.chunks_mut(PAIRING_AT_ONCE) {
        futures_util::future::join_all(batch.iter_mut().map(|a| a.pair(&server))).await;
    }
    let linked = started.elapsed();
    let mut connected: HashSet<String> = HashSet::new();
    while connected.len() < n {
        let m = watch
            .wait_for("every agent connected on MQTT", wait, |m| {
                m.topic.ends_with("/state") && m.json()["state"] == "connected"
            })
            .await;
        connected.insert(m.topic.clone());
    }
    let all_connected = started.elapsed();
    drop(watch);
    let rss_kib: u64 = agents
        .iter()
        .filter_map(|a| a.child.as_ref())
        .map(|c| proc_field(c.id(), "status", "VmRSS:"))
        .sum();

    // 2. Broker restart.
    let log_before = broker.log().len();
    broker.kill();
    tokio::time::sleep(outage).await;
    let back = Instant::now();
    let back_epoch = chrono::Utc::now().timestamp();
    broker.spawn().await;
    let mut watch = Subscriber::connect(&url, &["outlet/+/availability"]).await;
    let mut online: HashSet<String> = HashSet::new();
    while online.len() < n {
        let m = watch
            .seen_or_wait("every agent online again", wait, |m| {
                m.payload == b"online" && !online.contains(&m.topic)
            })
            .await;
        online.insert(m.topic.clone());
    }
    let all_online = back.elapsed();
    drop(watch);
    let log = broker.log();
    let connects = connects_per_second(log.get(log_before..).unwrap_or_default(), back_epoch);

    // 3. `fleet` over the whole fleet.
    let fleet_started = Instant::now();
    let (code, out, err) = common::run_cli(&["fleet", "--broker", &url, "--prefix", "outlet"], &[]);
    let fleet_time = fleet_started.elapsed();
    let listed = ids.iter().filter(|id| out.contains(id.as_str())).count();
    assert_eq!(
        listed, n,
        "fleet listed {listed} of {n} (exit {code}): {err}"
    );

    // 4. Idle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut idle = Subscriber::connect(&url, &["outlet/#"]).await;
    idle.drain(Duration::from_secs(2)).await;
    let skip = idle.mark();
    let broker_pid = broker.pid();
    let ticks_before = broker_pid.map(cpu_ticks).unwrap_or(0);
    idle.drain(Duration::from_secs(idle_secs)).await;
    let ticks = broker_pid.map(cpu_ticks).unwrap_or(0) - ticks_before;
    let live: Vec<_> = idle.seen[skip..].iter().filter(|m| !m.retain).collect();
    let mut by_leaf: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for m in &live {
        let leaf = m.topic.rsplit('/').next().unwrap_or_default().to_string();
        let entry = by_leaf.entry(leaf).or_default();
        entry.0 += 1;
        entry.1 += (m.topic.len() + m.payload.len()) as u64;
    }
    let secs = idle_secs as f64;
    let messages: u64 = by_leaf.values().map(|v| v.0).sum();
    let bytes: u64 = by_leaf.values().map(|v| v.1).sum();
    let broker_cpu = ticks as f64 / support::clock_ticks_per_sec() / secs;

    println!("## Fleet simulation ({n} agents)\n");
    println!(
        "agent: {} build; one fake WhatsApp server; one private Mosquitto ({}); \
         keepalive 10 s, telemetry every 60 s, MQTT backoff 0.5 s doubling to 60 s, ±20 % jitter; \
         {PAIRING_AT_ONCE} pairings at a time\n",
        support::build_kind(),
        mqtt::mosquitto_version()
    );
    println!("| phase | result |");
    println!("|---|---|");
    println!("| {n} processes spawned | {:.1} s |", spawned.as_secs_f64());
    println!(
        "| all linked (QR scanned, WhatsApp connected) | {:.1} s after the first spawn |",
        linked.as_secs_f64()
    );
    println!(
        "| all `connected` on the broker | {:.1} s after the first spawn |",
        all_connected.as_secs_f64()
    );
    println!(
        "| memory, all agents (VmRSS) | {:.0} MiB ({:.1} MiB each) |",
        rss_kib as f64 / 1024.0,
        rss_kib as f64 / 1024.0 / n as f64
    );
    println!(
        "| broker away {} s, back empty → all `online` again | {:.1} s after it came back |",
        outage.as_secs(),
        all_online.as_secs_f64()
    );
    let (peak_second, peak) = connects
        .iter()
        .max_by_key(|(_, c)| **c)
        .map(|(s, c)| (*s, *c))
        .unwrap_or((0, 0));
    let total: u64 = connects.values().sum();
    println!(
        "| reconnects after the restart | {total} CONNECTs (status link and messages), \
         spread over {} s; peak {peak} in one second (second {peak_second}) |",
        connects.keys().max().map_or(0, |m| m + 1)
    );
    println!(
        "| `outlet-agent fleet` over {n} outlets | {:.2} s to the full table |",
        fleet_time.as_secs_f64()
    );
    println!(
        "| idle traffic from the fleet ({idle_secs} s) | {:.1} messages/s, {:.0} B/s topic+payload \
         ({:.2} messages/s per agent) |",
        messages as f64 / secs,
        bytes as f64 / secs,
        messages as f64 / secs / n as f64
    );
    println!(
        "| broker CPU at idle | {:.2} % of one core |",
        broker_cpu * 100.0
    );
    println!("\nIdle traffic by topic:\n");
    println!("| topic | messages/s | bytes/s |");
    println!("|---|---|---|");
    for (leaf, (count, b)) in &by_leaf {
        println!(
            "| {leaf} | {:.2} | {:.0} |",
            *count as f64 / secs,
            *b as f64 / secs
        );
    }
    println!("\nCONNECTs per second after the broker came back:\n");
    println!("| second | CONNECTs |");
    println!("|---|---|");
    for (second, count) in &connects {
        println!("| {second} | {count} |");
    }
    for agent in &mut agents {
        agent.stop().await;
    }
}

/// CONNECTs per second since `since` (epoch seconds), from Mosquitto's
/// "New client connected" lines (its timestamps are whole seconds).
fn connects_per_second(log: &str, since: i64) -> BTreeMap<i64, u64> {
    let mut out = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("New client connected")) {
        let Some(at) = line
            .split(':')
            .next()
            .and_then(|t| t.trim().parse::<i64>().ok())
        else {
            continue;
        };
        *out.entry((at - since).max(0)).or_default() += 1;
    }
    out
}

fn main() {
    support::block_on(run());
}
