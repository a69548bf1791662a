//! Session benchmarks of the real agent binary against the fake server:
//! start → QR ready, restart → connected, server drop → state change, and
//! steady-state RSS, CPU and disk writes while connected and idle.
//!
//! `cargo bench -p outlet-agent --bench session` (idle period: 300 s, or
//! `BENCH_IDLE_SECS`). Prints a Markdown table for BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use support::{cpu_ticks, proc_field};

const RUNS: usize = 5;
/// Restarts are counted more often: every one must be fast, not the median
/// (a lost push name once made every login wait 10 s).
const RESTARTS: usize = 20;

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

/// Where the resident memory of `pid` is, by kind, from `/proc/<pid>/smaps`
/// (KiB): the binary's code and data, shared libraries, the main heap,
/// glibc's per-thread malloc arenas (64 MiB reservations), thread stacks
/// (2 MiB mappings), and other anonymous memory.
fn memory_breakdown(pid: u32) -> Vec<(&'static str, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    struct Mapping {
        size_kib: u64,
        rss_kib: u64,
        path: String,
        no_access: bool,
    }
    let mut maps: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            let (start, end) = fields[0].split_once('-').unwrap_or(("0", "0"));
            let span = u64::from_str_radix(end, 16).unwrap_or(0)
                - u64::from_str_radix(start, 16).unwrap_or(0);
            maps.push(Mapping {
                size_kib: span / 1024,
                rss_kib: 0,
                path: fields.get(5).map(|p| p.to_string()).unwrap_or_default(),
                no_access: fields.get(1).is_some_and(|p| p.starts_with("---")),
            });
        } else if let (Some(&"Rss:"), Some(kib)) = (fields.first(), fields.get(1))
            && let Some(last) = maps.last_mut()
        {
            last.rss_kib = kib.parse().unwrap_or(0);
        }
    }
    let kinds = [
        "binary (code, data)",
        "shared libraries",
        "main heap (brk)",
        "malloc arenas of other threads",
        "thread stacks",
        "main thread stack",
        "other anonymous",
    ];
    let mut sums = [0u64; 7];
    for (i, m) in maps.iter().enumerate() {
        let next_reserved = maps
            .get(i + 1)
            .filter(|n| n.no_access && n.path.is_empty())
            .map_or(0, |n| n.size_kib);
        let kind = if m.path.contains("outlet-agent") {
            0
        } else if m.path.starts_with('/') {
            1
        } else if m.path == "[heap]" {
            2
        } else if m.path == "[stack]" {
            5
        } else if m.path.is_empty() && m.size_kib + next_reserved == 65536 {
            3
        } else if m.path.is_empty() && (m.size_kib == 2048 || m.size_kib == 2052) {
            4
        } else {
            6
        };
        sums[kind] += m.rss_kib;
    }
    kinds.into_iter().zip(sums).collect()
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
    for _ in 0..RESTARTS {
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
    let threads = proc_field(pid, "status", "Threads:");
    let breakdown = memory_breakdown(pid);
    let ticks_per_sec = support::clock_ticks_per_sec();
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
    let slowest_restart = to_connected.iter().max().copied().unwrap_or_default();
    println!(
        "| restart → connected (median of {RESTARTS}; slowest) | {:?}; {slowest_restart:?} |",
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
    println!();
    println!("Where the idle RSS is ({threads} threads):");
    println!();
    println!("| kind | RSS KiB |");
    println!("|---|---:|");
    for (kind, kib) in breakdown {
        println!("| {kind} | {kib} |");
    }
}
