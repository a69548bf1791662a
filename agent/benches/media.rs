//! Received files benchmark: the real agent binary, the fake server's
//! contact Budi sending real encrypted files through its media host, and a
//! private Mosquitto, observed the way HQ would.
//!
//! 1. Latency: Budi sends a 2 MB photo at a time; from the start of his
//!    send (encryption and upload included) to HQ's subscriber holding the
//!    file's last chunk on `media/<sha256>/<index>`.
//! 2. A 50 MB video through the agent: its RSS before and its peak
//!    (`VmHWM`) after, the bytes it wrote (`/proc/<pid>/io` `write_bytes`,
//!    what reaches the disk, the SD card on a Pi) relative to the file's
//!    size, and its CPU time.
//!
//! `cargo bench -p outlet-agent --bench media`. Knobs:
//! `BENCH_MEDIA_SAMPLES` (20 photos), `BENCH_MEDIA_PHOTO` (2 000 000 bytes),
//! `BENCH_MEDIA_VIDEO` (50 000 000 bytes). Reports, never judges numbers:
//! it fails only when something is broken (a file lost or different).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/mqtt.rs"]
mod mqtt;
mod support;

use std::time::{Duration, Instant};

use common::{Agent, file_bytes, media_ca, reachable, sha_hex};
use mqtt::{Broker, Subscriber, unique};
use serde_json::json;
use support::{build_kind, clock_ticks_per_sec, cpu_ticks, env_u64, proc_field};

const WAIT: Duration = Duration::from_secs(300);
const BUDI: &str = "6281111111111";

fn pid(agent: &Agent) -> u32 {
    agent.child.as_ref().expect("the agent runs").id()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Sends `bytes` from Budi as `name` and waits until HQ holds every chunk;
/// returns the time from the send's start to the last chunk, after checking
/// the chunks make the file.
async fn one_file(
    server: &fake_whatsapp::FakeServer,
    hq: &mut Subscriber,
    prefix: &str,
    name: &str,
    bytes: &[u8],
    agent: &Agent,
) -> Duration {
    let sha = sha_hex(bytes);
    let chunk_prefix = format!("{prefix}/media/{sha}/");
    let announce_topic = format!("{prefix}/message/media");
    let started = Instant::now();
    server
        .contacts()
        .send_file(BUDI, name, bytes, "")
        .await
        .expect("Budi sends a file");
    let announced = hq
        .wait_for("the announcement", WAIT, |m| {
            m.topic == announce_topic && m.json()["sha256"] == json!(sha)
        })
        .await
        .json();
    let chunks = announced["chunks"]
        .as_u64()
        .unwrap_or_else(|| panic!("no chunks in {announced}\n{}", agent.log()))
        as usize;
    let chunk_size = announced["chunk_size"].as_u64().expect("chunk_size") as usize;
    let mut got: Vec<Option<Vec<u8>>> = vec![None; chunks];
    let mut have = 0;
    while have < chunks {
        let m = hq
            .wait_for("a chunk", WAIT, |m| m.topic.starts_with(&chunk_prefix))
            .await;
        let index: usize = m.topic[chunk_prefix.len()..].parse().expect("an index");
        if got[index].is_none() {
            have += 1;
        }
        got[index] = Some(m.payload);
    }
    let elapsed = started.elapsed();
    let whole: Vec<u8> = got.into_iter().flatten().flatten().collect();
    assert!(whole == bytes, "{name}: the chunks do not make the file");
    assert!(whole.len() <= chunks * chunk_size);
    // Keep the subscriber's memory to this file.
    hq.seen.clear();
    elapsed
}

async fn run() {
    let samples = env_u64("BENCH_MEDIA_SAMPLES", 20) as usize;
    let photo_len = env_u64("BENCH_MEDIA_PHOTO", 2_000_000) as usize;
    let video_len = env_u64("BENCH_MEDIA_VIDEO", 50_000_000) as usize;
    let broker = Broker::start("allow_anonymous true\nset_tcp_nodelay true\n").await;
    let url = broker.url(false);
    let server = common::server().await;
    let (_ca_dir, ca) = media_ca(&server);
    let id = unique("bench-media");
    let prefix = format!("outlet/{id}");
    let mut hq = Subscriber::connect(
        &url,
        &[&format!("{prefix}/message/#"), &format!("{prefix}/media/#")],
    )
    .await;
    let mut agent = Agent::start(
        &server,
        &[
            ("OUTLET_AGENT__OUTLET__ID", id.as_str()),
            ("OUTLET_AGENT__MQTT__BROKER", url.as_str()),
            ("OUTLET_AGENT__MQTT__DISCOVERY", "false"),
            ("OUTLET_AGENT__WHATSAPP__MEDIA_CA_FILE", ca.as_str()),
            ("OUTLET_AGENT__MESSAGES__MEDIA_MAX_FILE_BYTES", "104857600"),
        ],
    );
    agent.pair(&server).await;
    reachable(&server).await;
    let agent_pid = pid(&agent);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 1. Latency of a photo, arrival to last chunk.
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let photo = file_bytes(photo_len, 100 + i as u64);
        let took = one_file(&server, &mut hq, &prefix, "foto.jpg", &photo, &agent).await;
        latencies.push(took.as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);

    // 2. A video through the agent: memory, bytes written, CPU.
    let video = file_bytes(video_len, 7);
    let rss_before = proc_field(agent_pid, "status", "VmRSS:");
    let peak_before = proc_field(agent_pid, "status", "VmHWM:");
    let written_before = proc_field(agent_pid, "io", "write_bytes:");
    let cpu_before = cpu_ticks(agent_pid);
    let took = one_file(&server, &mut hq, &prefix, "video.mp4", &video, &agent).await;
    let peak_after = proc_field(agent_pid, "status", "VmHWM:");
    let rss_after = proc_field(agent_pid, "status", "VmRSS:");
    let written = proc_field(agent_pid, "io", "write_bytes:") - written_before;
    let cpu = (cpu_ticks(agent_pid) - cpu_before) as f64 / clock_ticks_per_sec();

    println!("\n## Received files ({} agent build)\n", build_kind());
    println!("| photo | samples | min | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {:.1} MB, send start → last chunk at HQ | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
        photo_len as f64 / 1e6,
        latencies.len(),
        pct(&latencies, 0.0),
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
        pct(&latencies, 1.0)
    );
    println!("\n| {:.0} MB video | value |", video_len as f64 / 1e6);
    println!("|---|---|");
    println!(
        "| send start → last chunk at HQ | {:.1} s |",
        took.as_secs_f64()
    );
    println!("| RSS before | {} |", mib(rss_before));
    println!(
        "| peak RSS during (VmHWM; before: {}) | {} (+{}) |",
        mib(peak_before),
        mib(peak_after),
        mib(peak_after.saturating_sub(rss_before.max(peak_before)))
    );
    println!("| RSS after | {} |", mib(rss_after));
    println!(
        "| bytes written by the agent | {:.1} MB ({:.2}× the file) |",
        written as f64 / 1e6,
        written as f64 / video_len as f64
    );
    println!("| agent CPU time | {cpu:.1} s |");
    drop(broker);
}

fn main() {
    support::block_on(run());
}
