//! Commands to the supervisor (control socket, MQTT, the button): each
//! answered in the state the session is in, never racing it.
//!
//! Part of the supervisor (its private state is shared); it must not import
//! the MQTT link, the screen or any entry point.

use super::*;

/// What `check_number` looks up: a phone number in any form HQ writes it,
/// or a customer's LID (`<digits>@lid`, as `message/in` names a customer
/// who hides the number).
pub(super) fn lookup_target(
    input: &str,
    country: &str,
) -> Result<whatsapp_rust::Jid, CommandError> {
    let input = input.trim();
    if let Some(user) = input.strip_suffix("@lid") {
        let user = user.split(':').next().unwrap_or(user);
        if user.is_empty() || user.len() > 20 || !user.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CommandError::InvalidFormat(
                "a LID is digits followed by @lid".into(),
            ));
        }
        return Ok(whatsapp_rust::Jid::lid(user.to_string()));
    }
    Ok(whatsapp_rust::Jid::pn(crate::phone::normalize_phone(
        input, country,
    )?))
}

/// `{"phone"?, "lid"?, "registered"}`: the number (when WhatsApp gives it:
/// always for a number asked, for a LID only when the customer shares it)
/// and the LID (when WhatsApp has one for the user).
pub(super) async fn check_number(
    client: Arc<whatsapp_rust::client::Client>,
    jid: whatsapp_rust::Jid,
) -> CommandResult {
    match client
        .contacts()
        .is_on_whatsapp(std::slice::from_ref(&jid))
        .await
    {
        Ok(results) => {
            let registered = results.iter().any(|r| r.is_registered);
            let (phone, lid) = if jid.is_lid() {
                let phone = results
                    .iter()
                    .find_map(|r| r.pn_jid.as_ref().map(|p| p.user.to_string()));
                (phone, Some(jid.user.to_string()))
            } else {
                let lid = results
                    .iter()
                    .find_map(|r| r.lid.as_ref().map(|l| l.user.to_string()));
                (Some(jid.user.to_string()), lid)
            };
            let mut answer = json!({ "registered": registered });
            if let Some(phone) = phone {
                answer["phone"] = format!("+{phone}").into();
            }
            if let Some(lid) = lid {
                answer["lid"] = format!("{lid}@lid").into();
            }
            Ok(answer)
        }
        Err(e) => Err(CommandError::Failed(format!("lookup failed: {e}"))),
    }
}

/// Refused while `rounds` has used up this hour's allowance of `what`.
pub(super) fn hourly_limit(rounds: &mut Rounds, what: &str) -> Result<(), CommandError> {
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

impl Supervisor {
    /// Commands that need no session.
    pub(super) fn answer_idle(&self, command: &Command) -> CommandResult {
        match command {
            Command::Status => self.status_json(),
            Command::Qr => self.qr_json(),
            Command::CheckNumber { phone } => {
                lookup_target(phone, &self.config.outlet.country_code)?;
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
    pub(super) async fn on_command(
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
            // `Commands` hands sends and reads to the messaging module; one that gets
            // here has no messaging module to go to.
            Command::Send { .. }
            | Command::Read { .. }
            | Command::Replay { .. }
            | Command::Media { .. } => {
                (Err(CommandError::Disabled("messages are off".into())), None)
            }
            Command::CheckNumber { phone } => {
                match lookup_target(phone, &self.config.outlet.country_code) {
                    Err(e) => (Err(e), None),
                    Ok(_) if state != SessionState::Connected => {
                        (Err(CommandError::NotConnected), None)
                    }
                    Ok(number) => {
                        // A network round trip: answered from its own task so
                        // the supervisor never waits on it.
                        let client = session.client().clone();
                        let lookups = self.lookups.clone();
                        tokio::spawn(async move {
                            let answer = match lookups.turn().await {
                                Ok(()) => check_number(client, number).await,
                                Err(later) => {
                                    Err(CommandError::RateLimited(later.as_secs().max(1)))
                                }
                            };
                            let _ = request.reply.send(answer);
                        });
                        return None;
                    }
                }
            }
        };
        let _ = request.reply.send(reply);
        verdict
    }

    /// `refresh_qr` (or the button) while idle: a new pairing round now,
    /// unless this hour's rounds are used up.
    pub(super) fn new_round_now(&mut self, state: SessionState) -> (CommandResult, Option<Next>) {
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

    pub(super) fn status_json(&self) -> CommandResult {
        serde_json::to_value(&*self.health.borrow())
            .map_err(|e| CommandError::Failed(e.to_string()))
    }

    pub(super) fn qr_json(&self) -> CommandResult {
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
}
