//! `outlet-agent fleet`: every outlet's retained health from the broker,
//! one line each, for HQ's terminal.
//!
//! It reads what the agents left retained (`<prefix>/+/state` and
//! `<prefix>/+/availability`) until the broker has been quiet for a moment,
//! prints, and exits. A snapshot whose `valid_until` has passed is flagged
//! `STALE`: the agent stopped refreshing it, whatever it says.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeFilter};
use serde_json::Value;

use crate::cli::{EXIT_CONFIG, EXIT_FAILURE, EXIT_OK};
use crate::config::MqttConfig;
use crate::health::mask_phone;
use crate::mqtt::options::{self, BrokerAddress};
use crate::mqtt::topics::validate_prefix;

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
    prefix: &str,
    quiet_ms: u64,
) -> i32 {
    let mut config = match super::load_config(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Some(broker) = broker {
        if let Err(e) = BrokerAddress::parse(&broker) {
            eprintln!("outlet-agent: --broker: {e}");
            return EXIT_CONFIG;
        }
        config.mqtt.broker = broker;
    }
    if let Err(e) = validate_prefix(prefix) {
        eprintln!("outlet-agent: --prefix: {e}");
        return EXIT_CONFIG;
    }
    match collect(&config.mqtt, prefix, Duration::from_millis(quiet_ms)).await {
        Ok(outlets) if outlets.is_empty() => {
            eprintln!("outlet-agent: no outlet has retained state under {prefix}/");
            EXIT_OK
        }
        Ok(outlets) => {
            let now = Utc::now();
            let width = outlets.keys().map(String::len).max().unwrap_or(0);
            for (id, outlet) in &outlets {
                println!("{}", line(id, outlet, now, width));
            }
            EXIT_OK
        }
        Err(e) => {
            eprintln!("outlet-agent: {e}");
            EXIT_FAILURE
        }
    }
}

/// Subscribes and gathers retained messages until `quiet` passes without
/// one.
pub async fn collect(
    mqtt: &MqttConfig,
    prefix: &str,
    quiet: Duration,
) -> Result<BTreeMap<String, Outlet>, FleetError> {
    let broker = BrokerAddress::parse(&mqtt.broker)?.to_string();
    let client_id = format!("outlet-fleet-{}", std::process::id());
    let options = options::client_options(mqtt, &client_id, None)?;
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    let filters = ["state", "availability"]
        .map(|leaf| SubscribeFilter::new(format!("{prefix}/+/{leaf}"), QoS::AtLeastOnce));
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
                record(&mut outlets, prefix, &p.topic, &p.payload);
                last_heard = Some(Instant::now());
            }
            Ok(Ok(_)) => {}
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await;
    Ok(outlets)
}

fn record(outlets: &mut BTreeMap<String, Outlet>, prefix: &str, topic: &str, payload: &[u8]) {
    let Some(rest) = topic.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return;
    };
    let Some((id, leaf)) = rest.split_once('/') else {
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
        record(&mut outlets, "outlet", "outlet/a/availability", b"online");
        record(
            &mut outlets,
            "outlet",
            "outlet/a/state",
            br#"{"state":"paused"}"#,
        );
        record(&mut outlets, "outlet", "other/b/state", b"{}");
        record(&mut outlets, "outlet", "outlet/c/state", b"");
        assert_eq!(outlets.len(), 1);
        assert_eq!(outlets["a"].availability.as_deref(), Some("online"));
        assert_eq!(
            outlets["a"].state.as_ref().map(|s| s["state"].clone()),
            Some(json!("paused"))
        );
    }
}
