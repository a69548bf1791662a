//! The agent's MQTT discovery, checked against Home Assistant itself
//! (2024.3, Python 3.11, and 2025.4, Python 3.13): every entity the agent
//! announces is accepted, shows the outlet's truth, and its buttons reach
//! the agent.
//!
//! Ignored by `tests/run`: Home Assistant is a 1-2 GB install.
//! `tests/home-assistant/run` installs both versions (once) and runs these;
//! `.ci/run` calls it.

mod common;
#[path = "common/home_assistant.rs"]
mod home_assistant;
#[path = "common/mqtt.rs"]
mod mqtt;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use home_assistant::HomeAssistant;
use mqtt::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);
/// A customer: a contact of the fake server.
const BUDI: &str = "6281111111111";

/// The connectivity entity's attributes: the deliberate few the agent's
/// template picks, plus what HA adds to every entity.
const CONNECTIVITY_ATTRIBUTES: [&str; 6] = [
    "session_state",
    "since",
    "phone",
    "last_connected_at",
    "next_retry_at",
    "last_message_in_at",
];
const HA_ATTRIBUTES: [&str; 3] = ["device_class", "friendly_name", "icon"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Home Assistant 2024.3: tests/home-assistant/run"]
async fn home_assistant_2024_3_accepts_every_entity_and_its_buttons_reach_the_agent() {
    check("2024.3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Home Assistant 2025.4: tests/home-assistant/run"]
async fn home_assistant_2025_4_accepts_every_entity_and_its_buttons_reach_the_agent() {
    check("2025.4").await;
}

/// One discovery config as the agent published it.
struct Announced {
    topic: String,
    config: Value,
}

async fn check(version: &str) {
    let broker = Broker::start("allow_anonymous true").await;
    let url = broker.url(false);
    let mut ha = HomeAssistant::start(version, broker.port).await;

    let id = unique("ha");
    let prefix = format!("outlet/{id}");
    let server = server().await;
    let mut agent = Agent::start(
        &server,
        &[
            ("OUTLET_AGENT__OUTLET__ID", &id),
            ("OUTLET_AGENT__MQTT__BROKER", &url),
            ("OUTLET_AGENT__MQTT__KEEPALIVE_SECS", "2"),
            ("OUTLET_AGENT__MQTT__TELEMETRY_INTERVAL_SECS", "2"),
        ],
    );
    agent.pair(&server).await;

    // What the agent announces, read back from the broker as HA reads it.
    let node = format!("outlet-agent-{id}");
    // The library's own list says which topics; every one must be there.
    let expected: BTreeSet<String> =
        outlet_agent::mqtt::discovery::messages(&agent_config(&id), &topics(&id))
            .into_iter()
            .map(|m| m.topic)
            .collect();
    let discovery = format!("homeassistant/+/{node}/+/config");
    let mut sub = Subscriber::connect(&url, &[&discovery]).await;
    let deadline = Instant::now() + WAIT;
    let latest = |seen: &[Msg]| -> BTreeMap<String, Value> {
        seen.iter()
            .filter(|m| !m.payload.is_empty())
            .map(|m| (m.topic.clone(), m.json()))
            .collect()
    };
    while latest(&sub.seen).keys().cloned().collect::<BTreeSet<_>>() != expected {
        let left = deadline.saturating_duration_since(Instant::now());
        if sub.try_wait_for(left, |_| true).await.is_none() {
            let got: BTreeSet<String> = latest(&sub.seen).into_keys().collect();
            panic!(
                "the agent announces {:?}, not {:?}",
                got.symmetric_difference(&expected).collect::<Vec<_>>(),
                expected
            );
        }
    }
    let announced: Vec<Announced> = latest(&sub.seen)
        .into_iter()
        .map(|(topic, config)| Announced { topic, config })
        .collect();

    // Every one of them is an entity of HA's MQTT integration, with a
    // state: accepted, not just parsed.
    let entities = entities_of(&ha, &announced, &id).await;
    wait_states(&ha, &entities, "every entity available", |s| {
        s.values().all(|s| s["state"] != "unavailable")
    })
    .await;
    let refused = ha.refusals();
    assert!(refused.is_empty(), "HA refused:\n{}", refused.join("\n"));

    // The outlet's truth, as HA shows it.
    let states = wait_states(&ha, &entities, "connected, with telemetry", |s| {
        let of = |object: &str| &s[&entities[object]];
        of("connectivity")["state"] == "on"
            && of("state")["state"] == "connected"
            && of("uptime")["state"]
                .as_str()
                .is_some_and(|v| v.parse::<f64>().is_ok())
    })
    .await;
    let of = |object: &str| &states[&entities[object]];
    let attributes: BTreeSet<String> = of("connectivity")["attributes"]
        .as_object()
        .expect("attributes")
        .keys()
        .cloned()
        .collect();
    let allowed: BTreeSet<String> = CONNECTIVITY_ATTRIBUTES
        .iter()
        .chain(&HA_ATTRIBUTES)
        .map(|s| s.to_string())
        .collect();
    assert!(
        attributes.is_subset(&allowed) && attributes.contains("since"),
        "the connectivity entity's attributes: {attributes:?}"
    );
    assert_eq!(
        of("connectivity")["attributes"]["session_state"],
        "connected",
        "{}",
        of("connectivity")
    );
    let phone = of("phone")["state"].as_str().expect("a phone").to_string();
    assert!(
        phone.ends_with("7890") && phone.contains('*'),
        "a masked number: {phone}"
    );
    // 2025.4 keeps an enum's options and refuses a state outside them.
    if version != "2024.3" {
        let announced_options = announced
            .iter()
            .find(|a| a.topic.ends_with("/state/config"))
            .map(|a| a.config["options"].clone())
            .expect("the session state sensor");
        assert_eq!(of("state")["attributes"]["options"], announced_options);
    }

    // No message yet: the last-message sensors are unknown, quietly (the
    // refusals would say otherwise). A customer writes; HA shows when.
    assert_eq!(of("last_message_in")["state"], "unknown");
    reachable(&server).await;
    server
        .contacts()
        .send_text(BUDI, "Halo, apakah toko buka?")
        .await
        .expect("Budi writes");
    let states = wait_states(&ha, &entities, "the last message's time", |s| {
        s[&entities["last_message_in"]]["state"]
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
    })
    .await;
    let of = |object: &str| &states[&entities[object]];
    assert_eq!(of("last_message_out")["state"], "unknown");

    // The buttons reach the agent, and its answer comes back.
    let mut answers = Subscriber::connect(&url, &[&format!("{prefix}/response/+")]).await;
    press(&ha, &entities["refresh_qr"]).await;
    let answer = answers
        .wait_for("the answer to HA's New QR button", WAIT, |m| {
            m.topic.ends_with("/response/refresh_qr")
        })
        .await;
    assert!(answer.json()["status"].is_string(), "{}", answer.text());
    let attempts = server.stats().attempts.len();
    let connected_at = of("connectivity")["attributes"]["last_connected_at"].clone();
    assert!(connected_at.is_string(), "{}", of("connectivity"));
    press(&ha, &entities["reconnect"]).await;
    let answer = answers
        .wait_for("the answer to HA's Reconnect button", WAIT, |m| {
            m.topic.ends_with("/response/reconnect")
        })
        .await;
    assert_eq!(answer.json()["status"], "ok", "{}", answer.text());
    let deadline = Instant::now() + WAIT;
    while server.stats().attempts.len() <= attempts {
        assert!(
            Instant::now() < deadline,
            "the Reconnect button made no new connection\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_states(
        &ha,
        &entities,
        "connected again, on a new connection",
        |s| {
            let connectivity = &s[&entities["connectivity"]];
            connectivity["state"] == "on"
                && connectivity["attributes"]["last_connected_at"] != connected_at
        },
    )
    .await;

    // HA restarts, as after a power cut at HQ: its birth message
    // (`homeassistant/status` = `online`) makes the agent announce itself
    // again, live, and the new HA shows the outlet as it is.
    let mut announcements = Subscriber::connect(&url, &[&discovery]).await;
    ha.restart().await;
    announcements
        .wait_for("the agent's announcements after HA's birth", WAIT, |m| {
            !m.retain
        })
        .await;
    wait_states(&ha, &entities, "connected after HA's restart", |s| {
        s[&entities["connectivity"]]["state"] == "on"
            && s[&entities["state"]]["state"] == "connected"
    })
    .await;

    // A dead agent: the broker's last will makes the whole device
    // unavailable in HA.
    agent.signal("KILL");
    agent.wait_exit().await;
    wait_states(&ha, &entities, "every entity unavailable", |s| {
        s.values().all(|s| s["state"] == "unavailable")
    })
    .await;
    let refused = ha.refusals();
    assert!(refused.is_empty(), "HA refused:\n{}", refused.join("\n"));
}

/// The config the agent under test runs with, for the library's own list
/// of what it announces.
fn agent_config(id: &str) -> outlet_agent::config::Config {
    let mut config = outlet_agent::config::Config::default();
    config.outlet.id = id.to_string();
    config.mqtt.telemetry_interval_secs = 2;
    config
}

fn topics(id: &str) -> outlet_agent::topics::Topics {
    let config = outlet_agent::config::Config::default();
    outlet_agent::topics::Topics::new(&config.mqtt.topic_prefix, id).expect("topics")
}

/// Object id (the discovery topic's fourth level) → HA entity id, from
/// HA's entity registry; waits until every announced entity is there.
async fn entities_of(
    ha: &HomeAssistant,
    announced: &[Announced],
    id: &str,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let registry = ha.ws(json!({"type": "config/entity_registry/list"})).await;
        let by_unique_id: BTreeMap<&str, &str> = registry
            .as_array()
            .expect("registry entries")
            .iter()
            .filter(|e| e["platform"] == "mqtt")
            .filter_map(|e| Some((e["unique_id"].as_str()?, e["entity_id"].as_str()?)))
            .collect();
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        for a in announced {
            let object = a.topic.split('/').nth(3).expect("an object id").to_string();
            let unique_id = a.config["unique_id"].as_str().expect("a unique id");
            match by_unique_id.get(unique_id) {
                Some(entity) => {
                    found.insert(object, entity.to_string());
                }
                None => missing.push(a.topic.clone()),
            }
        }
        if missing.is_empty() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "HA has no entity for {missing:?} (outlet {id})\nrefused: {:?}\n{}",
            ha.refusals(),
            ha.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// HA's states of `entities` (entity id → state object), once `ready`
/// holds for them. A refusal in HA's log ends the wait at once.
async fn wait_states(
    ha: &HomeAssistant,
    entities: &BTreeMap<String, String>,
    what: &str,
    ready: impl Fn(&BTreeMap<String, Value>) -> bool,
) -> BTreeMap<String, Value> {
    let wanted: BTreeSet<&String> = entities.values().collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let all = ha.get("/api/states").await;
        let states: BTreeMap<String, Value> = all
            .as_array()
            .expect("states")
            .iter()
            .filter_map(|s| Some((s["entity_id"].as_str()?.to_string(), s.clone())))
            .filter(|(entity, _)| wanted.contains(entity))
            .collect();
        if states.len() == wanted.len() && ready(&states) {
            return states;
        }
        let refused = ha.refusals();
        assert!(refused.is_empty(), "HA refused:\n{}", refused.join("\n"));
        assert!(
            Instant::now() < deadline,
            "HA {}: not {what} within {WAIT:?}: {:#?}\n{}",
            ha.version,
            states
                .iter()
                .map(|(e, s)| format!("{e} = {}", s["state"]))
                .collect::<Vec<_>>(),
            ha.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn press(ha: &HomeAssistant, entity: &str) {
    ha.request(
        "POST",
        "/api/services/button/press",
        &json!({ "entity_id": entity }),
    )
    .await;
}
