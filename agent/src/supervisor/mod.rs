//! The supervisor: the one owner of the WhatsApp connection.
//!
//! It runs sessions one after another — never two at once, by construction:
//! a new session is only started after the previous one's run loop has
//! ended — and turns library events and commands into the state machine of
//! DESIGN.md. It alone writes the [`Health`] snapshot; the screen, MQTT, the
//! control socket and systemd only read it.
//!
//! Timing is owned here too (see [`crate::backoff`] and [`rounds`]), so the
//! `attempt` and `next_retry_at` it reports are the truth.
//!
//! # Layout
//!
//! - this file: the [`Supervisor`] itself, its run loop, the health it
//!   writes (`set_state`) and the heartbeat;
//! - [`session`]: one WhatsApp client, one connection, then discarded;
//!   [`transport`]: the WebSocket under it;
//! - `linked`: a session from dial to end and what its events change;
//! - `verdicts`: what ended the session and what comes next (backoff,
//!   cool-down, pause, waiting for disk space);
//! - `commands`: the answers to commands in each state;
//! - `pairing`: link codes; [`rounds`]: how many QR rounds and codes an hour.
//!
//! A working part: it may use the plain rules below it (config, health,
//! commands, phone numbers, backoff) and the messages module, whose hook it
//! puts on every client; it must not import the MQTT link, the screen, the
//! control socket or any entry point.

mod commands;
mod linked;
mod pairing;
pub mod rounds;
pub mod session;
pub mod transport;
mod verdicts;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};
use whatsapp_rust::store::traits::{Backend, DeviceStore};
use whatsapp_rust::types::events::Event;

use crate::backoff::Backoff;
use crate::clock;
use crate::command::{Command, CommandError, CommandRequest, CommandResult, Commands};
use crate::config::Config;
pub use crate::health::SupervisorLink;
use crate::health::{
    FaultKind, Health, LastDisconnect, LocalFault, MqttStatus, PairCodeStatus, QrStatus,
    SessionState, Transition,
};
use crate::notify::Notifier;
use crate::phone::{mask_phone, phone_from_jid_user};
use rounds::Rounds;
use session::{Session, SessionEvent, SessionParams};

use commands::hourly_limit;
use pairing::PairCodeRequest;
use verdicts::{Next, Verdict, max_ban};

/// How long a stopping client may take to close its connection.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The supervisor wakes at least this often: watchdog, stale-health refresh,
/// connect deadline.
const TICK: Duration = Duration::from_millis(500);
/// WhatsApp hands out this many codes per round (first 60 s, then 20 s each).
const CODES_PER_ROUND: u32 = 6;
/// A link code typed in its last seconds may still be completing: the
/// library waits up to a minute for `pair-success` after the phone answered.
/// With no QR left, the connection that carries the code is kept this much
/// longer than the code's validity.
const PAIR_CODE_LINGER: Duration = Duration::from_secs(70);
/// A connection this old is past its start-up burst, even on a loaded Pi
/// (see `release_code_pages_once_settled`).
const SETTLED: Duration = Duration::from_secs(30);
/// How often a lasting connection hands code pages back again.
const RELEASE_EVERY: Duration = Duration::from_secs(600);

/// While the disk is full, room is looked for this soon at first, then
/// less and less often (doubling, up to [`DISK_PROBE_MAX`]): a full disk is
/// a local problem, and retrying it costs no WhatsApp connection.
const DISK_PROBE_FIRST: Duration = Duration::from_secs(2);
const DISK_PROBE_MAX: Duration = Duration::from_secs(30);
/// Below this much free space a write is not even tried.
const DISK_MIN_FREE: u64 = 64 * 1024;

pub struct Supervisor {
    config: Arc<Config>,
    store: Arc<outlet_store::SqliteStore>,
    health: watch::Sender<Health>,
    transitions: broadcast::Sender<Transition>,
    commands: mpsc::Receiver<CommandRequest>,
    display_status: Option<watch::Receiver<outlet_display::DisplayStatus>>,
    mqtt_status: Option<watch::Receiver<MqttStatus>>,
    notifier: Notifier,
    /// Turns for number lookups, shared with the messages.
    lookups: Arc<crate::pacing::Pacer>,
    history: mpsc::Sender<Transition>,
    events_tx: mpsc::UnboundedSender<SessionEvent>,
    events_rx: mpsc::UnboundedReceiver<SessionEvent>,
    generation: u64,
    backoff: Backoff,
    rounds: Rounds,
    /// The last session ended with the device unlinked: the next pairing
    /// round is shown as "unlinked — scan to link again".
    after_logout: bool,
    qr_index: u32,
    /// A `pair_code` that came before the session had a registration
    /// connection to ask on; asked as soon as the first QR shows there is one.
    pending_pair_code: Option<PairCodeRequest>,
    /// The number of the link code being asked for or shown.
    pair_code_phone: Option<String>,
    /// The QR codes ran out while a link code kept the connection open: the
    /// session ends when the code does.
    qr_exhausted: bool,
    /// An expired code may still be completing until then (see
    /// [`PAIR_CODE_LINGER`]).
    pair_code_linger_until: Option<Instant>,
    /// Link codes asked for in the last hour.
    pair_codes: Rounds,
    /// The client of the running session, kept outside the session's future
    /// so its connection can be closed even when that future panicked.
    live_client: Option<Arc<whatsapp_rust::client::Client>>,
    /// Messages through the outlet: its hook and receipt handler go on
    /// every session's client, and it gets the client while connected.
    messages: Option<Arc<crate::messages::Messages>>,
    message_report: Option<watch::Receiver<crate::health::MessageHealth>>,
    /// Test builds only: panic once while handling this event kind, to
    /// prove a panic costs one session and nothing else.
    panic_once_on: Option<String>,
    /// When code pages were last handed back during this connection
    /// ([`crate::memory::release_code_pages`]).
    code_pages_released_at: Option<Instant>,
}

/// Test builds (those that cannot verify WhatsApp's certificates, see
/// [`crate::cert_check`]) panic once in the supervisor when this names an
/// event kind (`connected`, `pairing_qr_code`, …). Inert in release builds.
pub const PANIC_ONCE_ENV: &str = "OUTLET_AGENT_TEST_PANIC_ONCE_ON";

impl Supervisor {
    pub fn new(
        config: Arc<Config>,
        store: Arc<outlet_store::SqliteStore>,
        display_status: Option<watch::Receiver<outlet_display::DisplayStatus>>,
        notifier: Notifier,
    ) -> (Self, SupervisorLink) {
        let now = Utc::now();
        let mut initial = Health::new(&config.outlet.id, now, ttl(&config));
        if let Some(status) = &display_status {
            initial.display = status.borrow().to_string();
        }
        let (health, health_rx) = watch::channel(initial);
        let (transitions, _) = broadcast::channel(256);
        let (commands_tx, commands) = Commands::channel(32);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let history = spawn_history_writer(store.clone());
        let link = SupervisorLink {
            health: health_rx,
            transitions: transitions.clone(),
            commands: commands_tx,
        };
        let supervisor = Self {
            backoff: Backoff::new(&config.reconnect),
            rounds: Rounds::new(config.pairing.max_rounds_per_hour),
            pair_codes: Rounds::new(config.pairing.max_pair_codes_per_hour),
            lookups: Arc::new(crate::pacing::Pacer::new(
                config.whatsapp.lookups_per_minute,
                config.whatsapp.lookup_burst,
            )),
            config,
            store,
            health,
            transitions,
            commands,
            display_status,
            mqtt_status: None,
            notifier,
            history,
            events_tx,
            events_rx,
            generation: 0,
            after_logout: false,
            qr_index: 0,
            pending_pair_code: None,
            pair_code_phone: None,
            qr_exhausted: false,
            pair_code_linger_until: None,
            live_client: None,
            messages: None,
            message_report: None,
            code_pages_released_at: None,
            panic_once_on: std::env::var(PANIC_ONCE_ENV)
                .ok()
                .filter(|_| crate::cert_check::skips_certificate_check()),
        };
        (supervisor, link)
    }

    /// The turns every number lookup of this outlet takes (the messages
    /// share them).
    pub fn lookups(&self) -> Arc<crate::pacing::Pacer> {
        self.lookups.clone()
    }

    /// Reports the MQTT link's health in the snapshot (`mqtt`), so a broker
    /// problem is visible where the broker is not: the control socket, the
    /// history, the log.
    pub fn watch_mqtt(&mut self, status: watch::Receiver<MqttStatus>) {
        let text = mqtt_text(&status.borrow());
        self.health.send_modify(|h| h.mqtt = text);
        self.mqtt_status = Some(status);
    }

    /// Messages flow through `messages` from the next session on; its
    /// depths and times join the snapshot.
    pub fn attach_messages(&mut self, messages: Arc<crate::messages::Messages>) {
        let report = messages.report();
        let current = report.borrow().clone();
        self.health.send_modify(|h| h.messages = current);
        self.message_report = Some(report);
        self.messages = Some(messages);
    }

    /// Puts a problem found before the first session (a store that had to
    /// be moved aside, say) into the snapshot, so it is reported.
    pub fn report_startup_problem(&mut self, message: String) {
        self.health.send_modify(|h| h.last_error = Some(message));
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.restore_identity().await;
        if !self.wait_for_clock(&mut shutdown).await {
            return;
        }
        let mut next = Next::Connect;
        loop {
            next = match next {
                Next::Connect => {
                    // A panic while handling a session (ours or a library
                    // callback's) is a failed attempt, not a dead agent.
                    let session = std::panic::AssertUnwindSafe(self.run_session(&mut shutdown));
                    let verdict = futures_util::FutureExt::catch_unwind(session)
                        .await
                        .unwrap_or_else(|panic| {
                            let what = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_else(|| "unknown".into());
                            tracing::error!(%what, "the session panicked; starting a new one");
                            Verdict::Transient(format!("internal error: {what}"))
                        });
                    // After a panic the session could not clean up: its
                    // connection is closed here, before any new one.
                    self.end_session_writes().await;
                    self.after_session(verdict).await
                }
                Next::Wait { until } => self.wait(until, &mut shutdown).await,
                Next::Paused => self.paused(&mut shutdown).await,
                Next::WaitForDiskSpace => self.wait_for_disk_space(&mut shutdown).await,
                Next::Stop => break,
            };
        }
        self.notifier.status("stopped");
    }

    /// `waiting_for_clock` until the system clock can be trusted. Returns
    /// false on shutdown.
    async fn wait_for_clock(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let check = self.config.clock.check;
        if clock::is_trustworthy(check) {
            return true;
        }
        self.set_state(
            SessionState::WaitingForClock,
            "system clock not synchronised",
            |_| {},
        );
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return false,
                _ = tick.tick() => {
                    self.heartbeat();
                    if clock::is_trustworthy(check) {
                        return true;
                    }
                }
                Some(request) = self.commands.recv() => {
                    let reply = self.answer_idle(&request.command);
                    let _ = request.reply.send(reply);
                }
            }
        }
    }

    /// Keeps the snapshot fresh and tells systemd the supervisor is alive.
    /// Called from every loop of the supervisor, so a wedged supervisor
    /// stops the watchdog pings and systemd restarts the agent.
    fn heartbeat(&mut self) {
        self.notifier.watchdog();
        let now = Utc::now();
        self.release_code_pages_once_settled(now);
        let ttl = ttl(&self.config);
        let display = self.display_status.as_ref().map(|s| s.borrow().to_string());
        let stale = self.health.borrow().valid_until - ttl / 2 <= now;
        let display_changed = display
            .as_ref()
            .is_some_and(|d| *d != self.health.borrow().display);
        let mqtt = self.mqtt_status.as_ref().map(|s| mqtt_text(&s.borrow()));
        let mqtt_changed = mqtt
            .as_ref()
            .is_some_and(|m| *m != self.health.borrow().mqtt);
        let messages = self.message_report.as_mut().and_then(|r| {
            r.has_changed()
                .unwrap_or(false)
                .then(|| r.borrow_and_update().clone())
        });
        let messages_changed = messages.is_some();
        if stale || display_changed || mqtt_changed || messages_changed {
            self.health.send_modify(|h| {
                h.valid_until = now + ttl;
                if let Some(messages) = messages {
                    h.messages = messages;
                }
                if let Some(display) = display {
                    h.display = display;
                }
                if let Some(mqtt) = mqtt {
                    h.mqtt = mqtt;
                }
            });
        }
    }

    /// Applies a change to the snapshot. A new state also records a
    /// transition (event stream, history, systemd STATUS, log line).
    fn set_state(&mut self, state: SessionState, reason: &str, change: impl FnOnce(&mut Health)) {
        let now = Utc::now();
        let ttl = ttl(&self.config);
        let mut transition = None;
        self.health.send_modify(|h| {
            if h.state != state {
                transition = Some(Transition {
                    at: now,
                    from: h.state,
                    to: state,
                    reason: reason.to_string(),
                });
                h.state = state;
                h.since = now;
            }
            change(h);
            h.valid_until = now + ttl;
        });
        if let Some(transition) = transition {
            tracing::info!(
                from = %transition.from,
                to = %transition.to,
                reason = %transition.reason,
                "state changed"
            );
            self.notifier
                .status(&format!("{}: {}", transition.to, transition.reason));
            let _ = self.transitions.send(transition.clone());
            if self.history.try_send(transition).is_err() {
                tracing::warn!("state history writer is behind; a transition was not stored");
            }
        }
    }
}

/// The `mqtt` field of the snapshot.
fn mqtt_text(status: &MqttStatus) -> String {
    match (&status.connected, &status.last_error) {
        (true, _) => "ok".into(),
        (false, Some(error)) => format!("error: {error}"),
        (false, None) => "connecting".into(),
    }
}

fn ttl(config: &Config) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(config.health.ttl_secs).unwrap_or(60))
}

/// A time in an answer, to the second: sub-second digits would read as a
/// phone number to the redaction of MQTT answers.
fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn to_utc(at: Instant) -> DateTime<Utc> {
    let now = Utc::now();
    chrono::Duration::from_std(at.saturating_duration_since(Instant::now()))
        .ok()
        .and_then(|delta| now.checked_add_signed(delta))
        .unwrap_or(now)
}

/// Writes transitions to the store's bounded history, in order, off the
/// supervisor's path: a slow SD card must not delay a reconnect.
fn spawn_history_writer(store: Arc<outlet_store::SqliteStore>) -> mpsc::Sender<Transition> {
    let (tx, mut rx) = mpsc::channel::<Transition>(256);
    tokio::spawn(async move {
        while let Some(t) = rx.recv().await {
            let record = outlet_store::Transition {
                at: t.at,
                from: t.from.to_string(),
                to: t.to.to_string(),
                reason: t.reason,
            };
            if let Err(e) = store.record_transition(&record).await {
                tracing::warn!(error = %e, "cannot store a state transition");
            }
        }
    });
    tx
}
