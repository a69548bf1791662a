//! The retained `telemetry` payload: what HQ needs to tell a sick Pi from a
//! sick session — memory, temperature and under-voltage (the classic cause
//! of a Pi that "randomly" drops its network), disk and database growth,
//! and how often the session and the MQTT link had to reconnect.
//!
//! Every figure the platform does not expose is `null`, never a guess: a
//! developer's PC has no `get_throttled`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Where the Pi exposes what we read; replaceable in tests.
#[derive(Debug, Clone)]
pub struct Sources {
    pub thermal: PathBuf,
    pub throttled: PathBuf,
    pub statm: PathBuf,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            thermal: "/sys/class/thermal/thermal_zone0/temp".into(),
            throttled: "/sys/devices/platform/soc/soc:firmware/get_throttled".into(),
            statm: "/proc/self/statm".into(),
        }
    }
}

/// Counters the link keeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Transitions into `reconnecting` since the agent started.
    pub reconnects: u64,
    /// Times the MQTT link itself had to reconnect.
    pub mqtt_reconnects: u64,
    /// Messages waiting in the link's own queue.
    pub mqtt_queue: usize,
    /// Events dropped because the broker was away too long.
    pub events_dropped: u64,
    /// Responses dropped because a flood of requests outran the broker.
    pub responses_dropped: u64,
}

/// One telemetry message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Telemetry {
    pub at: DateTime<Utc>,
    pub uptime_secs: u64,
    pub rss_bytes: Option<u64>,
    pub cpu_temp_c: Option<f64>,
    /// `get_throttled`'s raw bits (bit 0 under-voltage now, 1 frequency
    /// capped, 2 throttled, 3 soft temperature limit; +16: has occurred).
    pub throttled: Option<u32>,
    /// The bits above by name.
    pub throttled_flags: Option<Vec<&'static str>>,
    pub disk_free_bytes: Option<u64>,
    /// The local fault that stops the agent (`disk_full`), as in `state`.
    pub fault: Option<crate::health::FaultKind>,
    /// `session.db` plus its `-wal`.
    pub db_bytes: Option<u64>,
    pub reconnects: u64,
    pub mqtt_reconnects: u64,
    pub mqtt_queue: usize,
    pub events_dropped: u64,
    pub responses_dropped: u64,
    /// Messages: received and waiting for the broker, and how long the
    /// oldest has waited; queued sends likewise.
    pub inbox_pending: u64,
    pub inbox_oldest_age_secs: Option<u64>,
    pub outbox_pending: u64,
    pub outbox_oldest_age_secs: Option<u64>,
}

impl Telemetry {
    /// The inbox and outbox figures of the health snapshot, as of `at`.
    pub fn with_messages(mut self, m: &crate::health::MessageHealth) -> Self {
        let age = |t: Option<DateTime<Utc>>| {
            t.map(|t| u64::try_from((self.at - t).num_seconds()).unwrap_or(0))
        };
        self.inbox_pending = m.inbox_pending;
        self.inbox_oldest_age_secs = age(m.inbox_oldest_at);
        self.outbox_pending = m.outbox_pending;
        self.outbox_oldest_age_secs = age(m.outbox_oldest_at);
        self
    }
}

const THROTTLE_BITS: &[(u32, &str)] = &[
    (0, "under_voltage"),
    (1, "freq_capped"),
    (2, "throttled"),
    (3, "soft_temp_limit"),
    (16, "under_voltage_occurred"),
    (17, "freq_capped_occurred"),
    (18, "throttled_occurred"),
    (19, "soft_temp_limit_occurred"),
];

/// Reads everything now. A handful of small sysfs/procfs reads and one
/// `statvfs`: cheap enough for the link's task.
pub fn collect(sources: &Sources, data_dir: &Path, uptime: Duration, c: Counters) -> Telemetry {
    let throttled = read_trimmed(&sources.throttled).and_then(|t| parse_throttled(&t));
    Telemetry {
        at: Utc::now(),
        uptime_secs: uptime.as_secs(),
        rss_bytes: read_trimmed(&sources.statm).and_then(|t| rss_from_statm(&t)),
        cpu_temp_c: read_trimmed(&sources.thermal).and_then(|t| parse_millidegrees(&t)),
        throttled,
        throttled_flags: throttled.map(throttle_flags),
        disk_free_bytes: crate::disk::free_bytes(data_dir),
        fault: None,
        db_bytes: db_bytes(data_dir),
        reconnects: c.reconnects,
        mqtt_reconnects: c.mqtt_reconnects,
        mqtt_queue: c.mqtt_queue,
        events_dropped: c.events_dropped,
        responses_dropped: c.responses_dropped,
        inbox_pending: 0,
        inbox_oldest_age_secs: None,
        outbox_pending: 0,
        outbox_oldest_age_secs: None,
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// `thermal_zone0/temp` is in millidegrees Celsius.
fn parse_millidegrees(text: &str) -> Option<f64> {
    text.parse::<i64>()
        .ok()
        .map(|m| (m as f64 / 100.0).round() / 10.0)
}

/// `get_throttled` is hex, with or without `0x` (or `throttled=0x…` from
/// `vcgencmd`).
fn parse_throttled(text: &str) -> Option<u32> {
    let hex = text.rsplit('=').next().unwrap_or(text).trim();
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    u32::from_str_radix(hex, 16).ok()
}

fn throttle_flags(bits: u32) -> Vec<&'static str> {
    THROTTLE_BITS
        .iter()
        .filter(|(bit, _)| bits & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// `statm`'s second field is resident pages.
fn rss_from_statm(text: &str) -> Option<u64> {
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

fn db_bytes(dir: &Path) -> Option<u64> {
    let db = dir.join(outlet_store::lock::DB_FILE_NAME);
    let main = std::fs::metadata(&db).ok()?.len();
    let mut wal_path = db.into_os_string();
    wal_path.push("-wal");
    let wal = std::fs::metadata(&wal_path).map(|m| m.len()).unwrap_or(0);
    Some(main + wal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pi_figures_parse() {
        assert_eq!(parse_millidegrees("48312"), Some(48.3));
        assert_eq!(parse_throttled("50005"), Some(0x50005));
        assert_eq!(parse_throttled("throttled=0x0"), Some(0));
        assert_eq!(parse_throttled("0x80000"), Some(0x80000));
        assert_eq!(parse_throttled("junk"), None);
        assert_eq!(
            throttle_flags(0x50005),
            vec![
                "under_voltage",
                "throttled",
                "under_voltage_occurred",
                "throttled_occurred"
            ]
        );
        assert!(rss_from_statm("1000 250 100 1 0 200 0").is_some());
    }

    #[test]
    fn absent_sources_are_null() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sources = Sources {
            thermal: dir.path().join("none"),
            throttled: dir.path().join("none"),
            statm: "/proc/self/statm".into(),
        };
        let t = collect(
            &sources,
            dir.path(),
            Duration::from_secs(5),
            Counters::default(),
        );
        assert_eq!(t.cpu_temp_c, None);
        assert_eq!(t.throttled, None);
        assert_eq!(t.db_bytes, None, "no session.db yet");
        assert!(t.rss_bytes.is_some_and(|r| r > 0));
        assert!(t.disk_free_bytes.is_some());
        let json = serde_json::to_value(&t).expect("json");
        assert!(json["cpu_temp_c"].is_null());
        assert!(json["throttled_flags"].is_null());

        std::fs::write(dir.path().join("session.db"), [0u8; 100]).expect("db");
        std::fs::write(dir.path().join("session.db-wal"), [0u8; 20]).expect("wal");
        assert_eq!(db_bytes(dir.path()), Some(120));
    }
}
