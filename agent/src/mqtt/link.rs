//! The link: one task that turns the supervisor's health, transitions and
//! the telemetry clock into MQTT messages, and MQTT requests into commands;
//! and one driver task that owns the connection (rumqttc's event loop).
//!
//! Why two tasks: rumqttc's `EventLoop::poll` must not be cancelled half
//! way, so it runs alone in the driver and everything it sees is forwarded
//! over a channel; the link only ever *tries* to hand a message to the
//! client (`try_publish`), never waits on it.
//!
//! Memory stays bounded whatever the broker does: while it is away the link
//! keeps flags ("state changed", "telemetry due") instead of messages, and
//! serialises the *current* health only when it can send — so only the
//! latest state is ever kept. Transitions go into a small ring (the oldest
//! are dropped and counted) and responses into a capped queue. The
//! supervisor is never waited on from here: commands run in their own
//! tasks, at most [`MAX_REQUESTS_IN_FLIGHT`] at once, each with a deadline;
//! more are answered `busy` at once.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Publish, QoS, SubscribeFilter};
use serde_json::Value;
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio::time::Sleep;

use crate::command::Commands;
use crate::config::Config;
use crate::health::{Health, MqttStatus, SessionState, Transition};
use crate::mqtt::discovery::DiscoveryMessage;
use crate::mqtt::driver::{DriverEvent, FailureLog, drive};
use crate::mqtt::{redact, requests, telemetry};
use crate::topics::Topics;

/// Requests handled at once; more are answered `busy`.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 8;
/// How long a command may take in the supervisor (a `check_number` is a
/// network round trip to WhatsApp).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// A `pair_code` may first need a new connection, then a slow key
/// derivation and a round trip the library allows 30 s.
const PAIR_CODE_TIMEOUT: Duration = Duration::from_secs(90);
/// Transitions kept while the broker is away.
const EVENT_QUEUE: usize = 64;
/// Responses waiting for room in the client's channel. rumqttc reads up
/// to ten incoming packets per outgoing one, so a burst of requests backs
/// responses up here: this many (~0.5 MiB at most) are kept, beyond that a
/// flood loses responses (counted in telemetry), never memory.
const RESPONSE_QUEUE: usize = 2048;
/// When the client's channel was full, try again after this long.
const FLUSH_RETRY: Duration = Duration::from_millis(20);

/// What the link needs from the rest of the agent.
pub(super) struct LinkParams {
    pub config: Arc<Config>,
    pub topics: Topics,
    pub client_id: String,
    pub discovery: Vec<DiscoveryMessage>,
    pub ha_status_topic: Option<String>,
    pub health: watch::Receiver<Health>,
    pub transitions: broadcast::Receiver<Transition>,
    pub commands: Commands,
    pub started: Instant,
}

/// A command's answer on its way back to the link.
struct Answer {
    name: String,
    echo: requests::Echo,
    result: Result<Value, String>,
}

/// What still has to be published. Flags, not copies: the payload is built
/// from the current truth when there is room to send it.
#[derive(Default)]
struct Outbox {
    subscribe: bool,
    /// `online` is due (after a (re)connect or Home Assistant's birth).
    online: bool,
    /// Index of the next discovery message to (re)publish.
    discovery_next: Option<usize>,
    state: bool,
    /// The last `state` payload sent on this connection: a heartbeat that
    /// changed nothing visible is not resent.
    last_state: Option<String>,
    events: VecDeque<Vec<u8>>,
    responses: VecDeque<(String, Vec<u8>)>,
    telemetry: bool,
    /// Stopping: `offline`, then DISCONNECT, after everything else.
    goodbye: bool,
    /// `offline` is out; DISCONNECT still to go.
    disconnect: bool,
}

impl Outbox {
    fn depth(&self) -> usize {
        self.events.len()
            + self.responses.len()
            + usize::from(self.subscribe)
            + usize::from(self.online)
            + usize::from(self.state)
            + usize::from(self.telemetry)
            + self.discovery_next.map_or(0, |_| 1)
    }
}

struct Link {
    config: Arc<Config>,
    topics: Topics,
    client_id: String,
    discovery: Vec<DiscoveryMessage>,
    ha_status_topic: Option<String>,
    health: watch::Receiver<Health>,
    commands: Commands,
    permits: Arc<Semaphore>,
    answers: mpsc::Sender<Answer>,
    client: Option<AsyncClient>,
    connected: bool,
    stopping: bool,
    out: Outbox,
    counters: telemetry::Counters,
    log: FailureLog,
    status: watch::Sender<MqttStatus>,
    started: Instant,
    sources: telemetry::Sources,
}

/// Runs the link until `stop` turns true (then says `offline` and
/// disconnects) or the agent drops everything.
pub(super) async fn run(
    params: LinkParams,
    mut stop: watch::Receiver<bool>,
    status: watch::Sender<MqttStatus>,
) {
    let LinkParams {
        config,
        topics,
        client_id,
        discovery,
        ha_status_topic,
        health,
        mut transitions,
        commands,
        started,
    } = params;
    let (driver_tx, mut driver_rx) = mpsc::channel(256);
    let driver = tokio::spawn(drive(
        config.mqtt.clone(),
        client_id.clone(),
        topics.availability(),
        driver_tx,
    ));
    let (answers, mut answers_rx) = mpsc::channel(MAX_REQUESTS_IN_FLIGHT * 2);
    let mut health_rx = health.clone();
    let mut link = Link {
        topics,
        client_id,
        discovery,
        ha_status_topic,
        health,
        commands,
        permits: Arc::new(Semaphore::new(MAX_REQUESTS_IN_FLIGHT)),
        answers,
        client: None,
        connected: false,
        stopping: false,
        out: Outbox::default(),
        counters: telemetry::Counters::default(),
        log: FailureLog::default(),
        status,
        started,
        sources: telemetry::Sources::default(),
        config,
    };
    let mut telemetry_tick = (link.config.mqtt.telemetry_interval_secs > 0).then(|| {
        let mut tick = tokio::time::interval(Duration::from_secs(
            link.config.mqtt.telemetry_interval_secs,
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });
    let mut health_open = true;
    let mut transitions_open = true;
    let mut retry: Option<Pin<Box<Sleep>>> = None;

    loop {
        tokio::select! {
            event = driver_rx.recv() => match event {
                Some(event) => {
                    if link.on_driver(event) {
                        break;
                    }
                }
                None => break,
            },
            changed = health_rx.changed(), if health_open => {
                if changed.is_err() {
                    health_open = false;
                } else {
                    link.out.state = true;
                }
            }
            received = transitions.recv(), if transitions_open => match received {
                Ok(t) => link.on_transition(&t),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    link.counters.events_dropped += n;
                    tracing::warn!("MQTT link fell behind; {n} state events were not published");
                }
                Err(broadcast::error::RecvError::Closed) => transitions_open = false,
            },
            Some(answer) = answers_rx.recv() => link.on_answer(answer),
            () = tick(&mut telemetry_tick) => link.out.telemetry = true,
            _ = stop.changed(), if !link.stopping => {
                if link.begin_stop() {
                    break;
                }
            }
            () = wait(&mut retry) => retry = None,
        }
        if !link.flush() && retry.is_none() {
            retry = Some(Box::pin(tokio::time::sleep(FLUSH_RETRY)));
        }
        link.publish_status();
    }
    driver.abort();
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn wait(sleep: &mut Option<Pin<Box<Sleep>>>) {
    match sleep {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

impl Link {
    /// Returns true when the link is done.
    fn on_driver(&mut self, event: DriverEvent) -> bool {
        match event {
            DriverEvent::Ready(client) => self.client = Some(client),
            DriverEvent::Connected(broker) => {
                self.connected = true;
                self.log.connected(&broker, &self.client_id);
                self.republish_all();
                self.out.goodbye = self.stopping;
            }
            DriverEvent::Message(publish) => self.on_message(&publish),
            DriverEvent::Failed {
                broker,
                failure,
                retry_in,
                was_connected,
            } => {
                self.connected = false;
                if was_connected {
                    self.counters.mqtt_reconnects += 1;
                }
                if self.stopping {
                    return true;
                }
                self.log.report(&broker, &failure, retry_in, was_connected);
                self.status
                    .send_modify(|s| s.last_error = Some(failure.message));
            }
            DriverEvent::Stopped => return true,
        }
        false
    }

    /// After every (re)connect and whenever Home Assistant comes back: the
    /// whole truth again, availability first.
    fn republish_all(&mut self) {
        self.out.subscribe = true;
        self.out.online = true;
        self.out.discovery_next = self.config.mqtt.discovery.then_some(0);
        self.out.state = true;
        self.out.last_state = None;
        self.out.telemetry = self.config.mqtt.telemetry_interval_secs > 0;
    }

    fn on_message(&mut self, publish: &Publish) {
        if self.ha_status_topic.as_deref() == Some(publish.topic.as_str()) {
            if publish.payload.as_ref() == b"online" {
                tracing::debug!("Home Assistant is online: republishing discovery");
                self.republish_for_home_assistant();
            }
            return;
        }
        let topics = self.topics.clone();
        match topics.request_name(&publish.topic) {
            // A retained request would run again after every reconnect and
            // restart: a `reconnect` left retained by mistake would cost a
            // WhatsApp connection each time the broker blinks.
            Some(_) if self.stopping => {}
            // The messages' own connection takes these (a persistent
            // session: the broker keeps them while the agent is away).
            Some(name)
                if self.config.messages_enabled() && requests::MESSAGE_REQUESTS.contains(&name) => {
            }
            Some(name) if publish.retain => {
                tracing::warn!(
                    command = %shown_name(name),
                    "MQTT request ignored: it was retained"
                );
                self.respond(
                    name,
                    Err(requests::RETAINED_REQUEST.to_string()),
                    requests::echo_of(&publish.payload),
                );
            }
            Some(name) => self.on_request(name, &publish.payload),
            None => tracing::debug!(topic = %publish.topic, "ignoring an MQTT message"),
        }
    }

    /// Home Assistant's birth message: everything but the subscriptions.
    fn republish_for_home_assistant(&mut self) {
        let subscribe = self.out.subscribe;
        self.republish_all();
        self.out.subscribe = subscribe;
    }

    fn on_request(&mut self, name: &str, payload: &[u8]) {
        if self.stopping {
            return;
        }
        let shown = shown_name(name);
        let request = match requests::parse(name, payload) {
            Ok(request) => request,
            Err(rejected) => {
                let mut refused = Err(rejected.message);
                redact::answer_json(name, &mut refused, self.config.mqtt.publish_full_phone);
                if let Err(e) = &refused {
                    tracing::info!(command = %shown, error = %e, "MQTT request refused");
                }
                self.respond(name, refused, rejected.echo);
                return;
            }
        };
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::info!(command = %shown, "MQTT request refused: too many in progress");
            self.respond(
                name,
                Err(format!(
                    "busy: {MAX_REQUESTS_IN_FLIGHT} requests are in progress; try again"
                )),
                request.echo,
            );
            return;
        };
        tracing::info!(command = %shown, "MQTT request");
        let commands = self.commands.clone();
        let answers = self.answers.clone();
        let name = name.to_string();
        let timeout = if matches!(request.command, crate::command::Command::PairCode { .. }) {
            PAIR_CODE_TIMEOUT
        } else {
            COMMAND_TIMEOUT
        };
        tokio::spawn(async move {
            let result = match tokio::time::timeout(timeout, commands.send(request.command)).await {
                Ok(Ok(data)) => Ok(data),
                Ok(Err(e)) => Err(requests::command_error(&e)),
                Err(_) => Err(format!("timeout: no answer within {}s", timeout.as_secs())),
            };
            let _ = answers
                .send(Answer {
                    name,
                    echo: request.echo,
                    result,
                })
                .await;
            drop(permit);
        });
    }

    fn on_answer(&mut self, answer: Answer) {
        let mut result = answer.result;
        if answer.name == "status" {
            // `status` also means "republish".
            self.out.state = true;
            self.out.last_state = None;
        }
        redact::answer_json(
            &answer.name,
            &mut result,
            self.config.mqtt.publish_full_phone,
        );
        if let Err(e) = &result {
            tracing::info!(command = %answer.name, error = %e, "MQTT request refused by the agent");
        }
        self.respond(&answer.name, result, answer.echo);
    }

    fn respond(&mut self, name: &str, result: Result<Value, String>, echo: requests::Echo) {
        if self.out.responses.len() >= RESPONSE_QUEUE {
            self.counters.responses_dropped += 1;
            tracing::debug!(
                dropped = self.counters.responses_dropped,
                "MQTT response queue full; a response was dropped"
            );
            return;
        }
        let body = requests::response(&result, echo);
        self.out
            .responses
            .push_back((self.topics.response(name), body.to_string().into_bytes()));
    }

    fn on_transition(&mut self, transition: &Transition) {
        if transition.to == SessionState::Reconnecting {
            self.counters.reconnects += 1;
        }
        let body = redact::transition_json(transition, self.config.mqtt.publish_full_phone);
        if self.out.events.len() >= EVENT_QUEUE {
            self.out.events.pop_front();
            self.counters.events_dropped += 1;
        }
        self.out.events.push_back(body.to_string().into_bytes());
    }

    /// Returns true when there is nothing left to do (not connected, or
    /// never connected).
    fn begin_stop(&mut self) -> bool {
        self.stopping = true;
        if !self.connected {
            return true;
        }
        // The supervisor's last word may not have been read yet.
        self.out.state = true;
        self.out.goodbye = true;
        false
    }

    /// Hands what is due to the client, in order of importance. Returns
    /// false when the client's channel was full (try again shortly).
    fn flush(&mut self) -> bool {
        if !self.connected {
            return true;
        }
        let Some(client) = self.client.clone() else {
            return true;
        };
        if self.out.subscribe {
            let mut filters = vec![SubscribeFilter::new(
                self.topics.request_filter(),
                QoS::AtLeastOnce,
            )];
            if let Some(status) = &self.ha_status_topic {
                filters.push(SubscribeFilter::new(status.clone(), QoS::AtLeastOnce));
            }
            if client.try_subscribe_many(filters).is_err() {
                return false;
            }
            self.out.subscribe = false;
        }
        if self.out.online {
            if !publish(&client, self.topics.availability(), true, "online") {
                return false;
            }
            self.out.online = false;
        }
        while let Some(index) = self.out.discovery_next {
            let Some(message) = self.discovery.get(index) else {
                self.out.discovery_next = None;
                break;
            };
            if !publish(
                &client,
                message.topic.clone(),
                true,
                message.payload.clone(),
            ) {
                return false;
            }
            self.out.discovery_next = Some(index + 1);
        }
        if self.out.state {
            let body = redact::health_json(
                &self.health.borrow_and_update(),
                redact::Disclosure::from_config(&self.config),
            )
            .to_string();
            if self.out.last_state.as_deref() != Some(body.as_str()) {
                if !publish(&client, self.topics.state(), true, body.clone()) {
                    return false;
                }
                self.out.last_state = Some(body);
            }
            self.out.state = false;
        }
        while let Some(event) = self.out.events.front() {
            if !publish_qos(
                &client,
                self.topics.event(),
                false,
                event.clone(),
                QoS::AtLeastOnce,
            ) {
                return false;
            }
            self.out.events.pop_front();
        }
        while let Some((topic, body)) = self.out.responses.front() {
            if !publish_qos(
                &client,
                topic.clone(),
                false,
                body.clone(),
                QoS::AtLeastOnce,
            ) {
                return false;
            }
            self.out.responses.pop_front();
        }
        if self.out.telemetry {
            let body = serde_json::to_vec(&self.telemetry()).unwrap_or_default();
            if !publish_qos(
                &client,
                self.topics.telemetry(),
                true,
                body,
                QoS::AtMostOnce,
            ) {
                return false;
            }
            self.out.telemetry = false;
        }
        if self.out.goodbye {
            // Everything above went first: the final state, then `offline`,
            // then DISCONNECT (so the broker does not fire the will).
            if !publish(&client, self.topics.availability(), true, "offline") {
                return false;
            }
            self.out.goodbye = false;
            self.out.disconnect = true;
        }
        if self.out.disconnect {
            if client.try_disconnect().is_err() {
                return false;
            }
            self.out.disconnect = false;
        }
        true
    }

    fn telemetry(&self) -> telemetry::Telemetry {
        let counters = telemetry::Counters {
            mqtt_queue: self.out.depth(),
            ..self.counters
        };
        let mut telemetry = telemetry::collect(
            &self.sources,
            &self.config.storage.data_dir,
            self.started.elapsed(),
            counters,
        );
        let health = self.health.borrow();
        telemetry.fault = health.fault.as_ref().map(|f| f.kind);
        telemetry.with_messages(&health.messages)
    }

    fn publish_status(&self) {
        let queue = self.out.depth();
        let connected = self.connected;
        let reconnects = self.counters.mqtt_reconnects;
        self.status.send_if_modified(|s| {
            let changed =
                s.connected != connected || s.queue != queue || s.reconnects != reconnects;
            s.connected = connected;
            s.queue = queue;
            s.reconnects = reconnects;
            if connected {
                s.last_error = None;
            }
            changed
        });
    }
}

fn publish(client: &AsyncClient, topic: String, retain: bool, payload: impl Into<Vec<u8>>) -> bool {
    publish_qos(client, topic, retain, payload, QoS::AtLeastOnce)
}

fn publish_qos(
    client: &AsyncClient,
    topic: String,
    retain: bool,
    payload: impl Into<Vec<u8>>,
    qos: QoS,
) -> bool {
    client.try_publish(topic, qos, retain, payload).is_ok()
}

/// A sender-chosen name, safe and short for a log line.
fn shown_name(name: &str) -> String {
    let mut shown: String = name.chars().take(64).collect();
    if shown.len() < name.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}
