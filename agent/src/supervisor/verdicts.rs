//! Verdicts: what the server or the user decided about the session that
//! just ended, and what the supervisor does next — reconnect after the
//! backoff, pair again, cool down, wait for disk space, stay paused.
//!
//! Part of the supervisor (its private state is shared); it must not import
//! the MQTT link, the screen or any entry point.

use super::*;

/// What the server or the user decided about the session that just ended.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Verdict {
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

/// What the supervisor does next.
pub(super) enum Next {
    Connect,
    Wait {
        until: Instant,
    },
    Paused,
    /// `fault`: the disk is full; wait for room, checking now and then.
    WaitForDiskSpace,
    Stop,
}

/// The longest temporary ban the agent waits out before trying again.
pub(super) fn max_ban() -> chrono::TimeDelta {
    chrono::TimeDelta::days(7)
}

impl Supervisor {
    /// Decides what follows a session.
    pub(super) async fn after_session(&mut self, verdict: Verdict) -> Next {
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
    pub(super) async fn disk_is_full(&self) -> bool {
        matches!(self.store.probe_write().await, Err(e) if e.is_disk_full())
    }

    /// `fault` with the disk-full words, and the next check at `next_check`.
    pub(super) fn report_disk_full(&mut self, next_check: Option<Instant>) {
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
    pub(super) async fn wait_for_disk_space(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Next {
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

    pub(super) fn idle_until(&mut self, until: Instant, reason: &str) -> Next {
        self.set_state(SessionState::PairingIdle, reason, |h| {
            h.next_retry_at = Some(to_utc(until));
        });
        Next::Wait { until }
    }

    /// Waits until `until`, answering commands; some end the wait early.
    pub(super) async fn wait(
        &mut self,
        until: Instant,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Next {
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

    pub(super) async fn paused(&mut self, shutdown: &mut watch::Receiver<bool>) -> Next {
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
}
