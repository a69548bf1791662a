//! The bridge from health to the screen: every snapshot becomes an
//! `outlet_display::Screen`, and the panel's push button becomes commands.
//!
//! The display crate knows nothing about WhatsApp and the supervisor
//! nothing about pixels; this module is the only place that knows both.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use outlet_display::{ButtonEvent, DisplayHandle, Mark, Qr, QrPayload, Screen, State};
use tokio::sync::watch;

use crate::command::{Command, Commands};
use crate::health::{Health, QrStatus, SessionState};

/// The screen for a health snapshot.
pub fn screen_for(health: &Health, outlet_name: &str) -> Screen {
    let state = match health.state {
        SessionState::Starting => State::Starting {
            version: health.version.clone(),
        },
        SessionState::WaitingForClock => State::WaitingForClock,
        SessionState::Connecting => State::Connecting {
            attempt: health.attempt.max(1),
        },
        SessionState::Pairing => match &health.qr {
            Some(qr) => State::Pairing(display_qr(qr)),
            None => State::Connecting { attempt: 1 },
        },
        SessionState::PairingCode => match &health.pair_code {
            Some(code) => State::PairingCode {
                code: code.code.clone(),
                expires_at: Some(system_time(code.expires_at)),
            },
            None => State::Connecting { attempt: 1 },
        },
        SessionState::PairingIdle => State::PairingIdle {
            next_round_at: health.next_retry_at.map(system_time),
        },
        SessionState::Connected => State::Connected {
            outlet_name: outlet_name.to_string(),
            phone: health.phone.clone().unwrap_or_default(),
            since: system_time(health.since),
            last_message_at: health.messages.last_message_in_at.map(system_time),
        },
        SessionState::Reconnecting => State::Reconnecting {
            reason: health.last_error.clone().unwrap_or_default(),
            attempt: health.attempt,
            next_retry_at: health
                .next_retry_at
                .map(system_time)
                .unwrap_or_else(SystemTime::now),
        },
        SessionState::LoggedOut => State::LoggedOut {
            qr: health.qr.as_ref().map(display_qr),
        },
        SessionState::Replaced => State::Replaced {
            retry_at: health.next_retry_at.map(system_time),
        },
        SessionState::Banned => State::Banned {
            code: None,
            until: health.banned_until.map(system_time),
        },
        SessionState::Outdated => State::Outdated,
        SessionState::Paused => State::Paused,
        SessionState::Fault => match &health.fault {
            Some(fault) => State::Fault {
                what: fault.what.clone(),
                action: fault.action.clone(),
            },
            None => State::Fault {
                what: health
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "local fault".into()),
                action: "Check the agent's log; it retries by itself".into(),
            },
        },
    };
    let network = match health.state {
        SessionState::Connected => Mark::Up,
        SessionState::Reconnecting => Mark::Down,
        _ => Mark::Unknown,
    };
    Screen::new(state).with_marks(network, Mark::Hidden)
}

fn display_qr(qr: &QrStatus) -> Qr {
    Qr {
        payload: QrPayload::new(qr.code.clone()),
        index: qr.index,
        count: qr.count,
        issued_at: system_time(qr.issued_at),
        expires_at: system_time(qr.expires_at),
    }
}

fn system_time(at: DateTime<Utc>) -> SystemTime {
    SystemTime::from(at)
}

/// Shows every new snapshot; turns button presses into commands. Runs until
/// the health channel closes.
pub async fn run(
    mut display: DisplayHandle,
    mut health: watch::Receiver<Health>,
    commands: Commands,
    outlet_name: String,
) {
    let mut buttons = display.take_button_events();
    let mut last_state = None;
    loop {
        let snapshot = health.borrow_and_update().clone();
        if last_state != Some(snapshot.state) {
            display.wake();
            last_state = Some(snapshot.state);
        }
        display.show(screen_for(&snapshot, &outlet_name));
        tokio::select! {
            changed = health.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            Some(press) = async {
                match buttons.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => on_button(press, &health, &commands).await,
        }
    }
    let _ =
        tokio::task::spawn_blocking(move || display.shutdown(std::time::Duration::from_secs(2)))
            .await;
}

/// A press that woke the screen only wakes it; otherwise, while pairing is
/// idle (codes ran out), it asks for a new round of codes.
async fn on_button(press: ButtonEvent, health: &watch::Receiver<Health>, commands: &Commands) {
    let ButtonEvent::Press { woke_screen } = press;
    let state = health.borrow().state;
    if !woke_screen
        && matches!(state, SessionState::PairingIdle | SessionState::LoggedOut)
        && let Err(e) = commands.send(Command::RefreshQr).await
    {
        tracing::info!(error = %e, "button: no new pairing round");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::PairCodeStatus;

    fn health(state: SessionState) -> Health {
        let mut h = Health::new("jkt-01", Utc::now(), chrono::Duration::seconds(60));
        h.state = state;
        h
    }

    #[test]
    fn a_link_code_is_drawn_with_its_expiry() {
        let mut h = health(SessionState::PairingCode);
        let expires_at = Utc::now() + chrono::Duration::seconds(180);
        h.pair_code = Some(PairCodeStatus {
            phone: "+6281234567890".into(),
            issued_at: Utc::now(),
            expires_at,
            code: "ABCD1234".into(),
        });
        match screen_for(&h, "Outlet").state {
            State::PairingCode {
                code,
                expires_at: at,
            } => {
                assert_eq!(code, "ABCD1234");
                assert_eq!(at, Some(system_time(expires_at)));
            }
            other => panic!("expected the link code screen, got {other:?}"),
        }
    }

    #[test]
    fn no_code_yet_is_a_connecting_screen_not_an_empty_code() {
        let h = health(SessionState::PairingCode);
        assert!(matches!(
            screen_for(&h, "Outlet").state,
            State::Connecting { .. }
        ));
    }
}
