//! The driver: the one task that owns the broker connection (rumqttc's
//! event loop), reconnecting with its own backoff and telling the link what
//! it saw. `EventLoop::poll` must not be cancelled half way, so it runs
//! here alone; see [`super::link`] for the other half.

use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Outgoing, Packet, Publish,
};
use tokio::sync::mpsc;

use crate::backoff::Backoff;
use crate::config::{MqttConfig, ReconnectConfig};
use crate::mqtt::options;

/// A connection that lasted this long resets the link's backoff.
const STABLE_AFTER_SECS: u64 = 10;
/// A problem that persists is warned about again this often.
const REWARN_AFTER: Duration = Duration::from_secs(15 * 60);

/// Capacity of rumqttc's request channel (messages handed to the client).
const CLIENT_CHANNEL: usize = 256;

/// What the driver saw.
pub(super) enum DriverEvent {
    /// The client exists (options were valid).
    Ready(AsyncClient),
    /// CONNACK from the broker at this URL (as the logs show it).
    Connected(String),
    Message(Publish),
    Failed {
        /// The URL that failed (as the logs show it).
        broker: String,
        failure: Failure,
        retry_in: Duration,
        was_connected: bool,
    },
    /// Our DISCONNECT went out: the clean end.
    Stopped,
}

/// Why a connection attempt or a connection failed, in words for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Options could not be built (a missing CA or password file).
    Setup,
    /// Nothing listens, DNS, routing.
    Unreachable,
    /// The broker answered CONNECT with a refusal (credentials, ACL).
    Refused,
    Tls,
    Timeout,
    /// An established connection broke.
    Lost,
}

impl Failure {
    fn from_connection(e: &ConnectionError, was_connected: bool) -> Self {
        let (kind, message) = match e {
            ConnectionError::ConnectionRefused(code) => (FailureKind::Refused, refusal(*code)),
            ConnectionError::Tls(e) => (FailureKind::Tls, format!("TLS failed: {e}")),
            ConnectionError::NetworkTimeout => (
                FailureKind::Timeout,
                format!(
                    "no answer from the broker within {}s",
                    options::CONNECT_TIMEOUT_SECS
                ),
            ),
            ConnectionError::Io(e) if !was_connected => (
                FailureKind::Unreachable,
                format!("cannot reach the broker: {e}"),
            ),
            other if was_connected => (FailureKind::Lost, format!("connection lost: {other}")),
            other => (FailureKind::Unreachable, other.to_string()),
        };
        Self { kind, message }
    }
}

fn refusal(code: ConnectReturnCode) -> String {
    match code {
        ConnectReturnCode::BadUserNamePassword => {
            "the broker refused the login: bad user name or password (mqtt.username, mqtt.password_file)".into()
        }
        ConnectReturnCode::NotAuthorized => {
            "the broker refused the login: not authorized (wrong user name or password, or no access for this client)".into()
        }
        ConnectReturnCode::BadClientId => {
            "the broker refused the client id (mqtt.client_id)".into()
        }
        ConnectReturnCode::RefusedProtocolVersion => {
            "the broker does not speak MQTT 3.1.1".into()
        }
        ConnectReturnCode::ServiceUnavailable => "the broker is unavailable".into(),
        ConnectReturnCode::Success => "refused with code success (broker bug)".into(),
    }
}

/// Log policy for failures: warn at the first failure of an outage, when
/// the problem changes to a configuration one, and every 15 minutes while
/// it lasts; everything else at debug. A developer's PC without a broker
/// gets one warning.
#[derive(Default)]
pub(super) struct FailureLog {
    warned_kind: Option<FailureKind>,
    warned_at: Option<Instant>,
    failures: u32,
}

impl FailureLog {
    pub(super) fn report(
        &mut self,
        broker: &str,
        failure: &Failure,
        retry_in: Duration,
        was_connected: bool,
    ) {
        self.failures += 1;
        let config_problem = matches!(
            failure.kind,
            FailureKind::Refused | FailureKind::Tls | FailureKind::Setup
        );
        let changed = self.warned_kind != Some(failure.kind) && config_problem;
        let stale = self.warned_at.is_none_or(|at| at.elapsed() >= REWARN_AFTER);
        if was_connected || self.warned_kind.is_none() || changed || stale {
            tracing::warn!(
                "MQTT {broker}: {}; retrying in the background (next in {:.1}s)",
                failure.message,
                retry_in.as_secs_f64()
            );
            self.warned_kind = Some(failure.kind);
            self.warned_at = Some(Instant::now());
        } else {
            tracing::debug!(
                "MQTT {broker}: {}; retry in {:.1}s",
                failure.message,
                retry_in.as_secs_f64()
            );
        }
    }

    pub(super) fn connected(&mut self, broker: &str, client_id: &str) {
        if self.failures > 0 {
            tracing::info!(
                "MQTT connected to {broker} as {client_id} (after {} failed attempts)",
                self.failures
            );
        } else {
            tracing::info!("MQTT connected to {broker} as {client_id}");
        }
        *self = Self::default();
    }
}

/// The driver: builds the client, then polls its event loop forever,
/// reconnecting with its own jittered backoff. It forwards what the link
/// needs and stops after our DISCONNECT went out or when the link is gone.
pub(super) async fn drive(
    config: MqttConfig,
    client_id: String,
    availability: String,
    tx: mpsc::Sender<DriverEvent>,
) {
    let mut backoff = reconnect_backoff(&config);
    let will = options::offline_will(&availability);
    let mut failover = options::Failover::new(&config, &client_id);
    let mut eventloop: EventLoop = loop {
        match options::client_options(&config, failover.url(), &client_id, Some(will.clone())) {
            Ok(opts) => {
                let (client, mut eventloop) = AsyncClient::new(opts, CLIENT_CHANNEL);
                eventloop.set_network_options(options::network_options());
                if tx.send(DriverEvent::Ready(client)).await.is_err() {
                    return;
                }
                break eventloop;
            }
            Err(e) => {
                let retry_in = backoff.next_delay();
                let failure = Failure {
                    kind: FailureKind::Setup,
                    message: e.to_string(),
                };
                let broker = failover.shown();
                failover.failed();
                if tx
                    .send(DriverEvent::Failed {
                        broker,
                        failure,
                        retry_in,
                        was_connected: false,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(retry_in).await;
            }
        }
    };
    let mut connected_at: Option<Instant> = None;
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected_at = Some(Instant::now());
                DriverEvent::Connected(failover.shown())
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => DriverEvent::Message(publish),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                let _ = tx.send(DriverEvent::Stopped).await;
                return;
            }
            Ok(_) => continue,
            Err(e) => {
                let was_connected = connected_at.is_some();
                if let Some(at) = connected_at.take() {
                    backoff.connection_ended(at.elapsed());
                }
                let retry_in = backoff.next_delay();
                let failure = Failure::from_connection(&e, was_connected);
                let broker = failover.shown();
                if tx
                    .send(DriverEvent::Failed {
                        broker,
                        failure,
                        retry_in,
                        was_connected,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(retry_in).await;
                options::move_on(
                    &mut eventloop,
                    &config,
                    &mut failover,
                    &client_id,
                    Some(&will),
                );
                refresh_password(&mut eventloop, &config);
                continue;
            }
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

/// The backoff of an MQTT connection that must stay up (the link, the
/// dashboard's): `mqtt.reconnect_*`, ±20 % jitter, reset only by a
/// connection that lasted.
pub fn reconnect_backoff(config: &MqttConfig) -> Backoff {
    Backoff::new(&ReconnectConfig {
        first_delay_ms: config.reconnect_first_delay_ms,
        max_delay_secs: config.reconnect_max_delay_secs,
        jitter: 0.2,
        stable_after_secs: STABLE_AFTER_SECS,
        connect_timeout_secs: options::CONNECT_TIMEOUT_SECS,
    })
}

/// A rotated password is picked up at the next attempt, without a restart.
fn refresh_password(eventloop: &mut EventLoop, config: &MqttConfig) {
    if config.username.is_empty() {
        return;
    }
    if let Some(path) = &config.password_file {
        match options::read_password(path) {
            Ok(password) => {
                eventloop
                    .mqtt_options
                    .set_credentials(config.username.clone(), password);
            }
            Err(e) => tracing::debug!("MQTT: {e}; keeping the previous password"),
        }
    }
}
