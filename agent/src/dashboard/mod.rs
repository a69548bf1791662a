//! `outlet-agent fleet --serve`: HQ's live web dashboard of the fleet.
//!
//! # Layout
//!
//! - [`hub`]: the one MQTT connection (retained `state`, `availability`,
//!   `telemetry`, and `event`, `response/+` of every outlet), the model it
//!   feeds and the live feed every page shares; actions as MQTT requests.
//! - [`fleet_model`]: what is known of each outlet, redacted for a browser
//!   (no QR string, no full phone number).
//! - [`server`]: the routes: the embedded page, the JSON API, the
//!   server-sent events feed.
//! - [`access`]: loopback without a token, anything else only with one.
//! - [`http`]: the little HTTP/1.1 the routes need.
//! - `page/`: the page, its script and style, compiled into the binary:
//!   nothing is fetched from anywhere else, so it works on an HQ network
//!   without internet and has no build step of its own.
//!
//! The page is pushed every change as it happens (server-sent events; the
//! browser reconnects by itself), and decides staleness against its own
//! clock every second, so an outlet that stops publishing turns stale on
//! screen without any message at all.
//!
//! An entry point: it owns HQ's web page. It may use everything below it
//! (config, health, topics, phone, the MQTT options); it must not import `cmd`
//! or `cli` (`cmd/fleet.rs` starts it).

pub mod access;
pub mod fleet_model;
pub mod http;
pub mod hub;
pub mod server;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::MqttConfig;
use crate::topics::PrefixPattern;

/// Connections served at once (pages keep one open each, for the feed).
pub const MAX_CONNECTIONS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("--serve {addr}: {message}")]
    Bind { addr: SocketAddr, message: String },
    #[error(transparent)]
    Access(#[from] access::AccessError),
    #[error(transparent)]
    Options(#[from] crate::mqtt::options::OptionsError),
}

/// Binds, then serves until the process is stopped. `on_listening` gets the
/// bound address (the port, when `addr` asked for port 0).
pub async fn serve(
    mqtt: &MqttConfig,
    pattern: PrefixPattern,
    addr: SocketAddr,
    token_file: Option<&Path>,
    on_listening: impl FnOnce(SocketAddr, bool),
) -> Result<(), DashboardError> {
    // The token decision first: a LAN address without one must not even
    // bind, let alone reach the broker.
    let access = access::Access::new(addr, token_file)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| DashboardError::Bind {
            addr,
            message: e.to_string(),
        })?;
    let bound = listener.local_addr().map_err(|e| DashboardError::Bind {
        addr,
        message: e.to_string(),
    })?;
    let access = access.listening_on(bound);
    let token_required = access.token_required();
    let (hub, _mqtt_task) = hub::Hub::start(mqtt, pattern)?;
    let server = Arc::new(server::Server { hub, access });
    on_listening(bound, token_required);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: wait, do not spin or die.
                tracing::warn!("dashboard: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, "dashboard: {MAX_CONNECTIONS} connections open; refusing one");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            server.connection(stream).await;
            drop(slot);
        });
    }
}
