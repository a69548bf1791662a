//! Reliability soak: the real agent binary against the in-process fake
//! WhatsApp server and a private Mosquitto, driven through every fault the
//! outlet meets in a shop, with one report of what went wrong.
//!
//! Phases, in order: pair once; WhatsApp drops and stream errors (515, 503,
//! plain drops); broker restarts; SIGKILLs at random moments (during
//! pairing, right after a start, connected and idle, during a broker
//! outage); wall-clock jumps forward and back (libfaketime); the panel
//! "unplugged" and back (PNG driver). Counted throughout: crashes, lost
//! sessions (a paired outlet showing a QR after a restart), duplicate
//! connections (the fake server's per-device concurrency), stale
//! "connected" messages on MQTT, and the agent's RSS per phase.
//!
//! `cargo bench -p outlet-agent --bench soak`; not run in CI. Every count is
//! an environment variable (`SOAK_DROPS`, `SOAK_BROKER_RESTARTS`,
//! `SOAK_KILLS`, `SOAK_CLOCK_JUMPS`, `SOAK_UNPLUGS`), `SOAK_SCALE=0.05`
//! multiplies them all for a quick try, `SOAK_DEADLINE_SECS` bounds every
//! wait (default 60 s, not scaled), `SOAK_DUMP_STATES=1` lists every
//! `state` message with the server's counters. Prints a Markdown report for
//! BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/mqtt.rs"]
mod mqtt;
mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::Agent;
use fake_whatsapp::{DeviceKey, FakeServer, StreamErrorKind};
use mqtt::{Broker, unique};
use rand::RngExt as _;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::{Value, json};

/// How often the bench polls the control socket: fine enough to see a
/// reconnect of a few milliseconds, cheap enough on two cores.
const POLL: Duration = Duration::from_millis(5);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

/// The sizes of the run: the numbers, times `SOAK_SCALE`, each
/// overridable on its own.
struct Plan {
    drops: u64,
    broker_restarts: u64,
    kills: u64,
    clock_jumps: u64,
    unplugs: u64,
    deadline: Duration,
    scale: f64,
}

impl Plan {
    fn from_env() -> Plan {
        let scale: f64 = std::env::var("SOAK_SCALE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1.0);
        let count = |name: &str, default: u64, min: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| ((default as f64 * scale).round() as u64).max(min))
        };
        Plan {
            drops: count("SOAK_DROPS", 1000, 3),
            broker_restarts: count("SOAK_BROKER_RESTARTS", 100, 1),
            // At least one kill of each of the four kinds.
            kills: count("SOAK_KILLS", 200, 4),
            clock_jumps: count("SOAK_CLOCK_JUMPS", 20, 2),
            unplugs: count("SOAK_UNPLUGS", 20, 1),
            // Not scaled: a quick run must not be judged stuck sooner.
            deadline: Duration::from_secs(
                std::env::var("SOAK_DEADLINE_SECS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(60),
            ),
            scale,
        }
    }
}

/// One `state` message as the dashboard-like subscriber received it, with
/// what the fake server knew about the outlet's device at that instant
/// (read under the server's lock, so the order between the two is exact).
#[derive(Debug, Clone)]
struct StateRecord {
    at: Instant,
    state: String,
    retained: bool,
    /// Live connections of the device on the server when it arrived.
    live: u32,
    /// Completed handshakes of the device so far.
    handshakes: u32,
    /// Which pairing of the main agent this belongs to (a lost session
    /// re-pairs, and the new device's counters start afresh).
    generation: u32,
    /// `connected` published with a `last_disconnect` later than its
    /// `since`: the agent already knew that connection had ended.
    connected_after_own_disconnect: bool,
}

/// The main agent's current device on the fake server.
#[derive(Default, Clone, Copy)]
struct Tracked {
    key: Option<DeviceKey>,
    generation: u32,
}

/// What the subscriber saw, shared with its task.
#[derive(Default)]
struct Seen {
    /// The broker acknowledged the subscription (at least once).
    subscribed: bool,
    states: Vec<StateRecord>,
    availability: Vec<(Instant, String)>,
}

fn device_counts(server: &FakeServer, key: Option<DeviceKey>) -> (u32, u32) {
    let Some(key) = key else { return (0, 0) };
    server
        .stats()
        .devices
        .iter()
        .find(|d| d.device == key)
        .map(|d| (d.stats.current, d.stats.total))
        .unwrap_or((0, 0))
}

/// Subscribes to the outlet's `state` and `availability` like a dashboard,
/// again after every broker restart (the restarted broker keeps nothing).
fn start_subscriber(
    broker_url: &str,
    prefix: &str,
    server: Arc<FakeServer>,
    tracked: Arc<Mutex<Tracked>>,
    seen: Arc<Mutex<Seen>>,
) -> tokio::task::JoinHandle<()> {
    let config = outlet_agent::config::MqttConfig {
        broker: outlet_agent::config::Brokers::one(broker_url),
        ..Default::default()
    };
    let mut options =
        outlet_agent::mqtt::options::client_options(&config, broker_url, &unique("soak"), None)
            .expect("subscriber options");
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let state_topic = format!("{prefix}/state");
    let availability_topic = format!("{prefix}/availability");
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for topic in [&state_topic, &availability_topic] {
                        let _ = client.try_subscribe(topic.as_str(), QoS::AtLeastOnce);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    seen.lock().expect("seen lock").subscribed = true;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let at = Instant::now();
                    if p.topic == state_topic {
                        let tracked = *tracked.lock().expect("tracked lock");
                        let (live, handshakes) = device_counts(&server, tracked.key);
                        let payload =
                            serde_json::from_slice::<Value>(&p.payload).unwrap_or(Value::Null);
                        let state = payload["state"].as_str().unwrap_or_default().to_string();
                        let stamp = |v: &Value| {
                            v.as_str()
                                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        };
                        let connected_after_own_disconnect = state == "connected"
                            && matches!(
                                (stamp(&payload["since"]), stamp(&payload["last_disconnect"]["at"])),
                                (Some(since), Some(gone)) if gone > since
                            );
                        seen.lock().expect("seen lock").states.push(StateRecord {
                            at,
                            state,
                            retained: p.retain,
                            live,
                            handshakes,
                            generation: tracked.generation,
                            connected_after_own_disconnect,
                        });
                    } else if p.topic == availability_topic {
                        let text = String::from_utf8_lossy(&p.payload).into_owned();
                        seen.lock()
                            .expect("seen lock")
                            .availability
                            .push((at, text));
                    }
                }
                Ok(_) => {}
                // The broker is away (a restart): rumqttc reconnects on the next poll.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
}

/// Everything the report counts.
#[derive(Default)]
struct Counters {
    drops: [u64; 3],
    drop_without_live_connection: u64,
    broker_restarts: u64,
    whatsapp_reconnects_during_broker_restarts: u64,
    kills_pairing: u64,
    kills_login: u64,
    kills_idle: u64,
    kills_outage: u64,
    pairing_kill_outcomes: (u64, u64),
    pairing_kills_before_connected: u64,
    restarts_checked: u64,
    clock_forward: u64,
    clock_back: u64,
    clock_offset_confirmed: u64,
    unplugs: u64,
    unplug_faults_seen: u64,
    unplug_recoveries: u64,
    first_unplug_fault: Option<String>,
    crashes: Vec<String>,
    lost_sessions: Vec<String>,
    stuck: Vec<String>,
    sigterm_failures: Vec<String>,
}

struct Phase {
    name: &'static str,
    wall: Duration,
    rss_start_kib: Option<u64>,
    rss_end_kib: Option<u64>,
}

fn rss_kib(agent: &Agent) -> Option<u64> {
    let pid = agent.child.as_ref()?.id();
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Debian's libfaketime for multi-threaded programs (see e2e_clock.rs).
fn libfaketime() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .ok()
        .and_then(|dirs| {
            dirs.flatten()
                .map(|dir| dir.path().join("faketime/libfaketimeMT.so.1"))
                .find(|path| path.exists())
        })
        .expect("libfaketimeMT.so.1 is missing: install Debian's faketime package")
}

/// Replaced whole, so libfaketime never reads a half-written file.
fn set_fake_offset(file: &Path, offset: &str) {
    let next = file.with_extension("next");
    std::fs::write(&next, offset).expect("write fake time");
    std::fs::rename(&next, file).expect("set fake time");
}

struct Soak {
    plan: Plan,
    server: Arc<FakeServer>,
    broker: Broker,
    agent: Agent,
    tracked: Arc<Mutex<Tracked>>,
    seen: Arc<Mutex<Seen>>,
    c: Counters,
    phases: Vec<Phase>,
    /// Disconnects the bench caused, for the stale-`connected` count.
    episodes: Vec<Episode>,
    /// False while the bench holds the broker down (no MQTT to wait for).
    broker_up: bool,
}

/// A disconnect the bench caused (a server-side fault, a kill, a stop):
/// where it starts in the `state` stream, and the device's handshake count
/// just before it. The bench does not cause the next one before the
/// subscriber saw the reconnected `connected` of this one, so the messages
/// between two episodes belong to the first.
struct Episode {
    first_state: usize,
    handshakes_before: u32,
    generation: u32,
}

impl Soak {
    /// Call just before causing a disconnect.
    fn episode_start(&mut self) {
        let generation = self.tracked.lock().expect("tracked lock").generation;
        let handshakes_before = self.counts().1;
        let first_state = self.seen.lock().expect("seen lock").states.len();
        self.episodes.push(Episode {
            first_state,
            handshakes_before,
            generation,
        });
    }

    /// Waits until the subscriber got the `connected` of a new login in
    /// the current episode (what a dashboard must end up showing).
    async fn wait_mqtt_connected(&mut self, what: &str) {
        let Some(episode) = self.episodes.last() else {
            return;
        };
        let (first, before, generation) = (
            episode.first_state,
            episode.handshakes_before,
            episode.generation,
        );
        let seen = self.seen.clone();
        self.wait_until(what, move |_| {
            let seen = seen.lock().expect("seen lock");
            seen.states.iter().skip(first).any(|r| {
                r.state == "connected" && (r.generation != generation || r.handshakes > before)
            })
        })
        .await;
    }

    fn counts(&self) -> (u32, u32) {
        let key = self.tracked.lock().expect("tracked lock").key;
        device_counts(&self.server, key)
    }

    /// Polls the control socket until `done` accepts (it also gets `None`
    /// while the agent does not answer). An agent exit the bench did not
    /// cause is a crash: counted, and the agent is started again. At the
    /// deadline it prints what it waited for and the log tail, counts the
    /// phase as stuck and returns `None`.
    async fn wait_until(
        &mut self,
        what: &str,
        mut done: impl FnMut(Option<&Value>) -> bool,
    ) -> Option<Value> {
        let start = Instant::now();
        let mut last = Value::Null;
        loop {
            let status = self.agent.status().await;
            if done(status.as_ref()) {
                return Some(status.unwrap_or(Value::Null));
            }
            if let Some(s) = status {
                last = s;
            }
            if let Some(child) = self.agent.child.as_mut()
                && let Ok(Some(exit)) = child.try_wait()
            {
                self.agent.child = None;
                let log = tail(&self.agent.log(), 30);
                eprintln!("CRASH: agent exited ({exit}) while waiting for {what}\n{log}");
                self.c
                    .crashes
                    .push(format!("exited ({exit}) while waiting for {what}"));
                self.agent.spawn();
            }
            if start.elapsed() > self.plan.deadline {
                eprintln!(
                    "STUCK: no {what} within {:?}; last health {last}\n--- agent log tail ---\n{}",
                    self.plan.deadline,
                    tail(&self.agent.log(), 40)
                );
                self.c.stuck.push(what.to_string());
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_health(&mut self, what: &str, pick: impl Fn(&Value) -> bool) -> Option<Value> {
        self.wait_until(what, |h| h.is_some_and(&pick)).await
    }

    /// After a stuck wait: a clean slate (SIGKILL, start again, settle),
    /// so one stuck iteration does not stall the rest of the run.
    async fn recover(&mut self) {
        self.episode_start();
        self.kill_main().await;
        self.agent.spawn();
        self.settle_after_restart("recovery after a stuck wait")
            .await;
    }

    async fn kill_main(&mut self) {
        if self.agent.child.is_some() {
            self.agent.signal("KILL");
            self.agent.wait_exit().await;
        }
    }

    /// SIGTERM must end the agent with status 0.
    async fn stop_main(&mut self, context: &str) {
        let exit = self.agent.stop().await;
        if !exit.success() {
            eprintln!(
                "SIGTERM exit {exit} ({context})\n{}",
                tail(&self.agent.log(), 30)
            );
            self.c
                .sigterm_failures
                .push(format!("{exit} after SIGTERM ({context})"));
        }
    }

    /// The phone scans the QR the agent offers on its control socket; the
    /// new device becomes the one the subscriber tracks.
    async fn pair(&mut self) {
        self.wait_health("state pairing", |h| h["state"] == "pairing")
            .await
            .expect("the agent offers pairing");
        let qr = loop {
            if let Some(r) = self.agent.request(json!({"command": "qr"})).await
                && let Some(qr) = r["data"]["qr"].as_str()
            {
                break qr.to_string();
            }
            tokio::time::sleep(POLL).await;
        };
        let paired = tokio::time::timeout(self.plan.deadline, self.server.phone().scan(&qr))
            .await
            .expect("the scan finishes in time")
            .expect("the phone scans the QR");
        let key = self
            .server
            .stats()
            .device(&paired.jid)
            .map(|d| d.device)
            .expect("the paired device is on the server");
        {
            let mut tracked = self.tracked.lock().expect("tracked lock");
            tracked.key = Some(key);
            tracked.generation += 1;
        }
        self.wait_health("connected after pairing", |h| h["state"] == "connected")
            .await
            .expect("connected after pairing");
    }

    /// A paired agent was (re)started: it must connect without a QR. A QR
    /// is a lost session: counted with the log, and the outlet is paired
    /// again so the run goes on.
    async fn settle_after_restart(&mut self, context: &str) {
        self.c.restarts_checked += 1;
        let settled = self
            .wait_health("connected or pairing after a restart", |h| {
                h["state"] == "connected" || h["state"] == "pairing"
            })
            .await;
        match settled {
            Some(h) if h["state"] == "pairing" => {
                let log = tail(&self.agent.log(), 40);
                eprintln!("LOST SESSION ({context})\n{log}");
                self.c.lost_sessions.push(context.to_string());
                self.pair().await;
            }
            Some(_) => {
                if self.broker_up {
                    self.wait_mqtt_connected(&format!("MQTT connected ({context})"))
                        .await;
                }
            }
            None => {
                // Counted as stuck; one clean restart, then give up loudly.
                self.kill_main().await;
                self.agent.spawn();
                self.wait_health("connected after a stuck restart", |h| {
                    h["state"] == "connected"
                })
                .await
                .expect("the agent connects after a clean restart");
            }
        }
    }

    /// Waits for a new login of the tracked device and `connected` health.
    async fn wait_reconnected(&mut self, handshakes_before: u32, what: &str) -> bool {
        let server = self.server.clone();
        let tracked = self.tracked.clone();
        let back = self
            .wait_health(what, move |h| {
                let key = tracked.lock().expect("tracked lock").key;
                let (live, handshakes) = device_counts(&server, key);
                h["state"] == "connected" && handshakes > handshakes_before && live == 1
            })
            .await
            .is_some();
        if back && self.broker_up {
            self.wait_mqtt_connected(&format!("MQTT connected ({what})"))
                .await;
        }
        back
    }

    fn begin(&self) -> (Instant, Option<u64>) {
        (Instant::now(), rss_kib(&self.agent))
    }

    fn end(&mut self, name: &'static str, (started, rss_start_kib): (Instant, Option<u64>)) {
        let phase = Phase {
            name,
            wall: started.elapsed(),
            rss_start_kib,
            rss_end_kib: rss_kib(&self.agent),
        };
        eprintln!(
            "phase {name}: {:.1?}, RSS {:?} → {:?} KiB",
            phase.wall, phase.rss_start_kib, phase.rss_end_kib
        );
        self.phases.push(phase);
    }

    async fn drops(&mut self) {
        let kinds = [
            ("515 restart", Some(StreamErrorKind::Restart)),
            ("503 unavailable", Some(StreamErrorKind::Unavailable)),
            ("plain drop", None),
        ];
        for i in 0..self.plan.drops {
            let which = (i % 3) as usize;
            let (name, kind) = kinds[which];
            let (_, before) = self.counts();
            self.episode_start();
            let hit = match kind {
                Some(kind) => self.server.send_stream_error(kind),
                None => self.server.drop_connections(),
            };
            if hit == 0 {
                self.c.drop_without_live_connection += 1;
            }
            self.c.drops[which] += 1;
            if !self
                .wait_reconnected(before, &format!("reconnect after {name} #{i}"))
                .await
            {
                self.recover().await;
            }
        }
    }

    /// Waits until the subscriber got, after `since`, `availability`
    /// online and a `state` connected: what a dashboard needs after the
    /// broker came back.
    async fn wait_mqtt_back(&mut self, since: Instant, what: &str) -> bool {
        let seen = self.seen.clone();
        self.wait_until(what, move |_| {
            let seen = seen.lock().expect("seen lock");
            let online = seen
                .availability
                .iter()
                .any(|(at, text)| *at > since && text == "online");
            let connected = seen
                .states
                .iter()
                .any(|r| r.at > since && r.state == "connected");
            online && connected
        })
        .await
        .is_some()
    }

    async fn broker_restarts(&mut self) {
        for i in 0..self.plan.broker_restarts {
            let (_, before) = self.counts();
            self.broker.kill();
            if self
                .wait_health("the MQTT link to notice the broker is gone", |h| {
                    h["mqtt"] != "ok"
                })
                .await
                .is_none()
            {
                self.broker.spawn().await;
                continue;
            }
            let back = Instant::now();
            self.broker.spawn().await;
            self.c.broker_restarts += 1;
            self.wait_mqtt_back(
                back,
                &format!("availability and state after broker restart #{i}"),
            )
            .await;
            if self.counts().1 != before {
                self.c.whatsapp_reconnects_during_broker_restarts += 1;
            }
        }
    }

    fn random_delay(max_ms: u64) -> Duration {
        Duration::from_millis(rand::rng().random_range(0..=max_ms))
    }

    /// A SIGKILL while connected and idle, then the restart must connect.
    async fn kill_idle(&mut self) {
        tokio::time::sleep(Self::random_delay(1000)).await;
        self.episode_start();
        self.kill_main().await;
        self.c.kills_idle += 1;
        self.agent.spawn();
        self.settle_after_restart("restart after a kill while idle")
            .await;
    }

    /// A SIGKILL while the agent starts and logs in (restored from
    /// session.db, connecting, first writes of the session).
    async fn kill_login(&mut self) {
        self.episode_start();
        self.stop_main("before a kill during login").await;
        self.agent.spawn();
        tokio::time::sleep(Self::random_delay(300)).await;
        self.kill_main().await;
        self.c.kills_login += 1;
        self.agent.spawn();
        self.settle_after_restart("restart after a kill during login")
            .await;
    }

    /// A SIGKILL while the broker is away: the WhatsApp side must not care,
    /// and MQTT must come back with the truth once the broker does.
    async fn kill_in_outage(&mut self) {
        self.broker.kill();
        self.broker_up = false;
        tokio::time::sleep(Self::random_delay(1000)).await;
        self.episode_start();
        self.kill_main().await;
        self.c.kills_outage += 1;
        self.agent.spawn();
        self.settle_after_restart("restart after a kill during a broker outage")
            .await;
        let back = Instant::now();
        self.broker.spawn().await;
        self.broker_up = true;
        self.wait_mqtt_back(back, "availability and state after the outage")
            .await;
    }

    /// A SIGKILL while a fresh outlet is being paired (a second agent on
    /// its own data dir, MQTT off), 0–150 ms after the phone started
    /// scanning its QR. The next start must settle: paired
    /// (connected) or cleanly unpaired (a QR). If it had reached
    /// `connected` before the kill, a QR afterwards is a lost session.
    async fn kill_pairing(&mut self, pairer: &mut Agent) {
        if pairer.child.is_some() {
            pairer.signal("KILL");
            pairer.wait_exit().await;
        }
        let data = pairer.dir.join("data");
        let _ = std::fs::remove_dir_all(&data);
        pairer.spawn();
        let deadline = Instant::now() + self.plan.deadline;
        let qr = loop {
            if let Some(r) = pairer.request(json!({"command": "qr"})).await
                && let Some(qr) = r["data"]["qr"].as_str()
            {
                break qr.to_string();
            }
            if Instant::now() > deadline {
                eprintln!(
                    "STUCK: no QR from the fresh outlet\n{}",
                    tail(&pairer.log(), 40)
                );
                self.c.stuck.push("QR of a fresh outlet".into());
                return;
            }
            tokio::time::sleep(POLL).await;
        };
        let phone = self.server.phone();
        let scan = tokio::spawn(async move { phone.scan(&qr).await });
        // An optimised agent pairs in tens of milliseconds after the scan:
        // most cuts must land inside that window, some after it.
        let cut_at = Instant::now() + Self::random_delay(150);
        let mut reached_connected = false;
        while Instant::now() < cut_at {
            if let Some(h) = pairer.status().await
                && h["state"] == "connected"
            {
                reached_connected = true;
            }
            tokio::time::sleep(POLL).await;
        }
        pairer.signal("KILL");
        pairer.wait_exit().await;
        self.c.kills_pairing += 1;
        if !reached_connected {
            self.c.pairing_kills_before_connected += 1;
        }
        let _ = tokio::time::timeout(self.plan.deadline, scan).await;
        pairer.spawn();
        let deadline = Instant::now() + self.plan.deadline;
        loop {
            match pairer.status().await {
                Some(h) if h["state"] == "connected" => {
                    self.c.pairing_kill_outcomes.0 += 1;
                    break;
                }
                Some(h) if h["state"] == "pairing" => {
                    self.c.pairing_kill_outcomes.1 += 1;
                    if reached_connected {
                        eprintln!(
                            "LOST SESSION (kill during pairing after connected)\n{}",
                            tail(&pairer.log(), 40)
                        );
                        self.c
                            .lost_sessions
                            .push("fresh outlet connected, killed, QR after restart".into());
                    }
                    break;
                }
                _ => {}
            }
            if let Some(child) = pairer.child.as_mut()
                && let Ok(Some(exit)) = child.try_wait()
            {
                pairer.child = None;
                self.c
                    .crashes
                    .push(format!("fresh outlet exited ({exit}) after a pairing kill"));
                break;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "STUCK: fresh outlet did not settle\n{}",
                    tail(&pairer.log(), 40)
                );
                self.c.stuck.push("fresh outlet settling".into());
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn kills(&mut self, pairer: &mut Agent) {
        for i in 0..self.plan.kills {
            match i % 4 {
                0 => self.kill_idle().await,
                1 => self.kill_login().await,
                2 => self.kill_in_outage().await,
                _ => self.kill_pairing(pairer).await,
            }
        }
        if pairer.child.is_some() {
            pairer.signal("KILL");
            pairer.wait_exit().await;
        }
    }

    /// The wall clock jumps +1 day and back to −1 h (still after the build
    /// date the clock check trusts), under libfaketime; each jump is taken
    /// live (a drop must still be reconnected) and across a restart (the
    /// session restored, no QR).
    async fn clock_jumps(&mut self) {
        let fake_time = self.agent.dir.join("faketime");
        set_fake_offset(&fake_time, "+0");
        let preload = libfaketime().display().to_string();
        let added = [
            ("OUTLET_AGENT__CLOCK__CHECK", "build_date".to_string()),
            ("LD_PRELOAD", preload),
            ("FAKETIME_TIMESTAMP_FILE", fake_time.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
            ("TZ", "UTC".to_string()),
        ];
        let env_before = self.agent.env.clone();
        self.agent
            .env
            .extend(added.iter().map(|(k, v)| (k.to_string(), v.clone())));
        self.episode_start();
        self.stop_main("before the clock phase").await;
        self.agent.spawn();
        self.settle_after_restart("restart under libfaketime").await;

        for i in 0..self.plan.clock_jumps {
            let forward = i % 2 == 0;
            let (offset, secs) = if forward {
                ("+86400", 86_400)
            } else {
                ("-3600", -3_600)
            };
            set_fake_offset(&fake_time, offset);
            if forward {
                self.c.clock_forward += 1;
            } else {
                self.c.clock_back += 1;
            }
            // Live: the next reconnect happens on the jumped clock.
            let (_, before) = self.counts();
            self.episode_start();
            self.server.drop_connections();
            if !self
                .wait_reconnected(before, &format!("reconnect after clock jump {offset}"))
                .await
            {
                self.recover().await;
            }
            // The agent really runs on the jumped clock: its `since` says so.
            let expected = chrono::Utc::now() + chrono::Duration::seconds(secs);
            if let Some(since) = self
                .agent
                .status()
                .await
                .and_then(|h| h["since"].as_str().map(String::from))
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
                && (since.with_timezone(&chrono::Utc) - expected)
                    .num_seconds()
                    .abs()
                    < 600
            {
                self.c.clock_offset_confirmed += 1;
            }
            // Across a restart.
            self.episode_start();
            self.stop_main(&format!("restart at clock {offset}")).await;
            self.agent.spawn();
            self.settle_after_restart(&format!("restart at clock {offset}"))
                .await;
        }

        self.agent.env = env_before;
        self.episode_start();
        self.stop_main("after the clock phase").await;
        self.agent.spawn();
        self.settle_after_restart("restart after the clock phase")
            .await;
    }

    /// The PNG "panel" goes away: its directory is replaced by a plain
    /// file, so the driver can write nothing (as root, permission bits
    /// would not stop it). A screen change (a server drop) makes the
    /// display task try, and health must say `fault`; with the directory
    /// back, `ok` again and a fresh frame on disk.
    async fn unplugs(&mut self, panel_dir: &Path) {
        let unplugged = panel_dir.with_extension("unplugged");
        let png = panel_dir.join("screen.png");
        for i in 0..self.plan.unplugs {
            self.c.unplugs += 1;
            std::fs::rename(panel_dir, &unplugged).expect("unplug the panel directory");
            std::fs::write(panel_dir, b"not a panel").expect("block the panel path");
            let (_, before) = self.counts();
            self.episode_start();
            self.server.drop_connections();
            let fault = self
                .wait_health(&format!("display fault after unplug #{i}"), |h| {
                    h["display"]
                        .as_str()
                        .is_some_and(|d| d.starts_with("fault"))
                })
                .await;
            if let Some(h) = &fault {
                self.c.unplug_faults_seen += 1;
                if self.c.first_unplug_fault.is_none() {
                    self.c.first_unplug_fault = h["display"].as_str().map(String::from);
                }
            }
            self.wait_reconnected(before, "reconnect while the panel is away")
                .await;
            std::fs::remove_file(panel_dir).expect("unblock the panel path");
            std::fs::rename(&unplugged, panel_dir).expect("plug the panel back");
            let restored = SystemTime::now();
            let written_after = |png: &Path| {
                std::fs::metadata(png)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= restored)
            };
            // A frame must be drawn again: a new state gives it something new.
            let (_, before) = self.counts();
            self.episode_start();
            self.server.drop_connections();
            self.wait_reconnected(before, "reconnect after the panel is back")
                .await;
            let png = png.clone();
            if self
                .wait_health(&format!("display ok after replug #{i}"), move |h| {
                    h["display"] == "ok" && written_after(&png)
                })
                .await
                .is_some()
            {
                self.c.unplug_recoveries += 1;
            }
        }
    }

    /// A `connected` message is stale when, after a disconnect the bench
    /// caused, it arrived after the agent had already published that it
    /// was not connected, and the fake server had not completed one new
    /// handshake for the device since the disconnect (the counters are
    /// read at each message's arrival): the agent claims a connection
    /// that does not exist. Also returned: `connected` messages that
    /// arrived while the server had no live connection at all, which
    /// includes ones in flight when the bench dropped the connection,
    /// before the agent could know — not a fault, shown for scale.
    fn stale_connected(&self) -> (Vec<String>, u64, u64, usize) {
        let seen = self.seen.lock().expect("seen lock");
        let states = &seen.states;
        let without_live = states
            .iter()
            .filter(|r| r.state == "connected" && r.live == 0)
            .count() as u64;
        let mut stale = Vec::new();
        for (i, episode) in self.episodes.iter().enumerate() {
            let end = self
                .episodes
                .get(i + 1)
                .map_or(states.len(), |next| next.first_state);
            let within = &states[episode.first_state.min(end)..end];
            let Some(reported) = within.iter().position(|r| r.state != "connected") else {
                continue;
            };
            let noticed = &within[reported];
            for r in &within[reported + 1..] {
                if r.state == "connected"
                    && r.generation == episode.generation
                    && r.handshakes <= episode.handshakes_before
                {
                    stale.push(format!(
                        "episode {i}: connected{} {:?} after `{}`, handshakes {} (before the disconnect {}), live {}",
                        if r.retained { " (retained)" } else { "" },
                        r.at.duration_since(noticed.at),
                        noticed.state,
                        r.handshakes,
                        episode.handshakes_before,
                        r.live
                    ));
                }
            }
        }
        if std::env::var_os("SOAK_DUMP_STATES").is_some() {
            let mut episode = 0;
            for (i, r) in states.iter().enumerate() {
                while self
                    .episodes
                    .get(episode)
                    .is_some_and(|e| e.first_state <= i)
                {
                    eprintln!("-- episode {episode}");
                    episode += 1;
                }
                eprintln!(
                    "{i} {}{}{} live {} handshakes {} gen {}",
                    r.state,
                    if r.retained { " (retained)" } else { "" },
                    if r.connected_after_own_disconnect {
                        " (after its own disconnect)"
                    } else {
                        ""
                    },
                    r.live,
                    r.handshakes,
                    r.generation
                );
            }
        }
        let after_own_disconnect = states
            .iter()
            .filter(|r| r.connected_after_own_disconnect)
            .count() as u64;
        (stale, without_live, after_own_disconnect, states.len())
    }
}

fn panics_in(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("panicked"))
        .map(String::from)
        .collect()
}

async fn run() {
    let plan = Plan::from_env();
    let started = Instant::now();
    let broker = Broker::start("allow_anonymous true\nset_tcp_nodelay true").await;
    let url = broker.url(false);
    let server = Arc::new(common::server().await);
    let id = unique("soak");
    let prefix = format!("outlet/{id}");
    let tracked = Arc::new(Mutex::new(Tracked::default()));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let subscriber = start_subscriber(&url, &prefix, server.clone(), tracked.clone(), seen.clone());
    // The subscriber is there before the agent's first message.
    let waited = Instant::now();
    while !seen.lock().expect("seen lock").subscribed {
        assert!(
            waited.elapsed() < plan.deadline,
            "no SUBACK from the private broker:\n{}",
            broker.log()
        );
        tokio::time::sleep(POLL).await;
    }

    let panel_root = tempfile::tempdir().expect("panel dir").keep();
    let panel_dir = panel_root.join("panel");
    let panel_png = panel_dir.join("screen.png").display().to_string();
    let agent = Agent::start(
        &server,
        &[
            ("OUTLET_AGENT__OUTLET__ID", &id),
            ("OUTLET_AGENT__MQTT__BROKER", &url),
            ("OUTLET_AGENT__MQTT__KEEPALIVE_SECS", "2"),
            ("OUTLET_AGENT__MQTT__RECONNECT_FIRST_DELAY_MS", "100"),
            ("OUTLET_AGENT__MQTT__RECONNECT_MAX_DELAY_SECS", "1"),
            // The soak is about recovering, not about the backoff curve
            // (measured by the e2e tests): every reconnect starts from the
            // first delay, or 1000 drops would take hours.
            ("OUTLET_AGENT__RECONNECT__FIRST_DELAY_MS", "100"),
            ("OUTLET_AGENT__RECONNECT__STABLE_AFTER_SECS", "0"),
            ("OUTLET_AGENT__DISPLAY__PNG_PATH", &panel_png),
        ],
    );
    let mut soak = Soak {
        plan,
        server: server.clone(),
        broker,
        agent,
        tracked,
        seen,
        c: Counters::default(),
        phases: Vec::new(),
        episodes: Vec::new(),
        broker_up: true,
    };
    let mut pairer = Agent::start(&server, &[]);
    pairer.signal("KILL");
    pairer.wait_exit().await;

    let t = soak.begin();
    soak.pair().await;
    soak.end("pair", t);
    let rss_first = rss_kib(&soak.agent);

    let t = soak.begin();
    soak.drops().await;
    soak.end("drops and stream errors", t);

    let t = soak.begin();
    soak.broker_restarts().await;
    soak.end("broker restarts", t);

    let t = soak.begin();
    soak.kills(&mut pairer).await;
    soak.end("SIGKILLs", t);

    let t = soak.begin();
    soak.clock_jumps().await;
    soak.end("clock jumps", t);

    let t = soak.begin();
    soak.unplugs(&panel_dir).await;
    soak.end("panel unplugged and back", t);

    let rss_last = rss_kib(&soak.agent);
    soak.stop_main("end of the run").await;
    subscriber.abort();

    let mut panics = panics_in(&soak.agent.log());
    panics.extend(panics_in(&pairer.log()));
    let (stale, without_live, after_own_disconnect, state_messages) = soak.stale_connected();
    let stats = server.stats();
    let duplicates: Vec<String> = stats
        .devices
        .iter()
        .filter(|d| d.stats.max > 1)
        .map(|d| format!("{} max {} ({:?})", d.device, d.stats.max, d.jid))
        .collect();
    let main_max = {
        let key = soak.tracked.lock().expect("tracked lock").key;
        stats
            .devices
            .iter()
            .find(|d| Some(d.device) == key)
            .map(|d| d.stats.max)
            .unwrap_or(0)
    };
    let c = &soak.c;
    let crashes = c.crashes.len() + c.sigterm_failures.len() + panics.len();
    let p = &soak.plan;

    println!("## Reliability soak report\n");
    println!(
        "agent: {} build; SOAK_SCALE {}; deadline per wait {:?}; wall time {:.1} min\n",
        support::build_kind(),
        p.scale,
        p.deadline,
        started.elapsed().as_secs_f64() / 60.0
    );
    println!("| what was done | count |");
    println!("|---|---:|");
    println!(
        "| WhatsApp faults: 515 / 503 / plain drops (each reconnected before the next) | {} / {} / {} |",
        c.drops[0], c.drops[1], c.drops[2]
    );
    println!(
        "| broker restarts (kill + start; availability and state back) | {} |",
        c.broker_restarts
    );
    println!(
        "| SIGKILLs: pairing / login / idle / broker outage | {} / {} / {} / {} |",
        c.kills_pairing, c.kills_login, c.kills_idle, c.kills_outage
    );
    println!(
        "| pairing kills before the fresh outlet reached `connected`; after the restart paired / cleanly unpaired | {}; {} / {} |",
        c.pairing_kills_before_connected, c.pairing_kill_outcomes.0, c.pairing_kill_outcomes.1
    );
    println!(
        "| clock jumps +1 day / −1 h (live and across a restart); fake clock confirmed | {} / {}; {} |",
        c.clock_forward, c.clock_back, c.clock_offset_confirmed
    );
    println!(
        "| panel unplugged / fault reported / `ok` again with a new frame | {} / {} / {} |",
        c.unplugs, c.unplug_faults_seen, c.unplug_recoveries
    );
    println!(
        "| restarts of a paired agent checked for a QR | {} |",
        c.restarts_checked
    );
    println!("| `state` messages received | {state_messages} |");
    println!("\n| counter | value |");
    println!("|---|---:|");
    println!(
        "| crashes (unexpected exits {}, SIGTERM exit ≠ 0 {}, panics logged {}) | {crashes} |",
        c.crashes.len(),
        c.sigterm_failures.len(),
        panics.len()
    );
    println!(
        "| lost sessions (a QR after a restart of a paired outlet) | {} |",
        c.lost_sessions.len()
    );
    println!(
        "| duplicate connections (devices with server concurrency > 1; main device max) | {} ({main_max}) |",
        duplicates.len()
    );
    println!("| stale `connected` (see definition) | {} |", stale.len());
    println!(
        "| `connected` arriving while the server had no live connection (in flight at a drop) | {without_live} |"
    );
    println!(
        "| `connected` published with a `last_disconnect` later than its `since` | {after_own_disconnect} |"
    );
    println!(
        "| WhatsApp reconnects caused by broker restarts | {} |",
        c.whatsapp_reconnects_during_broker_restarts
    );
    println!(
        "| faults sent with no live connection to hit | {} |",
        c.drop_without_live_connection
    );
    println!("| stuck waits (deadline hit) | {} |", c.stuck.len());
    println!(
        "| RSS at the first and the last phase's end | {} / {} KiB |",
        rss_first.map_or("?".into(), |v| v.to_string()),
        rss_last.map_or("?".into(), |v| v.to_string())
    );
    println!("\n| phase | wall time | RSS start → end (KiB) |");
    println!("|---|---:|---|");
    for phase in &soak.phases {
        println!(
            "| {} | {:.1} s | {} → {} |",
            phase.name,
            phase.wall.as_secs_f64(),
            phase.rss_start_kib.map_or("?".into(), |v| v.to_string()),
            phase.rss_end_kib.map_or("?".into(), |v| v.to_string())
        );
    }
    if let Some(fault) = &c.first_unplug_fault {
        println!("\nDisplay fault as reported: `{fault}`");
    }
    let findings: Vec<(&str, &Vec<String>)> = vec![
        ("crash", &c.crashes),
        ("SIGTERM", &c.sigterm_failures),
        ("panic", &panics),
        ("lost session", &c.lost_sessions),
        ("duplicate", &duplicates),
        ("stale", &stale),
        ("stuck", &c.stuck),
    ];
    for (kind, list) in findings {
        for item in list.iter().take(20) {
            println!("- {kind}: {item}");
        }
    }
}
