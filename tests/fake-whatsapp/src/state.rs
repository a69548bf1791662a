//! The server's shared state: the device registry, live connections, injected
//! faults and everything it observed.
//!
//! One `std::sync::Mutex` guards all of it. Nothing awaits while holding it,
//! and one lock means an observation (say, the concurrency counter) is always
//! consistent with the registry it describes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};
use wacore::libsignal::protocol::KeyPair;
use wacore_binary::Node;

use crate::config::ServerConfig;
use crate::noise::{HandshakeKind, ServerIdentity};
use crate::observe::{Attempt, ConnectionId, DeviceKey, DeviceStats, ServerEvent};

/// A linked (companion) device of the account.
#[derive(Debug, Clone)]
pub(crate) struct DeviceRecord {
    /// The client's static Noise key: how a login proves it is this device.
    pub noise_key: DeviceKey,
    /// The ADV key index the phone gave it (listed in the account's
    /// key-index list while the device is linked).
    pub key_index: u32,
}

/// A connection-level fault applied to connections accepted from now on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    pub refuse: bool,
    pub blackhole: bool,
    pub delay: Option<Duration>,
    pub close_after_frames: Option<u32>,
    pub login_failure: Option<LoginFailure>,
}

/// A verdict the server gives instead of `<success>` at login.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LoginFailure {
    /// `<failure reason="402">`: a temporary ban. Logins fail until it expires.
    TemporaryBan {
        /// The ban reason code WhatsApp sends (`code=`), e.g. 101.
        code: u32,
        /// Unix time (seconds) the ban ends.
        until_unix: u64,
    },
    /// `<failure reason="405">`: the client version is too old.
    ClientOutdated,
}

/// A stream error the server can send to live sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamErrorKind {
    /// `code="515"`: "restart required"; the client reconnects at once.
    Restart,
    /// `code="401"` with `<conflict type="device_removed"/>`: unlinked.
    DeviceRemoved,
    /// `<conflict type="replaced"/>`: another client took the session.
    Replaced,
    /// `code="503"`: service unavailable; the client reconnects with backoff.
    Unavailable,
}

/// What the connection task is asked to do by the rest of the server.
pub(crate) enum ConnCommand {
    /// Deliver `pair-success` for a scanned ref; report the client's answer.
    PairSuccess(Box<PairSuccessCommand>),
    /// Deliver `primary_hello` for a link code the phone accepted; keep
    /// what the phone needs to open the companion's answer.
    PrimaryHello(Box<PrimaryHelloCommand>),
    /// Deliver a notification as it is.
    Deliver(Node),
    /// Deliver a stanza and close at once, before the client can answer it
    /// (the "dropped before the ack" fault).
    DeliverAndClose(Node),
    StreamError(StreamErrorKind),
    Close,
}

/// A `pair-success` for the connection to deliver.
pub(crate) struct PairSuccessCommand {
    /// The `id` of the `pair-success` IQ, echoed by the client's answer.
    pub iq_id: String,
    pub node: Node,
    pub device_id: u16,
    /// The phone's answer: the device JID, or why the client refused.
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// A `primary_hello` for the connection to deliver.
pub(crate) struct PrimaryHelloCommand {
    pub node: Node,
    pub hello: crate::link_code::PrimaryHello,
}

/// Refs issued to one unpaired connection, with the server's idea of how long
/// each stays valid.
#[derive(Debug, Clone)]
pub(crate) struct IssuedRefs {
    pub refs: Vec<String>,
    pub issued_at: Instant,
}

pub(crate) struct LiveConnection {
    pub device: DeviceKey,
    pub jid: Option<String>,
    pub tx: mpsc::UnboundedSender<ConnCommand>,
    pub refs: Option<IssuedRefs>,
    /// True once this connection completed pairing (a later scan of its refs
    /// is superseded).
    pub paired: bool,
    /// The companion device id once logged in.
    pub device_id: Option<u16>,
    /// The last `<presence type=…>` this connection announced for its
    /// device (`available` or `unavailable`), if any.
    pub presence: Option<String>,
    /// True once the client went active: from then on stanzas for its device
    /// are delivered at once instead of waiting in the offline queue.
    pub active: bool,
}

pub(crate) struct State {
    pub devices: BTreeMap<u16, DeviceRecord>,
    pub next_device_id: u16,
    pub connections: HashMap<ConnectionId, LiveConnection>,
    pub concurrency: HashMap<DeviceKey, DeviceStats>,
    pub attempts: Vec<Attempt>,
    pub faults: Faults,
    pub next_conn: ConnectionId,
    /// Refs ever issued, so a scan can tell "unknown" from "no longer valid".
    pub ref_owner: HashMap<String, ConnectionId>,
    pub registered_numbers: std::collections::BTreeSet<String>,
    /// The newest `companion_hello` for the account's number.
    pub link_code: Option<crate::link_code::LinkCodeRequest>,
    /// Everything about messages: key directory, queues, contacts' inboxes.
    pub messaging: crate::messaging::MessagingState,
}

pub(crate) struct Shared {
    pub config: ServerConfig,
    pub identity: ServerIdentity,
    /// The phone's account identity key: signs every companion it links.
    pub phone_identity: KeyPair,
    pub started: Instant,
    pub events: broadcast::Sender<ServerEvent>,
    /// The account's ADV raw id: the same for every companion the phone
    /// signs, new only when the account is reinstalled.
    pub raw_id: u32,
    /// The Signal state of every simulated device (the phone, contacts and
    /// their companions). Async: encryption awaits the libsignal stores.
    pub parties: tokio::sync::Mutex<crate::messaging::Parties>,
    /// WhatsApp's media servers: encrypted files, uploaded and fetched.
    pub media: crate::media::MediaHost,
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn new(config: ServerConfig, media: crate::media::MediaHost) -> Self {
        let (events, _) = broadcast::channel(4096);
        let registered_numbers = config.registered_numbers.clone();
        let phone_identity = KeyPair::generate(&mut rand::rng());
        let raw_id = rand::random::<u32>();
        let (parties, messaging) = crate::messaging::setup(&config, &phone_identity, raw_id);
        Self {
            config,
            identity: ServerIdentity::generate(),
            phone_identity,
            started: Instant::now(),
            events,
            raw_id,
            parties: tokio::sync::Mutex::new(parties),
            media,
            state: Mutex::new(State {
                devices: BTreeMap::new(),
                next_device_id: 1,
                connections: HashMap::new(),
                concurrency: HashMap::new(),
                attempts: Vec::new(),
                faults: Faults::default(),
                next_conn: ConnectionId(1),
                ref_owner: HashMap::new(),
                registered_numbers,
                link_code: None,
                messaging,
            }),
        }
    }

    /// Locks the state. A poisoned lock (a panic elsewhere while holding it)
    /// still holds consistent data for a test server: keep going.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn emit(&self, event: ServerEvent) {
        tracing::debug!(?event, "fake-whatsapp event");
        let _ = self.events.send(event);
    }

    pub(crate) fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The JID of a companion device, `PHONE:DEV@s.whatsapp.net`.
    pub(crate) fn device_jid(&self, device_id: u16) -> String {
        format!("{}:{device_id}@s.whatsapp.net", self.config.account.phone)
    }

    pub(crate) fn device_lid(&self, device_id: u16) -> String {
        format!("{}:{device_id}@lid", self.config.account.lid)
    }

    /// Records that a handshake finished for `device`; bumps its concurrency.
    pub(crate) fn connection_opened(
        &self,
        conn: ConnectionId,
        device: DeviceKey,
        kind: HandshakeKind,
        tx: mpsc::UnboundedSender<ConnCommand>,
    ) {
        let mut state = self.state();
        let stats = state.concurrency.entry(device).or_default();
        stats.current += 1;
        stats.max = stats.max.max(stats.current);
        stats.total += 1;
        if let Some(attempt) = state.attempts.iter_mut().find(|a| a.connection == conn) {
            attempt.handshake = Some(kind);
            attempt.device = Some(device);
        }
        state.connections.insert(
            conn,
            LiveConnection {
                device,
                jid: None,
                tx,
                refs: None,
                paired: false,
                device_id: None,
                active: false,
                presence: None,
            },
        );
    }

    /// Forgets a connection; drops its concurrency count.
    pub(crate) fn connection_closed(&self, conn: ConnectionId) {
        let mut state = self.state();
        if let Some(live) = state.connections.remove(&conn)
            && let Some(stats) = state.concurrency.get_mut(&live.device)
        {
            stats.current = stats.current.saturating_sub(1);
        }
    }

    /// Finds the registered device whose Noise key is `key`.
    pub(crate) fn device_by_key(state: &State, key: &DeviceKey) -> Option<u16> {
        state
            .devices
            .iter()
            .find(|(_, d)| &d.noise_key == key)
            .map(|(id, _)| *id)
    }
}
