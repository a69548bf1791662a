//! Pairing by link code ("Link with phone number instead"): asking for a
//! code on the registration connection, showing it, and ending it. QR
//! rounds are counted in [`super::rounds`].
//!
//! Part of the supervisor (its private state is shared); it must not import
//! the MQTT link, the screen or any entry point.

use super::*;

/// A `pair_code` waiting for the session's registration connection.
pub(super) struct PairCodeRequest {
    /// E.164 digits.
    pub(super) phone: String,
    pub(super) reply: tokio::sync::oneshot::Sender<CommandResult>,
}

impl Supervisor {
    /// `pairing` or, right after an unlink, `logged_out`.
    pub(super) fn pairing_state(&self) -> SessionState {
        if self.after_logout {
            SessionState::LoggedOut
        } else {
            SessionState::Pairing
        }
    }

    /// The number a `pair_code` is for, in E.164 digits; refused when this
    /// outlet is linked already (a code would link a second device).
    pub(super) async fn pair_code_number(&mut self, phone: &str) -> Result<String, CommandError> {
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
    pub(super) fn queue_pair_code(&mut self, request: PairCodeRequest) {
        if let Some(older) = self.pending_pair_code.replace(request) {
            let _ = older.reply.send(Err(CommandError::Refused(
                "superseded by a newer pair_code request".into(),
            )));
        }
    }

    /// Asks the session's client for a link code, off the supervisor's path
    /// (a key derivation and a round trip). The code reaches the screen as
    /// the library's `PairingCode` event and the caller as the answer.
    pub(super) fn ask_pair_code(
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
    pub(super) fn ask_pending_pair_code(&mut self, session: &Session) {
        if self.health.borrow().qr.is_some()
            && let Some(pending) = self.pending_pair_code.take()
        {
            self.ask_pair_code(session, pending.phone, pending.reply);
        }
    }

    /// The link code is gone (refused, expired, not completed): back to the
    /// QR, with the reason kept for whoever looks.
    pub(super) fn end_pair_code(&mut self, reason: &str) {
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
    pub(super) fn expire_pair_code(&mut self) {
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
    pub(super) fn nothing_left_to_pair_with(&self) -> bool {
        self.qr_exhausted
            && self.pair_code_phone.is_none()
            && self.pending_pair_code.is_none()
            && self.health.borrow().pair_code.is_none()
            && self
                .pair_code_linger_until
                .is_none_or(|until| Instant::now() >= until)
    }
}
