//! The sections of `agent.toml`, one struct each, with the defaults that
//! let the agent run with no file at all. `config/agent.toml` documents
//! every key; the checks that run when the file loads are in `super`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Brokers;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutletConfig {
    /// Short identifier, used in MQTT topics: letters, digits, `-` and `_`.
    pub id: String,
    /// Shown on the screen when connected, and the device's name in the
    /// phone's "Linked devices" list (set when it links).
    pub name: String,
    /// Country calling code assumed for numbers written with a leading 0.
    pub country_code: String,
}

impl Default for OutletConfig {
    fn default() -> Self {
        Self {
            id: "dev-outlet".into(),
            name: "Development outlet".into(),
            country_code: "62".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Holds `session.db`, the lock file and the control socket. Relative
    /// paths are relative to the working directory.
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WhatsAppConfig {
    /// The WhatsApp Web WebSocket endpoint.
    pub endpoint: String,
    /// WhatsApp Web client version to announce (`major.minor.patch`). A fixed
    /// version spares a web request at every start; raise it when the server
    /// answers `outdated`.
    pub version: String,
    /// What the agent announces after every connect (DESIGN.md, "WhatsApp
    /// as it is now": a companion that says `available` silences the
    /// primary phone's notifications).
    pub presence: Presence,
    /// Number lookups (`check_number`, the check before a send to a new
    /// number, a customer's number behind a LID) at most this many a
    /// minute after a burst of `lookup_burst`: lookups at machine speed
    /// get accounts banned, as sends do. 0 turns pacing off (tests).
    pub lookups_per_minute: u32,
    pub lookup_burst: u32,
    /// Trust this PEM certificate (authority) for WhatsApp's media servers
    /// instead of the public roots: a proxy that inspects TLS, or the fake
    /// server's media host in tests. Media is end-to-end encrypted and
    /// checked against its hashes, so a server trusted this way can withhold
    /// a file but neither read nor change one.
    pub media_ca_file: Option<std::path::PathBuf>,
}

/// `whatsapp.presence`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// The outlet's phone keeps ringing for customers.
    #[default]
    Unavailable,
    /// As WhatsApp Web does: the phone goes quiet while the Pi is online.
    Available,
}

impl Default for WhatsAppConfig {
    fn default() -> Self {
        Self {
            endpoint: "wss://web.whatsapp.com/ws/chat".into(),
            version: "2.3000.1023868176".into(),
            presence: Presence::default(),
            lookups_per_minute: 30,
            lookup_burst: 5,
            media_ca_file: None,
        }
    }
}

impl WhatsAppConfig {
    /// The version as the library wants it.
    pub fn version_triple(&self) -> Result<(u32, u32, u32), String> {
        let parts: Vec<&str> = self.version.split('.').collect();
        let parse = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("{s:?} is not a number"))
        };
        match parts.as_slice() {
            [a, b, c] => Ok((parse(a)?, parse(b)?, parse(c)?)),
            _ => Err("expected major.minor.patch".into()),
        }
    }
}

/// Transient failures: jittered exponential backoff with a cap, forever.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    /// Delay before the first retry (kept under a second).
    pub first_delay_ms: u64,
    /// The cap.
    pub max_delay_secs: u64,
    /// ± fraction of each delay, so a fleet does not retry in lockstep.
    pub jitter: f64,
    /// A connection that lasted this long resets the backoff.
    pub stable_after_secs: u64,
    /// An attempt that has not logged in (or shown a QR) by then is abandoned.
    pub connect_timeout_secs: u64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            first_delay_ms: 500,
            max_delay_secs: 300,
            jitter: 0.15,
            stable_after_secs: 30,
            connect_timeout_secs: 45,
        }
    }
}

/// Messages through the outlet (DESIGN.md, "Messages"): customers' chats
/// to HQ over `message/in`, HQ's `send` requests to customers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagesConfig {
    /// Off: inbound messages are left to WhatsApp's own handling (acked,
    /// not forwarded) and `send` is refused. The session still runs.
    pub enabled: bool,
    /// At most this many sends per minute, spaced evenly with jitter: a
    /// broadcast at machine speed is how an account gets banned. 0 turns
    /// pacing off (benchmarks only).
    pub max_per_minute: u32,
    /// The inbox (received, not yet taken by the broker) holds at most this
    /// many messages and bytes; beyond, WhatsApp is not told they arrived
    /// and keeps them until there is room.
    pub inbox_max_messages: u64,
    pub inbox_max_bytes: u64,
    /// The outbox (queued sends) holds at most this many; beyond, `send`
    /// is refused with `outbox_full`.
    pub outbox_max_messages: u64,
    pub outbox_max_bytes: u64,
    /// Redelivery keys and finished sends are kept this long (a repeated
    /// `client_id` within it gets the first answer).
    pub keep_days: u32,
    /// Records the broker took are kept this many days for HQ's `replay`
    /// (0: not kept)…
    pub journal_days: u32,
    /// …within this many bytes, the oldest first out.
    pub journal_max_bytes: u64,
    /// Received files (pictures, voice notes, documents) up to this size are
    /// fetched and sent to HQ in chunks; a larger one is announced with
    /// `error: "too_large"`. 0: no file is fetched.
    pub media_max_file_bytes: u64,
    /// The media spool (fetched files, named by their SHA-256) holds at most
    /// this many bytes: the oldest delivered files go first.
    pub media_spool_max_bytes: u64,
    /// Delivered files stay in the spool this many days for `request/media`.
    pub media_keep_days: u32,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_per_minute: 20,
            inbox_max_messages: 10_000,
            inbox_max_bytes: 64 * 1024 * 1024,
            outbox_max_messages: 5_000,
            outbox_max_bytes: 16 * 1024 * 1024,
            keep_days: 14,
            journal_days: 14,
            journal_max_bytes: 64 * 1024 * 1024,
            media_max_file_bytes: 64 * 1024 * 1024,
            media_spool_max_bytes: 1024 * 1024 * 1024,
            media_keep_days: 7,
        }
    }
}

/// Pairing rounds and the verdicts that need a pause.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairingConfig {
    /// After the QR codes of a round ran out, wait this long before a new
    /// round (the button or `refresh_qr` starts one at once).
    pub cooldown_secs: u64,
    /// At most this many rounds start per hour, however they are triggered.
    pub max_rounds_per_hour: u32,
    /// After another client replaced this session, wait this long before
    /// the one retry.
    pub replaced_cooldown_secs: u64,
    /// While the server says the client is outdated, retry this often.
    pub outdated_retry_secs: u64,
    /// Publish the QR string in the MQTT `state` (`qr.code`). It carries
    /// the pairing secret: off unless HQ shows codes remotely on purpose.
    pub publish_qr: bool,
    /// Link codes (`pair_code`) only for these numbers, in any format
    /// `check_number` accepts. Empty: any number. A link code links the
    /// outlet to whichever account types it in, so where many may publish
    /// to the broker, list the outlet's own number.
    pub pair_code_numbers: Vec<String>,
    /// At most this many link codes per hour: each asks WhatsApp and pushes
    /// a notification to the phone.
    pub max_pair_codes_per_hour: u32,
}

impl Default for PairingConfig {
    fn default() -> Self {
        Self {
            cooldown_secs: 300,
            max_rounds_per_hour: 6,
            replaced_cooldown_secs: 600,
            outdated_retry_secs: 3600,
            publish_qr: false,
            pair_code_numbers: Vec::new(),
            max_pair_codes_per_hour: 6,
        }
    }
}

/// How the agent decides the system clock can be trusted (TLS and the
/// WhatsApp handshake need it; a Pi has no RTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockCheck {
    /// The kernel reports NTP synchronisation (`adjtimex`).
    Ntp,
    /// The clock is not earlier than this release (catches a Pi at 1970).
    BuildDate,
    Off,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockConfig {
    pub check: ClockCheck,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            check: ClockCheck::BuildDate,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How long a health snapshot stays valid (`valid_until`); it is
    /// refreshed at half that.
    pub ttl_secs: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { ttl_secs: 60 }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// The local control socket (`status`, `qr`, `logout`). Empty: inside
    /// the data directory.
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Journald-friendly lines under systemd, readable text on a terminal.
    Auto,
    Text,
    Journald,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `info,outlet_agent=debug`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Auto,
        }
    }
}

/// The MQTT link to the central dashboard (the `mqtt` module).
///
/// On by default with a local broker, so a developer's machine with
/// Mosquitto just works and one without it only logs a single warning: the
/// link retries quietly in the background and never holds up the session.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Off: no MQTT at all (no connection attempts, no warning).
    pub enabled: bool,
    /// `mqtt://host[:port]` (plain, default port 1883) or
    /// `mqtts://host[:port]` (TLS, default port 8883); or a list of them,
    /// the nodes of one clustered broker, tried in turn (see [`Brokers`]).
    pub broker: Brokers,
    /// MQTT client id. Empty: `outlet-agent-<outlet.id>`.
    pub client_id: String,
    /// Topic prefix; `{outlet_id}` is replaced by `outlet.id`.
    pub topic_prefix: String,
    /// Broker login. Empty: anonymous.
    pub username: String,
    /// File holding the password (first line). Read again before every
    /// connection attempt, so a rotated password needs no restart.
    pub password_file: Option<PathBuf>,
    /// CA certificate(s), PEM, for `mqtts://`. Absent: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for brokers that require one;
    /// together with `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub client_key_file: Option<PathBuf>,
    /// MQTT keepalive. The broker publishes the last will (`offline`) when
    /// it has heard nothing for 1.5 times this.
    pub keepalive_secs: u64,
    /// First retry after the broker was lost or refused us, then doubling…
    pub reconnect_first_delay_ms: u64,
    /// …up to this cap, forever.
    pub reconnect_max_delay_secs: u64,
    /// Retained `telemetry` every this many seconds; 0 turns it off.
    pub telemetry_interval_secs: u64,
    /// Publish the full phone number in `state` and `event`. Off: only the
    /// last 4 digits leave the device (project rule).
    pub publish_full_phone: bool,
    /// Home Assistant MQTT discovery (retained configs).
    pub discovery: bool,
    /// Home Assistant's discovery prefix; its birth message is expected on
    /// `<discovery_prefix>/status`.
    pub discovery_prefix: String,
    /// The largest MQTT packet the broker takes, in bytes. Every record the
    /// agent publishes is kept below it (a longer text is cut and marked),
    /// because a broker drops the connection of a client that sends a
    /// larger one, and the queue would never move past it. Mosquitto:
    /// `max_packet_size` (no limit by default); NATS: `max_payload` (1 MB by
    /// default); EMQX: `mqtt.max_packet_size` (1 MB by default).
    pub max_packet_bytes: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            broker: Brokers::one("mqtt://localhost:1883"),
            client_id: String::new(),
            topic_prefix: "outlet/{outlet_id}".into(),
            username: String::new(),
            password_file: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            keepalive_secs: 10,
            reconnect_first_delay_ms: 500,
            reconnect_max_delay_secs: 60,
            telemetry_interval_secs: 60,
            publish_full_phone: false,
            discovery: true,
            discovery_prefix: "homeassistant".into(),
            max_packet_bytes: 256 * 1024,
        }
    }
}

impl OutletConfig {
    /// What the phone lists under "Linked devices" for this outlet, so staff
    /// can tell it from a laptop: the outlet's name, else its id.
    pub fn device_name(&self) -> String {
        let name = self.name.trim();
        let name = if name.is_empty() {
            format!("outlet-agent {}", self.id)
        } else {
            name.to_string()
        };
        name.chars().take(64).collect()
    }
}
