//! A plain whatsapp-rust client pointed at the fake server, with its events
//! on a channel so tests can wait for them with deadlines.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use fake_whatsapp::{FakeServer, ServerConfig};
use tokio::sync::mpsc;
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::store::traits::Backend;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::Event;

/// Generous: a loaded 2-core CI machine, and the first `Connected` after a
/// fresh pairing waits ~10 s for an app-state key share that never comes.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The agent has no use for HTTP (media, version fetch); neither do tests.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub async fn server() -> FakeServer {
    init_logs();
    FakeServer::start(ServerConfig::default())
        .await
        .expect("server starts")
}

pub fn memory_store() -> Arc<dyn Backend> {
    Arc::new(whatsapp_rust::wacore::store::InMemoryBackend::new())
}

pub struct TestClient {
    pub events: mpsc::UnboundedReceiver<Arc<Event>>,
    pub handle: Option<BotHandle>,
    pub client: Arc<whatsapp_rust::client::Client>,
}

pub async fn start_client(server: &FakeServer, store: Arc<dyn Backend>) -> TestClient {
    start_client_with(server, store, false).await
}

/// A client that skips history sync (as the agent does) when `skip_history`.
pub async fn start_client_with(
    server: &FakeServer,
    store: Arc<dyn Backend>,
    skip_history: bool,
) -> TestClient {
    let (tx, events) = mpsc::unbounded_channel();
    let mut builder = Bot::builder();
    if skip_history {
        builder = builder.skip_history_sync();
    }
    let bot = builder
        .with_backend_arc(store)
        .with_transport_factory(TokioWebSocketTransportFactory::new().with_url(server.url()))
        // The media host's own client: it trusts that host's certificate
        // and nothing else (no certificate check is skipped for media).
        .with_http_client(server.media().client().expect("a media client"))
        .with_version((2, 3000, 1_023_868_176))
        .on_event(move |event, _client| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
            }
        })
        .build()
        .await
        .expect("bot builds");
    let client = bot.client();
    TestClient {
        events,
        handle: Some(bot.spawn()),
        client,
    }
}

pub fn name(event: &Event) -> String {
    serde_json::to_value(event)
        .ok()
        .and_then(|v| {
            v.as_object()
                .and_then(|o| o.keys().next().cloned())
                .or_else(|| v.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| "?".into())
}

impl TestClient {
    /// Waits for the first event `pick` maps to `Some`, within `DEADLINE`.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let events = &mut self.events;
        let wait = async {
            loop {
                let event = events.recv().await.expect("client event stream ended");
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    pub async fn next_qr(&mut self) -> String {
        self.wait_for("a QR code", |e| match e {
            Event::PairingQrCode(qr) => Some(qr.code.clone()),
            _ => None,
        })
        .await
    }

    pub async fn connected(&mut self) {
        self.wait_for("Connected", |e| {
            matches!(e, Event::Connected(_)).then_some(())
        })
        .await
    }

    pub async fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(DEADLINE, handle.shutdown())
                .await
                .expect("client shuts down");
        }
    }
}

/// A client that has paired through the phone and reached `Connected`.
pub struct Paired {
    pub client: TestClient,
    pub store: Arc<dyn Backend>,
    pub jid: String,
}

pub async fn paired_client(server: &FakeServer) -> Paired {
    let store = memory_store();
    let mut client = start_client(server, store.clone()).await;
    let qr = client.next_qr().await;
    let paired = server.phone().scan(&qr).await.expect("phone scans the QR");
    client.connected().await;
    Paired {
        client,
        store,
        jid: paired.jid,
    }
}

/// A device linked through the phone, then logged in by a fresh client on
/// the same store — what the agent does after every pairing — with the
/// server's concurrency peaks counted from that login on.
///
/// Why not the client that paired: a plain whatsapp-rust client can drop its
/// first login after the post-pairing 515 and hold two connections for a
/// moment (a race in the library's pair-success task, see pairing.rs). A
/// test of what the server does with a logged-in device must not inherit
/// that race. The fresh client also knows the push name from pairing, so it
/// connects at once instead of after the 10 s key-share grace.
pub async fn linked_client(server: &FakeServer) -> Paired {
    let store = memory_store();
    let mut events = server.subscribe();
    let mut pairing = start_client(server, store.clone()).await;
    let qr = pairing.next_qr().await;
    let paired = server.phone().scan(&qr).await.expect("phone scans the QR");
    let jid = paired.jid;
    server_event(
        &mut events,
        "the device signed its identity",
        |e| matches!(e, fake_whatsapp::ServerEvent::Paired { jid: j, .. } if *j == jid),
    )
    .await;
    pairing
        .wait_for("PairSuccess", |e| {
            matches!(e, Event::PairSuccess(_)).then_some(())
        })
        .await;
    pairing.stop().await;
    // Every connection the pairing client opened must be finished on the
    // server's side, not merely gone from its live list: its post-515
    // reconnect can hang up with its login still unread by the server, and
    // on a loaded machine the server then reads that login after the fresh
    // client's and replaces the fresh client with a dead connection.
    wait_until(server, "the pairing client's connections finished", |s| {
        s.open_attempts() == 0
    })
    .await;
    server.reset_concurrency_peaks();
    let mut client = start_client(server, store.clone()).await;
    client.connected().await;
    Paired { client, store, jid }
}

/// Waits until the server's counters satisfy `done`, within `DEADLINE`
/// (checked every 10 ms: counters have no event of their own).
pub async fn wait_until(
    server: &FakeServer,
    what: &str,
    done: impl Fn(&fake_whatsapp::Stats) -> bool,
) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done(&server.stats()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            server.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for the server event `pick` accepts, within `DEADLINE`.
pub async fn server_event(
    events: &mut tokio::sync::broadcast::Receiver<fake_whatsapp::ServerEvent>,
    what: &str,
    pick: impl FnMut(&fake_whatsapp::ServerEvent) -> bool,
) -> fake_whatsapp::ServerEvent {
    FakeServer::wait_for(events, DEADLINE, what, pick)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
