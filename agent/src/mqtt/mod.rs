//! MQTT: how the central dashboard learns the truth about this outlet, and
//! how HQ sends it commands.
//!
//! MQTT 3.1.1 (rumqttc's v4 client): what Mosquitto, Home Assistant,
//! zigbee2mqtt and Tasmota speak, and all DESIGN.md's topics need —
//! request/response is plain topics with a `transaction` echo, so MQTT 5's
//! response topics and correlation data would add nothing but a less-used
//! code path.
//!
//! Topics under `<prefix>` (`outlet/<outlet_id>` by default):
//!
//! | topic | retained | what |
//! |---|---|---|
//! | `availability` | yes | `online`; `offline` as last will and on clean shutdown |
//! | `state` | yes | the health snapshot on every change (phone masked) |
//! | `event` | no | each transition, in order |
//! | `telemetry` | yes | resources and counters, every N s |
//! | `request/<command>` | no | commands in; only this outlet's own topics |
//! | `response/<command>` | no | `{"status":"ok","data":…}` / `{"status":"error","error":…}` |
//!
//! plus Home Assistant discovery. After every (re)connect, and whenever
//! Home Assistant announces `online` on `<discovery_prefix>/status`,
//! availability, state and discovery go out again.
//!
//! The link never holds up the supervisor: it reads the health `watch` and
//! the transition `broadcast` and hands commands over from tasks of their
//! own (see [`link`]). A broker that is away costs a warning and a retry
//! in the background; the WhatsApp session does not notice.
//!
//! - [`options`]: broker URL, TLS (rustls + ring), login, last will.
//! - [`crate::topics`]: the topic names (below this module: config validates them).
//! - [`link`]: the publishing/command loop; [`driver`]: the connection.
//! - [`requests`]: request parsing and response payloads.
//! - [`redact`]: what of the health may leave the device.
//! - [`telemetry`]: the resource figures.
//! - [`discovery`]: Home Assistant discovery configs.
//!
//! A working part: it owns the broker connection that carries health and
//! commands. It may use the plain rules below it (config, health, command,
//! topics, phone, backoff, disk); it must not import the
//! supervisor, the messages or any entry point (it gets the supervisor's
//! channel ends as a `SupervisorLink`).

pub mod discovery;
pub mod driver;
pub mod link;
pub mod options;
pub mod redact;
pub mod requests;
pub mod telemetry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::health::{MqttStatus, SupervisorLink};

use crate::topics::Topics;
pub use options::OptionsError;

/// The running link.
pub struct MqttHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    status: watch::Receiver<MqttStatus>,
}

impl MqttHandle {
    pub fn status(&self) -> watch::Receiver<MqttStatus> {
        self.status.clone()
    }

    /// Clean shutdown: the latest state, then `offline` (retained), then
    /// DISCONNECT — so the broker does not publish the last will and the
    /// dashboard sees a deliberate stop. Gives up after `grace` (a dead
    /// broker must not delay the exit).
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            tracing::warn!("MQTT: could not say offline within {grace:?}");
            self.task.abort();
        }
    }
}

/// Starts the link, unless MQTT is disabled. Call before the supervisor
/// runs, so the first transitions are seen (they are published once the
/// broker answers).
pub fn spawn(config: Arc<Config>, link: &SupervisorLink) -> Option<MqttHandle> {
    if !config.mqtt.enabled {
        tracing::info!("MQTT is disabled (mqtt.enabled = false)");
        return None;
    }
    // Validated with the config; a failure here is a bug, not a crash.
    let topics = match Topics::new(&config.mqtt.topic_prefix, &config.outlet.id) {
        Ok(topics) => topics,
        Err(e) => {
            tracing::error!("MQTT disabled: mqtt.topic_prefix: {e}");
            return None;
        }
    };
    let (discovery, ha_status_topic) = if config.mqtt.discovery {
        (
            discovery::messages(&config, &topics),
            Some(discovery::status_topic(&config)),
        )
    } else {
        (Vec::new(), None)
    };
    let params = link::LinkParams {
        client_id: config.mqtt_client_id(),
        topics,
        discovery,
        ha_status_topic,
        health: link.health.clone(),
        transitions: link.transitions.subscribe(),
        commands: link.commands.clone(),
        started: Instant::now(),
        config,
    };
    let (stop, stop_rx) = watch::channel(false);
    let (status_tx, status) = watch::channel(MqttStatus::default());
    let task = tokio::spawn(link::run(params, stop_rx, status_tx));
    Some(MqttHandle { stop, task, status })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn load(text: &str) -> Result<Config, crate::config::ConfigError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).expect("write");
        Config::load(Some(Path::new(&path)), Vec::new()).map(|(c, _)| c)
    }

    #[test]
    fn mqtt_settings_are_validated_with_the_key_named() {
        for (text, key) in [
            ("[mqtt]\nbroker = \"tcp://x\"\n", "mqtt.broker"),
            ("[mqtt]\ntopic_prefix = \"a/+/b\"\n", "mqtt.topic_prefix"),
            ("[mqtt]\ndiscovery_prefix = \"\"\n", "mqtt.discovery_prefix"),
            ("[mqtt]\nkeepalive_secs = 0\n", "mqtt.keepalive_secs"),
            (
                "[mqtt]\nclient_cert_file = \"/c.pem\"\n",
                "mqtt.client_cert_file",
            ),
            ("[mqtt]\npassword_file = \"/pw\"\n", "mqtt.password_file"),
        ] {
            let err = load(text).expect_err(text);
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
        let err = load("[mqtt]\nbroker_url = \"x\"\n").expect_err("unknown key");
        assert!(err.to_string().contains("broker_url"), "{err}");
    }

    #[test]
    fn defaults_reach_a_local_broker_under_the_outlet_prefix() {
        let config = load("[outlet]\nid = \"jkt-01\"\n").expect("valid");
        assert!(config.mqtt.enabled);
        assert_eq!(config.mqtt_client_id(), "outlet-agent-jkt-01");
        let topics = Topics::new(&config.mqtt.topic_prefix, &config.outlet.id).expect("valid");
        assert_eq!(topics.state(), "outlet/jkt-01/state");
        assert_eq!(config.mqtt.keepalive_secs, 10);
        assert!(!config.mqtt.publish_full_phone);
    }
}
