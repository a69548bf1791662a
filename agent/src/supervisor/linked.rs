//! The linked session: one connection from dial to end, and what its
//! events do to the state — the identity restored from the store, the
//! pair-success persisted and published before anything else, the library's
//! events turned into transitions.
//!
//! Part of the supervisor (its private state is shared); it must not import
//! the MQTT link, the screen or any entry point.

use whatsapp_rust::client::Client;

use super::*;
use crate::config::Presence;

/// An event's kind as `snake_case` (`Connected` → `connected`), for the
/// test-build panic hook.
pub(super) fn event_kind_name(event: &Event) -> String {
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

impl Supervisor {
    /// Shows the number this outlet is linked to from the start, before any
    /// connection: it was persisted at pairing time.
    pub(super) async fn restore_identity(&mut self) {
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

    pub(super) async fn device_is_linked(&self) -> bool {
        matches!(
            DeviceStore::load(&*self.store).await,
            Ok(Some(device)) if device.pn.is_some()
        )
    }

    /// Runs one session until its connection ends; returns what happened.
    pub(super) async fn run_session(&mut self, shutdown: &mut watch::Receiver<bool>) -> Verdict {
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
            media_ca_file: self.config.whatsapp.media_ca_file.clone(),
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
    pub(super) async fn on_linked(
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
    pub(super) async fn linked_without_event(&mut self, verdict: &mut Option<Verdict>) {
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

    pub(super) async fn on_event(
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
            Event::SelfPushNameUpdated(_) => {
                // whatsapp-rust answers a new push name by announcing
                // `available` from a task of its own; ours follows it.
                if let Some(client) = &self.live_client {
                    let client = client.clone();
                    let presence = self.config.whatsapp.presence;
                    tokio::spawn(async move {
                        tokio::time::sleep(PRESENCE_AFTER_PUSH_NAME).await;
                        announce_presence(&client, presence).await;
                    });
                }
            }
            Event::Connected(_) => {
                *connected_at = Some(Instant::now());
                // Before the outbox sends anything on this connection.
                if let Some(client) = &self.live_client {
                    announce_presence(client, self.config.whatsapp.presence).await;
                }
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
    pub(super) async fn end_session_writes(&mut self) {
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

    /// A connection that has been up for [`SETTLED`] is past its burst
    /// (login, pre-key upload, first syncs): the code only that needed
    /// leaves the resident set, and again every [`RELEASE_EVERY`] while
    /// the connection lasts (a reconnect or a command may have paged more
    /// in meanwhile).
    pub(super) fn release_code_pages_once_settled(&mut self, now: DateTime<Utc>) {
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
}

/// How long after a push-name update the agent repeats its presence: the
/// library's own `available` goes out from a task it spawns at once, and
/// ours must come after it.
const PRESENCE_AFTER_PUSH_NAME: Duration = Duration::from_secs(2);
/// A presence that cannot be written within this is left to the next
/// connect (a stalled socket must not hold up the supervisor).
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(5);

/// Tells WhatsApp what `whatsapp.presence` says. whatsapp-rust announces
/// `available` by itself at every login with a known push name, and while
/// any companion is available WhatsApp stops notifying the primary phone:
/// the outlet's phone would go silent for as long as the Pi is online.
pub(super) async fn announce_presence(client: &Client, presence: Presence) {
    let announce = async {
        match presence {
            Presence::Unavailable => client.presence().set_unavailable().await,
            Presence::Available => client.presence().set_available().await,
        }
    };
    match tokio::time::timeout(PRESENCE_TIMEOUT, announce).await {
        Ok(Ok(())) => tracing::debug!(?presence, "presence announced"),
        Ok(Err(e)) => tracing::warn!(?presence, "could not announce presence: {e}"),
        Err(_) => tracing::warn!(
            ?presence,
            "presence not announced within {PRESENCE_TIMEOUT:?}"
        ),
    }
}
