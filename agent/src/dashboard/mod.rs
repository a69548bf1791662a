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
//! - [`login`]: expiring sessions behind the cookie, and the limit on
//!   wrong tokens per address.
//! - [`slots`]: how many connections at once, and which give way.
//! - [`tls`]: HTTPS when given a certificate.
//! - [`http`]: responses and bodies on hyper's types (hyper parses and
//!   writes HTTP/1.1, with its header timeout and size limits).
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
pub mod login;
pub mod server;
pub mod slots;
pub mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::config::MqttConfig;
use crate::topics::PrefixPattern;
pub use slots::{MAX_CONNECTIONS, MAX_PER_ADDRESS};
pub use tls::TlsFiles;

/// A request's head must have arrived within this (hyper's header timeout;
/// also for the next request on a kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The TLS handshake must be done within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A request's head (line and headers) beyond this is refused (431).
pub const MAX_HEAD: usize = 16 * 1024;
/// Headers in one request.
pub const MAX_HEADERS: usize = 48;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("--serve {addr}: {message}")]
    Bind { addr: SocketAddr, message: String },
    #[error(transparent)]
    Access(#[from] access::AccessError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Options(#[from] crate::mqtt::options::OptionsError),
}

/// Binds, then serves until the process is stopped. `on_listening` gets the
/// bound address (the port, when `addr` asked for port 0) and whether a
/// token is required.
pub async fn serve(
    mqtt: &MqttConfig,
    pattern: PrefixPattern,
    addr: SocketAddr,
    token_file: Option<&Path>,
    tls_files: Option<&TlsFiles>,
    on_listening: impl FnOnce(SocketAddr, bool),
) -> Result<(), DashboardError> {
    // The token and certificate decisions first: a LAN address without a
    // token must not even bind, let alone reach the broker.
    let access = access::Access::new(addr, token_file)?;
    let acceptor = tls_files.map(tls::acceptor).transpose()?;
    if acceptor.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            "dashboard on {addr} without --tls-cert: the token and the session cookie \
             cross the network in clear"
        );
    }
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
    let server = Arc::new(server::Server {
        hub,
        access,
        tries: login::Tries::default(),
        tls: acceptor.is_some(),
    });
    on_listening(bound, token_required);
    let slots = slots::Slots::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: wait, do not spin or die.
                tracing::warn!("dashboard: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = slots.admit(peer.ip()) else {
            tracing::debug!(%peer, "dashboard: every connection slot is serving; refusing one");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let server = Arc::clone(&server);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let mut slot = slot;
            let handle = slot.handle.clone();
            let serving = async move {
                match acceptor {
                    None => connection(stream, server, peer, handle.clone()).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls)) => connection(tls, server, peer, handle.clone()).await,
                            Ok(Err(e)) => tracing::debug!(%peer, "dashboard: TLS: {e}"),
                            Err(_) => tracing::debug!(%peer, "dashboard: TLS handshake timed out"),
                        }
                    }
                }
            };
            tokio::select! {
                () = serving => {}
                _ = &mut slot.evicted => tracing::debug!(%peer, "dashboard: an idle connection gave way"),
            }
            drop(slot);
        });
    }
}

/// Serves one connection's requests with hyper: keep-alive, with the head
/// bounded in size and time.
async fn connection(
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    server: Arc<server::Server>,
    peer: SocketAddr,
    slot: slots::SlotHandle,
) {
    let service = service_fn(move |request| {
        let server = Arc::clone(&server);
        let slot = slot.clone();
        async move { Ok::<_, std::convert::Infallible>(server.handle(request, peer.ip(), slot).await) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        // One flat write buffer: a page that stops reading holds at most
        // one frame here, not a queue of them (`server::feed`).
        .writev(false)
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(%peer, "dashboard: connection: {e}");
    }
}
