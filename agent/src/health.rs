//! The health snapshot: the one description of the session that the screen,
//! MQTT, the control socket and systemd all read.
//!
//! Only the supervisor writes it (on a `tokio::sync::watch`), and it derives
//! every field from the live session, never from a flag in a database: the
//! old dashboards said "connected" from a stale DB flag while nothing
//! listened. `valid_until` makes a snapshot expire on its own, so a reader
//! can tell a dead agent from a quiet one.
//!
//! Plain data (the bottom layer): it owns the snapshot's types and the channel
//! ends readers take ([`SupervisorLink`]). It may use `command` and `phone`; it
//! must not import the supervisor, the MQTT link or anything above.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::command::Commands;

/// The session states of DESIGN.md, in their wire spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Starting,
    WaitingForClock,
    Connecting,
    Pairing,
    PairingCode,
    PairingIdle,
    Connected,
    Reconnecting,
    LoggedOut,
    Replaced,
    Banned,
    Outdated,
    Paused,
    Fault,
}

impl SessionState {
    /// Every state, in the order of DESIGN.md: Home Assistant's `enum`
    /// sensor lists them (newer versions reject a state not in its list).
    pub const ALL: [SessionState; 14] = [
        SessionState::Starting,
        SessionState::WaitingForClock,
        SessionState::Connecting,
        SessionState::Pairing,
        SessionState::PairingCode,
        SessionState::PairingIdle,
        SessionState::Connected,
        SessionState::Reconnecting,
        SessionState::LoggedOut,
        SessionState::Replaced,
        SessionState::Banned,
        SessionState::Outdated,
        SessionState::Paused,
        SessionState::Fault,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::WaitingForClock => "waiting_for_clock",
            SessionState::Connecting => "connecting",
            SessionState::Pairing => "pairing",
            SessionState::PairingCode => "pairing_code",
            SessionState::PairingIdle => "pairing_idle",
            SessionState::Connected => "connected",
            SessionState::Reconnecting => "reconnecting",
            SessionState::LoggedOut => "logged_out",
            SessionState::Replaced => "replaced",
            SessionState::Banned => "banned",
            SessionState::Outdated => "outdated",
            SessionState::Paused => "paused",
            SessionState::Fault => "fault",
        }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The QR currently offered for pairing. The code itself carries the
/// pairing secret: it is never serialised with the snapshot.
#[derive(Clone, PartialEq, Serialize)]
pub struct QrStatus {
    /// 1-based number of this code in the current round.
    pub index: u32,
    /// Codes the server gave for this round.
    pub count: u32,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(skip)]
    pub code: String,
}

impl fmt::Debug for QrStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QrStatus")
            .field("index", &self.index)
            .field("count", &self.count)
            .field("expires_at", &self.expires_at)
            .field("code", &"<redacted>")
            .finish()
    }
}

/// The link code currently offered instead of the QR. The code goes to
/// whoever asked for it and onto the screen; like the QR it is left out of
/// the snapshot that is published.
#[derive(Clone, PartialEq, Serialize)]
pub struct PairCodeStatus {
    /// The number the code links (E.164).
    pub phone: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(skip)]
    pub code: String,
}

impl fmt::Debug for PairCodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairCodeStatus")
            .field("phone", &crate::phone::mask_phone(&self.phone))
            .field("expires_at", &self.expires_at)
            .field("code", &"<redacted>")
            .finish()
    }
}

/// Something local that keeps the agent from working (`fault`), in words
/// for the staff at the counter and for HQ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalFault {
    pub kind: FaultKind,
    /// What is wrong: "the disk is full: /var/lib/outlet-agent has 0 B free".
    pub what: String,
    /// What to do about it.
    pub action: String,
    /// Bytes free on the data directory's filesystem when last checked.
    pub free_bytes: Option<u64>,
    /// The directory concerned (the data directory), so the screen can say
    /// it in the outlet's language.
    pub dir: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The data directory's filesystem has no space for the session store.
    DiskFull,
    /// The session store failed otherwise (e.g. a wipe that did not commit).
    Store,
}

/// The inbox and the outbox, as the messaging module reports them. Counts
/// and times only: contents and numbers never reach the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MessageHealth {
    /// The newest message a customer sent the outlet.
    pub last_message_in_at: Option<DateTime<Utc>>,
    /// The newest send WhatsApp's server took.
    pub last_message_out_at: Option<DateTime<Utc>>,
    /// Received, not yet taken by the broker.
    pub inbox_pending: u64,
    pub inbox_bytes: u64,
    pub inbox_oldest_at: Option<DateTime<Utc>>,
    /// The inbox is at its limit: WhatsApp is not told new messages
    /// arrived (it keeps them) until the broker takes some.
    pub inbox_full: bool,
    /// Queued sends, not yet taken by WhatsApp's server.
    pub outbox_pending: u64,
    pub outbox_oldest_at: Option<DateTime<Utc>>,
    /// Send statuses waiting for the broker.
    pub statuses_pending: u64,
    /// Records the broker kept refusing, since the agent started: each was
    /// replaced in the queue by a short notice (`set_aside: true`) and kept
    /// whole in the data directory's `set-aside/`.
    pub set_aside: u64,
    /// Received files not yet at HQ: to fetch (or retrying), to publish, or
    /// to report as lost.
    pub media_pending: u64,
}

/// When and why the last live connection ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastDisconnect {
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// The snapshot. Also the retained MQTT `state` payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    pub outlet: String,
    pub state: SessionState,
    pub since: DateTime<Utc>,
    /// E.164 (`+6281234567890`), known from the pairing onwards.
    pub phone: Option<String>,
    pub push_name: Option<String>,
    /// Connection attempts since the last stable connection.
    pub attempt: u32,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_connected_at: Option<DateTime<Utc>>,
    pub last_disconnect: Option<LastDisconnect>,
    pub qr: Option<QrStatus>,
    /// The link code on offer (`pairing_code`).
    pub pair_code: Option<PairCodeStatus>,
    /// End of a temporary ban (`banned`).
    pub banned_until: Option<DateTime<Utc>>,
    /// What is broken locally (`fault`).
    pub fault: Option<LocalFault>,
    /// `ok`, `fault: …` or `none`.
    pub display: String,
    /// The MQTT link: `ok`, `connecting`, `error: …` or `off`. Readable on
    /// the control socket and the screen log when the broker itself is the
    /// problem.
    pub mqtt: String,
    /// Messages: the truest liveness there is (DESIGN.md, "Messages").
    #[serde(flatten)]
    pub messages: MessageHealth,
    pub version: String,
    /// After this instant the snapshot is stale: the supervisor refreshes it
    /// well before, so a reader past it is looking at a dead agent.
    pub valid_until: DateTime<Utc>,
}

impl Health {
    pub fn new(outlet: &str, now: DateTime<Utc>, ttl: chrono::Duration) -> Self {
        Self {
            outlet: outlet.to_string(),
            state: SessionState::Starting,
            since: now,
            phone: None,
            push_name: None,
            attempt: 0,
            next_retry_at: None,
            last_error: None,
            last_connected_at: None,
            last_disconnect: None,
            qr: None,
            pair_code: None,
            banned_until: None,
            fault: None,
            display: "none".into(),
            mqtt: "off".into(),
            messages: MessageHealth::default(),
            version: env!("CARGO_PKG_VERSION").into(),
            valid_until: now + ttl,
        }
    }
}

/// One state change, as published on the MQTT `event` topic and kept in the
/// store's bounded history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub at: DateTime<Utc>,
    pub from: SessionState,
    pub to: SessionState,
    pub reason: String,
}

/// The reading side of the supervisor, for everything that shows, reports
/// or commands: the health snapshot, the transitions and the command
/// channel. Plain channel ends, so the MQTT link and the screen can take
/// them without knowing the supervisor.
#[derive(Clone)]
pub struct SupervisorLink {
    pub health: watch::Receiver<Health>,
    pub transitions: broadcast::Sender<Transition>,
    pub commands: Commands,
}

/// The MQTT link's own health, for whoever wants to show it (the supervisor
/// puts it in the snapshot's `mqtt` text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttStatus {
    pub connected: bool,
    /// Why the last attempt failed, until the next success.
    pub last_error: Option<String>,
    /// Messages waiting in the link's queue.
    pub queue: usize,
    /// Times an established connection was lost.
    pub reconnects: u64,
}

#[cfg(test)]
mod tests {

    #[test]
    fn all_lists_every_state_once() {
        // No wildcard: a new state fails to compile here until it is in ALL.
        fn index(s: SessionState) -> usize {
            match s {
                SessionState::Starting => 0,
                SessionState::WaitingForClock => 1,
                SessionState::Connecting => 2,
                SessionState::Pairing => 3,
                SessionState::PairingCode => 4,
                SessionState::PairingIdle => 5,
                SessionState::Connected => 6,
                SessionState::Reconnecting => 7,
                SessionState::LoggedOut => 8,
                SessionState::Replaced => 9,
                SessionState::Banned => 10,
                SessionState::Outdated => 11,
                SessionState::Paused => 12,
                SessionState::Fault => 13,
            }
        }
        for (i, s) in SessionState::ALL.iter().enumerate() {
            assert_eq!(index(*s), i, "{s}");
        }
    }

    use super::*;

    #[test]
    fn the_qr_and_link_codes_never_reach_the_snapshot_json() {
        let now = Utc::now();
        let mut health = Health::new("jkt-01", now, chrono::Duration::seconds(60));
        health.qr = Some(QrStatus {
            index: 1,
            count: 6,
            issued_at: now,
            expires_at: now,
            code: "2@secret-ref,AAAA,BBBB,CCCC,1".into(),
        });
        health.pair_code = Some(PairCodeStatus {
            phone: "+6281234567890".into(),
            issued_at: now,
            expires_at: now,
            code: "SECR3TCD".into(),
        });
        let json = serde_json::to_string(&health).expect("serialises");
        assert!(!json.contains("secret-ref"), "{json}");
        assert!(!json.contains("SECR3TCD"), "{json}");
        assert!(!format!("{health:?}").contains("secret-ref"));
        assert!(!format!("{health:?}").contains("SECR3TCD"));
        assert!(!format!("{health:?}").contains("6281234567890"));
        assert!(json.contains("\"state\":\"starting\""));
    }
}
