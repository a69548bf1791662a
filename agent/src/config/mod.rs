//! The agent's configuration: TOML file, then environment overrides.
//!
//! Every key has a default that works on a developer's machine (data under
//! `./data`, display `auto`, the real WhatsApp endpoint), so the agent runs
//! with no file at all. On an outlet the file is `/etc/outlet-agent/agent.toml`
//! and `config/agent.toml` in the repository documents every key.
//!
//! Unknown keys and wrong types are errors that name the file, line and key:
//! a typo on a remote outlet must stop the agent with a clear message rather
//! than be silently ignored. Environment variables override single keys as
//! `OUTLET_AGENT__<SECTION>__<KEY>=value` (the value is read as TOML, falling
//! back to a string), e.g. `OUTLET_AGENT__OUTLET__ID=jkt-01`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use outlet_display::DisplayConfig;
use serde::{Deserialize, Serialize};

mod broker;
pub use broker::{BrokerAddress, BrokerUrlError, Brokers};

/// Where the installed agent looks for its config when `--config` is absent.
pub const SYSTEM_CONFIG: &str = "/etc/outlet-agent/agent.toml";
/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "OUTLET_AGENT__";

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The toml crate's message names the line, column and key.
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{}: {key}: {message}", source_name)]
    Invalid {
        source_name: String,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub outlet: OutletConfig,
    pub storage: StorageConfig,
    pub whatsapp: WhatsAppConfig,
    pub reconnect: ReconnectConfig,
    pub pairing: PairingConfig,
    pub clock: ClockConfig,
    pub health: HealthConfig,
    pub control: ControlConfig,
    pub log: LogConfig,
    pub display: DisplayConfig,
    pub mqtt: MqttConfig,
    pub messages: MessagesConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            outlet: OutletConfig::default(),
            storage: StorageConfig::default(),
            whatsapp: WhatsAppConfig::default(),
            reconnect: ReconnectConfig::default(),
            pairing: PairingConfig::default(),
            clock: ClockConfig::default(),
            health: HealthConfig::default(),
            control: ControlConfig::default(),
            log: LogConfig::default(),
            display: DisplayConfig {
                png_path: PathBuf::from("screen.png"),
                ..DisplayConfig::default()
            },
            mqtt: MqttConfig::default(),
            messages: MessagesConfig::default(),
        }
    }
}

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
}

impl Default for WhatsAppConfig {
    fn default() -> Self {
        Self {
            endpoint: "wss://web.whatsapp.com/ws/chat".into(),
            version: "2.3000.1023868176".into(),
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

/// The longest duration any `*_secs` key accepts: 30 days.
pub const MAX_DURATION_SECS: u64 = 30 * 24 * 3600;

impl Config {
    /// Whether messages flow at all: they need the switch and a broker to
    /// flow to.
    pub fn messages_enabled(&self) -> bool {
        self.messages.enabled && self.mqtt.enabled
    }

    /// The MQTT client id: configured, or `outlet-agent-<outlet id>`.
    pub fn mqtt_client_id(&self) -> String {
        if self.mqtt.client_id.is_empty() {
            format!("outlet-agent-{}", self.outlet.id)
        } else {
            self.mqtt.client_id.clone()
        }
    }

    /// Loads the config: `path` if given, else the system file if it exists,
    /// else the defaults; then the environment overrides in `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, String), ConfigError> {
        let (text, source_name) = match path {
            Some(p) => (read(p)?, p.display().to_string()),
            None if Path::new(SYSTEM_CONFIG).exists() => {
                (read(Path::new(SYSTEM_CONFIG))?, SYSTEM_CONFIG.to_string())
            }
            None => (String::new(), "(defaults)".to_string()),
        };
        let path_buf = PathBuf::from(&source_name);

        // Parse the file alone first: its errors carry line and column.
        let from_file: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path_buf.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;

        let overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        let mut config = if overrides.is_empty() {
            from_file
        } else {
            let mut table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path_buf.clone(),
                message: e.to_string(),
            })?;
            for (var, value) in &overrides {
                apply_override(&mut table, var, value)?;
            }
            let merged = toml::to_string(&table).map_err(|e| ConfigError::Env {
                var: overrides
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                message: e.to_string(),
            })?;
            toml::from_str(&merged).map_err(|e| ConfigError::Env {
                var: overrides
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                message: e.message().to_string(),
            })?
        };
        config.validate(&source_name)?;
        let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        config.storage.data_dir = absolute(&base, &config.storage.data_dir);
        let data_dir = config.storage.data_dir.clone();
        config.display.resolve_paths(&data_dir);
        Ok((config, source_name))
    }

    fn validate(&self, source_name: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            source_name: source_name.to_string(),
            key: key.to_string(),
            message,
        };
        let m = &self.messages;
        for (key, value) in [
            ("messages.inbox_max_messages", m.inbox_max_messages),
            ("messages.inbox_max_bytes", m.inbox_max_bytes),
            ("messages.outbox_max_messages", m.outbox_max_messages),
            ("messages.outbox_max_bytes", m.outbox_max_bytes),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if m.max_per_minute > 600 {
            return Err(invalid(
                "messages.max_per_minute",
                format!(
                    "{}: at most 600 (one every 100 ms); 0 turns pacing off",
                    m.max_per_minute
                ),
            ));
        }
        if m.keep_days == 0 {
            return Err(invalid("messages.keep_days", "must be at least 1".into()));
        }
        let id = &self.outlet.id;
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "outlet.id",
                format!("{id:?}: use 1-64 letters, digits, '-' or '_'"),
            ));
        }
        if self.outlet.country_code.is_empty()
            || !self.outlet.country_code.chars().all(|c| c.is_ascii_digit())
        {
            return Err(invalid(
                "outlet.country_code",
                "digits only, e.g. \"62\"".into(),
            ));
        }
        self.whatsapp
            .version_triple()
            .map_err(|m| invalid("whatsapp.version", m))?;
        if !(self.whatsapp.endpoint.starts_with("wss://")
            || self.whatsapp.endpoint.starts_with("ws://"))
        {
            return Err(invalid(
                "whatsapp.endpoint",
                "must be a ws:// or wss:// URL".into(),
            ));
        }
        if !(0.0..=0.5).contains(&self.reconnect.jitter) {
            return Err(invalid(
                "reconnect.jitter",
                "must be between 0 and 0.5".into(),
            ));
        }
        if self.reconnect.first_delay_ms == 0 || self.reconnect.first_delay_ms > 1000 {
            return Err(invalid(
                "reconnect.first_delay_ms",
                "the first retry comes within a second: 1..=1000".into(),
            ));
        }
        if self.reconnect.max_delay_secs == 0 {
            return Err(invalid(
                "reconnect.max_delay_secs",
                "must be positive".into(),
            ));
        }
        if self.reconnect.connect_timeout_secs < 5 {
            return Err(invalid(
                "reconnect.connect_timeout_secs",
                "at least 5".into(),
            ));
        }
        if self.pairing.max_rounds_per_hour == 0 {
            return Err(invalid("pairing.max_rounds_per_hour", "at least 1".into()));
        }
        if self.pairing.max_pair_codes_per_hour == 0 {
            return Err(invalid(
                "pairing.max_pair_codes_per_hour",
                "at least 1".into(),
            ));
        }
        for number in &self.pairing.pair_code_numbers {
            crate::phone::normalize_phone(number, &self.outlet.country_code)
                .map_err(|e| invalid("pairing.pair_code_numbers", format!("{number:?}: {e}")))?;
        }
        if self.health.ttl_secs < 2 {
            return Err(invalid("health.ttl_secs", "at least 2".into()));
        }
        // Durations far beyond any real need are typos, and would overflow
        // the time arithmetic they feed.
        for (key, secs) in [
            ("reconnect.max_delay_secs", self.reconnect.max_delay_secs),
            (
                "reconnect.stable_after_secs",
                self.reconnect.stable_after_secs,
            ),
            (
                "reconnect.connect_timeout_secs",
                self.reconnect.connect_timeout_secs,
            ),
            ("pairing.cooldown_secs", self.pairing.cooldown_secs),
            (
                "pairing.replaced_cooldown_secs",
                self.pairing.replaced_cooldown_secs,
            ),
            (
                "pairing.outdated_retry_secs",
                self.pairing.outdated_retry_secs,
            ),
            ("health.ttl_secs", self.health.ttl_secs),
            (
                "mqtt.reconnect_max_delay_secs",
                self.mqtt.reconnect_max_delay_secs,
            ),
            (
                "mqtt.telemetry_interval_secs",
                self.mqtt.telemetry_interval_secs,
            ),
        ] {
            if secs > MAX_DURATION_SECS {
                return Err(invalid(
                    key,
                    format!("{secs} s is more than 30 days; at most {MAX_DURATION_SECS}"),
                ));
            }
        }
        self.display
            .validate()
            .map_err(|e| invalid("display", e.to_string()))?;
        self.validate_mqtt(&invalid)?;
        Ok(())
    }

    fn validate_mqtt(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let mqtt = &self.mqtt;
        if mqtt.broker.urls().is_empty() {
            return Err(invalid("mqtt.broker", "at least one URL".into()));
        }
        for url in mqtt.broker.urls() {
            BrokerAddress::parse(url).map_err(|e| invalid("mqtt.broker", e.to_string()))?;
        }
        crate::topics::Topics::new(&mqtt.topic_prefix, &self.outlet.id)
            .map_err(|e| invalid("mqtt.topic_prefix", e.to_string()))?;
        crate::topics::validate_prefix(&mqtt.discovery_prefix)
            .map_err(|e| invalid("mqtt.discovery_prefix", e.to_string()))?;
        if mqtt.client_id.len() > 128 || mqtt.client_id.chars().any(char::is_control) {
            return Err(invalid(
                "mqtt.client_id",
                "at most 128 printable characters".into(),
            ));
        }
        if !(1..=65_535).contains(&mqtt.keepalive_secs) {
            return Err(invalid(
                "mqtt.keepalive_secs",
                "between 1 and 65535 (MQTT's limit)".into(),
            ));
        }
        if mqtt.reconnect_first_delay_ms == 0 || mqtt.reconnect_first_delay_ms > 60_000 {
            return Err(invalid("mqtt.reconnect_first_delay_ms", "1..=60000".into()));
        }
        if mqtt.reconnect_max_delay_secs == 0 {
            return Err(invalid(
                "mqtt.reconnect_max_delay_secs",
                "must be positive".into(),
            ));
        }
        if mqtt.client_cert_file.is_some() != mqtt.client_key_file.is_some() {
            return Err(invalid(
                "mqtt.client_cert_file",
                "client_cert_file and client_key_file go together".into(),
            ));
        }
        if mqtt.password_file.is_some() && mqtt.username.is_empty() {
            return Err(invalid(
                "mqtt.password_file",
                "a password needs a username (mqtt.username)".into(),
            ));
        }
        Ok(())
    }

    pub fn control_socket(&self) -> PathBuf {
        self.control
            .socket
            .clone()
            .unwrap_or_else(|| self.storage.data_dir.join("control.sock"))
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.reconnect.connect_timeout_secs)
    }

    /// The resolved config as TOML, for `check-config`. Nothing in it is a
    /// secret today; keys added for secrets must be redacted here.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn absolute(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// `OUTLET_AGENT__STORAGE__DATA_DIR=/x` sets `storage.data_dir = "/x"`.
fn apply_override(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Env {
            var: var.to_string(),
            message: "expected OUTLET_AGENT__<SECTION>__<KEY>".into(),
        });
    }
    let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let (key, sections) = path.split_last().ok_or_else(|| ConfigError::Env {
        var: var.to_string(),
        message: "no key".into(),
    })?;
    let mut current = table;
    for section in sections {
        current = current
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| ConfigError::Env {
                var: var.to_string(),
                message: format!("{section} is not a table"),
            })?;
    }
    current.insert(key.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).expect("write");
        Config::load(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .map(|(c, _)| c)
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config = load_text("", &[]).expect("valid");
        assert_eq!(config.outlet.id, "dev-outlet");
        assert!(config.storage.data_dir.is_absolute());
    }

    #[test]
    fn unknown_keys_name_the_file_line_and_key() {
        let err =
            load_text("[outlet]\nid = \"a\"\ncolour = \"red\"\n", &[]).expect_err("unknown key");
        let text = err.to_string();
        assert!(text.contains("agent.toml"), "{text}");
        assert!(text.contains("line 3"), "{text}");
        assert!(text.contains("colour"), "{text}");
    }

    #[test]
    fn wrong_types_name_the_line() {
        let err = load_text("[reconnect]\nmax_delay_secs = \"five\"\n", &[]).expect_err("type");
        let text = err.to_string();
        assert!(
            text.contains("line 2") && text.contains("max_delay_secs"),
            "{text}"
        );
    }

    #[test]
    fn environment_overrides_single_keys() {
        let config = load_text(
            "[outlet]\nid = \"a\"\n",
            &[
                ("OUTLET_AGENT__OUTLET__ID", "jkt-01"),
                ("OUTLET_AGENT__RECONNECT__MAX_DELAY_SECS", "120"),
                ("OTHER", "x"),
            ],
        )
        .expect("valid");
        assert_eq!(config.outlet.id, "jkt-01");
        assert_eq!(config.reconnect.max_delay_secs, 120);
        let err = load_text("", &[("OUTLET_AGENT__OUTLET__NOPE", "1")]).expect_err("unknown");
        assert!(
            err.to_string().contains("OUTLET_AGENT__OUTLET__NOPE"),
            "{err}"
        );
    }

    #[test]
    fn the_screen_language_is_one_of_the_files_and_english_by_default() {
        assert_eq!(Config::default().display.language, "en");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "[display]\nlanguage = \"id\"\n").unwrap();
        let (config, _) = Config::load(Some(&path), Vec::new()).expect("id exists");
        assert_eq!(config.display.strings().connected, "Terhubung");
        std::fs::write(&path, "[display]\nlanguage = \"xx\"\n").unwrap();
        let e = Config::load(Some(&path), Vec::new())
            .expect_err("no xx.toml")
            .to_string();
        assert!(
            e.contains("display.language") && e.contains("en, id"),
            "{e}"
        );
    }

    #[test]
    fn invalid_values_name_the_key() {
        let err = load_text("[outlet]\nid = \"has space\"\n", &[]).expect_err("bad id");
        assert!(err.to_string().contains("outlet.id"), "{err}");
        // Absurd durations are refused here rather than overflowing later.
        for (section, key) in [
            ("health", "ttl_secs"),
            ("pairing", "cooldown_secs"),
            ("pairing", "outdated_retry_secs"),
            ("reconnect", "max_delay_secs"),
        ] {
            let text = format!("[{section}]\n{key} = 18446744073709551615\n");
            let err = load_text(&text, &[]).expect_err("huge duration");
            assert!(
                err.to_string().contains(&format!("{section}.{key}")),
                "{err}"
            );
        }
        let err = load_text("[display]\nbacklight_timeout_secs = 9999999999\n", &[])
            .expect_err("huge backlight timeout");
        assert!(err.to_string().contains("backlight_timeout_secs"), "{err}");
    }

    #[test]
    fn the_documented_example_is_valid() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/agent.toml");
        Config::load(Some(Path::new(example)), Vec::new()).expect("config/agent.toml is valid");
    }
}
