//! The dashboard's one MQTT connection and what every page shares: the
//! fleet model, the live feed, and the requests waiting for their answers.
//!
//! The connection subscribes to every outlet's retained `state`,
//! `availability` and `telemetry`, its `event`s, the audit's retained
//! summary (`audit`, from `fleet audit`) and its `response/+`, and
//! feeds them into the [`FleetModel`]. Each change goes to every open page
//! as one pre-rendered server-sent event, so a thousand pages cost one
//! serialisation per change, not a thousand. It reconnects by itself (with
//! backoff, moving along `mqtt.broker`'s nodes) and says so on the pages:
//! a dashboard whose broker is gone must not look like a quiet fleet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS, SubscribeFilter};
use serde_json::{Value, json};
use tokio::sync::{broadcast, oneshot};

use super::fleet_model::{Change, FleetModel};
use super::http::sse_event;
use crate::config::MqttConfig;
use crate::mqtt::options::{self, Failover};
use crate::topics::PrefixPattern;

/// Changes kept for the pages (shared by all of them; each is one
/// outlet's bounded view, see `fleet_model`). A page that falls further
/// behind gets the whole fleet again (`server::feed`).
const FEED_BUFFER: usize = 64;

/// The commands the page may send (of the agent's `mqtt::requests::COMMANDS`;
/// `send` and `check_number` are for HQ's systems, not a button).
pub const ACTIONS: &[&str] = &[
    "reconnect",
    "refresh_qr",
    "pair_code",
    "pause",
    "resume",
    "logout",
    "status",
];

#[derive(Debug, Clone, PartialEq)]
pub struct BrokerStatus {
    pub connected: bool,
    pub broker: String,
    pub since: DateTime<Utc>,
    pub last_error: Option<String>,
}

impl BrokerStatus {
    pub fn to_json(&self) -> Value {
        json!({
            "connected": self.connected,
            "broker": self.broker,
            "since": self.since,
            "last_error": self.last_error,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("unknown action {0:?}")]
    Unknown(String),
    #[error("no outlet {0:?} on this broker")]
    NoSuchOutlet(String),
    #[error("the dashboard is not connected to the broker")]
    BrokerDown,
    #[error("the request could not be queued: {0}")]
    Queue(String),
    #[error("no response from {outlet} within {secs} s (is it online?)")]
    Timeout { outlet: String, secs: u64 },
}

pub struct Hub {
    model: Mutex<FleetModel>,
    broker: Mutex<BrokerStatus>,
    feed: broadcast::Sender<Bytes>,
    /// Requests waiting for their answers, by transaction.
    pending: Mutex<HashMap<String, Waiting>>,
    client: AsyncClient,
    /// Tells this dashboard's requests from another's.
    instance: String,
    /// Messages refused since the last report (logged as a count, so a
    /// hostile outlet cannot flood the log).
    ignored: Mutex<Ignored>,
}

#[derive(Default)]
struct Ignored {
    count: u64,
    reported_at: Option<Instant>,
}

/// Refused messages are reported at most this often.
const IGNORED_REPORT_EVERY: Duration = Duration::from_secs(60);

/// A request the page made, waiting for its answer: only the outlet it
/// went to may answer it, on that command's response topic. Under the
/// documented ACL every outlet may write its own `response/#`; matched by
/// transaction alone, outlet X could answer HQ's `pair_code` for outlet Y
/// with a code of its choosing.
struct Waiting {
    outlet: String,
    command: String,
    answer: oneshot::Sender<Value>,
}

/// A poisoned lock only means a panic elsewhere; the data is still whole
/// enough to show.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// Connects (in the background) and returns the hub and the task that
    /// keeps the connection.
    pub fn start(
        mqtt: &MqttConfig,
        pattern: PrefixPattern,
    ) -> Result<(Arc<Self>, tokio::task::JoinHandle<()>), options::OptionsError> {
        let instance = format!("dash-{}-{:x}", std::process::id(), rand::random::<u32>());
        let client_id = format!("outlet-{instance}");
        let failover = Failover::new(mqtt, &client_id);
        let opts = options::client_options(mqtt, failover.url(), &client_id, None)?;
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        eventloop.set_network_options(options::network_options());
        let (feed, _) = broadcast::channel(FEED_BUFFER);
        let hub = Arc::new(Self {
            model: Mutex::new(FleetModel::new(pattern)),
            broker: Mutex::new(BrokerStatus {
                connected: false,
                broker: failover.shown(),
                since: Utc::now(),
                last_error: None,
            }),
            feed,
            pending: Mutex::new(HashMap::new()),
            client,
            instance,
            ignored: Mutex::default(),
        });
        let task = tokio::spawn(drive(
            Arc::clone(&hub),
            eventloop,
            mqtt.clone(),
            failover,
            client_id,
        ));
        Ok((hub, task))
    }

    /// Every outlet and the broker link, as one JSON document.
    pub fn snapshot(&self) -> Value {
        let outlets = lock(&self.model).snapshot();
        json!({
            "now": Utc::now(),
            "broker": lock(&self.broker).to_json(),
            "outlets": outlets,
        })
    }

    /// [`Self::snapshot`] as the feed's `snapshot` event.
    pub fn snapshot_event(&self) -> Bytes {
        Bytes::from(sse_event("snapshot", &self.snapshot().to_string()))
    }

    /// The live feed: pre-rendered server-sent events.
    pub fn subscribe(&self) -> broadcast::Receiver<Bytes> {
        self.feed.subscribe()
    }

    fn publish_event(&self, name: &str, data: &Value) {
        // No page open is no error.
        let _ = self
            .feed
            .send(Bytes::from(sse_event(name, &data.to_string())));
    }

    /// Sends `command` to `outlet` and waits for its response.
    pub async fn act(
        &self,
        outlet: &str,
        command: &str,
        mut args: serde_json::Map<String, Value>,
        wait: Duration,
    ) -> Result<Value, ActionError> {
        if !ACTIONS.contains(&command) {
            return Err(ActionError::Unknown(command.to_string()));
        }
        let topic = {
            let model = lock(&self.model);
            if model.get(outlet).is_none() {
                return Err(ActionError::NoSuchOutlet(outlet.to_string()));
            }
            model.pattern().topic(outlet, &format!("request/{command}"))
        };
        if !lock(&self.broker).connected {
            return Err(ActionError::BrokerDown);
        }
        // Unguessable: no one who sees neither the request nor this
        // process can answer it ahead of the outlet.
        let transaction = format!("{}-{:016x}", self.instance, rand::random::<u64>());
        args.insert("transaction".into(), json!(transaction));
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(
            transaction.clone(),
            Waiting {
                outlet: outlet.to_string(),
                command: command.to_string(),
                answer: tx,
            },
        );
        let sent = self
            .client
            .publish(
                topic,
                QoS::AtLeastOnce,
                false,
                Value::Object(args).to_string(),
            )
            .await;
        if let Err(e) = sent {
            lock(&self.pending).remove(&transaction);
            return Err(ActionError::Queue(e.to_string()));
        }
        tracing::info!(outlet, command, "dashboard: request sent");
        let answer = tokio::time::timeout(wait, rx).await;
        lock(&self.pending).remove(&transaction);
        match answer {
            Ok(Ok(response)) => Ok(response),
            _ => Err(ActionError::Timeout {
                outlet: outlet.to_string(),
                secs: wait.as_secs(),
            }),
        }
    }

    fn on_message(&self, topic: &str, payload: &[u8]) {
        let change = lock(&self.model).apply(topic, payload);
        match change {
            Ok(None) => {}
            Ok(Some(Change::Outlet(id))) => {
                let view = lock(&self.model).get(&id).map(|v| v.to_json(&id));
                if let Some(view) = view {
                    self.publish_event("outlet", &view);
                }
            }
            Ok(Some(Change::Removed(id))) => self.publish_event("removed", &json!({ "id": id })),
            Ok(Some(Change::Response { outlet, response })) => {
                let Some(transaction) = response["transaction"].as_str() else {
                    return;
                };
                let mut pending = lock(&self.pending);
                let Some(waiting) = pending.get(transaction) else {
                    tracing::debug!(outlet, "dashboard: a response for another client");
                    return;
                };
                if waiting.outlet != outlet || response["command"] != waiting.command.as_str() {
                    // Not from the outlet asked: refused, and the request
                    // still waits for the real answer.
                    tracing::warn!(
                        outlet,
                        asked = %waiting.outlet,
                        "dashboard: an answer to another outlet's request; ignored"
                    );
                    return;
                }
                if let Some(waiting) = pending.remove(transaction) {
                    let _ = waiting.answer.send(response);
                }
            }
            Err(e) => {
                let mut ignored = lock(&self.ignored);
                ignored.count += 1;
                let due = ignored
                    .reported_at
                    .is_none_or(|at| at.elapsed() >= IGNORED_REPORT_EVERY);
                if due {
                    tracing::warn!(
                        refused = ignored.count,
                        "dashboard: refused messages since the last report; the latest: {e}"
                    );
                    *ignored = Ignored {
                        count: 0,
                        reported_at: Some(Instant::now()),
                    };
                }
            }
        }
    }

    fn set_broker(&self, connected: bool, broker: String, error: Option<String>) {
        let status = {
            let mut status = lock(&self.broker);
            if status.connected != connected || status.broker != broker {
                status.since = Utc::now();
            }
            status.connected = connected;
            status.broker = broker;
            if error.is_some() || connected {
                status.last_error = error;
            }
            status.to_json()
        };
        self.publish_event("broker", &status);
    }
}

/// Keeps the connection: subscribes after every CONNACK (clean sessions:
/// the retained messages come again, which is the fresh truth), feeds the
/// model, backs off as the agent's link does and moves along the nodes on
/// errors.
async fn drive(
    hub: Arc<Hub>,
    mut eventloop: EventLoop,
    mqtt: MqttConfig,
    mut failover: Failover,
    client_id: String,
) {
    // QoS 0: a clean session with retained current state loses nothing
    // that QoS 1 would keep, and on a clustered broker (NATS) a QoS 1
    // subscription is a JetStream consumer per viewer, which can stop
    // delivering when another node dies (ARCHITECTURE.md, "What differs on
    // NATS").
    let filters: Vec<SubscribeFilter> = {
        let model = lock(&hub.model);
        let pattern = model.pattern();
        [
            "state",
            "availability",
            "telemetry",
            "event",
            "audit",
            "response/+",
        ]
        .iter()
        .map(|leaf| SubscribeFilter::new(pattern.filter(leaf), QoS::AtMostOnce))
        .collect()
    };
    let mut backoff = crate::mqtt::driver::reconnect_backoff(&mqtt);
    let mut connected_at: Option<Instant> = None;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected_at = Some(Instant::now());
                if let Err(e) = hub.client.try_subscribe_many(filters.clone()) {
                    tracing::warn!("dashboard: subscribe: {e}");
                }
                tracing::info!("dashboard: MQTT connected to {}", failover.shown());
                hub.set_broker(true, failover.shown(), None);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => hub.on_message(&p.topic, &p.payload),
            Ok(_) => {}
            Err(e) => {
                if let Some(at) = connected_at.take() {
                    backoff.connection_ended(at.elapsed());
                }
                let delay = backoff.next_delay();
                let was = failover.shown();
                tracing::warn!("dashboard: MQTT {was}: {e}; again in {delay:?}");
                hub.set_broker(false, was, Some(e.to_string()));
                tokio::time::sleep(delay).await;
                options::move_on(&mut eventloop, &mqtt, &mut failover, &client_id, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer counts only from the outlet asked, on the command asked:
    /// a forged one from another outlet's topic is ignored and the request
    /// keeps waiting for the real one.
    #[tokio::test]
    async fn answers_from_another_outlet_are_refused() {
        let mqtt = MqttConfig {
            broker: crate::config::Brokers::one("mqtt://127.0.0.1:1"),
            ..MqttConfig::default()
        };
        let pattern = PrefixPattern::parse("outlet").expect("prefix");
        let (hub, task) = Hub::start(&mqtt, pattern).expect("a hub");
        let (tx, mut rx) = oneshot::channel();
        lock(&hub.pending).insert(
            "t1".into(),
            Waiting {
                outlet: "y".into(),
                command: "pair_code".into(),
                answer: tx,
            },
        );
        let forged = br#"{"status":"ok","transaction":"t1","data":{"code":"EVIL-CODE"}}"#;
        hub.on_message("outlet/x/response/pair_code", forged);
        hub.on_message("outlet/y/response/status", forged);
        assert!(rx.try_recv().is_err(), "a forged answer was taken");
        let real = br#"{"status":"ok","transaction":"t1","data":{"code":"ABCD-EFGH"}}"#;
        hub.on_message("outlet/y/response/pair_code", real);
        let answer = rx.try_recv().expect("the real answer");
        assert_eq!(answer["data"]["code"], "ABCD-EFGH");
        task.abort();
    }

    #[test]
    fn every_action_is_a_command_the_agent_knows() {
        for action in ACTIONS {
            assert!(
                crate::mqtt::requests::COMMANDS
                    .iter()
                    .any(|(command, _)| command == action),
                "{action} is not in mqtt::requests::COMMANDS"
            );
        }
    }
}
