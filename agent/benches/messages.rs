//! Messages benchmark: the real agent binary, the fake WhatsApp server's
//! contacts (real Signal parties, in this process) and a private Mosquitto
//! on a free port, observed the way HQ would.
//!
//! 1. Inbound latency: Budi sends one text at a time; from the start of his
//!    send (encryption included) to HQ's subscriber holding it on
//!    `message/in`.
//! 2. Send latency: HQ publishes `request/send` one at a time; to the
//!    answer on `response/send`, to Budi's phone having decrypted it, to the
//!    `sent` status on `message/status`.
//! 3. A broadcast without pacing (`messages.max_per_minute = 0`): wall
//!    time, the agent's CPU time per message (`/proc/<pid>/stat`), the bytes
//!    it wrote per message (`/proc/<pid>/io`), and how the data directory's
//!    files and the log grew.
//! 4. Memory: the agent's RSS with a full outbox (sends queued while the
//!    fake server refuses connections, so the agent is `reconnecting`) and a
//!    full inbox (received while the broker is stopped), beside the idle
//!    RSS just before.
//!
//! `cargo bench -p outlet-agent --bench messages`. Sizes:
//! `BENCH_MESSAGES_SAMPLES` (200, per latency), `BENCH_MESSAGES_BROADCAST`
//! (1000), `BENCH_MESSAGES_OUTBOX` (10 000 queued sends),
//! `BENCH_MESSAGES_INBOX` (10 000 waiting inbound messages),
//! `BENCH_MESSAGES_DRAIN=1` also sends the queued outbox after its memory
//! reading and checks every one arrives (minutes: off by default);
//! `BENCH_RUST_LOG` (default `info`, the production level) is the agent's
//! log filter. Reports, never judges numbers: it fails only when something
//! is broken (a message lost, a send refused, the agent died).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/mqtt.rs"]
mod mqtt;
mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Agent;
use fake_whatsapp::{FakeServer, ServerEvent};
use mqtt::{Broker, Msg, Subscriber, make_readable, unique};
use serde_json::json;
use support::{cpu_ticks, env_u64, proc_field};

const WAIT: Duration = Duration::from_secs(90);
const BUDI: &str = "6281111111111";
const SARI: &str = "6282222222222";
/// The agent answers at most this many MQTT requests at once (more are
/// refused `busy`): HQ keeps this many `send`s outstanding.
const WINDOW: usize = 8;

/// VmRSS, RssAnon and VmHWM in KiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    anon: u64,
    peak: u64,
}

fn memory(pid: u32) -> Memory {
    Memory {
        rss: proc_field(pid, "status", "VmRSS:"),
        anon: proc_field(pid, "status", "RssAnon:"),
        peak: proc_field(pid, "status", "VmHWM:"),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Sizes of the files in the data directory (session.db, -wal, …).
fn data_files(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let meta = e.metadata().ok()?;
                    meta.is_file()
                        .then(|| (e.file_name().to_string_lossy().into_owned(), meta.len()))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Everything the agent did in a window: CPU, I/O, files.
struct Usage {
    at: Instant,
    ticks: u64,
    write_bytes: u64,
    wchar: u64,
    files: Vec<(String, u64)>,
    log: u64,
}

fn usage(agent: &Agent) -> Usage {
    let pid = pid(agent);
    Usage {
        at: Instant::now(),
        ticks: cpu_ticks(pid),
        write_bytes: proc_field(pid, "io", "write_bytes:"),
        wchar: proc_field(pid, "io", "wchar:"),
        files: data_files(&agent.dir.join("data")),
        log: file_len(&agent.dir.join("agent.log")),
    }
}

/// The SD card's bill for one phase: what reached the block device, what
/// was handed to `write()`, and the log's share of it.
struct DiskCost {
    what: String,
    messages: usize,
    write_bytes: u64,
    wchar: u64,
    log: u64,
}

impl DiskCost {
    fn between(what: impl Into<String>, messages: usize, before: &Usage, after: &Usage) -> Self {
        let what = what.into();
        eprintln!(
            "phase {what:?}: {:.6} .. {:.6} (epoch s)",
            epoch(before.at),
            epoch(after.at)
        );
        DiskCost {
            what,
            messages,
            write_bytes: after.write_bytes.saturating_sub(before.write_bytes),
            wchar: after.wchar.saturating_sub(before.wchar),
            log: after.log.saturating_sub(before.log),
        }
    }

    fn row(&self) -> String {
        let n = self.messages.max(1) as f64;
        format!(
            "| {} | {} | **{:.1} KiB** | {:.1} KiB | {:.2} KiB |",
            self.what,
            self.messages,
            self.write_bytes as f64 / n / 1024.0,
            self.wchar as f64 / n / 1024.0,
            self.log as f64 / n / 1024.0
        )
    }
}

/// An `Instant` as seconds since the epoch (to line phases up with an
/// `strace -ttt` of the agent).
fn epoch(at: Instant) -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs_f64() - at.elapsed().as_secs_f64()
}

fn pid(agent: &Agent) -> u32 {
    agent.child.as_ref().expect("the agent runs").id()
}

/// Panics (with the log's tail) when the agent is gone.
fn check_alive(agent: &mut Agent, context: &str) {
    if let Some(child) = agent.child.as_mut()
        && let Ok(Some(exit)) = child.try_wait()
    {
        panic!(
            "the agent exited ({exit}) during {context}\n--- agent log (tail) ---\n{}",
            tail(&agent.log(), 60)
        );
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Milliseconds, sorted, with percentiles.
struct Stats(Vec<f64>);

impl Stats {
    fn new(mut samples: Vec<f64>) -> Stats {
        samples.sort_by(f64::total_cmp);
        Stats(samples)
    }

    fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0[((self.0.len() - 1) as f64 * p).round() as usize]
    }

    fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            self.0.len(),
            self.pct(0.0),
            self.pct(0.5),
            self.pct(0.95),
            self.pct(0.99),
            self.pct(1.0)
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// When each contact's phone decrypted each message from the outlet, by
/// message id (from the server's `Decrypted` events).
#[derive(Default)]
struct Decrypted {
    at: HashMap<String, Instant>,
    lagged: u64,
}

fn watch_decrypted(server: &FakeServer) -> Arc<Mutex<Decrypted>> {
    let seen = Arc::new(Mutex::new(Decrypted::default()));
    let mut events = server.subscribe();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ServerEvent::Decrypted { by, entry }) => {
                    let user = by.split(['@', ':']).next().unwrap_or_default();
                    if entry.device == 0 && (user == BUDI || user == SARI) {
                        let now = Instant::now();
                        lock(&record).at.entry(entry.id).or_insert(now);
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    lock(&record).lagged += n;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    seen
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How many of `ids` the contact's phone holds (the inbox, not the event
/// stream, which can lag).
fn received(server: &FakeServer, number: &str, ids: &HashSet<String>) -> usize {
    server
        .contacts()
        .inbox(number)
        .expect("a contact")
        .iter()
        .filter(|e| e.device == 0 && ids.contains(&e.id))
        .count()
}

/// Waits until `number`'s phone decrypted every one of `ids`; returns the
/// instant of the last one (events), or panics with how many are missing.
async fn wait_all_received(
    server: &FakeServer,
    decrypted: &Mutex<Decrypted>,
    number: &str,
    ids: &[String],
    deadline: Duration,
    agent: &mut Agent,
    what: &str,
) -> Instant {
    let want: HashSet<String> = ids.iter().cloned().collect();
    let started = Instant::now();
    let mut checked = Instant::now();
    loop {
        {
            let d = lock(decrypted);
            if ids.iter().all(|id| d.at.contains_key(id)) {
                return ids
                    .iter()
                    .filter_map(|id| d.at.get(id))
                    .max()
                    .copied()
                    .unwrap_or(started);
            }
        }
        // The event stream may have lagged: the inbox is the truth.
        if checked.elapsed() > Duration::from_secs(2) {
            checked = Instant::now();
            if received(server, number, &want) == want.len() {
                return Instant::now();
            }
        }
        check_alive(agent, what);
        if started.elapsed() > deadline {
            let got = received(server, number, &want);
            panic!(
                "{what}: {} of {} messages never reached {number} within {deadline:?}\n\
                 health: {}\n--- agent log (tail) ---\n{}",
                want.len() - got,
                want.len(),
                agent.status().await.unwrap_or_default(),
                tail(&agent.log(), 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A `send` from HQ: the answer and when it came.
struct Sent {
    id: String,
    published: Instant,
    answered: Instant,
}

/// HQ queues `n` sends to `to`, keeping [`WINDOW`] outstanding; `busy`
/// answers are retried. Any other refusal is a failure of the bench.
async fn queue_sends(
    hq: &mut Subscriber,
    prefix: &str,
    to: &str,
    tag: &str,
    n: usize,
    agent: &mut Agent,
) -> (Vec<Sent>, u64) {
    let topic = format!("{prefix}/response/send");
    let request_topic = format!("{prefix}/request/send");
    let mut out: Vec<Option<Sent>> = (0..n).map(|_| None).collect();
    let mut outstanding: HashMap<String, (usize, Instant)> = HashMap::new();
    let mut next = 0;
    let mut done = 0;
    let mut busy = 0u64;
    let payload = |i: usize, transaction: &str| {
        json!({
            "to": to,
            "text": format!("{tag} {}", i + 1),
            "client_id": format!("{tag}-{}", i + 1),
            "transaction": transaction,
        })
        .to_string()
    };
    while done < n {
        while outstanding.len() < WINDOW && next < n {
            let transaction = format!("{tag}-tx-{}", next + 1);
            let published = Instant::now();
            hq.publish(&request_topic, payload(next, &transaction), false)
                .await;
            outstanding.insert(transaction, (next, published));
            next += 1;
        }
        let m = hq
            .wait_for(&format!("answers to the {tag} sends"), WAIT, |m| {
                m.topic == topic
            })
            .await;
        let body = m.json();
        let Some(transaction) = body["transaction"].as_str() else {
            continue;
        };
        let Some((i, published)) = outstanding.remove(transaction) else {
            continue;
        };
        if body["status"] == "ok" {
            let id = body["data"]["id"].as_str().expect("an id").to_string();
            out[i] = Some(Sent {
                id,
                published,
                answered: m.at,
            });
            done += 1;
        } else if body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("busy"))
        {
            busy += 1;
            let transaction = format!("{tag}-tx-{}-again{busy}", i + 1);
            hq.publish(&request_topic, payload(i, &transaction), false)
                .await;
            outstanding.insert(transaction, (i, Instant::now()));
        } else {
            check_alive(agent, tag);
            panic!(
                "send {} of {tag} refused: {body}\n--- agent log (tail) ---\n{}",
                i + 1,
                tail(&agent.log(), 40)
            );
        }
    }
    (
        out.into_iter().map(|s| s.expect("answered")).collect(),
        busy,
    )
}

/// The ids HQ has received on `topic` among `seen[from..]`, with the
/// instant of the first arrival of each.
fn arrivals(seen: &[Msg], topic: &str, status: Option<&str>) -> HashMap<String, Instant> {
    let mut out = HashMap::new();
    for m in seen.iter().filter(|m| m.topic == topic) {
        let body = m.json();
        if status.is_some_and(|s| body["status"] != json!(s)) {
            continue;
        }
        if let Some(id) = body["id"].as_str() {
            out.entry(id.to_string()).or_insert(m.at);
        }
    }
    out
}

/// Drains HQ's subscriber until every id in `ids` arrived on `topic` (with
/// `status`, for statuses); returns the instant of the last one.
#[allow(clippy::too_many_arguments)]
async fn wait_hq(
    hq: &mut Subscriber,
    from: usize,
    topic: &str,
    status: Option<&str>,
    ids: &HashSet<String>,
    deadline: Duration,
    agent: &mut Agent,
    what: &str,
) -> Instant {
    let started = Instant::now();
    let mut scanned = from;
    let mut got: HashMap<String, Instant> = HashMap::new();
    loop {
        let fresh = arrivals(&hq.seen[scanned.min(hq.seen.len())..], topic, status);
        scanned = hq.seen.len();
        for (id, at) in fresh {
            if ids.contains(&id) {
                got.entry(id).or_insert(at);
            }
        }
        if got.len() == ids.len() {
            return got.values().max().copied().unwrap_or(started);
        }
        check_alive(agent, what);
        if started.elapsed() > deadline {
            panic!(
                "{what}: {} of {} never reached HQ within {deadline:?}\nhealth: {}\n\
                 --- agent log (tail) ---\n{}",
                ids.len() - got.len(),
                ids.len(),
                agent.status().await.unwrap_or_default(),
                tail(&agent.log(), 40)
            );
        }
        hq.drain(Duration::from_millis(5)).await;
    }
}

/// WARN and ERROR lines of the agent's log (ANSI colours stripped),
/// counted by message with its first occurrence.
fn log_findings(log: &str) -> (Vec<(String, usize)>, usize) {
    let mut by_message: Vec<(String, usize)> = Vec::new();
    let mut panics = 0;
    for raw in log.lines() {
        let line = strip_ansi(raw);
        if line.contains("panicked") {
            panics += 1;
        }
        let mut words = line.split_whitespace();
        let _time = words.next();
        let level = words.next().unwrap_or_default();
        if level != "WARN" && level != "ERROR" {
            continue;
        }
        let rest: String = words.collect::<Vec<_>>().join(" ");
        // Group by the message text, without the fields' values.
        let key = format!(
            "{level} {}",
            rest.split(['=']).next().unwrap_or_default().trim()
        );
        match by_message.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => by_message.push((key, 1)),
        }
    }
    (by_message, panics)
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn run() {
    let samples = env_u64("BENCH_MESSAGES_SAMPLES", 200) as usize;
    let broadcast_n = env_u64("BENCH_MESSAGES_BROADCAST", 1000) as usize;
    let outbox_n = env_u64("BENCH_MESSAGES_OUTBOX", 10_000) as usize;
    let inbox_n = env_u64("BENCH_MESSAGES_INBOX", 10_000) as usize;
    let drain_outbox = env_u64("BENCH_MESSAGES_DRAIN", 0) == 1;
    let rust_log = std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info".into());
    let bench_started = Instant::now();

    // A broker that keeps HQ's persistent session across its own restart
    // (the inbox phase stops it), and every QoS 1 message queued for it.
    let broker_dir = tempfile::tempdir().expect("temp dir").keep();
    let store = broker_dir.join("broker-db");
    std::fs::create_dir_all(&store).expect("broker store");
    make_readable(&broker_dir);
    std::fs::set_permissions(&store, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("broker store mode");
    let mut broker = Broker::start(&format!(
        "allow_anonymous true\nset_tcp_nodelay true\npersistence true\n\
         persistence_location {}/\nmax_queued_messages 0\nmax_inflight_messages 0\n",
        store.display()
    ))
    .await;
    let url = broker.url(false);
    let server = common::server().await;
    let decrypted = watch_decrypted(&server);
    let id = unique("bench-msg");
    let prefix = format!("outlet/{id}");
    let topic = |leaf: &str| format!("{prefix}/{leaf}");
    let limit = (outbox_n.max(inbox_n).max(broadcast_n) * 2 + 1000).to_string();
    // HQ: a persistent session (the broker keeps its messages across its own
    // restart), Nagle off like the agent's.
    let mut hq = Subscriber::connect_persistent(
        &url,
        &unique("hq"),
        &[&topic("message/#"), &topic("response/+")],
    )
    .await;
    let mut agent = Agent::start(
        &server,
        &[
            ("OUTLET_AGENT__OUTLET__ID", id.as_str()),
            ("OUTLET_AGENT__MQTT__BROKER", url.as_str()),
            ("OUTLET_AGENT__MQTT__DISCOVERY", "false"),
            ("OUTLET_AGENT__MQTT__RECONNECT_FIRST_DELAY_MS", "100"),
            ("OUTLET_AGENT__MQTT__RECONNECT_MAX_DELAY_SECS", "1"),
            // The outbox phase keeps the server refusing for a while: the
            // reconnect after it must not wait minutes.
            ("OUTLET_AGENT__RECONNECT__MAX_DELAY_SECS", "2"),
            ("OUTLET_AGENT__MESSAGES__MAX_PER_MINUTE", "0"),
            (
                "OUTLET_AGENT__MESSAGES__OUTBOX_MAX_MESSAGES",
                limit.as_str(),
            ),
            ("OUTLET_AGENT__MESSAGES__INBOX_MAX_MESSAGES", limit.as_str()),
            ("OUTLET_AGENT__MESSAGES__OUTBOX_MAX_BYTES", "268435456"),
            ("OUTLET_AGENT__MESSAGES__INBOX_MAX_BYTES", "268435456"),
            ("RUST_LOG", rust_log.as_str()),
        ],
    );
    agent.pair(&server).await;
    let reachable_since = Instant::now();
    while !server.contacts().companions_reachable() {
        assert!(
            reachable_since.elapsed() < WAIT,
            "the companion never uploaded its keys"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let agent_pid = pid(&agent);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_first = memory(agent_pid);
    eprintln!("paired; idle RSS {}", mib(idle_first.rss));

    // 1. Inbound: Budi → HQ, one at a time.
    let mut disk = Vec::new();
    let in_topic = topic("message/in");
    let inbound_before = usage(&agent);
    let mut inbound_ms = Vec::with_capacity(samples);
    for i in 0..samples {
        let text = format!("latency in {}", i + 1);
        let started = Instant::now();
        let message_id = server
            .contacts()
            .send_text(BUDI, &text)
            .await
            .expect("Budi sends");
        let m = hq
            .wait_for(&format!("message/in {text:?}"), WAIT, |m| {
                m.topic == in_topic && m.json()["id"] == json!(message_id)
            })
            .await;
        inbound_ms.push(ms(m.at - started));
    }
    // The last one's PUBACK and delete.
    tokio::time::sleep(Duration::from_millis(200)).await;
    disk.push(DiskCost::between(
        "inbound, one at a time (Budi → HQ, the next once HQ has it)",
        samples,
        &inbound_before,
        &usage(&agent),
    ));
    check_alive(&mut agent, "inbound latency");
    eprintln!("inbound latency: {samples} samples");

    // 2. Sends: HQ → Budi, one at a time; the next once the previous one's
    //    `read` status reached HQ (nothing of it left in flight).
    let status_topic = topic("message/status");
    let send_topic = topic("request/send");
    let response_topic = topic("response/send");
    // Twice: "isolated" leaves 100 ms after the previous send settled (a
    // reply in a quiet chat); "back to back" starts the next one as soon as
    // HQ has the previous one's `read` status.
    let mut send_rows = Vec::new();
    for (mode, gap) in [
        ("isolated", Duration::from_millis(100)),
        ("back to back", Duration::ZERO),
    ] {
        let mut answered_ms = Vec::with_capacity(samples);
        let mut decrypted_ms = Vec::with_capacity(samples);
        let mut sent_status_ms = Vec::with_capacity(samples);
        let sends_before = usage(&agent);
        for i in 0..samples {
            tokio::time::sleep(gap).await;
            let transaction = format!("latency-out-{mode}-{}", i + 1);
            let mark = hq.mark();
            let started = Instant::now();
            let text = format!("latency out {mode} {}", i + 1);
            let request = json!({"to": BUDI, "text": text, "transaction": transaction});
            hq.publish(&send_topic, request.to_string(), false).await;
            let answer = hq
                .wait_for("the send's answer", WAIT, |m| {
                    m.topic == response_topic && m.json()["transaction"] == json!(transaction)
                })
                .await;
            let body = answer.json();
            assert_eq!(body["status"], "ok", "send refused: {body}");
            let message_id = body["data"]["id"].as_str().expect("an id").to_string();
            answered_ms.push(ms(answer.at - started));
            let one = [message_id.clone()];
            let at = wait_all_received(
                &server,
                &decrypted,
                BUDI,
                &one,
                WAIT,
                &mut agent,
                "send latency",
            )
            .await;
            decrypted_ms.push(ms(at - started));
            let ids: HashSet<String> = one.into_iter().collect();
            let sent_at = wait_hq(
                &mut hq,
                mark,
                &status_topic,
                Some("sent"),
                &ids,
                WAIT,
                &mut agent,
                "the sent status",
            )
            .await;
            sent_status_ms.push(ms(sent_at - started));
            wait_hq(
                &mut hq,
                mark,
                &status_topic,
                Some("read"),
                &ids,
                WAIT,
                &mut agent,
                "the read status",
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        disk.push(DiskCost::between(
            format!("send, {mode} (queued → `read` at HQ, one at a time)"),
            samples,
            &sends_before,
            &usage(&agent),
        ));
        send_rows.push((mode, answered_ms, decrypted_ms, sent_status_ms));
    }
    eprintln!("send latency: {samples} samples");

    // 3. Broadcast, unpaced.
    tokio::time::sleep(Duration::from_secs(1)).await;
    hq.drain(Duration::from_millis(200)).await;
    let mark = hq.mark();
    let before = usage(&agent);
    let (broadcast, busy) =
        queue_sends(&mut hq, &prefix, BUDI, "broadcast", broadcast_n, &mut agent).await;
    let all_answered = broadcast
        .iter()
        .map(|s| s.answered)
        .max()
        .unwrap_or(before.at);
    let ids: Vec<String> = broadcast.iter().map(|s| s.id.clone()).collect();
    let last_decrypted = wait_all_received(
        &server,
        &decrypted,
        BUDI,
        &ids,
        WAIT + Duration::from_millis(100) * broadcast_n as u32,
        &mut agent,
        "the broadcast",
    )
    .await;
    let id_set: HashSet<String> = ids.iter().cloned().collect();
    let last_read = wait_hq(
        &mut hq,
        mark,
        &status_topic,
        Some("read"),
        &id_set,
        WAIT + Duration::from_millis(100) * broadcast_n as u32,
        &mut agent,
        "the broadcast's read statuses",
    )
    .await;
    agent
        .wait_for("the broadcast's queues empty", |h| {
            h["outbox_pending"] == 0 && h["statuses_pending"] == 0
        })
        .await;
    let after = usage(&agent);
    disk.push(DiskCost::between(
        format!("send, broadcast of {broadcast_n} ({WINDOW} requests outstanding)"),
        broadcast_n,
        &before,
        &after,
    ));
    // Which statuses HQ saw for the broadcast's sends.
    let mut status_counts: Vec<(&str, usize)> = Vec::new();
    for status in ["queued", "sent", "delivered", "read", "failed"] {
        let got = arrivals(&hq.seen[mark..], &status_topic, Some(status));
        let count = got.keys().filter(|id| id_set.contains(*id)).count();
        status_counts.push((status, count));
    }
    let first_decrypted = {
        let d = lock(&decrypted);
        ids.iter().filter_map(|id| d.at.get(id)).min().copied()
    };
    let answer_ms = Stats::new(
        broadcast
            .iter()
            .map(|s| ms(s.answered - s.published))
            .collect(),
    );
    eprintln!("broadcast: {broadcast_n} sends");

    // 4a. A full inbox: the broker stopped, Budi sends, the agent keeps them.
    let inbox_idle = memory(agent_pid);
    let inbox_before = usage(&agent);
    broker.stop();
    agent
        .wait_for("the broker gone", |h| h["mqtt"] != "ok")
        .await;
    let burst_started = Instant::now();
    let inbox_ids = server
        .contacts()
        .send_burst(BUDI, inbox_n, "waiting in")
        .await
        .expect("Budi sends the burst");
    let burst_secs = burst_started.elapsed().as_secs_f64();
    agent
        .wait_for_within(
            "the burst in the inbox",
            WAIT + Duration::from_millis(50) * inbox_n as u32,
            |h| h["inbox_pending"].as_u64() == Some(inbox_n as u64),
        )
        .await;
    let committed_secs = burst_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let inbox_full = memory(agent_pid);
    let inbox_health = agent.status().await.unwrap_or_default();
    let mark = hq.mark();
    broker.spawn().await;
    let reopened = Instant::now();
    let inbox_set: HashSet<String> = inbox_ids.iter().cloned().collect();
    let last_in = wait_hq(
        &mut hq,
        mark,
        &in_topic,
        None,
        &inbox_set,
        WAIT + Duration::from_millis(50) * inbox_n as u32,
        &mut agent,
        "the inbox after the broker came back",
    )
    .await;
    let inbox_drain_secs = (last_in - reopened).as_secs_f64();
    agent
        .wait_for("an empty inbox", |h| h["inbox_pending"] == 0)
        .await;
    let inbox_after = usage(&agent);
    disk.push(DiskCost::between(
        format!("inbound, a burst of {inbox_n} while the broker is down, then published"),
        inbox_n,
        &inbox_before,
        &inbox_after,
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let inbox_drained = memory(agent_pid);
    eprintln!("inbox: {inbox_n} waited for the broker");

    // 4b. A full outbox: WhatsApp unreachable (connections refused), HQ
    //     queues sends, the agent keeps them.
    hq.drain(Duration::from_millis(200)).await;
    let outbox_idle = memory(agent_pid);
    server.set_refuse(true);
    server.drop_connections();
    agent
        .wait_for("reconnecting", |h| h["state"] == "reconnecting")
        .await;
    let queue_started = Instant::now();
    let (queued, queued_busy) =
        queue_sends(&mut hq, &prefix, BUDI, "waiting out", outbox_n, &mut agent).await;
    let queue_secs = queue_started.elapsed().as_secs_f64();
    let outbox_health = agent
        .wait_for("the outbox full", |h| {
            h["outbox_pending"].as_u64() == Some(outbox_n as u64)
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outbox_full = memory(agent_pid);
    let mut outbox_drain = None;
    if drain_outbox {
        let mark = hq.mark();
        server.set_refuse(false);
        let reopened = Instant::now();
        let queued_ids: Vec<String> = queued.iter().map(|s| s.id.clone()).collect();
        let last = wait_all_received(
            &server,
            &decrypted,
            BUDI,
            &queued_ids,
            WAIT + Duration::from_millis(100) * outbox_n as u32,
            &mut agent,
            "the queued outbox after the reconnect",
        )
        .await;
        let sent_secs = (last - reopened).as_secs_f64();
        let set: HashSet<String> = queued_ids.into_iter().collect();
        wait_hq(
            &mut hq,
            mark,
            &status_topic,
            Some("read"),
            &set,
            WAIT + Duration::from_millis(100) * outbox_n as u32,
            &mut agent,
            "the queued outbox's read statuses",
        )
        .await;
        let read_secs = reopened.elapsed().as_secs_f64();
        agent
            .wait_for("the queues empty", |h| {
                h["outbox_pending"] == 0 && h["statuses_pending"] == 0
            })
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        outbox_drain = Some((sent_secs, read_secs, memory(agent_pid)));
    }
    eprintln!("outbox: {outbox_n} queued while reconnecting");

    // Nothing reached Budi twice, nothing reached HQ that was not sent.
    let budi = server.contacts().inbox(BUDI).expect("Budi");
    let mut seen_ids = HashSet::new();
    let duplicates = budi
        .iter()
        .filter(|e| e.device == 0 && !seen_ids.insert(e.id.clone()))
        .count();
    let lagged = lock(&decrypted).lagged;
    let exit = agent.stop().await;
    let log = agent.log();
    let (findings, panics) = log_findings(&log);
    let total_secs = bench_started.elapsed().as_secs_f64();

    // The report.
    let n = broadcast_n as f64;
    let cpu_ms = (after.ticks - before.ticks) as f64 / support::clock_ticks_per_sec() * 1000.0;
    let window = (after.at - before.at).as_secs_f64();
    let write_bytes = after.write_bytes.saturating_sub(before.write_bytes);
    let wchar = after.wchar.saturating_sub(before.wchar);
    let log_growth = after.log.saturating_sub(before.log);
    println!("## Messages benchmark\n");
    println!(
        "agent: {} build, RUST_LOG={rust_log}, pacing off (max_per_minute 0); fake WhatsApp \
         server in the bench process; private Mosquitto (set_tcp_nodelay true, persistence \
         on); HQ a persistent session with Nagle off; contact Budi {BUDI} (one device). \
         Wall time {:.1} min.\n",
        support::build_kind(),
        total_secs / 60.0
    );
    println!("### Latency (one message at a time)\n");
    println!("| path | samples | min | p50 | p95 | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "{}",
        Stats::new(inbound_ms).row("inbound: Budi starts sending → HQ has `message/in`")
    );
    for (mode, answered_ms, decrypted_ms, sent_status_ms) in send_rows {
        println!(
            "{}",
            Stats::new(answered_ms).row(&format!(
                "send, {mode}: `request/send` published → `response/send` at HQ"
            ))
        );
        println!(
            "{}",
            Stats::new(decrypted_ms).row(&format!(
                "send, {mode}: `request/send` published → Budi's phone decrypted it"
            ))
        );
        println!(
            "{}",
            Stats::new(sent_status_ms).row(&format!(
                "send, {mode}: `request/send` published → `sent` status at HQ"
            ))
        );
    }
    println!("\n### Broadcast of {broadcast_n} sends to Budi, unpaced\n");
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| all {broadcast_n} answered (queued, durable), from the first request | {:.2} s ({:.0} sends/s; {busy} `busy` retried) |",
        (all_answered - before.at).as_secs_f64(),
        n / (all_answered - before.at).as_secs_f64()
    );
    println!(
        "| answer time per send with {WINDOW} outstanding: p50 / p99 | {:.1} / {:.1} ms |",
        answer_ms.pct(0.5),
        answer_ms.pct(0.99)
    );
    println!(
        "| first request → last one decrypted by Budi (wall time) | {:.2} s ({:.0} messages/s) |",
        (last_decrypted - before.at).as_secs_f64(),
        n / (last_decrypted - before.at).as_secs_f64()
    );
    if let Some(first) = first_decrypted {
        println!(
            "| first request → first one decrypted | {:.1} ms |",
            ms(first - before.at)
        );
    }
    println!(
        "| first request → last `read` status at HQ | {:.2} s |",
        (last_read - before.at).as_secs_f64()
    );
    println!(
        "| statuses HQ received for them (distinct ids) | {} |",
        status_counts
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| agent CPU (utime+stime, all threads) per message | {:.2} ms ({:.2} s in a {window:.1} s window, {:.0} % of one core) |",
        cpu_ms / n,
        cpu_ms / 1000.0,
        cpu_ms / 10.0 / window
    );
    println!(
        "| `/proc/<pid>/io` write_bytes per message (reached the block device) | {:.0} B ({:.1} MiB in all) |",
        write_bytes as f64 / n,
        write_bytes as f64 / 1048576.0
    );
    println!(
        "| `/proc/<pid>/io` wchar per message (passed to write()) | {:.0} B |",
        wchar as f64 / n
    );
    println!(
        "| of which the agent's log file ({rust_log}) per message | {:.0} B |",
        log_growth as f64 / n
    );
    let names: HashSet<&String> = before
        .files
        .iter()
        .chain(after.files.iter())
        .map(|(n, _)| n)
        .collect();
    let mut names: Vec<&String> = names.into_iter().collect();
    names.sort();
    for name in names {
        let size =
            |files: &[(String, u64)]| files.iter().find(|(n, _)| n == name).map_or(0, |(_, s)| *s);
        let (b, a) = (size(&before.files), size(&after.files));
        if b == 0 && a == 0 {
            continue;
        }
        println!(
            "| data dir `{name}`: before → after (growth per message) | {b} → {a} B ({:+.0} B) |",
            (a as f64 - b as f64) / n
        );
    }
    println!("\n### What the SD card pays per message\n");
    println!(
        "`/proc/<pid>/io` of the agent over each phase: write_bytes (what reached the block \
         device: SQLite's WAL and checkpoints, the log), wchar (what was passed to `write()`), \
         and the growth of the agent's log file ({rust_log}).\n"
    );
    println!(
        "| phase | messages | write_bytes per message | wchar per message | log per message |"
    );
    println!("|---|---|---|---|---|");
    for cost in &disk {
        println!("{}", cost.row());
    }
    println!("\n### Memory with full queues (agent VmRSS; RssAnon = heap and stacks)\n");
    println!("| situation | VmRSS | RssAnon | peak (VmHWM) so far |");
    println!("|---|---|---|---|");
    let mem_row = |what: &str, m: Memory| {
        println!(
            "| {what} | {} | {} | {} |",
            mib(m.rss),
            mib(m.anon),
            mib(m.peak)
        )
    };
    mem_row("idle, 2 s after pairing", idle_first);
    mem_row("idle, connected, before the inbox test", inbox_idle);
    mem_row(
        &format!("{inbox_n} received messages waiting for the stopped broker"),
        inbox_full,
    );
    mem_row(
        "after the broker came back and took them all",
        inbox_drained,
    );
    mem_row("idle, connected, before the outbox test", outbox_idle);
    mem_row(
        &format!("{outbox_n} sends queued while `reconnecting` (server refuses)"),
        outbox_full,
    );
    if let Some((_, _, m)) = outbox_drain {
        mem_row("after they were all sent and read", m);
    }
    println!("\n### Queue timings\n");
    println!("| measure | value |");
    println!("|---|---|");
    println!("| Budi sends {inbox_n} (encryption in the bench process) | {burst_secs:.1} s |");
    println!(
        "| … all committed to the agent's inbox | {committed_secs:.1} s ({:.0} messages/s); inbox_bytes {} |",
        inbox_n as f64 / committed_secs,
        inbox_health["inbox_bytes"]
    );
    println!(
        "| broker back → all {inbox_n} at HQ | {inbox_drain_secs:.1} s ({:.0} messages/s) |",
        inbox_n as f64 / inbox_drain_secs
    );
    println!(
        "| HQ queues {outbox_n} sends while reconnecting | {queue_secs:.1} s ({:.0} sends/s; {queued_busy} `busy` retried); outbox_pending {} |",
        outbox_n as f64 / queue_secs,
        outbox_health["outbox_pending"]
    );
    let per_in = inbox_n.max(1) as f64;
    println!(
        "| inbound, per message over the whole inbox test (commit, outage, publish, delete): agent CPU / write_bytes / wchar | {:.2} ms / {:.0} B / {:.0} B |",
        (inbox_after.ticks - inbox_before.ticks) as f64 / support::clock_ticks_per_sec() * 1000.0
            / per_in,
        inbox_after
            .write_bytes
            .saturating_sub(inbox_before.write_bytes) as f64
            / per_in,
        inbox_after.wchar.saturating_sub(inbox_before.wchar) as f64 / per_in
    );
    if let Some((sent, read, _)) = outbox_drain {
        println!(
            "| server accepts again → all {outbox_n} decrypted by Budi | {sent:.1} s ({:.0} messages/s) |",
            outbox_n as f64 / sent
        );
        println!("| … → all `read` statuses at HQ | {read:.1} s |");
    }
    println!("\n### Checks\n");
    println!(
        "- messages Budi's phone decrypted twice: {duplicates}; server events lagged: {lagged}"
    );
    println!("- agent exit after SIGTERM: {exit}; panics in the log: {panics}");
    if findings.is_empty() {
        println!("- no WARN or ERROR lines in the agent's log");
    }
    for (message, count) in &findings {
        println!("- log: {count} × `{message}`");
    }
    println!("- agent log: {}", agent.dir.join("agent.log").display());
    assert_eq!(duplicates, 0, "a message reached Budi twice");
    assert!(exit.success(), "the agent exited with {exit} after SIGTERM");
    assert_eq!(panics, 0, "the agent panicked:\n{}", tail(&log, 40));
    drop(hq);
    broker.kill();
}

fn main() {
    support::block_on(run());
}
