//! What the server saw: connection attempts, per-device concurrency, and a
//! stream of events tests can wait on.
//!
//! The counters exist to prove promises of the agent: "never two connections
//! for one device at once" is `DeviceStats::max == 1`, and "the reconnect
//! follows the backoff" is read off the attempt times.

use std::fmt;

use crate::noise::HandshakeKind;

/// One accepted TCP connection, numbered from 1 in accept order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A device's identity on the wire: the client's static Noise public key.
/// Two clients started on the same saved credentials share it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceKey(pub [u8; 32]);

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey({self})")
    }
}

impl fmt::Display for DeviceKey {
    /// The first 8 bytes in hex: enough to tell devices apart in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for DeviceKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Concurrency of one device's connections (counted from the completed
/// handshake to the close).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceStats {
    pub current: u32,
    pub max: u32,
    pub total: u32,
}

/// How an accepted connection was treated before any handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    Accepted,
    /// Closed at once (the "refuse new connections" fault).
    Refused,
    /// Held open and never answered (the "blackhole" fault).
    Blackholed,
}

/// One connection attempt as the server logged it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attempt {
    pub connection: ConnectionId,
    /// Milliseconds since the server started.
    pub at_ms: u64,
    pub admission: Admission,
    pub handshake: Option<HandshakeKind>,
    pub device: Option<DeviceKey>,
    /// `registration` (unpaired, wants a QR) or `login`.
    pub purpose: Option<Purpose>,
    /// What a registering client calls itself (`DeviceProps.os`): the name
    /// the phone lists under "Linked devices".
    pub device_name: Option<String>,
    /// When the server was done with the connection (milliseconds since it
    /// started); `None` while it is still being served. A connection whose
    /// client already hung up can still be logging in here, which is why
    /// "no live connection" is not the same as "nothing open".
    pub closed_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Registration,
    Login,
}

/// Something that happened, in order. Tests subscribe and wait for the one
/// they need with a deadline.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ServerEvent {
    Accepted {
        connection: ConnectionId,
        admission: Admission,
    },
    Handshake {
        connection: ConnectionId,
        kind: HandshakeKind,
        purpose: Purpose,
    },
    /// Refs sent to an unpaired client.
    PairDevice {
        connection: ConnectionId,
        refs: usize,
    },
    /// A companion asked to link by code (`companion_hello`).
    LinkCodeRequested {
        connection: ConnectionId,
    },
    /// The phone took a link code and `primary_hello` was delivered.
    PrimaryHelloSent {
        connection: ConnectionId,
    },
    /// A scan was accepted and `pair-success` delivered.
    PairSuccessSent {
        connection: ConnectionId,
        jid: String,
    },
    /// The client signed the identity: the device is registered.
    Paired {
        connection: ConnectionId,
        jid: String,
    },
    LoggedIn {
        connection: ConnectionId,
        jid: String,
    },
    LoginRefused {
        connection: ConnectionId,
        reason: u32,
    },
    /// An IQ from the client (its namespace, type and first child).
    Iq {
        connection: ConnectionId,
        xmlns: String,
        kind: String,
        child: String,
    },
    /// The client's passive/active IQ with `active`: it is ready for offline
    /// delivery, and the server sends `<ib><offline count="0"/></ib>`.
    Active {
        connection: ConnectionId,
    },
    StreamErrorSent {
        connection: ConnectionId,
        kind: crate::state::StreamErrorKind,
    },
    Unlinked {
        jid: String,
    },
    /// A companion announced its presence (`available`/`unavailable`).
    Presence {
        connection: ConnectionId,
        jid: String,
        presence: String,
    },
    /// The queued stanzas went out at login, then `<offline count>`.
    OfflineDelivered {
        connection: ConnectionId,
        count: usize,
    },
    /// A companion acked a stanza (`class` message, receipt, notification):
    /// it left the queue.
    Acked {
        jid: String,
        class: String,
        id: String,
    },
    /// A simulated party's message was queued for a companion.
    MessageToDevice {
        /// The sender (or the group, for a group message).
        from: String,
        to: String,
        id: String,
        enc: crate::signal::EncType,
    },
    /// A companion sent a message stanza (the server acked it).
    MessageFromDevice {
        from: String,
        to: String,
        id: String,
        /// How many per-device copies it carried.
        copies: usize,
    },
    /// A simulated device decrypted what a companion sent.
    Decrypted {
        by: String,
        entry: crate::messaging::InboxEntry,
    },
    /// A simulated device could not decrypt what a companion sent.
    DecryptFailed {
        by: String,
        from: String,
        id: String,
        error: String,
    },
    /// A contact's receipt was queued for a companion.
    ReceiptToDevice {
        from: String,
        to: String,
        id: String,
        kind: String,
    },
    /// A companion sent a receipt to a contact.
    ReceiptFromDevice {
        to: String,
        entry: crate::messaging::ReceiptEntry,
    },
    /// The phone shared an app-state key with a companion.
    KeyShareSent {
        jid: String,
    },
    /// A contact reinstalled WhatsApp (new identity).
    IdentityChanged {
        number: String,
    },
    /// The phone sent a companion its initial history sync.
    HistorySyncSent {
        jid: String,
        id: String,
    },
    /// A `<notification type="devices">` was queued for a companion: another
    /// device of the account was linked (`add`) or unlinked (`remove`).
    DevicesNotified {
        to: String,
        id: String,
        operation: String,
        device: String,
    },
    Closed {
        connection: ConnectionId,
        reason: String,
    },
}

impl ServerEvent {
    pub fn connection(&self) -> Option<ConnectionId> {
        match self {
            ServerEvent::Accepted { connection, .. }
            | ServerEvent::Handshake { connection, .. }
            | ServerEvent::PairDevice { connection, .. }
            | ServerEvent::LinkCodeRequested { connection }
            | ServerEvent::PrimaryHelloSent { connection }
            | ServerEvent::PairSuccessSent { connection, .. }
            | ServerEvent::Paired { connection, .. }
            | ServerEvent::LoggedIn { connection, .. }
            | ServerEvent::LoginRefused { connection, .. }
            | ServerEvent::Iq { connection, .. }
            | ServerEvent::Active { connection }
            | ServerEvent::Presence { connection, .. }
            | ServerEvent::StreamErrorSent { connection, .. }
            | ServerEvent::OfflineDelivered { connection, .. }
            | ServerEvent::Closed { connection, .. } => Some(*connection),
            ServerEvent::Unlinked { .. }
            | ServerEvent::Acked { .. }
            | ServerEvent::MessageToDevice { .. }
            | ServerEvent::MessageFromDevice { .. }
            | ServerEvent::Decrypted { .. }
            | ServerEvent::DecryptFailed { .. }
            | ServerEvent::ReceiptToDevice { .. }
            | ServerEvent::ReceiptFromDevice { .. }
            | ServerEvent::KeyShareSent { .. }
            | ServerEvent::IdentityChanged { .. }
            | ServerEvent::DevicesNotified { .. }
            | ServerEvent::HistorySyncSent { .. } => None,
        }
    }
}

/// A snapshot of the server's counters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub attempts: Vec<Attempt>,
    pub devices: Vec<DeviceSummary>,
    pub live_connections: usize,
}

/// Concurrency of one device key, with its JID once it is a linked device.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceSummary {
    pub device: DeviceKey,
    pub jid: Option<String>,
    #[serde(flatten)]
    pub stats: DeviceStats,
}

impl Stats {
    /// The largest number of simultaneous connections any one device had.
    pub fn max_concurrent(&self) -> u32 {
        self.devices.iter().map(|d| d.stats.max).max().unwrap_or(0)
    }

    /// Connections the server is still serving, logged in or not.
    pub fn open_attempts(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| a.closed_at_ms.is_none())
            .count()
    }

    /// The summary for a device by its JID (`PHONE:DEV@s.whatsapp.net`).
    pub fn device(&self, jid: &str) -> Option<&DeviceSummary> {
        self.devices.iter().find(|d| d.jid.as_deref() == Some(jid))
    }
}
