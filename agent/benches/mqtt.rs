//! MQTT benchmark: the real agent binary, the fake WhatsApp server and a
//! private Mosquitto on a free port.
//!
//! 1. State change → subscriber latency: `pause` / `resume` cycles over
//!    MQTT; for every published transition, the time from the supervisor
//!    stamping it (`since` of `state`, `at` of `event`) to a subscriber
//!    holding it. Same machine, same clock.
//! 2. Idle traffic: messages and bytes the connected, idle agent sends per
//!    hour — counted by a subscriber and, on the wire, from the kernel's
//!    TCP counters of the agent's broker socket (`ss -tinp`).
//!
//! `cargo bench -p outlet-agent --bench mqtt`; `BENCH_CYCLES` (default 30)
//! and `BENCH_IDLE_SECS` (default 180) change the sizes,
//! `BENCH_BROKER_NODELAY=0` leaves Mosquitto's Nagle on (its default).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/mqtt.rs"]
mod mqtt;
mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::Agent;
use mqtt::{Broker, Msg, Subscriber, unique};
use serde_json::json;
use support::env_u64;

const WAIT: Duration = Duration::from_secs(90);

async fn run() {
    let cycles = env_u64("BENCH_CYCLES", 30);
    let idle_secs = env_u64("BENCH_IDLE_SECS", 180);
    // Mosquitto's default keeps Nagle on client sockets, which adds up to a
    // delayed-ACK time (~40 ms) per delivery; BENCH_BROKER_NODELAY=0 shows it.
    let nodelay = env_u64("BENCH_BROKER_NODELAY", 1) == 1;
    let broker = Broker::start(&format!("allow_anonymous true\nset_tcp_nodelay {nodelay}")).await;
    let url = broker.url(false);
    let server = common::server().await;
    let id = unique("bench");
    let prefix = format!("outlet/{id}");
    let mut agent = Agent::start(
        &server,
        &[
            ("OUTLET_AGENT__OUTLET__ID", &id),
            ("OUTLET_AGENT__MQTT__BROKER", &url),
        ],
    );
    agent.pair(&server).await;
    let pid = agent.child.as_ref().expect("running").id();

    // 1. Latency.
    let mut sub = Subscriber::connect(
        &url,
        &[
            &format!("{prefix}/state"),
            &format!("{prefix}/event"),
            &format!("{prefix}/response/+"),
        ],
    )
    .await;
    let start = sub.mark();
    let state_topic = format!("{prefix}/state");
    for _ in 0..cycles {
        let mut mark = sub.mark();
        let r = sub.request(&prefix, "pause", json!({})).await;
        assert_eq!(r["status"], "ok", "{r}");
        sub.wait_after(&mut mark, "paused", WAIT, |m| {
            m.topic == state_topic && m.json()["state"] == "paused"
        })
        .await;
        let mut mark = sub.mark();
        let r = sub.request(&prefix, "resume", json!({})).await;
        assert_eq!(r["status"], "ok", "{r}");
        sub.wait_after(&mut mark, "connected", WAIT, |m| {
            m.topic == state_topic && m.json()["state"] == "connected"
        })
        .await;
    }
    sub.drain(Duration::from_millis(500)).await;
    let seen = &sub.seen[start..];
    let state_ms = state_latencies(seen, &state_topic);
    let event_ms = event_latencies(seen, &format!("{prefix}/event"));
    drop(sub);

    // 2. Idle traffic, after things settled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut idle = Subscriber::connect(&url, &[&format!("{prefix}/#")]).await;
    idle.drain(Duration::from_millis(500)).await;
    let skip = idle.mark();
    let wire_before = socket_bytes(pid, broker.port);
    idle.drain(Duration::from_secs(idle_secs)).await;
    let wire_after = socket_bytes(pid, broker.port);
    let live: Vec<&Msg> = idle.seen[skip..].iter().filter(|m| !m.retain).collect();
    let per_hour = 3600.0 / idle_secs as f64;
    let mut by_topic: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for m in &live {
        let leaf = m.topic.rsplit('/').next().unwrap_or_default().to_string();
        let entry = by_topic.entry(leaf).or_default();
        entry.0 += 1;
        entry.1 += (m.topic.len() + m.payload.len()) as u64;
    }

    println!("## MQTT benchmark\n");
    println!(
        "agent: {} build, fake WhatsApp server, private Mosquitto ({}, set_tcp_nodelay \
         {nodelay}), keepalive 10 s, telemetry 60 s, health ttl 60 s\n",
        support::build_kind(),
        mqtt::mosquitto_version()
    );
    println!("### State change → subscriber latency ({cycles} pause/resume cycles)\n");
    println!("| payload | samples | min | p50 | p95 | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    println!("{}", row("state (retained)", &state_ms));
    println!("{}", row("event", &event_ms));
    println!("\n### Idle, connected ({idle_secs} s window, scaled to one hour)\n");
    println!("| topic | messages/h | topic+payload bytes/h |");
    println!("|---|---|---|");
    let mut total = (0u64, 0u64);
    for (leaf, (count, bytes)) in &by_topic {
        total.0 += count;
        total.1 += bytes;
        println!(
            "| {leaf} | {:.0} | {:.0} |",
            *count as f64 * per_hour,
            *bytes as f64 * per_hour
        );
    }
    println!(
        "| **all** | **{:.0}** | **{:.0}** |",
        total.0 as f64 * per_hour,
        total.1 as f64 * per_hour
    );
    match (wire_before, wire_after) {
        (Some(before), Some(after)) => {
            let sent = after.0.saturating_sub(before.0) as f64 * per_hour;
            let received = after.1.saturating_sub(before.1) as f64 * per_hour;
            println!(
                "\nOn the wire (agent's MQTT socket, TCP payload, incl. PINGREQ/PINGRESP and \
                 PUBACKs): **{sent:.0} B/h sent, {received:.0} B/h received** \
                 ({:.1} KiB/day both ways).",
                (sent + received) * 24.0 / 1024.0
            );
        }
        _ => println!("\nOn the wire: `ss` could not find the agent's socket."),
    }
    agent.stop().await;
}

/// Milliseconds from `since` to arrival, for the first publication of each
/// state (later ones with the same `since` are heartbeats).
fn state_latencies(seen: &[Msg], topic: &str) -> Vec<f64> {
    let mut last_since = None;
    let mut out = Vec::new();
    for m in seen.iter().filter(|m| m.topic == topic) {
        let since = m.json()["since"].as_str().map(str::to_string);
        if since != last_since
            && let Some(at) = since.as_deref().and_then(parse)
        {
            out.push(ms(m.wall, at));
        }
        last_since = since;
    }
    out
}

fn event_latencies(seen: &[Msg], topic: &str) -> Vec<f64> {
    seen.iter()
        .filter(|m| m.topic == topic)
        .filter_map(|m| {
            m.json()["at"]
                .as_str()
                .and_then(parse)
                .map(|at| ms(m.wall, at))
        })
        .collect()
}

fn parse(text: &str) -> Option<DateTime<Utc>> {
    text.parse().ok()
}

fn ms(arrived: DateTime<Utc>, stamped: DateTime<Utc>) -> f64 {
    (arrived - stamped).num_microseconds().unwrap_or(0) as f64 / 1000.0
}

fn row(name: &str, samples: &[f64]) -> String {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let i = ((sorted.len() - 1) as f64 * p).round() as usize;
        sorted[i]
    };
    format!(
        "| {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
        sorted.len(),
        pct(0.0),
        pct(0.5),
        pct(0.95),
        pct(0.99),
        pct(1.0)
    )
}

/// (bytes_sent, bytes_received) of the agent's TCP connection to the
/// broker port, from `ss -tinpH`.
fn socket_bytes(pid: u32, port: u16) -> Option<(u64, u64)> {
    let output = std::process::Command::new("ss")
        .args(["-tinpH", "state", "established"])
        .arg(format!("( dport = :{port} )"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.contains(&format!("pid={pid},")) {
            let stats = lines.next()?;
            let field = |name: &str| {
                stats
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix(name))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            return Some((field("bytes_sent:")?, field("bytes_received:").unwrap_or(0)));
        }
    }
    None
}

fn main() {
    support::block_on(run());
}
