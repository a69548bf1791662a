//! One WhatsApp connection attempt: a whatsapp-rust client built on the
//! session store, run until its connection ends, then discarded.
//!
//! The library can reconnect by itself, but then nobody outside it knows the
//! attempt number or when the next try comes, and two reconnect loops (the
//! library's and a supervisor's) are exactly how the old system ended up
//! with two connections for one device. So the library's auto-reconnect is
//! switched off: a session ends when its connection ends, and only the
//! supervisor decides whether and when the next one starts. A new client per
//! attempt also means no state of a failed connection leaks into the next.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::client::Client;
use whatsapp_rust::store::traits::Backend;
use whatsapp_rust::types::events::{Event, EventHandler, EventInterest, EventKind};

/// An event of the session numbered `generation`.
pub struct SessionEvent {
    pub generation: u64,
    pub event: Arc<Event>,
}

/// The kinds the supervisor acts on. Messages and the rest are not even
/// materialised for us.
const KINDS: &[EventKind] = &[
    EventKind::Connected,
    EventKind::Disconnected,
    EventKind::PairSuccess,
    EventKind::PairError,
    EventKind::LoggedOut,
    EventKind::PairingQrCode,
    EventKind::PairingQrCodesExhausted,
    EventKind::PairingCode,
    EventKind::PairingCodeError,
    EventKind::PairingCodeRefresh,
    EventKind::ClientOutdated,
    EventKind::StreamReplaced,
    EventKind::TemporaryBan,
    EventKind::ConnectFailure,
    EventKind::StreamError,
    EventKind::SelfPushNameUpdated,
];

/// Forwards events synchronously from the library's event bus, so they are
/// on the channel, in order, before the connection's run loop can end.
struct Forward {
    generation: u64,
    tx: mpsc::UnboundedSender<SessionEvent>,
}

impl EventHandler for Forward {
    fn handle_event(&self, event: Arc<Event>) {
        let _ = self.tx.send(SessionEvent {
            generation: self.generation,
            event,
        });
    }

    fn interest(&self) -> EventInterest {
        EventInterest::of(KINDS)
    }
}

/// What a session needs to start.
pub struct SessionParams {
    pub generation: u64,
    pub endpoint: String,
    pub version: (u32, u32, u32),
    pub backend: Arc<dyn Backend>,
    pub events: mpsc::UnboundedSender<SessionEvent>,
    /// The name the phone lists under "Linked devices" (sent when linking).
    pub device_name: String,
    /// Messages through the outlet: the inbox's durability hook, and the
    /// outbox's receipts and server acks.
    pub messages: Option<Arc<crate::messages::Messages>>,
    /// `whatsapp.media_ca_file`, for the media client (received files are
    /// its only HTTP: the client version is configured, not fetched).
    pub media_ca_file: Option<std::path::PathBuf>,
}

/// The kinds the outbox turns into send statuses.
const MESSAGE_KINDS: &[EventKind] = &[EventKind::Receipt, EventKind::ServerAck];

/// Forwards receipts and server acks to the outbox.
struct ForwardToOutbox {
    tx: mpsc::UnboundedSender<Arc<Event>>,
}

impl EventHandler for ForwardToOutbox {
    fn handle_event(&self, event: Arc<Event>) {
        let _ = self.tx.send(event);
    }

    fn interest(&self) -> EventInterest {
        EventInterest::of(MESSAGE_KINDS)
    }
}

/// A running connection attempt.
pub struct Session {
    pub generation: u64,
    client: Arc<Client>,
    handle: Option<BotHandle>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start the WhatsApp client: {0}")]
pub struct StartError(String);

impl Session {
    pub async fn start(params: SessionParams) -> Result<Self, StartError> {
        let mut builder = Bot::builder();
        if let Some(messages) = &params.messages {
            builder = builder
                .with_inbound_durability_hook(messages.hook())
                .with_event_handler(ForwardToOutbox {
                    tx: messages.session_events(),
                });
        }
        let bot = builder
            .with_backend_arc(params.backend)
            .with_transport_factory(super::transport::NoDelayTransportFactory::new(
                params.endpoint,
            ))
            .with_http_client(crate::messages::media::http::MediaHttp::for_session(
                params.messages.is_some(),
                params.media_ca_file.as_deref(),
            ))
            .with_version(params.version)
            .with_device_props(
                whatsapp_rust::wacore::store::DevicePropsOverride::new()
                    .with_os(params.device_name),
            )
            .with_event_handler(Forward {
                generation: params.generation,
                tx: params.events,
            })
            .skip_history_sync()
            .build()
            .await
            .map_err(|e| StartError(e.to_string()))?;
        let client = bot.client();
        client
            .enable_auto_reconnect
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let handle = bot.spawn();
        Ok(Self {
            generation: params.generation,
            client,
            handle: Some(handle),
        })
    }

    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Resolves when the client's run loop has ended (its connection is
    /// closed). Cancel-safe: can be polled again after another branch of a
    /// `select!` won.
    pub async fn ended(&mut self) {
        match self.handle.as_mut() {
            Some(handle) => {
                handle.await;
                self.handle = None;
            }
            None => std::future::pending().await,
        }
    }

    pub fn is_running(&self) -> bool {
        self.handle.is_some()
    }

    /// Ends the session and waits until its connection is closed. If the
    /// client does not stop within `grace`, its run task is aborted and the
    /// socket closed by a second `disconnect`.
    ///
    /// Aborting the run task alone does not close the socket: the
    /// transport lives on in the client (the panic test in
    /// `tests/e2e_recovery.rs` saw the old connection outlive its task and
    /// overlap the next one). `disconnect` flushes first (bounded by the
    /// library at a few seconds) and closes the transport last, so a second
    /// call after the first timed out finds the flushing done.
    pub async fn stop(&mut self, grace: Duration) {
        if let Some(handle) = self.handle.take()
            && tokio::time::timeout(grace, handle.shutdown())
                .await
                .is_err()
        {
            tracing::warn!("WhatsApp client did not stop within {grace:?}; closing it");
            close(&self.client, grace).await;
        }
    }

    /// Unlinks this device on the server (when connected) and ends the
    /// session.
    pub async fn logout(&mut self, grace: Duration) {
        let client = self.client.clone();
        let _ = tokio::time::timeout(grace, client.logout()).await;
        self.stop(grace).await;
    }
}

/// Closes a client's connection whatever state its session is in (stopped,
/// aborted, or abandoned by a panic).
pub async fn close(client: &Arc<Client>, grace: Duration) {
    if tokio::time::timeout(grace, client.disconnect())
        .await
        .is_err()
    {
        tracing::error!("WhatsApp client did not close its connection within {grace:?}");
    }
}
