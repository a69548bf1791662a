//! The bridge from health to the screen: every snapshot becomes an
//! `outlet_display::Screen`, and the panel's push button becomes commands.
//!
//! The display crate knows nothing about WhatsApp and the supervisor
//! nothing about pixels; this module is the only place that knows both.
//!
//! A working part: it owns the bridge from health to the display crate. It may
//! use the plain rules below it (health, commands, disk); it must not import
//! the supervisor, the MQTT link or any entry point.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use outlet_display::lang::{Strings, fill};
use outlet_display::{ButtonEvent, DisplayHandle, Mark, Qr, QrPayload, Screen, State};
use tokio::sync::watch;

use crate::command::{Command, Commands};
use crate::health::{FaultKind, Health, LocalFault, QrStatus, SessionState};

/// The screen for a health snapshot, with the words the agent supplies
/// (faults) in the screen's language `t`.
pub fn screen_for(health: &Health, outlet_name: &str, t: &Strings) -> Screen {
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
            Some(fault) => fault_words(fault, t),
            None => State::Fault {
                what: t.fault_store.clone(),
                action: t.fault_store_advice.clone(),
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
/// A local fault in the outlet's language: the snapshot's own words are
/// English, for HQ and the log.
fn fault_words(fault: &LocalFault, t: &Strings) -> State {
    match fault.kind {
        FaultKind::DiskFull => {
            let free = fault
                .free_bytes
                .map_or_else(|| "?".into(), crate::disk::human_bytes);
            let dir = fault.dir.clone().unwrap_or_default();
            State::Fault {
                what: fill(&t.fault_disk_full, &[("dir", &dir), ("free", &free)]),
                action: t.fault_disk_full_advice.clone(),
            }
        }
        FaultKind::Store => State::Fault {
            what: t.fault_store.clone(),
            action: t.fault_store_advice.clone(),
        },
    }
}

pub async fn run(
    mut display: DisplayHandle,
    mut health: watch::Receiver<Health>,
    commands: Commands,
    outlet_name: String,
    strings: &'static Strings,
) {
    let mut buttons = display.take_button_events();
    let mut last_state = None;
    loop {
        let snapshot = health.borrow_and_update().clone();
        if last_state != Some(snapshot.state) {
            display.wake();
            last_state = Some(snapshot.state);
        }
        display.show(screen_for(&snapshot, &outlet_name, strings));
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
        match screen_for(&h, "Outlet", outlet_display::lang::english()).state {
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
    fn a_full_disk_is_told_in_the_screens_language() {
        let mut h = health(SessionState::Fault);
        h.fault = Some(LocalFault {
            kind: FaultKind::DiskFull,
            what: "the disk is full: /var/lib/outlet-agent has 0 B free".into(),
            action: "Free space on the SD card".into(),
            free_bytes: Some(0),
            dir: Some("/var/lib/outlet-agent".into()),
        });
        let id = outlet_display::lang::lookup("id").expect("Bahasa Indonesia");
        match screen_for(&h, "Outlet", id).state {
            State::Fault { what, action } => {
                assert_eq!(what, "Penyimpanan penuh: /var/lib/outlet-agent tersisa 0 B");
                assert!(action.contains("kartu SD"), "{action}");
            }
            other => panic!("expected the fault screen, got {other:?}"),
        }
        // The snapshot itself (MQTT, HQ) stays English.
        assert!(
            h.fault
                .as_ref()
                .is_some_and(|f| f.what.starts_with("the disk is full"))
        );
    }

    #[test]
    fn no_code_yet_is_a_connecting_screen_not_an_empty_code() {
        let h = health(SessionState::PairingCode);
        assert!(matches!(
            screen_for(&h, "Outlet", outlet_display::lang::english()).state,
            State::Connecting { .. }
        ));
    }
}
