//! `outlet-agent fleet`: every outlet's retained health from the broker,
//! one line each, for HQ's terminal.
//!
//! It reads what the agents left retained (`state` and `availability` under
//! every outlet's prefix: `outlet/+/…` by default, or the config's
//! `mqtt.topic_prefix` with `+` for `{outlet_id}`) until the broker has been
//! quiet for a moment, prints, and exits. A snapshot whose `valid_until` has passed is flagged
//! `STALE`: the agent stopped refreshing it, whatever it says.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeFilter};
use serde_json::Value;

use super::CmdResult;
use crate::cmd::{EXIT_CONFIG, EXIT_FAILURE, Failure, OrExit};
use crate::config::BrokerAddress;
use crate::config::MqttConfig;
use crate::mqtt::options;
use crate::phone::mask_phone;
use crate::topics::{OUTLET_ID, PrefixPattern};

/// The longest line printed for one outlet.
pub const MAX_LINE_CHARS: usize = 300;

/// However busy the broker, the command ends after this.
const OVERALL: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{0}")]
    Options(#[from] options::OptionsError),
    #[error("MQTT {broker}: {message}")]
    Connection { broker: String, message: String },
    #[error("MQTT {0}: no answer to the subscription within {OVERALL:?}")]
    Timeout(String),
}

/// What the broker holds for one outlet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outlet {
    pub availability: Option<String>,
    pub state: Option<Value>,
}

pub async fn run(
    config_path: Option<&Path>,
    broker: Option<String>,
    prefix: Option<String>,
    quiet_ms: u64,
) -> CmdResult {
    let (config, pattern) = fleet_config(config_path, broker, prefix)?;
    let outlets = collect(&config.mqtt, &pattern, Duration::from_millis(quiet_ms))
        .await
        .or_exit(EXIT_FAILURE)?;
    if outlets.is_empty() {
        eprintln!(
            "outlet-agent: no outlet has retained state under {}",
            pattern.filter("state")
        );
    }
    let now = Utc::now();
    let width = outlets.keys().map(String::len).max().unwrap_or(0);
    for (id, outlet) in &outlets {
        println!("{}", printable(&line(id, outlet, now, width)));
    }
    Ok(())
}

/// What the broker handed over, safe for a terminal: anyone who may write
/// an outlet's retained state could otherwise send escape sequences to the
/// operator's terminal (move the cursor, rewrite lines, set the title).
/// Control characters are shown escaped (`\u{1b}`), and a line is cut at
/// [`MAX_LINE_CHARS`] (a hostile outlet's 600 KB state is one line too).
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_LINE_CHARS * 4));
    for (i, c) in text.chars().enumerate() {
        if i == MAX_LINE_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// `fleet --serve`: the live web dashboard (`crate::dashboard`), until
/// stopped. Logs go to stderr as the agent's do.
pub async fn serve(
    config_path: Option<&Path>,
    broker: Option<String>,
    prefix: Option<String>,
    addr: std::net::SocketAddr,
    token_file: Option<&Path>,
    tls: Option<&crate::dashboard::TlsFiles>,
) -> CmdResult {
    let (config, pattern) = fleet_config(config_path, broker, prefix)?;
    crate::logging::init(&config.log);
    let filter = pattern.filter("state");
    let result = crate::dashboard::serve(
        &config.mqtt,
        pattern,
        addr,
        token_file,
        tls,
        |bound, token| {
            let access = if token {
                "token required"
            } else {
                "loopback, no token"
            };
            // The one line a person (or a test) needs, on stdout: where to
            // point the browser. The journal gets it too.
            let scheme = if tls.is_some() { "https" } else { "http" };
            let where_ =
                format!("dashboard on {scheme}://{bound}/ ({access}), outlets under {filter}");
            println!("{where_}");
            tracing::info!("{where_}");
        },
    )
    .await;
    match result {
        Ok(()) => Ok(()),
        Err(
            e @ (crate::dashboard::DashboardError::Access(_)
            | crate::dashboard::DashboardError::Tls(_)),
        ) => Err(Failure::new(EXIT_CONFIG, e.to_string())),
        Err(e) => Err(Failure::new(EXIT_FAILURE, e.to_string())),
    }
}

/// The config with `--broker` applied, and the outlets' topic pattern from
/// `--prefix` or `mqtt.topic_prefix`.
pub(super) fn fleet_config(
    config_path: Option<&Path>,
    broker: Option<String>,
    prefix: Option<String>,
) -> Result<(crate::config::Config, PrefixPattern), Failure> {
    let mut config = super::load_config(config_path)?;
    if let Some(broker) = broker {
        BrokerAddress::parse(&broker).or_exit_with(EXIT_CONFIG, "--broker")?;
        config.mqtt.broker = crate::config::Brokers::one(&broker);
    }
    let (what, prefix) = match prefix {
        Some(prefix) => ("--prefix", prefix),
        None if !config.mqtt.topic_prefix.contains(OUTLET_ID) => {
            return Err(Failure::new(
                EXIT_CONFIG,
                format!(
                    "mqtt.topic_prefix {:?} names one outlet (no {OUTLET_ID}); \
                     give the fleet's with --prefix",
                    config.mqtt.topic_prefix
                ),
            ));
        }
        None => ("mqtt.topic_prefix", config.mqtt.topic_prefix.clone()),
    };
    let pattern = PrefixPattern::parse(&prefix).or_exit_with(EXIT_CONFIG, what)?;
    Ok((config, pattern))
}

/// Subscribes and gathers retained messages until `quiet` passes without
/// one.
pub async fn collect(
    mqtt: &MqttConfig,
    pattern: &PrefixPattern,
    quiet: Duration,
) -> Result<BTreeMap<String, Outlet>, FleetError> {
    // The first node: every node of a cluster holds the same retained
    // messages, and a one-shot listing that fails is simply run again.
    let url = mqtt.broker.first();
    let broker = BrokerAddress::parse(url)
        .map_err(options::OptionsError::from)?
        .to_string();
    let client_id = format!("outlet-fleet-{}", std::process::id());
    let options = options::client_options(mqtt, url, &client_id, None)?;
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    // QoS 0, as the dashboard: retained state only, no JetStream consumer
    // on a NATS cluster.
    let filters = ["state", "availability"]
        .map(|leaf| SubscribeFilter::new(pattern.filter(leaf), QoS::AtMostOnce));
    client
        .try_subscribe_many(filters)
        .map_err(|e| FleetError::Connection {
            broker: broker.clone(),
            message: e.to_string(),
        })?;

    let started = Instant::now();
    let mut outlets: BTreeMap<String, Outlet> = BTreeMap::new();
    let mut last_heard: Option<Instant> = None;
    loop {
        let wait = match last_heard {
            Some(at) => quiet.saturating_sub(at.elapsed()),
            None => OVERALL.saturating_sub(started.elapsed()),
        };
        if started.elapsed() >= OVERALL {
            break;
        }
        match tokio::time::timeout(wait, eventloop.poll()).await {
            Err(_) if last_heard.is_some() => break,
            Err(_) => return Err(FleetError::Timeout(broker)),
            Ok(Err(e)) => {
                return Err(FleetError::Connection {
                    broker,
                    message: e.to_string(),
                });
            }
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => last_heard = Some(Instant::now()),
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                record(&mut outlets, pattern, &p.topic, &p.payload);
                last_heard = Some(Instant::now());
            }
            Ok(Ok(_)) => {}
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await;
    Ok(outlets)
}

fn record(
    outlets: &mut BTreeMap<String, Outlet>,
    pattern: &PrefixPattern,
    topic: &str,
    payload: &[u8],
) {
    let Some((id, leaf)) = pattern.split(topic) else {
        return;
    };
    if payload.is_empty() {
        return;
    }
    let outlet = outlets.entry(id.to_string()).or_default();
    match leaf {
        "availability" => outlet.availability = Some(String::from_utf8_lossy(payload).into()),
        "state" => outlet.state = serde_json::from_slice(payload).ok(),
        _ => {}
    }
}

/// `jkt-01  online   connected      +*********7890  since 2026-…  [STALE …]`
pub fn line(id: &str, outlet: &Outlet, now: DateTime<Utc>, width: usize) -> String {
    let availability = outlet.availability.as_deref().unwrap_or("unknown");
    let field = |name: &str| {
        outlet
            .state
            .as_ref()
            .and_then(|s| s.get(name))
            .and_then(Value::as_str)
    };
    let state = field("state").unwrap_or("-");
    let phone = field("phone").map(mask_phone).unwrap_or_else(|| "-".into());
    let since = field("since").unwrap_or("-");
    let mut text = format!("{id:<width$}  {availability:<8} {state:<17} {phone:<16} since {since}");
    let valid_until = field("valid_until").and_then(|v| v.parse::<DateTime<Utc>>().ok());
    match valid_until {
        Some(until) if until < now => {
            text.push_str(&format!("  STALE (valid until {})", until.to_rfc3339()));
        }
        None if outlet.state.is_some() => text.push_str("  STALE (no valid_until)"),
        _ => {}
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    #[test]
    fn escape_sequences_from_the_broker_do_not_reach_the_terminal() {
        let hostile = "jkt-01\u{1b}]0;pwned\u{7}\u{1b}[2J connected";
        let shown = printable(hostile);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.contains("\\u{1b}"), "{shown:?}");
        assert_eq!(printable("jkt-01 connected 😀"), "jkt-01 connected 😀");
        let long = printable(&"x".repeat(600_000));
        assert_eq!(
            long.chars().count(),
            MAX_LINE_CHARS + 1,
            "cut, with an ellipsis"
        );
    }

    #[test]
    fn lines_mask_the_phone_and_flag_stale_states() {
        let now = Utc::now();
        let fresh = Outlet {
            availability: Some("online".into()),
            state: Some(json!({
                "state": "connected",
                "phone": "+6281234567890",
                "since": "2026-11-23T08:00:00Z",
                "valid_until": (now + chrono::Duration::seconds(30)).to_rfc3339(),
            })),
        };
        let text = line("jkt-01", &fresh, now, 6);
        assert!(text.contains("online"), "{text}");
        assert!(text.contains("connected"), "{text}");
        assert!(text.contains("+*********7890"), "{text}");
        assert!(!text.contains("STALE"), "{text}");

        let mut stale = fresh.clone();
        stale.availability = Some("offline".into());
        if let Some(s) = stale.state.as_mut() {
            s["valid_until"] = json!((now - chrono::Duration::seconds(1)).to_rfc3339());
        }
        assert!(line("jkt-01", &stale, now, 6).contains("STALE"));
    }

    #[test]
    fn records_are_keyed_by_outlet_id() {
        let mut outlets = BTreeMap::new();
        let p = PrefixPattern::parse("outlet").expect("plain prefix");
        record(&mut outlets, &p, "outlet/a/availability", b"online");
        record(&mut outlets, &p, "outlet/a/state", br#"{"state":"paused"}"#);
        record(&mut outlets, &p, "other/b/state", b"{}");
        record(&mut outlets, &p, "outlet/c/state", b"");
        assert_eq!(outlets.len(), 1);
        assert_eq!(outlets["a"].availability.as_deref(), Some("online"));
        assert_eq!(
            outlets["a"].state.as_ref().map(|s| s["state"].clone()),
            Some(json!("paused"))
        );
    }
}
