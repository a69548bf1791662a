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
//!
//! Plain data (the bottom layer): it owns the configuration's values and their
//! checks. It may use `topics` and `phone` for those checks; it must not import
//! any working part (MQTT, messages, supervisor) or entry point.

use std::path::{Path, PathBuf};
use std::time::Duration;

use outlet_display::DisplayConfig;
use serde::{Deserialize, Serialize};

mod broker;
mod sections;
pub use broker::{BrokerAddress, BrokerUrlError, Brokers};
pub use sections::*;

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

/// The longest duration any `*_secs` key accepts: 30 days.
pub const MAX_DURATION_SECS: u64 = 30 * 24 * 3600;
/// `mqtt.max_packet_bytes` bounds: a record needs room for its fields and
/// a useful text; above 1 MiB the MQTT client itself refuses to send.
pub const MIN_PACKET_BYTES: u64 = 16 * 1024;
pub const MAX_PACKET_BYTES: u64 = 1024 * 1024;

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
        if m.journal_days > 366 {
            return Err(invalid("messages.journal_days", "at most 366".into()));
        }
        if m.media_keep_days > 366 {
            return Err(invalid("messages.media_keep_days", "at most 366".into()));
        }
        if m.media_max_file_bytes > m.media_spool_max_bytes {
            return Err(invalid(
                "messages.media_max_file_bytes",
                format!(
                    "{} is more than messages.media_spool_max_bytes ({}): such a file could never be spooled",
                    m.media_max_file_bytes, m.media_spool_max_bytes
                ),
            ));
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
        if !(MIN_PACKET_BYTES..=MAX_PACKET_BYTES).contains(&mqtt.max_packet_bytes) {
            return Err(invalid(
                "mqtt.max_packet_bytes",
                format!("{MIN_PACKET_BYTES}..={MAX_PACKET_BYTES}"),
            ));
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
