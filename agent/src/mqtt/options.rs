//! How to reach the broker: address, TLS (rustls with ring — the project
//! has one crypto provider and no aws-lc, which needs cmake and clang under
//! cross), credentials and the last will.
//!
//! Shared by the agent's link and by `outlet-agent fleet`, so both speak to
//! a broker the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, NetworkOptions, QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::command::MAX_SEND_REQUEST_BYTES;
use crate::config::{BrokerAddress, BrokerUrlError, MqttConfig};

/// A packet above this ends the connection (rumqttc cannot skip one), so it
/// is generous: twice the largest request, and above the broker cap the
/// deployment guide recommends. On the messages' persistent session an
/// unacknowledged request over it would come back after every reconnect;
/// MQTT 3.1.1 has no way to ask the broker for less.
pub const MAX_INCOMING_PACKET: usize = 2 * MAX_SEND_REQUEST_BYTES;
/// Our largest publish is an inbound message (`message/in`): a text of
/// 65 536 characters in JSON, well below this.
const MAX_OUTGOING_PACKET: usize = 1024 * 1024;
/// How long a TCP + TLS + CONNECT round may take.
pub const CONNECT_TIMEOUT_SECS: u64 = 5;

/// Why the link cannot be set up. Each names the key or file to fix.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error(transparent)]
    Broker(#[from] BrokerUrlError),
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {}: {reason}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("no CA certificates: the system has none readable; set mqtt.ca_file")]
    NoRoots,
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// Which of `mqtt.broker`'s URLs a connection attempt uses: the same one
/// while it works, the next after it failed, round and round, so a dead
/// node of a cluster costs one failed attempt and the usual backoff.
///
/// Each client starts at a node chosen by its client id, not at the first:
/// a fleet that restarts together spreads over the cluster instead of
/// landing on one node and moving on together when that node dies.
#[derive(Debug, Clone)]
pub struct Failover {
    urls: Vec<String>,
    current: usize,
}

impl Failover {
    pub fn new(config: &MqttConfig, client_id: &str) -> Self {
        let urls = config.broker.urls().to_vec();
        // FNV-1a: stable across builds and runs, unlike std's hasher.
        let hash = client_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let current = match u64::try_from(urls.len()) {
            Ok(n) if n > 0 => usize::try_from(hash % n).unwrap_or_default(),
            _ => 0,
        };
        Self { urls, current }
    }

    /// The URL of the next attempt.
    pub fn url(&self) -> &str {
        self.urls
            .get(self.current)
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// The attempt on [`Self::url`] failed, or its connection was lost:
    /// the next attempt goes to the next node. Returns whether it changed.
    pub fn failed(&mut self) -> bool {
        if self.urls.len() < 2 {
            return false;
        }
        self.current = (self.current + 1) % self.urls.len();
        true
    }

    /// The URL as the logs and `state` show it (`mqtt://host:port`).
    pub fn shown(&self) -> String {
        BrokerAddress::parse(self.url())
            .map(|a| a.to_string())
            .unwrap_or_else(|_| self.url().to_string())
    }
}

/// After a failure the next attempt goes to the next node, if there is
/// one: the same options (TLS, login, will), another address. The event
/// loop and its client stay, so the connection keeps its one client and
/// queue.
pub fn move_on(
    eventloop: &mut rumqttc::EventLoop,
    config: &MqttConfig,
    failover: &mut Failover,
    client_id: &str,
    will: Option<&LastWill>,
) {
    move_on_with(eventloop, failover, |url| {
        client_options(config, url, client_id, will.cloned())
    });
}

/// [`move_on`] for a connection whose options are not plain
/// [`client_options`] (a persistent session): `options` builds them for a
/// node's URL.
pub fn move_on_with(
    eventloop: &mut rumqttc::EventLoop,
    failover: &mut Failover,
    options: impl FnOnce(&str) -> Result<MqttOptions, OptionsError>,
) {
    let mut next = failover.clone();
    if !next.failed() {
        return;
    }
    match options(next.url()) {
        Ok(opts) => {
            eventloop.mqtt_options = opts;
            *failover = next;
        }
        // Checked at startup; a file read again (a CA) may have gone since.
        // Stay on the node we have rather than drop the connection.
        Err(e) => tracing::warn!("MQTT: cannot move to {}: {e}", next.shown()),
    }
}

/// Client options for `config` on the broker at `url`: a clean session
/// (nothing is queued for us while we are away: after a reconnect we
/// republish the current truth), the keepalive, TLS, the login and the
/// last will.
pub fn client_options(
    config: &MqttConfig,
    url: &str,
    client_id: &str,
    last_will: Option<LastWill>,
) -> Result<MqttOptions, OptionsError> {
    let address = BrokerAddress::parse(url)?;
    let mut options = MqttOptions::new(client_id, address.host.clone(), address.port);
    options
        .set_keep_alive(Duration::from_secs(config.keepalive_secs.clamp(1, 65_535)))
        .set_clean_session(true)
        .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
    if address.tls {
        let tls = tls_config(config)?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls),
        )));
    }
    if !config.username.is_empty() {
        let password = match &config.password_file {
            Some(path) => read_password(path)?,
            None => String::new(),
        };
        options.set_credentials(config.username.clone(), password);
    }
    if let Some(will) = last_will {
        options.set_last_will(will);
    }
    Ok(options)
}

/// Socket options: no Nagle. Our messages are small and each one matters
/// now; with Nagle a QoS 1 publish waits for the broker's delayed ACK
/// (~40 ms on Linux) before it leaves.
pub fn network_options() -> NetworkOptions {
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(CONNECT_TIMEOUT_SECS);
    network
}

/// The last will: `offline`, retained, so a dead agent is marked dead by
/// the broker itself.
pub fn offline_will(availability_topic: &str) -> LastWill {
    LastWill::new(availability_topic, "offline", QoS::AtLeastOnce, true)
}

/// The password: the file's first line, without its line ending. Read on
/// every connection attempt so a rotated password needs no restart.
pub fn read_password(path: &Path) -> Result<String, OptionsError> {
    let text = std::fs::read_to_string(path).map_err(|source| OptionsError::Read {
        what: "mqtt.password_file",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// rustls with the ring provider, explicitly: a process-wide default
/// provider would be a second source of truth, and `rustls`' own default
/// (aws-lc) is not built at all.
fn tls_config(config: &MqttConfig) -> Result<rustls::ClientConfig, OptionsError> {
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            for cert in read_certs("mqtt.ca_file", path)? {
                roots.add(cert).map_err(|e| OptionsError::Pem {
                    what: "mqtt.ca_file",
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(OptionsError::NoRoots);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&config.client_cert_file, &config.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("mqtt.client_cert_file", cert)?;
            let key = read_key("mqtt.client_key_file", key)?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, OptionsError> {
    std::fs::read(path).map_err(|source| OptionsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The PEM certificates in `path` (at least one); errors name `what` (the
/// config key or flag) and the file. The dashboard's `--tls-cert` too.
pub(crate) fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, OptionsError> {
    let pem = read_pem(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| OptionsError::Pem {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(OptionsError::Pem {
            what,
            path: path.to_path_buf(),
            reason: "no PEM certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// The PEM private key in `path`, errors named as [`read_certs`]'s.
pub(crate) fn read_key(
    what: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, OptionsError> {
    let pem = read_pem(what, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| OptionsError::Pem {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_the_first_line_of_their_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").expect("write");
        assert_eq!(read_password(&path).expect("reads"), "s3cret");
        assert!(read_password(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let config = MqttConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..MqttConfig::default()
        };
        let err = client_options(&config, "mqtts://localhost", "id", None).expect_err("no CA file");
        assert!(err.to_string().contains("mqtt.ca_file"), "{err}");
    }

    fn brokers(toml_value: &str) -> MqttConfig {
        toml::from_str(&format!("broker = {toml_value}")).expect("parses")
    }

    #[test]
    fn a_broker_list_is_a_string_an_array_or_comma_separated() {
        let one = brokers("\"mqtt://a:1883\"");
        assert_eq!(one.broker.urls(), ["mqtt://a:1883"]);
        let array = brokers("[\"mqtt://a:1883\", \"mqtts://b\"]");
        assert_eq!(array.broker.urls(), ["mqtt://a:1883", "mqtts://b"]);
        let commas = brokers("\"mqtt://a:1883, mqtts://b ,\"");
        assert_eq!(commas.broker, array.broker);
        assert!(toml::from_str::<MqttConfig>("broker = 5").is_err());
        // Written back as it came: one URL as a string, several as an array.
        let text = toml::to_string(&one).expect("serializes");
        assert!(text.contains("broker = \"mqtt://a:1883\""), "{text}");
        let text = toml::to_string(&array).expect("serializes");
        assert!(
            text.contains("broker = [\"mqtt://a:1883\", \"mqtts://b\"]"),
            "{text}"
        );
    }

    #[test]
    fn failover_moves_to_the_next_node_round_and_round() {
        let config = brokers("[\"mqtt://a\", \"mqtt://b\", \"mqtt://c\"]");
        let mut failover = Failover::new(&config, "outlet-agent-jkt-01");
        let first = failover.url().to_string();
        let mut seen = vec![first.clone()];
        for _ in 0..3 {
            assert!(failover.failed());
            seen.push(failover.url().to_string());
        }
        assert_eq!(seen[3], first, "back to the start after every node");
        seen.truncate(3);
        seen.sort();
        assert_eq!(seen, ["mqtt://a", "mqtt://b", "mqtt://c"], "each node once");
        assert_eq!(failover.shown(), format!("{}:1883", failover.url()));

        let mut single = Failover::new(&brokers("\"mqtt://a\""), "x");
        assert!(!single.failed(), "one broker: nothing to move to");
        assert_eq!(single.url(), "mqtt://a");
    }

    #[test]
    fn a_fleet_starts_spread_over_the_nodes() {
        let config = brokers("[\"mqtt://a\", \"mqtt://b\", \"mqtt://c\"]");
        let mut per_node = std::collections::HashMap::new();
        for n in 0..300 {
            let failover = Failover::new(&config, &format!("outlet-agent-{n:03}"));
            *per_node.entry(failover.url().to_string()).or_insert(0) += 1;
        }
        assert_eq!(per_node.len(), 3, "{per_node:?}");
        assert!(per_node.values().all(|&n| n >= 60), "{per_node:?}");
        let again = Failover::new(&config, "outlet-agent-007");
        assert_eq!(
            again.url(),
            Failover::new(&config, "outlet-agent-007").url()
        );
    }
}
