//! What the agent wants to show: one [`Screen`] per session state.
//!
//! The agent maps its `Health` onto a `Screen` and hands it to the display task. This module is
//! deliberately free of WhatsApp types so the display crate can be built, tested and reasoned
//! about without the protocol stack: a screen is plain data (strings, counters and wall-clock
//! instants). Instants are absolute (`SystemTime`) rather than "seconds left" so that the
//! display can run its own countdowns between two updates from the agent, and so that renders
//! are deterministic when a test passes a fixed `now`.

use std::fmt;
use std::time::SystemTime;

/// Everything one frame depends on besides the current time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Screen {
    /// The session state and its details.
    pub state: State,
    /// Whether the outlet's network is up (small mark in the corner).
    pub network: Mark,
    /// Whether the MQTT link to HQ is up (small mark in the corner).
    pub mqtt: Mark,
}

impl Screen {
    /// A screen for `state` with both status marks unknown.
    pub fn new(state: State) -> Self {
        Self {
            state,
            network: Mark::Unknown,
            mqtt: Mark::Unknown,
        }
    }

    /// Sets the network and MQTT marks.
    #[must_use]
    pub fn with_marks(mut self, network: Mark, mqtt: Mark) -> Self {
        self.network = network;
        self.mqtt = mqtt;
        self
    }

    /// The state's stable name (as in DESIGN.md), used for logs and snapshot file names.
    pub fn name(&self) -> &'static str {
        self.state.name()
    }

    /// The pairing QR shown on this screen, if any.
    pub fn qr(&self) -> Option<&Qr> {
        match &self.state {
            State::Pairing(qr) => Some(qr),
            State::LoggedOut { qr } => qr.as_ref(),
            _ => None,
        }
    }
}

/// The session states of DESIGN.md ("Session states"), each with what its screen needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Opening the store, loading keys.
    Starting {
        /// Agent version shown under the logo, e.g. `0.1.0`.
        version: String,
    },
    /// The system clock is not synchronised yet (no RTC on a Pi, TLS would fail).
    WaitingForClock,
    /// Dialing / handshaking.
    Connecting {
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// A QR code to scan.
    Pairing(Qr),
    /// An 8-character link code for "link with phone number instead".
    PairingCode {
        /// The code as the server sent it, e.g. `ABCD1234` (shown as `ABCD-1234`).
        code: String,
        /// When the code stops being valid, if known.
        expires_at: Option<SystemTime>,
    },
    /// QR codes ran out; a new round starts after a cool-down, on the button or on command.
    PairingIdle {
        /// When the next round starts by itself, if scheduled.
        next_round_at: Option<SystemTime>,
    },
    /// Logged in and ready.
    Connected {
        /// Human name of the outlet (long names are shortened with an ellipsis).
        outlet_name: String,
        /// The linked phone number, already formatted for people.
        phone: String,
        /// When the session became connected.
        since: SystemTime,
        /// When a customer's message last arrived (shown as "last message
        /// 2 min ago": at the counter, the proof that messages flow).
        last_message_at: Option<SystemTime>,
    },
    /// Transient loss of the connection; the supervisor retries at `next_retry_at`.
    Reconnecting {
        /// Short human reason, e.g. "server closed".
        reason: String,
        /// Attempt number of the retry that is scheduled.
        attempt: u32,
        /// When the next attempt starts.
        next_retry_at: SystemTime,
    },
    /// Unlinked from the phone: keys wiped, pairing restarts. Carries the new QR once it exists.
    LoggedOut {
        /// The first QR of the new pairing round, once the server sent it.
        qr: Option<Qr>,
    },
    /// Another client took this session over.
    Replaced {
        /// When the single retry after the cool-down happens, if scheduled.
        retry_at: Option<SystemTime>,
    },
    /// Temporary ban.
    Banned {
        /// WhatsApp's ban code, if given.
        code: Option<u32>,
        /// When the ban ends, if known.
        until: Option<SystemTime>,
    },
    /// The server says this client version is too old.
    Outdated,
    /// Stopped by a command from HQ.
    Paused,
    /// Something local is broken.
    Fault {
        /// What is broken, e.g. "Disk full".
        what: String,
        /// What staff should do, e.g. "Call HQ support".
        action: String,
    },
}

impl State {
    /// The state's stable name as in DESIGN.md.
    pub fn name(&self) -> &'static str {
        match self {
            State::Starting { .. } => "starting",
            State::WaitingForClock => "waiting_for_clock",
            State::Connecting { .. } => "connecting",
            State::Pairing(_) => "pairing",
            State::PairingCode { .. } => "pairing_code",
            State::PairingIdle { .. } => "pairing_idle",
            State::Connected { .. } => "connected",
            State::Reconnecting { .. } => "reconnecting",
            State::LoggedOut { .. } => "logged_out",
            State::Replaced { .. } => "replaced",
            State::Banned { .. } => "banned",
            State::Outdated => "outdated",
            State::Paused => "paused",
            State::Fault { .. } => "fault",
        }
    }
}

/// One pairing QR of a round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qr {
    /// The QR string (secret).
    pub payload: QrPayload,
    /// 1-based number of this code in the round.
    pub index: u32,
    /// Number of codes in the round (0 when unknown).
    pub count: u32,
    /// When this code was first shown (start of the countdown bar).
    pub issued_at: SystemTime,
    /// When the server will replace it (end of the countdown bar).
    pub expires_at: SystemTime,
}

/// The QR string `ref,noise_pub,identity_pub,adv_secret,client_type`.
///
/// It carries the pairing secret, so its `Debug` output is redacted: a `Screen` can be logged at
/// any level without leaking it. Only [`QrPayload::expose`] gives the text, and only the QR
/// encoder and the terminal driver call it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct QrPayload(String);

impl QrPayload {
    /// Wraps a QR string.
    pub fn new(payload: impl Into<String>) -> Self {
        Self(payload.into())
    }

    /// The secret text. Never log it above `debug`.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes, safe to log.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for QrPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QrPayload(<redacted, {} bytes>)", self.0.len())
    }
}

/// A small status mark (network, MQTT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mark {
    /// Not known yet: grey ring.
    #[default]
    Unknown,
    /// Working: green dot.
    Up,
    /// Broken: red cross (shape differs from `Up`, not only colour).
    Down,
    /// Not configured: not drawn.
    Hidden,
}
