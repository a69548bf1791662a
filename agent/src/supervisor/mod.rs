//! The supervisor: the one owner of the WhatsApp connection.
//!
//! It runs sessions one after another — never two at once, by construction:
//! a new session is only started after the previous one's run loop has
//! ended — and turns library events and commands into the state machine of
//! DESIGN.md. It alone writes the [`Health`] snapshot; the screen, MQTT, the
//! control socket and systemd only read it.
//!
//! Timing is owned here too (see [`backoff`] and [`rounds`]), so the
//! `attempt` and `next_retry_at` it reports are the truth.

pub mod rounds;
pub mod session;
pub mod transport;

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

/// What the server or the user decided about the session that just ended.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    /// Pairing succeeded; the server restarts the stream (515): log in now.
    Linked,
    LoggedOut,
    Replaced,
    Banned {
        until: DateTime<Utc>,
    },
    Outdated,
    PairingExhausted,
    /// A command asked for a reconnect (or a new pairing round) now.
    Restart,
    Pause,
    /// The session store cannot write: the data directory's filesystem is
    /// full. No WhatsApp connection until there is room again.
    DiskFull,
    Transient(String),
    Shutdown,
}

/// A `pair_code` waiting for the session's registration connection.
struct PairCodeRequest {
    /// E.164 digits.
    phone: String,
    reply: tokio::sync::oneshot::Sender<CommandResult>,
}

/// What the supervisor does next.
enum Next {
    Connect,
    Wait {
        until: Instant,
    },
    Paused,
    /// `fault`: the disk is full; wait for room, checking now and then.
    WaitForDiskSpace,
    Stop,
}

pub struct Supervisor {
    config: Arc<Config>,
    store: Arc<outlet_store::SqliteStore>,
    health: watch::Sender<Health>,
    transitions: broadcast::Sender<Transition>,
    commands: mpsc::Receiver<CommandRequest>,
    display_status: Option<watch::Receiver<outlet_display::DisplayStatus>>,
    mqtt_status: Option<watch::Receiver<MqttStatus>>,
    notifier: Notifier,
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

    /// Shows the number this outlet is linked to from the start, before any
    /// connection: it was persisted at pairing time.
    async fn restore_identity(&mut self) {
        match self.store.last_identity().await {
            Ok(Some(identity)) if self.device_is_linked().await => {
                self.health.send_modify(|h| {
                    h.phone = identity.phone.as_deref().and_then(phone_from_jid_user);
                    h.push_name = identity.push_name.clone();
                });
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the last identity"),
        }
    }

    async fn device_is_linked(&self) -> bool {
        matches!(
            DeviceStore::load(&*self.store).await,
            Ok(Some(device)) if device.pn.is_some()
        )
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

    /// Runs one session until its connection ends; returns what happened.
    async fn run_session(&mut self, shutdown: &mut watch::Receiver<bool>) -> Verdict {
        // No connection the store could not keep the keys of.
        if self.store.disk_full() && self.disk_is_full().await {
            return Verdict::DiskFull;
        }
        self.generation += 1;
        let generation = self.generation;
        let attempt = self.backoff.failures() + 1;
        let linked = self.device_is_linked().await;
        let (state, reason) = if self.after_logout {
            (
                SessionState::LoggedOut,
                "device unlinked; starting a new pairing",
            )
        } else if linked {
            (SessionState::Connecting, "connecting")
        } else {
            (SessionState::Connecting, "connecting to request a QR code")
        };
        self.set_state(state, reason, |h| {
            h.attempt = attempt;
            h.next_retry_at = None;
            h.banned_until = None;
            h.fault = None;
        });

        let version = self
            .config
            .whatsapp
            .version_triple()
            .unwrap_or((2, 3000, 1_023_868_176));
        // Its own handle: once the session is over, a late write from the
        // old client's detached tasks is refused (see `for_session`).
        let backend: Arc<dyn Backend> = Arc::new(self.store.for_session(generation));
        let params = SessionParams {
            generation,
            endpoint: self.config.whatsapp.endpoint.clone(),
            version,
            backend,
            events: self.events_tx.clone(),
            device_name: self.config.outlet.device_name(),
            messages: self.messages.clone(),
        };
        self.qr_exhausted = false;
        self.pair_code_linger_until = None;
        let mut session = match Session::start(params).await {
            Ok(session) => session,
            Err(e) if self.disk_is_full().await => {
                tracing::error!(error = %e, "cannot start the WhatsApp client: the disk is full");
                return Verdict::DiskFull;
            }
            Err(e) => return Verdict::Transient(e.to_string()),
        };
        tracing::info!(attempt, generation, "session started");
        self.live_client = Some(session.client().clone());

        let started = Instant::now();
        let mut connected_at: Option<Instant> = None;
        let mut verdict: Option<Verdict> = None;
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    verdict = Some(Verdict::Shutdown);
                    session.stop(STOP_GRACE).await;
                    break;
                }
                Some(event) = self.events_rx.recv() => {
                    if event.generation == generation {
                        self.on_event(&event.event, &mut verdict, &mut connected_at).await;
                        self.ask_pending_pair_code(&session);
                        if self.nothing_left_to_pair_with() {
                            verdict = Some(Verdict::PairingExhausted);
                            session.stop(STOP_GRACE).await;
                            break;
                        }
                    }
                }
                () = session.ended() => break,
                Some(request) = self.commands.recv() => {
                    if let Some(v) = self.on_command(request, &mut session).await {
                        verdict = Some(v);
                        if session.is_running() {
                            session.stop(STOP_GRACE).await;
                        }
                        break;
                    }
                }
                _ = tick.tick() => {
                    self.heartbeat();
                    self.expire_pair_code();
                    if self.store.disk_full() {
                        // The library's writes (keys, sessions) fail: carrying
                        // on would let what the server holds and what the
                        // store holds drift apart.
                        verdict = Some(Verdict::DiskFull);
                        session.stop(STOP_GRACE).await;
                        break;
                    }
                    if self.nothing_left_to_pair_with() {
                        verdict = Some(Verdict::PairingExhausted);
                        session.stop(STOP_GRACE).await;
                        break;
                    }
                    let pairing = {
                        let h = self.health.borrow();
                        h.qr.is_some() || h.pair_code.is_some()
                    };
                    if connected_at.is_none()
                        && !pairing
                        && started.elapsed() > self.config.connect_timeout()
                    {
                        verdict = Some(Verdict::Transient(format!(
                            "no answer from WhatsApp within {}s",
                            self.config.reconnect.connect_timeout_secs
                        )));
                        session.stop(STOP_GRACE).await;
                        break;
                    }
                }
            }
        }
        // The library forwards its events synchronously, so everything this
        // session reported is already queued.
        while let Ok(event) = self.events_rx.try_recv() {
            if event.generation == generation {
                self.on_event(&event.event, &mut verdict, &mut connected_at)
                    .await;
            }
        }
        if let Some(at) = connected_at {
            self.backoff.connection_ended(at.elapsed());
        }
        self.end_session_writes().await;
        if !linked {
            self.linked_without_event(&mut verdict).await;
        }
        verdict.unwrap_or_else(|| Verdict::Transient("connection closed".into()))
    }

    /// The device is linked to `user`'s account (pair-success). Persist
    /// first, publish second, and only then anything else: the number must
    /// never be unknown after a scan.
    async fn on_linked(
        &mut self,
        user: &str,
        jid: String,
        lid: String,
        push_name: &str,
        verdict: &mut Option<Verdict>,
    ) {
        let phone = phone_from_jid_user(user);
        let push_name = Some(push_name.to_string()).filter(|n| !n.is_empty());
        let identity = outlet_store::Identity {
            jid,
            phone: Some(user.to_string()),
            push_name: push_name.clone(),
            lid: Some(lid).filter(|l| !l.is_empty()),
            paired_at: Some(Utc::now()),
        };
        if let Err(e) = self.store.set_last_identity(&identity).await {
            tracing::error!(error = %e, "cannot persist the linked identity");
        }
        let masked = phone.as_deref().map(mask_phone).unwrap_or_default();
        self.after_logout = false;
        self.qr_index = 0;
        self.pair_code_phone = None;
        // Linked: nothing of the pairing round is left to run out. (A code
        // typed after the last QR expired once read as "QR codes ran out"
        // here, and the linked outlet sat in pairing_idle for the cool-down.)
        self.qr_exhausted = false;
        self.pair_code_linger_until = None;
        *verdict = Some(Verdict::Linked);
        self.set_state(
            SessionState::Connecting,
            &format!("linked to {masked}; logging in"),
            |h| {
                h.phone = phone;
                h.push_name = push_name;
                h.qr = None;
                h.pair_code = None;
                h.attempt = 1;
            },
        );
    }

    /// A session that started unlinked and ended linked paired, even when
    /// its `PairSuccess` event never reached us: whatsapp-rust dispatches it
    /// from the pair-success task *after* sending `pair-device-sign`, so the
    /// server's 515 can end the run loop first (seen in the test loop:
    /// "Client run loop has shut down", then "Successfully paired"). The
    /// device record, saved when the session ended, says what the event
    /// would have said.
    async fn linked_without_event(&mut self, verdict: &mut Option<Verdict>) {
        if matches!(verdict, Some(Verdict::Linked | Verdict::LoggedOut)) {
            return;
        }
        let Ok(Some(device)) = DeviceStore::load(&*self.store).await else {
            return;
        };
        let Some(pn) = device.pn.clone() else {
            return;
        };
        tracing::info!(
            "the session paired without its pair-success event; taking the device record"
        );
        let shutdown = *verdict == Some(Verdict::Shutdown);
        let lid = device
            .lid
            .as_ref()
            .map(|l| l.to_string())
            .unwrap_or_default();
        self.on_linked(&pn.user, pn.to_string(), lid, &device.push_name, verdict)
            .await;
        if shutdown {
            *verdict = Some(Verdict::Shutdown);
        }
    }

    async fn on_event(
        &mut self,
        event: &Event,
        verdict: &mut Option<Verdict>,
        connected_at: &mut Option<Instant>,
    ) {
        if self
            .panic_once_on
            .as_deref()
            .is_some_and(|kind| event_kind_name(event) == kind)
        {
            let kind = self.panic_once_on.take().unwrap_or_default();
            panic!("test fault: panic on {kind}");
        }
        let now = Utc::now();
        match event {
            Event::PairingQrCode(qr) => {
                if self.qr_index == 0 {
                    self.rounds.start(Instant::now());
                }
                self.qr_index += 1;
                let index = self.qr_index;
                let expires_at = now
                    + chrono::Duration::from_std(qr.timeout).unwrap_or(chrono::Duration::zero());
                let status = QrStatus {
                    index,
                    count: CODES_PER_ROUND.max(index),
                    issued_at: now,
                    expires_at,
                    code: qr.code.clone(),
                };
                // A link code on the screen stays there; the QR rotates
                // underneath it in case the code is not used.
                let state = if self.health.borrow().pair_code.is_some() {
                    SessionState::PairingCode
                } else {
                    self.pairing_state()
                };
                self.set_state(state, &format!("showing QR code {index}"), |h| {
                    h.qr = Some(status);
                    h.attempt = 0;
                });
            }
            Event::PairSuccess(success) => {
                self.on_linked(
                    &success.id.user,
                    success.id.to_string(),
                    success.lid.to_string(),
                    &success.business_name,
                    verdict,
                )
                .await;
            }
            Event::Connected(_) => {
                *connected_at = Some(Instant::now());
                if let (Some(messages), Some(client)) = (&self.messages, &self.live_client) {
                    messages.connected(client.clone());
                }
                let device = DeviceStore::load(&*self.store).await.ok().flatten();
                self.set_state(SessionState::Connected, "logged in", |h| {
                    h.attempt = 0;
                    h.next_retry_at = None;
                    h.last_error = None;
                    h.last_connected_at = Some(now);
                    h.qr = None;
                    if let Some(device) = device {
                        if let Some(pn) = &device.pn {
                            h.phone = phone_from_jid_user(&pn.user);
                        }
                        if !device.push_name.is_empty() {
                            h.push_name = Some(device.push_name.clone());
                        }
                    }
                });
            }
            Event::Disconnected(d) => {
                if let Some(messages) = &self.messages {
                    messages.disconnected();
                }
                let reason = format!("{:?}", d.reason);
                let last_disconnect = LastDisconnect {
                    at: now,
                    reason: reason.clone(),
                };
                let connected = self.health.borrow().state == SessionState::Connected;
                if connected && verdict.is_none() {
                    // Not one more snapshot that says "connected" with the
                    // connection already gone (the soak bench counted 716
                    // in 1000 drops): the run loop ends next, and the wait
                    // before the next attempt is filled in then.
                    self.set_state(
                        SessionState::Reconnecting,
                        &format!("disconnected: {reason}"),
                        |h| h.last_disconnect = Some(last_disconnect),
                    );
                } else {
                    self.health
                        .send_modify(|h| h.last_disconnect = Some(last_disconnect));
                }
                verdict.get_or_insert(Verdict::Transient(format!("disconnected: {reason}")));
            }
            Event::LoggedOut(_) => *verdict = Some(Verdict::LoggedOut),
            Event::StreamReplaced(_) => *verdict = Some(Verdict::Replaced),
            Event::TemporaryBan(ban) => {
                // The server's figure, capped: a bogus one must not
                // overflow the clock arithmetic or park the outlet forever.
                let until = now + ban.expire.clamp(chrono::TimeDelta::zero(), max_ban());
                *verdict = Some(Verdict::Banned { until });
            }
            Event::ClientOutdated(_) => *verdict = Some(Verdict::Outdated),
            Event::ConnectFailure(failure) => {
                verdict.get_or_insert(Verdict::Transient(format!(
                    "connect failure {:?}",
                    failure.reason
                )));
            }
            // The library keeps the connection when a link code is still
            // on offer; the session then ends with the code.
            Event::PairingQrCodesExhausted(e) if e.disconnected => {
                *verdict = Some(Verdict::PairingExhausted);
            }
            Event::PairingQrCodesExhausted(_) => {
                self.qr_exhausted = true;
                self.health.send_modify(|h| h.qr = None);
            }
            Event::PairingCode(code) => {
                let phone = self.pair_code_phone.clone().unwrap_or_default();
                let status = PairCodeStatus {
                    phone: format!("+{phone}"),
                    issued_at: now,
                    expires_at: now
                        + chrono::Duration::from_std(code.timeout)
                            .unwrap_or(chrono::Duration::zero()),
                    code: code.code.clone(),
                };
                tracing::info!(phone = %mask_phone(&status.phone), "showing a link code");
                self.set_state(SessionState::PairingCode, "showing a link code", |h| {
                    h.pair_code = Some(status);
                    h.attempt = 0;
                });
            }
            Event::PairingCodeError(error) => {
                self.end_pair_code(&format!("no link code: {}", error.error));
            }
            Event::PairingCodeRefresh(_) => {
                self.end_pair_code("the link code was not completed; ask for a new one");
            }
            Event::PairError(error) => {
                let message = format!("pairing failed: {}", error.error);
                self.health.send_modify(|h| h.last_error = Some(message));
            }
            Event::StreamError(error) => {
                let message = format!("stream error {}", error.code);
                self.health.send_modify(|h| h.last_error = Some(message));
            }
            _ => {}
        }
    }

    /// Decides what follows a session.
    async fn after_session(&mut self, verdict: Verdict) -> Next {
        let now = Instant::now();
        self.qr_index = 0;
        self.pair_code_phone = None;
        self.qr_exhausted = false;
        self.pair_code_linger_until = None;
        if let Some(pending) = self.pending_pair_code.take() {
            let _ = pending.reply.send(Err(CommandError::Failed(
                "the connection ended before a link code could be requested; try again".into(),
            )));
        }
        self.health.send_modify(|h| {
            h.qr = None;
            h.pair_code = None;
        });
        match verdict {
            Verdict::Shutdown => Next::Stop,
            Verdict::Linked | Verdict::Restart => Next::Connect,
            Verdict::Pause => {
                self.set_state(SessionState::Paused, "paused by command", |h| {
                    h.next_retry_at = None;
                });
                Next::Paused
            }
            Verdict::LoggedOut => {
                if let Err(e) = self.store.wipe_whatsapp_keys().await {
                    tracing::error!(error = %e, "cannot wipe the WhatsApp keys after logout");
                    if e.is_disk_full() {
                        // Retried once there is room: the phone already
                        // unlinked the device, so the keys must still go.
                        self.report_disk_full(None);
                        return Next::WaitForDiskSpace;
                    }
                    let what = format!("cannot wipe the keys of the unlinked device: {e}");
                    let free_bytes = crate::disk::free_bytes(&self.config.storage.data_dir);
                    let dir = self.config.storage.data_dir.display().to_string();
                    self.set_state(SessionState::Fault, &what, |h| {
                        h.last_error = Some(e.to_string());
                        h.fault = Some(LocalFault {
                            kind: FaultKind::Store,
                            what: what.clone(),
                            action: "Check the agent's log; it retries by itself".into(),
                            free_bytes,
                            dir: Some(dir),
                        });
                    });
                    return Next::Wait {
                        until: now + Duration::from_secs(30),
                    };
                }
                self.after_logout = true;
                self.backoff.reset();
                self.set_state(
                    SessionState::LoggedOut,
                    "this device was unlinked; keys wiped",
                    |_| {},
                );
                let until = self.rounds.next_allowed(now);
                if until > now {
                    self.idle_until(until, "pairing rounds used up for this hour")
                } else {
                    Next::Connect
                }
            }
            Verdict::PairingExhausted => {
                let cooldown = now + Duration::from_secs(self.config.pairing.cooldown_secs);
                let until = cooldown.max(self.rounds.next_allowed(now));
                self.idle_until(until, "QR codes ran out")
            }
            Verdict::Replaced => {
                let until = now + Duration::from_secs(self.config.pairing.replaced_cooldown_secs);
                self.set_state(
                    SessionState::Replaced,
                    "another client took over this session",
                    |h| h.next_retry_at = Some(to_utc(until)),
                );
                Next::Wait { until }
            }
            Verdict::Banned { until } => {
                let wait = (until - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                self.set_state(
                    SessionState::Banned,
                    "temporarily banned by WhatsApp",
                    |h| {
                        h.banned_until = Some(until);
                        h.next_retry_at = Some(until);
                    },
                );
                Next::Wait { until: now + wait }
            }
            Verdict::Outdated => {
                let until = now + Duration::from_secs(self.config.pairing.outdated_retry_secs);
                self.set_state(
                    SessionState::Outdated,
                    "WhatsApp says this client version is outdated",
                    |h| h.next_retry_at = Some(to_utc(until)),
                );
                Next::Wait { until }
            }
            Verdict::DiskFull => {
                self.report_disk_full(None);
                Next::WaitForDiskSpace
            }
            Verdict::Transient(reason) => {
                let delay = self.backoff.next_delay();
                let until = now + delay;
                let attempt = self.backoff.failures();
                tracing::info!(%reason, attempt, ?delay, "will reconnect");
                self.set_state(SessionState::Reconnecting, &reason, |h| {
                    h.attempt = attempt;
                    h.next_retry_at = Some(to_utc(until));
                    h.last_error = Some(reason.clone());
                });
                Next::Wait { until }
            }
        }
    }

    /// True when a probe write fails for lack of space (after the store
    /// saw a write fail that way, or a client failed to start on a write of
    /// its own the store did not see).
    async fn disk_is_full(&self) -> bool {
        matches!(self.store.probe_write().await, Err(e) if e.is_disk_full())
    }

    /// `fault` with the disk-full words, and the next check at `next_check`.
    fn report_disk_full(&mut self, next_check: Option<Instant>) {
        let dir = self.config.storage.data_dir.clone();
        let free = crate::disk::free_bytes(&dir);
        let room = free.map_or_else(|| "unknown".into(), crate::disk::human_bytes);
        let what = format!("the disk is full: {} has {room} free", dir.display());
        let action = "Free space on the SD card. The agent carries on by itself; \
            WhatsApp stays linked"
            .to_string();
        let next_retry_at = next_check.map(to_utc);
        self.set_state(SessionState::Fault, &what, |h| {
            h.last_error = Some(what.clone());
            h.next_retry_at = next_retry_at;
            h.fault = Some(LocalFault {
                kind: FaultKind::DiskFull,
                what: what.clone(),
                action,
                free_bytes: free,
                dir: Some(dir.display().to_string()),
            });
        });
    }

    /// `fault` until the store can write again; then a new session (the
    /// keys were kept: no new pairing). Checks cost no WhatsApp connection
    /// and come less often the longer the disk stays full.
    async fn wait_for_disk_space(&mut self, shutdown: &mut watch::Receiver<bool>) -> Next {
        let mut delay = DISK_PROBE_FIRST;
        let mut next_check = Instant::now() + delay;
        self.report_disk_full(Some(next_check));
        let mut tick = tokio::time::interval(TICK);
        loop {
            let check = tokio::time::sleep_until(next_check.into());
            tokio::select! {
                biased;
                _ = shutdown.changed() => return Next::Stop,
                () = check => {
                    let free = crate::disk::free_bytes(&self.config.storage.data_dir);
                    if free.is_none_or(|f| f >= DISK_MIN_FREE) {
                        match self.store.probe_write().await {
                            Ok(()) => {
                                tracing::info!("the session store can write again");
                                self.backoff.reset();
                                return Next::Connect;
                            }
                            Err(e) if !e.is_disk_full() => {
                                tracing::warn!(error = %e, "the session store still cannot write");
                            }
                            Err(_) => {}
                        }
                    }
                    delay = (delay * 2).min(DISK_PROBE_MAX);
                    next_check = Instant::now() + delay;
                    self.report_disk_full(Some(next_check));
                }
                Some(request) = self.commands.recv() => {
                    let (reply, next) = match &request.command {
                        Command::Reconnect => {
                            // Look for room now rather than at the next check.
                            next_check = Instant::now();
                            (Ok(json!({ "note": "the disk is full; checking for space now" })), None)
                        }
                        Command::Pause => {
                            self.set_state(SessionState::Paused, "paused by command", |h| {
                                h.next_retry_at = None;
                                h.fault = None;
                            });
                            (Ok(json!({})), Some(Next::Paused))
                        }
                        other => (self.answer_idle(other), None),
                    };
                    let _ = request.reply.send(reply);
                    if let Some(next) = next {
                        return next;
                    }
                }
                _ = tick.tick() => self.heartbeat(),
            }
        }
    }

    fn idle_until(&mut self, until: Instant, reason: &str) -> Next {
        self.set_state(SessionState::PairingIdle, reason, |h| {
            h.next_retry_at = Some(to_utc(until));
        });
        Next::Wait { until }
    }

    /// Waits until `until`, answering commands; some end the wait early.
    async fn wait(&mut self, until: Instant, shutdown: &mut watch::Receiver<bool>) -> Next {
        let mut tick = tokio::time::interval(TICK);
        let sleep = tokio::time::sleep_until(until.into());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => return Next::Stop,
                () = &mut sleep => return Next::Connect,
                Some(request) = self.commands.recv() => {
                    let state = self.health.borrow().state;
                    let (reply, next) = match &request.command {
                        Command::Reconnect if state != SessionState::PairingIdle => {
                            self.backoff.reset();
                            (Ok(json!({})), Some(Next::Connect))
                        }
                        Command::Reconnect | Command::RefreshQr => self.new_round_now(state),
                        Command::PairCode { phone } => {
                            match self.pair_code_number(phone).await {
                                Err(e) => (Err(e), None),
                                Ok(phone) => match self.new_round_now(state) {
                                    (Ok(_), next) => {
                                        self.queue_pair_code(PairCodeRequest {
                                            phone,
                                            reply: request.reply,
                                        });
                                        return next.unwrap_or(Next::Connect);
                                    }
                                    refused => refused,
                                },
                            }
                        }
                        Command::Pause => {
                            self.set_state(SessionState::Paused, "paused by command", |h| {
                                h.next_retry_at = None;
                            });
                            (Ok(json!({})), Some(Next::Paused))
                        }
                        Command::Logout { confirm: true } => {
                            // No connection to unlink on: what a logout
                            // verdict after a session does (wipe, state, the
                            // round limit) is all there is to do.
                            let next = self.after_session(Verdict::LoggedOut).await;
                            let reply = {
                                let h = self.health.borrow();
                                if h.state == SessionState::Fault {
                                    Err(CommandError::Failed(
                                        h.last_error.clone().unwrap_or_default(),
                                    ))
                                } else {
                                    Ok(json!({ "note": "no connection to WhatsApp: the \
                                        phone lists this device until it is removed there" }))
                                }
                            };
                            let _ = request.reply.send(reply);
                            return next;
                        }
                        other => (self.answer_idle(other), None),
                    };
                    let _ = request.reply.send(reply);
                    if let Some(next) = next {
                        return next;
                    }
                }
                _ = tick.tick() => self.heartbeat(),
            }
        }
    }

    /// `refresh_qr` (or the button) while idle: a new pairing round now,
    /// unless this hour's rounds are used up.
    fn new_round_now(&mut self, state: SessionState) -> (CommandResult, Option<Next>) {
        if !matches!(state, SessionState::PairingIdle | SessionState::LoggedOut) {
            return (
                Err(CommandError::Refused(format!(
                    "not pairing (state {state})"
                ))),
                None,
            );
        }
        if let Err(e) = hourly_limit(&mut self.rounds, "pairing rounds") {
            return (Err(e), None);
        }
        (Ok(json!({})), Some(Next::Connect))
    }

    async fn paused(&mut self, shutdown: &mut watch::Receiver<bool>) -> Next {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => return Next::Stop,
                Some(request) = self.commands.recv() => {
                    let (reply, next) = match &request.command {
                        Command::Resume => {
                            self.backoff.reset();
                            (Ok(json!({})), Some(Next::Connect))
                        }
                        Command::Pause => (Ok(json!({})), None),
                        Command::Reconnect | Command::RefreshQr => (
                            Err(CommandError::Refused("paused; send resume first".into())),
                            None,
                        ),
                        other => (self.answer_idle(other), None),
                    };
                    let _ = request.reply.send(reply);
                    if let Some(next) = next {
                        return next;
                    }
                }
                _ = tick.tick() => self.heartbeat(),
            }
        }
    }

    /// Commands that need no session.
    fn answer_idle(&self, command: &Command) -> CommandResult {
        match command {
            Command::Status => self.status_json(),
            Command::Qr => self.qr_json(),
            Command::CheckNumber { phone } => {
                crate::phone::normalize_phone(phone, &self.config.outlet.country_code)?;
                Err(CommandError::NotConnected)
            }
            Command::Logout { confirm: false } => Err(CommandError::Refused(
                "logout unlinks this outlet; send {\"confirm\": true}".into(),
            )),
            Command::Resume => Ok(json!({ "note": "not paused" })),
            other => Err(CommandError::Refused(format!(
                "{} is not possible in state {}",
                other.name(),
                self.health.borrow().state
            ))),
        }
    }

    /// Commands while a session runs. Returns a verdict when the command
    /// ends the session.
    async fn on_command(
        &mut self,
        request: CommandRequest,
        session: &mut Session,
    ) -> Option<Verdict> {
        let state = self.health.borrow().state;
        let (reply, verdict) = match &request.command {
            Command::Status => (self.status_json(), None),
            Command::Qr => (self.qr_json(), None),
            Command::Reconnect => {
                self.backoff.reset();
                (Ok(json!({})), Some(Verdict::Restart))
            }
            Command::RefreshQr => {
                if matches!(
                    state,
                    SessionState::Pairing | SessionState::LoggedOut | SessionState::PairingCode
                ) {
                    match hourly_limit(&mut self.rounds, "pairing rounds") {
                        Ok(()) => (Ok(json!({})), Some(Verdict::Restart)),
                        Err(e) => (Err(e), None),
                    }
                } else {
                    (
                        Err(CommandError::Refused(format!(
                            "not pairing (state {state})"
                        ))),
                        None,
                    )
                }
            }
            Command::Pause => (Ok(json!({})), Some(Verdict::Pause)),
            Command::Resume => (Ok(json!({ "note": "not paused" })), None),
            Command::Logout { confirm: false } => (self.answer_idle(&request.command), None),
            Command::Logout { confirm: true } => {
                session.logout(STOP_GRACE).await;
                (Ok(json!({})), Some(Verdict::LoggedOut))
            }
            Command::PairCode { phone } => match self.pair_code_number(phone).await {
                Err(e) => (Err(e), None),
                Ok(phone) => {
                    let reply = request.reply;
                    let connection_up = {
                        let h = self.health.borrow();
                        h.qr.is_some() || h.pair_code.is_some()
                    };
                    if connection_up {
                        self.ask_pair_code(session, phone, reply);
                    } else if matches!(state, SessionState::Connecting | SessionState::LoggedOut) {
                        // The registration connection is still being set up
                        // (a fresh start, or right after a logout).
                        self.queue_pair_code(PairCodeRequest { phone, reply });
                    } else {
                        let _ = reply.send(Err(CommandError::Refused(format!(
                            "no link code possible in state {state}"
                        ))));
                    }
                    return None;
                }
            },
            // `Commands` hands sends to the messaging module; one that gets
            // here has no messaging module to go to.
            Command::Send { .. } => (Err(CommandError::Disabled("messages are off".into())), None),
            Command::CheckNumber { phone } => {
                match crate::phone::normalize_phone(phone, &self.config.outlet.country_code) {
                    Err(e) => (Err(e.into()), None),
                    Ok(_) if state != SessionState::Connected => {
                        (Err(CommandError::NotConnected), None)
                    }
                    Ok(number) => {
                        // A network round trip: answered from its own task so
                        // the supervisor never waits on it.
                        let client = session.client().clone();
                        tokio::spawn(async move {
                            let _ = request.reply.send(check_number(client, number).await);
                        });
                        return None;
                    }
                }
            }
        };
        let _ = request.reply.send(reply);
        verdict
    }

    /// Ends the session for good: its client closes, its device record is
    /// saved as the client last held it, then the store stops taking its
    /// writes. Called after every session, panicked or not.
    ///
    /// Why the explicit save: the library's own flush in `disconnect` is a
    /// no-op while its background saver is already writing the same change
    /// (the saver clears the dirty flag first), so `disconnect` can return
    /// with that write still on its way — and the fence below then refuses
    /// it. That is how the push name learnt at pair-success was lost in one
    /// pairing of three, and every later login waited the library's 10 s
    /// key-share grace. The snapshot is the client's newest state, so this
    /// save is never older than anything the client wrote before.
    async fn end_session_writes(&mut self) {
        if let Some(messages) = &self.messages {
            messages.disconnected();
        }
        if let Some(client) = self.live_client.take() {
            session::close(&client, STOP_GRACE).await;
            let device = client.persistence_manager().get_device_snapshot();
            if let Err(e) = device.backend.save(&device.core).await {
                tracing::warn!(error = %e, "cannot save the session's device record");
            }
        }
        self.store.end_sessions();
    }

    /// `pairing` or, right after an unlink, `logged_out`.
    fn pairing_state(&self) -> SessionState {
        if self.after_logout {
            SessionState::LoggedOut
        } else {
            SessionState::Pairing
        }
    }

    /// The number a `pair_code` is for, in E.164 digits; refused when this
    /// outlet is linked already (a code would link a second device).
    async fn pair_code_number(&mut self, phone: &str) -> Result<String, CommandError> {
        let country = &self.config.outlet.country_code;
        let phone = crate::phone::normalize_phone(phone, country)?;
        let allowed = &self.config.pairing.pair_code_numbers;
        if !allowed.is_empty()
            && !allowed
                .iter()
                .any(|n| crate::phone::normalize_phone(n, country).ok().as_ref() == Some(&phone))
        {
            return Err(CommandError::Refused(
                "this number is not in pairing.pair_code_numbers".into(),
            ));
        }
        if self.device_is_linked().await {
            return Err(CommandError::Refused(
                "this outlet is already linked to WhatsApp; log out first".into(),
            ));
        }
        hourly_limit(&mut self.pair_codes, "link codes")?;
        self.pair_codes.start(Instant::now());
        Ok(phone)
    }

    /// Keeps a `pair_code` until the registration connection is up; a newer
    /// request replaces an older one, whose caller is told.
    fn queue_pair_code(&mut self, request: PairCodeRequest) {
        if let Some(older) = self.pending_pair_code.replace(request) {
            let _ = older.reply.send(Err(CommandError::Refused(
                "superseded by a newer pair_code request".into(),
            )));
        }
    }

    /// Asks the session's client for a link code, off the supervisor's path
    /// (a key derivation and a round trip). The code reaches the screen as
    /// the library's `PairingCode` event and the caller as the answer.
    fn ask_pair_code(
        &mut self,
        session: &Session,
        phone: String,
        reply: tokio::sync::oneshot::Sender<CommandResult>,
    ) {
        self.pair_code_phone = Some(phone.clone());
        let client = session.client().clone();
        tokio::spawn(async move {
            // The library's validity clock starts before its request.
            let requested_at = Utc::now();
            // Asking again means the code on offer will not be typed in:
            // replace it rather than be refused while it is still valid.
            client.cancel_pair_code().await;
            let options = whatsapp_rust::pair_code::PairCodeOptions {
                phone_number: phone.clone(),
                // The platform shown with a link code must be an OS the
                // server knows; the device's own name is the outlet's.
                display_os: Some("Linux".into()),
                ..Default::default()
            };
            let result = match client.pair_with_code(options).await {
                Ok(code) => {
                    let validity = whatsapp_rust::wacore::pair_code::PairCodeUtils::code_validity();
                    let expires_at = requested_at
                        + chrono::Duration::from_std(validity).unwrap_or(chrono::Duration::zero());
                    Ok(json!({
                        "code": code,
                        "phone": format!("+{phone}"),
                        "expires_at": expires_at,
                    }))
                }
                // The library reports the failure as a `PairingCodeError`
                // event too (unless a newer request took over), which ends
                // the code in the supervisor.
                Err(e) => Err(CommandError::Failed(format!("no link code: {e}"))),
            };
            let _ = reply.send(result);
        });
    }

    /// A `pair_code` that waited for the registration connection is asked
    /// once the first QR shows the connection is up.
    fn ask_pending_pair_code(&mut self, session: &Session) {
        if self.health.borrow().qr.is_some()
            && let Some(pending) = self.pending_pair_code.take()
        {
            self.ask_pair_code(session, pending.phone, pending.reply);
        }
    }

    /// The link code is gone (refused, expired, not completed): back to the
    /// QR, with the reason kept for whoever looks.
    fn end_pair_code(&mut self, reason: &str) {
        self.pair_code_phone = None;
        let state = self.health.borrow().state;
        let next = if state == SessionState::PairingCode {
            self.pairing_state()
        } else {
            state
        };
        tracing::info!(%reason, "link code ended");
        self.set_state(next, reason, |h| {
            h.pair_code = None;
            h.last_error = Some(reason.to_string());
        });
    }

    /// An expired code leaves the screen; its connection stays a little
    /// longer in case the phone answered at the last moment.
    fn expire_pair_code(&mut self) {
        let expired = self
            .health
            .borrow()
            .pair_code
            .as_ref()
            .is_some_and(|code| Utc::now() > code.expires_at);
        if expired {
            self.pair_code_linger_until = Some(Instant::now() + PAIR_CODE_LINGER);
            self.end_pair_code("the link code expired");
        }
    }

    /// QR codes ran out and no link code is on offer, on its way or
    /// possibly still completing.
    fn nothing_left_to_pair_with(&self) -> bool {
        self.qr_exhausted
            && self.pair_code_phone.is_none()
            && self.pending_pair_code.is_none()
            && self.health.borrow().pair_code.is_none()
            && self
                .pair_code_linger_until
                .is_none_or(|until| Instant::now() >= until)
    }

    fn status_json(&self) -> CommandResult {
        serde_json::to_value(&*self.health.borrow())
            .map_err(|e| CommandError::Failed(e.to_string()))
    }

    fn qr_json(&self) -> CommandResult {
        let health = self.health.borrow();
        match &health.qr {
            Some(qr) => Ok(json!({
                "qr": qr.code,
                "index": qr.index,
                "count": qr.count,
                "expires_at": qr.expires_at,
            })),
            None => Err(CommandError::Refused(format!(
                "no QR code is shown (state {})",
                health.state
            ))),
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

    /// A connection that has been up for [`SETTLED`] is past its burst
    /// (login, pre-key upload, first syncs): the code only that needed
    /// leaves the resident set, and again every [`RELEASE_EVERY`] while
    /// the connection lasts (a reconnect or a command may have paged more
    /// in meanwhile).
    fn release_code_pages_once_settled(&mut self, now: DateTime<Utc>) {
        let up = {
            let h = self.health.borrow();
            (h.state == SessionState::Connected)
                .then(|| (now - h.since).to_std().unwrap_or_default())
        };
        let due = match (up, self.code_pages_released_at) {
            (None, _) => {
                self.code_pages_released_at = None;
                false
            }
            (Some(up), None) => up >= SETTLED,
            (Some(_), Some(at)) => at.elapsed() >= RELEASE_EVERY,
        };
        if due {
            self.code_pages_released_at = Some(Instant::now());
            crate::memory::release_free_memory();
            let mappings = crate::memory::release_code_pages();
            tracing::debug!(mappings, "released start-up code pages");
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

async fn check_number(client: Arc<whatsapp_rust::client::Client>, number: String) -> CommandResult {
    let jid = whatsapp_rust::Jid::pn(number.clone());
    match client.contacts().is_on_whatsapp(&[jid]).await {
        Ok(results) => {
            let registered = results.iter().any(|r| r.is_registered);
            Ok(json!({ "phone": format!("+{number}"), "registered": registered }))
        }
        Err(e) => Err(CommandError::Failed(format!("lookup failed: {e}"))),
    }
}

/// An event's kind as `snake_case` (`Connected` → `connected`), for the
/// test-build panic hook.
fn event_kind_name(event: &Event) -> String {
    let name = format!("{:?}", event.kind());
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
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

/// Refused while `rounds` has used up this hour's allowance of `what`.
fn hourly_limit(rounds: &mut Rounds, what: &str) -> Result<(), CommandError> {
    let now = Instant::now();
    let allowed = rounds.next_allowed(now);
    if allowed > now {
        return Err(CommandError::Refused(format!(
            "{what} used up for this hour; next at {}",
            rfc3339(to_utc(allowed))
        )));
    }
    Ok(())
}

/// A time in an answer, to the second: sub-second digits would read as a
/// phone number to the redaction of MQTT answers.
fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The longest temporary ban the agent waits out before trying again.
fn max_ban() -> chrono::TimeDelta {
    chrono::TimeDelta::days(7)
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
