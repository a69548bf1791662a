//! The running server: the accept loop, and the handle tests and the control
//! interface use to drive it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::config::ServerConfig;

/// An account's presence (see [`FakeServer::presence`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PresenceReport {
    /// `available` or `unavailable`.
    pub presence: String,
    /// Each linked companion's JID and its last presence while connected.
    pub devices: std::collections::BTreeMap<String, Option<String>>,
}
use crate::connection;
use crate::observe::{ConnectionId, DeviceSummary, ServerEvent, Stats};
use crate::phone::Phone;
use crate::state::{ConnCommand, LoginFailure, Shared, StreamErrorKind};

/// Why the server could not start or a wait failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("refusing to listen on {0}: the fake server binds loopback addresses only")]
    NotLoopback(SocketAddr),
    #[error("cannot listen: {0}")]
    Bind(#[from] std::io::Error),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    #[error("the server's event stream ended")]
    Closed,
}

/// A fake WhatsApp Web server on loopback. Dropping it stops the server.
pub struct FakeServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
}

impl FakeServer {
    /// Binds (loopback only) and starts accepting connections.
    pub async fn start(config: ServerConfig) -> Result<Self, ServerError> {
        if !config.bind.ip().is_loopback() {
            return Err(ServerError::NotLoopback(config.bind));
        }
        let listener = TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let media = crate::media::MediaHost::start().await?;
        let shared = Arc::new(Shared::new(config, media));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone(), shutdown_rx));
        tracing::info!(%addr, "fake WhatsApp server listening");
        Ok(Self {
            shared,
            addr,
            shutdown,
            accept_task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to give whatsapp-rust's `TokioWebSocketTransportFactory`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws/chat", self.addr)
    }

    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// The simulated phone of the configured account.
    pub fn phone(&self) -> Phone {
        Phone {
            shared: self.shared.clone(),
        }
    }

    /// WhatsApp's media servers: what was uploaded, faults for downloads,
    /// and an HTTP client that trusts them.
    pub fn media(&self) -> &crate::media::MediaHost {
        &self.shared.media
    }

    /// The simulated contacts (and their faults).
    pub fn contacts(&self) -> crate::contacts::Contacts {
        crate::contacts::Contacts {
            shared: self.shared.clone(),
        }
    }

    /// Events from now on. Subscribe before triggering what you wait for.
    pub fn subscribe(&self) -> broadcast::Receiver<ServerEvent> {
        self.shared.events.subscribe()
    }

    /// A snapshot of attempts and per-device concurrency.
    pub fn stats(&self) -> Stats {
        let shared = &self.shared;
        let state = shared.state();
        let jid_of = |key| Shared::device_by_key(&state, key).map(|id| shared.device_jid(id));
        let mut devices: Vec<DeviceSummary> = state
            .concurrency
            .iter()
            .map(|(key, stats)| DeviceSummary {
                device: *key,
                jid: jid_of(key),
                stats: *stats,
            })
            .collect();
        devices.sort_by_key(|d| d.device);
        Stats {
            attempts: state.attempts.clone(),
            devices,
            live_connections: state.connections.len(),
        }
    }

    /// Starts each device's `max` concurrency afresh from its current count,
    /// for a test that measures one phase only (say, reconnects after a
    /// fault, not the pairing before them).
    pub fn reset_concurrency_peaks(&self) {
        let mut state = self.shared.state();
        for stats in state.concurrency.values_mut() {
            stats.max = stats.current;
        }
    }

    /// Closes every live connection now (no stream error: a network drop).
    pub fn drop_connections(&self) -> usize {
        self.broadcast(|| ConnCommand::Close)
    }

    /// Sends a stream error to every live connection and closes it.
    pub fn send_stream_error(&self, kind: StreamErrorKind) -> usize {
        self.broadcast(|| ConnCommand::StreamError(kind))
    }

    /// Withdraws the outstanding link code, as WhatsApp does when it wants
    /// the device to show a new one (`refresh_code` with
    /// `force_manual_refresh`). The phone no longer accepts that code.
    /// Returns false when no link code is outstanding.
    pub fn refresh_link_code(&self) -> bool {
        let (request, tx) = {
            let mut state = self.shared.state();
            let Some(request) = state.link_code.take() else {
                return false;
            };
            let tx = state.connections.get(&request.conn).map(|c| c.tx.clone());
            (request, tx)
        };
        let node = crate::link_code::refresh_code_node(&request.pairing_ref);
        tx.is_some_and(|tx| tx.send(ConnCommand::Deliver(node)).is_ok())
    }

    fn broadcast(&self, command: impl Fn() -> ConnCommand) -> usize {
        let txs: Vec<_> = self
            .shared
            .state()
            .connections
            .values()
            .map(|c| c.tx.clone())
            .collect();
        txs.iter().filter(|tx| tx.send(command()).is_ok()).count()
    }

    /// New connections are closed at once while set.
    pub fn set_refuse(&self, on: bool) {
        self.shared.state().faults.refuse = on;
    }

    /// New connections are accepted and never answered while set.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.state().faults.blackhole = on;
    }

    /// Every frame the server sends on new connections is delayed.
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.shared.state().faults.delay = delay;
    }

    /// New connections are closed after the client sent this many frames
    /// (after the handshake).
    pub fn set_close_after_frames(&self, frames: Option<u32>) {
        self.shared.state().faults.close_after_frames = frames;
    }

    /// Logins get this verdict instead of `<success>` (402 ban, 405 outdated).
    pub fn set_login_failure(&self, failure: Option<LoginFailure>) {
        self.shared.state().faults.login_failure = failure;
    }

    /// Replaces the numbers a contact lookup reports as on WhatsApp.
    pub fn set_registered_numbers(&self, numbers: impl IntoIterator<Item = String>) {
        self.shared.state().registered_numbers = numbers.into_iter().collect();
    }

    /// What an account's companions last announced with `<presence>`, and
    /// the account's presence as WhatsApp derives it: `available` while any
    /// connected companion says so (the primary phone then gets no
    /// notifications), else `unavailable`. A device that is not connected,
    /// or has said nothing on its connection, shows `null`. `account` is a
    /// number in any format (default: the configured account).
    pub fn presence(&self, account: Option<&str>) -> Result<PresenceReport, String> {
        let shared = &self.shared;
        if let Some(number) = account {
            let digits: String = number.chars().filter(char::is_ascii_digit).collect();
            if digits != shared.config.account.phone {
                return Err(format!("no account {digits} on this server"));
            }
        }
        let state = shared.state();
        let mut devices = std::collections::BTreeMap::new();
        for id in state.devices.keys() {
            let said: Vec<&str> = state
                .connections
                .values()
                .filter(|live| live.device_id == Some(*id))
                .filter_map(|live| live.presence.as_deref())
                .collect();
            let presence = if said.contains(&"available") {
                Some("available".to_string())
            } else {
                said.first().map(|p| p.to_string())
            };
            devices.insert(shared.device_jid(*id), presence);
        }
        let available = devices.values().any(|p| p.as_deref() == Some("available"));
        Ok(PresenceReport {
            presence: if available {
                "available"
            } else {
                "unavailable"
            }
            .to_string(),
            devices,
        })
    }

    /// Waits until an event matching `predicate` arrives on `events`.
    pub async fn wait_for(
        events: &mut broadcast::Receiver<ServerEvent>,
        deadline: Duration,
        what: &str,
        mut predicate: impl FnMut(&ServerEvent) -> bool,
    ) -> Result<ServerEvent, ServerError> {
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(event) if predicate(&event) => return Ok(event),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Err(ServerError::Closed),
                }
            }
        };
        tokio::time::timeout(deadline, wait)
            .await
            .map_err(|_| ServerError::Timeout(deadline, what.to_string()))?
    }

    /// Stops accepting and closes every connection.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let _ = (&mut self.accept_task).await;
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let conn = {
                        let mut state = shared.state();
                        let id = state.next_conn;
                        state.next_conn = ConnectionId(id.0 + 1);
                        id
                    };
                    tokio::spawn(connection::serve(shared.clone(), tcp, conn, shutdown.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}
