//! HQ's side of the message tests: an outlet with its own topics, a linked
//! agent, and waiting on what HQ and the contacts' phones see.
//!
//! Included by the message test files as `#[path = "common/hq.rs"] mod hq;`
//! next to `mod common;` and `mod mqtt;`.

#![allow(dead_code)]

use std::time::Duration;

use fake_whatsapp::FakeServer;
use serde_json::{Value, json};

use super::common::*;
use super::mqtt::*;

pub const WAIT: Duration = Duration::from_secs(90);

pub struct Outlet {
    pub id: String,
    pub prefix: String,
    pub broker: String,
}

impl Outlet {
    pub fn new(tag: &str, broker: &str) -> Outlet {
        let id = unique(tag);
        Outlet {
            prefix: format!("outlet/{id}"),
            id,
            broker: broker.to_string(),
        }
    }

    pub fn env<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env = vec![
            ("OUTLET_AGENT__OUTLET__ID", self.id.as_str()),
            ("OUTLET_AGENT__MQTT__BROKER", self.broker.as_str()),
            ("OUTLET_AGENT__MQTT__DISCOVERY", "false"),
            ("OUTLET_AGENT__MESSAGES__MAX_PER_MINUTE", "0"),
        ];
        env.extend_from_slice(extra);
        env
    }

    pub fn topic(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.prefix)
    }

    pub async fn hq(&self) -> Subscriber {
        Subscriber::connect(
            &self.broker,
            &[
                &self.topic("message/#"),
                &self.topic("response/+"),
                &self.topic("state"),
            ],
        )
        .await
    }

    pub async fn clean_up(&self) {
        let config = outlet_agent::config::MqttConfig {
            broker: outlet_agent::config::Brokers::one(&self.broker),
            ..Default::default()
        };
        clear_retained(&config, &[&format!("{}/#", self.prefix)]).await;
    }
}

/// A linked, connected outlet and HQ's subscriber.
pub async fn linked(
    server: &FakeServer,
    outlet: &Outlet,
    extra: &[(&str, &str)],
) -> (Agent, Subscriber) {
    let hq = outlet.hq().await;
    let mut agent = Agent::start(server, &outlet.env(extra));
    agent.pair(server).await;
    reachable(server).await;
    (agent, hq)
}

pub fn inbound_texts(hq: &Subscriber, outlet: &Outlet) -> Vec<String> {
    let topic = outlet.topic("message/in");
    hq.seen
        .iter()
        .filter(|m| m.topic == topic)
        .filter_map(|m| m.json()["text"].as_str().map(str::to_string))
        .collect()
}

pub async fn wait_inbound(hq: &mut Subscriber, outlet: &Outlet, text: &str) -> Value {
    let topic = outlet.topic("message/in");
    hq.seen_or_wait(&format!("message/in {text:?}"), WAIT, |m| {
        m.topic == topic && m.json()["text"] == json!(text)
    })
    .await
    .json()
}

pub async fn wait_status(hq: &mut Subscriber, outlet: &Outlet, id: &str, status: &str) -> Value {
    let topic = outlet.topic("message/status");
    hq.seen_or_wait(&format!("status {status} of {id}"), WAIT, |m| {
        m.topic == topic && m.json()["id"] == json!(id) && m.json()["status"] == json!(status)
    })
    .await
    .json()
}

/// What `number`'s phone shows from the outlet with `text`.
pub fn received_by(server: &FakeServer, number: &str, text: &str) -> usize {
    server
        .contacts()
        .inbox(number)
        .expect("a contact")
        .iter()
        .filter(|e| e.device == 0 && e.text.as_deref() == Some(text))
        .count()
}

pub async fn wait_received(server: &FakeServer, number: &str, text: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while received_by(server, number, text) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{number} never received {text:?}: {:?}",
            server.contacts().inbox(number)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
