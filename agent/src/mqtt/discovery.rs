//! Home Assistant MQTT discovery: the retained configs that make an outlet
//! appear in HA (and in dashboards that read the same convention) with no
//! configuration on the dashboard side.
//!
//! Single-component discovery, one retained config per entity on
//! `<discovery_prefix>/<component>/<node_id>/<object_id>/config`, all tied
//! to one device. Every entity uses `<prefix>/availability`, so the broker's
//! last will turns the whole device unavailable; the connectivity sensor is
//! therefore `on` only when the state is `connected` *and* the agent is
//! online. Buttons publish `{}` to the request topics, which the request
//! parser reads as "no arguments".

use serde_json::{Value, json};

use crate::config::Config;
use crate::topics::Topics;

/// One retained discovery message.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryMessage {
    pub topic: String,
    pub payload: String,
}

/// The session states, for the `enum` sensor's `options`: derived, never
/// a hand-kept copy (Home Assistant rejects a state missing from it).
fn states() -> Vec<&'static str> {
    crate::health::SessionState::ALL
        .iter()
        .map(|s| s.as_str())
        .collect()
}

/// What the connectivity entity keeps as attributes: a deliberate few, not
/// the whole snapshot (HA's history would record every field of every
/// state message). `session_state`, not `state`: HA silently drops
/// attributes named like an entity's own properties (`state`, `icon`,
/// `name`, …; its MQTT_ATTRIBUTES_BLOCKED), as a real HA showed.
const CONNECTIVITY_ATTRIBUTES: &str = "{{ {'session_state': value_json.state, 'since': value_json.since, \
     'phone': value_json.phone, 'last_connected_at': value_json.last_connected_at, \
     'next_retry_at': value_json.next_retry_at, 'last_message_in_at': value_json.last_message_in_at} \
     | tojson }}";

/// A timestamp sensor's template for a field that may be null (no message
/// yet). Home Assistant 2024.3 reads a null, rendered `None`, as a date and
/// logs a warning for every state message (twice a TTL per outlet, from
/// every outlet that never sent a message); 2025.4 reads `None` as unknown.
/// A template error makes both keep the state they have, silently (HA
/// renders these templates with a default). Jinja has no `raise`:
/// assigning an attribute of a plain variable is the error it offers.
fn timestamp_or_keep(field: &str) -> String {
    format!(
        "{{% if value_json.{field} %}}{{{{ value_json.{field} }}}}\
         {{% else %}}{{% set unset = 0 %}}{{% set unset.keep = 0 %}}{{% endif %}}"
    )
}

/// All discovery messages for this outlet.
pub fn messages(config: &Config, topics: &Topics) -> Vec<DiscoveryMessage> {
    let id = &config.outlet.id;
    let node = format!("outlet-agent-{id}");
    let device_id = format!("outlet_agent_{}", id.replace('-', "_"));
    let device = json!({
        "identifiers": [device_id],
        "name": config.outlet.name,
        "model": "outlet-agent",
        "manufacturer": "outlet-agent",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let origin = json!({
        "name": "outlet-agent",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    // The supervisor refreshes the snapshot at half its TTL, so a state
    // older than the TTL means a wedged agent even while its MQTT
    // connection (and so its availability) still looks fine.
    let state_expiry = config.health.ttl_secs;
    let telemetry_expiry = config.mqtt.telemetry_interval_secs.saturating_mul(3);

    let mut entities: Vec<(&str, &str, Value)> = vec![
        (
            "binary_sensor",
            "connectivity",
            json!({
                "name": "WhatsApp connected",
                "device_class": "connectivity",
                "state_topic": topics.state(),
                "value_template": "{{ 'ON' if value_json.state == 'connected' else 'OFF' }}",
                "payload_on": "ON",
                "payload_off": "OFF",
                "expire_after": state_expiry,
                "json_attributes_topic": topics.state(),
                "json_attributes_template": CONNECTIVITY_ATTRIBUTES,
            }),
        ),
        (
            "sensor",
            "state",
            json!({
                "name": "Session state",
                "device_class": "enum",
                "options": states(),
                "state_topic": topics.state(),
                "value_template": "{{ value_json.state }}",
                "expire_after": state_expiry,
                "icon": "mdi:whatsapp",
            }),
        ),
        (
            "sensor",
            "phone",
            json!({
                "name": "Phone number",
                "state_topic": topics.state(),
                "value_template": "{{ value_json.phone }}",
                "icon": "mdi:phone",
            }),
        ),
        (
            "button",
            "reconnect",
            json!({
                "name": "Reconnect WhatsApp",
                "device_class": "restart",
                "command_topic": topics.request("reconnect"),
                "payload_press": "{}",
            }),
        ),
        (
            "button",
            "refresh_qr",
            json!({
                "name": "New QR code",
                "command_topic": topics.request("refresh_qr"),
                "payload_press": "{}",
                "icon": "mdi:qrcode",
            }),
        ),
    ];
    if config.messages_enabled() {
        // Messages are the truest liveness there is: "connected" and no
        // message for hours at a busy outlet is worth an automation.
        for (object, name, field) in [
            ("last_message_in", "Last message in", "last_message_in_at"),
            (
                "last_message_out",
                "Last message out",
                "last_message_out_at",
            ),
        ] {
            entities.push((
                "sensor",
                object,
                json!({
                    "name": name,
                    "device_class": "timestamp",
                    "state_topic": topics.state(),
                    "value_template": timestamp_or_keep(field),
                    "icon": "mdi:message-text-clock",
                }),
            ));
        }
        for (object, name, field) in [
            ("inbox_pending", "Messages waiting for HQ", "inbox_pending"),
            (
                "outbox_pending",
                "Messages waiting to be sent",
                "outbox_pending",
            ),
        ] {
            entities.push((
                "sensor",
                object,
                json!({
                    "name": name,
                    "state_class": "measurement",
                    "unit_of_measurement": "messages",
                    "state_topic": topics.state(),
                    "value_template": format!("{{{{ value_json.{field} }}}}"),
                    "entity_category": "diagnostic",
                    "icon": "mdi:message-processing",
                }),
            ));
        }
    }
    if config.mqtt.telemetry_interval_secs > 0 {
        let telemetry = |name: &str, field: &str, extra: Value| {
            let mut v = json!({
                "name": name,
                "state_topic": topics.telemetry(),
                "value_template": format!("{{{{ value_json.{field} }}}}"),
                "entity_category": "diagnostic",
                "expire_after": telemetry_expiry,
            });
            if let (Value::Object(map), Value::Object(extra)) = (&mut v, extra) {
                map.extend(extra);
            }
            v
        };
        entities.extend([
            (
                "sensor",
                "uptime",
                telemetry(
                    "Agent uptime",
                    "uptime_secs",
                    json!({"device_class": "duration", "unit_of_measurement": "s", "state_class": "measurement"}),
                ),
            ),
            (
                "sensor",
                "memory",
                telemetry(
                    "Agent memory",
                    "rss_bytes",
                    json!({"device_class": "data_size", "unit_of_measurement": "B", "state_class": "measurement"}),
                ),
            ),
            (
                "sensor",
                "cpu_temperature",
                telemetry(
                    "CPU temperature",
                    "cpu_temp_c",
                    json!({"device_class": "temperature", "unit_of_measurement": "°C", "state_class": "measurement"}),
                ),
            ),
            (
                "sensor",
                "throttled",
                telemetry(
                    "Throttling bits",
                    "throttled",
                    json!({"icon": "mdi:flash-alert"}),
                ),
            ),
            (
                "sensor",
                "disk_free",
                telemetry(
                    "Disk free",
                    "disk_free_bytes",
                    json!({"device_class": "data_size", "unit_of_measurement": "B", "state_class": "measurement"}),
                ),
            ),
            (
                "sensor",
                "db_size",
                telemetry(
                    "Session database size",
                    "db_bytes",
                    json!({"device_class": "data_size", "unit_of_measurement": "B", "state_class": "measurement"}),
                ),
            ),
            (
                "sensor",
                "reconnects",
                telemetry(
                    "WhatsApp reconnects",
                    "reconnects",
                    json!({"state_class": "total_increasing", "icon": "mdi:restart"}),
                ),
            ),
            (
                "sensor",
                "mqtt_queue",
                telemetry(
                    "MQTT queue depth",
                    "mqtt_queue",
                    json!({"state_class": "measurement", "icon": "mdi:tray-full"}),
                ),
            ),
        ]);
    }

    entities
        .into_iter()
        .map(|(component, object, mut body)| {
            if let Value::Object(map) = &mut body {
                map.insert("unique_id".into(), json!(format!("{device_id}_{object}")));
                map.insert("availability_topic".into(), json!(topics.availability()));
                map.insert("payload_available".into(), json!("online"));
                map.insert("payload_not_available".into(), json!("offline"));
                map.insert("device".into(), device.clone());
                map.insert("origin".into(), origin.clone());
                map.insert("qos".into(), json!(1));
            }
            DiscoveryMessage {
                topic: format!(
                    "{}/{component}/{node}/{object}/config",
                    config.mqtt.discovery_prefix
                ),
                payload: body.to_string(),
            }
        })
        .collect()
}

/// Where Home Assistant announces itself (`online` after it restarts).
pub fn status_topic(config: &Config) -> String {
    format!("{}/status", config.mqtt.discovery_prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entity_names_its_device_availability_and_topics() {
        let mut config = Config::default();
        config.outlet.id = "jkt-01".into();
        let topics = Topics::new(&config.mqtt.topic_prefix, &config.outlet.id).expect("valid");
        let messages = messages(&config, &topics);
        assert!(messages.len() >= 5);
        let mut unique = std::collections::HashSet::new();
        for m in &messages {
            assert!(m.topic.starts_with("homeassistant/"), "{}", m.topic);
            assert!(m.topic.ends_with("/config"));
            // HA's node and object ids: [a-zA-Z0-9_-] only.
            let levels: Vec<&str> = m.topic.split('/').collect();
            assert_eq!(levels.len(), 5, "{}", m.topic);
            for level in &levels[2..4] {
                assert!(
                    level
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                    "{level}"
                );
            }
            let v: Value = serde_json::from_str(&m.payload).expect("json");
            assert!(unique.insert(v["unique_id"].as_str().expect("id").to_string()));
            assert_eq!(v["availability_topic"], "outlet/jkt-01/availability");
            assert_eq!(v["device"]["identifiers"][0], "outlet_agent_jkt_01");
            assert_eq!(v["device"]["model"], "outlet-agent");
            assert!(v["origin"]["name"].is_string());
        }
        let button = messages
            .iter()
            .find(|m| m.topic.contains("/button/") && m.topic.contains("reconnect"))
            .expect("reconnect button");
        let v: Value = serde_json::from_str(&button.payload).expect("json");
        assert_eq!(v["command_topic"], "outlet/jkt-01/request/reconnect");
        assert_eq!(v["payload_press"], "{}");
        let connectivity = messages
            .iter()
            .find(|m| m.topic.contains("binary_sensor"))
            .expect("connectivity");
        let v: Value = serde_json::from_str(&connectivity.payload).expect("json");
        assert_eq!(v["device_class"], "connectivity");
        assert_eq!(v["state_topic"], "outlet/jkt-01/state");
    }

    #[test]
    fn the_state_options_and_attributes_match_the_snapshot() {
        let config = Config::default();
        let topics = Topics::new("x/{outlet_id}", "a").expect("valid");
        let all = messages(&config, &topics);
        let find = |needle: &str| {
            let m = all
                .iter()
                .find(|m| m.topic.contains(needle))
                .expect("entity");
            serde_json::from_str::<Value>(&m.payload).expect("json")
        };
        let options = find("/state/config")["options"].clone();
        let expected: Vec<Value> = crate::health::SessionState::ALL
            .iter()
            .map(|s| serde_json::to_value(s).expect("state"))
            .collect();
        assert_eq!(options, Value::Array(expected));
        // Every field the attribute template names is in the snapshot.
        let health = serde_json::to_value(crate::health::Health::new(
            "a",
            chrono::Utc::now(),
            chrono::Duration::seconds(60),
        ))
        .expect("health");
        let template = find("binary_sensor")["json_attributes_template"]
            .as_str()
            .expect("a template")
            .to_string();
        let fields: Vec<&str> = template
            .split("value_json.")
            .skip(1)
            .map(|rest| {
                rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("")
            })
            .collect();
        assert!(fields.len() >= 5, "{template}");
        // The attribute names: none HA would drop as one of an entity's
        // own properties (its MQTT_ATTRIBUTES_BLOCKED, old and new).
        let blocked = [
            "assumed_state",
            "available",
            "context_recent_time",
            "entity_registry_enabled_default",
            "friendly_name",
            "device_class",
            "device_info",
            "entity_category",
            "entity_picture",
            "extra_state_attributes",
            "force_update",
            "icon",
            "name",
            "should_poll",
            "state",
            "supported_features",
            "unique_id",
            "unit_of_measurement",
        ];
        let names: Vec<&str> = template.split('\'').skip(1).step_by(2).collect();
        assert!(names.len() >= 5, "{template}");
        for name in names {
            assert!(
                !blocked.contains(&name),
                "HA drops an attribute named {name}"
            );
        }
        for field in fields {
            assert!(
                health.get(field).is_some(),
                "{field} is not in the snapshot"
            );
        }
    }

    #[test]
    fn message_sensors_come_with_messages() {
        let mut config = Config::default();
        let topics = Topics::new("x/{outlet_id}", "a").expect("valid");
        let has = |config: &Config| {
            messages(config, &topics)
                .iter()
                .any(|m| m.topic.ends_with("/last_message_in/config"))
        };
        assert!(has(&config));
        config.messages.enabled = false;
        assert!(!has(&config));
    }

    #[test]
    fn telemetry_sensors_follow_the_interval() {
        let mut config = Config::default();
        config.mqtt.telemetry_interval_secs = 0;
        let topics = Topics::new("x/{outlet_id}", "a").expect("valid");
        assert!(
            messages(&config, &topics)
                .iter()
                .all(|m| !m.payload.contains("/telemetry"))
        );
    }
}
