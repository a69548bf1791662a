//! Session benchmarks of the real agent binary against the fake server:
//! start → QR ready, restart → connected, server drop → state change, and
//! steady-state RSS, CPU and disk writes while connected and idle.
//!
//! `cargo bench -p outlet-agent --bench session` (idle period: 300 s, or
//! `BENCH_IDLE_SECS`). Prints a Markdown table for BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const RUNS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn until(agent: &Agent, pick: impl Fn(&serde_json::Value) -> bool) -> Instant {
    loop {
        if let Some(h) = agent.status().await
            && pick(&h)
        {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let idle_secs: u64 = std::env::var("BENCH_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let server = server().await;

    // start → QR ready (fresh data directory each run).
    let mut to_qr = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let agent = Agent::start(&server, &[]);
        loop {
            if let Some(r) = agent.request(json!({"command": "qr"})).await
                && r["status"] == "ok"
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        to_qr.push(started.elapsed());
    }

    // A paired agent for the rest.
    let mut agent = Agent::start(&server, &[]);
    agent.pair(&server).await;

    // restart → connected.
    let mut to_connected = Vec::new();
    for _ in 0..RUNS {
        agent.stop().await;
        let started = Instant::now();
        agent.spawn();
        let at = until(&agent, |h| h["state"] == "connected").await;
        to_connected.push(at - started);
    }

    // server drop → state change.
    let mut to_change = Vec::new();
    for _ in 0..RUNS {
        let before = agent.status().await.expect("status")["last_disconnect"].clone();
        let started = Instant::now();
        server.drop_connections();
        let at = until(&agent, |h| {
            h["state"] != "connected" || h["last_disconnect"] != before
        })
        .await;
        to_change.push(at - started);
        until(&agent, |h| h["state"] == "connected").await;
    }

    // Idle while connected.
    let pid = agent.child.as_ref().expect("running").id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_start = proc_field(pid, "status", "VmRSS:");
    let cpu_start = cpu_ticks(pid);
    let written_start = proc_field(pid, "io", "write_bytes:");
    let idle_started = Instant::now();
    let mut rss_max = rss_start;
    while idle_started.elapsed() < Duration::from_secs(idle_secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_max = rss_max.max(proc_field(pid, "status", "VmRSS:"));
    }
    let elapsed = idle_started.elapsed().as_secs_f64();
    let rss_end = proc_field(pid, "status", "VmRSS:");
    let ticks_per_sec = 100.0;
    let cpu = (cpu_ticks(pid) - cpu_start) as f64 / ticks_per_sec / elapsed * 100.0;
    let written = proc_field(pid, "io", "write_bytes:") - written_start;
    let per_hour = written as f64 * 3600.0 / elapsed;
    assert_eq!(agent.status().await.expect("status")["state"], "connected");

    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| start → QR ready (median of {RUNS}) | {:?} |",
        median(to_qr)
    );
    println!(
        "| restart → connected (median of {RUNS}) | {:?} |",
        median(to_connected)
    );
    println!(
        "| server drop → state change (median of {RUNS}) | {:?} |",
        median(to_change)
    );
    println!(
        "| RSS connected idle, start / end / max over {idle_secs} s | {rss_start} / {rss_end} / {rss_max} KiB |"
    );
    println!("| CPU connected idle | {cpu:.3} % of one core |");
    println!(
        "| disk writes connected idle | {:.0} bytes/hour ({written} bytes in {elapsed:.0} s) |",
        per_hour
    );
}
