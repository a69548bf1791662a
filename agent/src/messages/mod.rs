//! Messages through the outlet: customers' chats to HQ, HQ's sends to
//! customers, over MQTT, with nothing lost (DESIGN.md, "Messages").
//!
//! # Layout
//!
//! - [`inbound`]: a decrypted WhatsApp message → the JSON HQ receives.
//! - [`sender`]: who wrote, by number and LID (the message, the session's
//!   LID mappings, a lookup), before the inbox commits it.
//! - [`kept`]: records kept on the Pi that could not go to HQ as they
//!   were (the whole of a cut message, a record the broker refused).
//! - [`inbox`]: whatsapp-rust's `InboundDurabilityHook`. A message is
//!   committed to the store (fsynced) before WhatsApp is told it arrived;
//!   a full inbox leaves it unacked, so WhatsApp keeps it.
//! - [`publisher`]: its own MQTT connection that hands the publish queue
//!   (inbound messages and send statuses) to the broker at QoS 1 and deletes
//!   a row only after the broker's PUBACK for it.
//! - [`outbox`]: `send` requests into the durable outbox, and the worker
//!   that sends them in order, paced, once per `client_id`, and turns the
//!   server's acks and the recipients' receipts into statuses.
//! - [`media`]: received files (pictures, voice notes, documents): the
//!   download jobs committed with their messages, the spool, the download
//!   worker; the publisher sends them to HQ in chunks.
//! - [`read`]: HQ's `read`: read receipts for messages it has read (never
//!   sent by the agent on its own).
//! - [`status`]: the `message/status` payload.
//!
//! The supervisor stays the connection's only owner: it registers the hook
//! and the receipt handler on each session's client and hands the live
//! client over ([`Messages::connected`]) while it is connected. Everything
//! here reads that; nothing here opens or closes a WhatsApp connection.
//! The one exception, asked of the supervisor like any other command, is
//! a reconnect after a full inbox drained: WhatsApp redelivers what was
//! left unacked only on a new connection.
//!
//! A working part: it owns the inbox, the outbox, the publish queue and their
//! MQTT connection. It may use the plain rules below it and the MQTT link's
//! connection options; it must not import the supervisor (which hands it the
//! client) or any entry point.

pub mod inbound;
pub mod inbox;
pub mod kept;
pub mod media;
pub mod outbox;
pub mod publisher;
pub mod read;
pub mod sender;
pub mod status;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc, watch};
use whatsapp_rust::client::Client;
use whatsapp_rust::types::events::Event;

use crate::command::Commands;
use crate::config::Config;
use crate::health::{Health, MessageHealth};
use crate::topics::Topics;

/// Depths are read again at most this often however busy the queues are.
const DEPTH_REFRESH: Duration = Duration::from_millis(500);
/// And at least this often (oldest ages, pruning).
const DEPTH_IDLE_REFRESH: Duration = Duration::from_secs(30);
/// Queues that held at least this many messages hand their freed heap back
/// once they are empty again.
const TRIM_AFTER: u64 = 100;

/// The messaging side of the agent, shared by its tasks, the supervisor's
/// sessions and the command paths.
pub struct Messages {
    config: Arc<Config>,
    store: Arc<outlet_store::SqliteStore>,
    topics: Topics,
    /// The client of the connected session; `None` while not connected.
    client: watch::Sender<Option<Arc<Client>>>,
    /// The supervisor's snapshot (linked or not, the state).
    health: watch::Receiver<Health>,
    /// What this module reports; the supervisor copies it into [`Health`].
    report: watch::Sender<MessageHealth>,
    /// Something was queued for the broker.
    publish_wake: Notify,
    /// Something was queued for WhatsApp.
    outbox_wake: Notify,
    /// Depths may have changed.
    depth_wake: Notify,
    /// A file may be due for download (a new job, a new session).
    media_wake: Notify,
    /// Received files on disk (`<data_dir>/media`).
    spool: media::spool::Spool,
    /// Receipts and server acks of the running session, for the outbox.
    session_events: mpsc::UnboundedSender<Arc<Event>>,
    commands: Commands,
    /// Which numbers have WhatsApp, as last looked up (see `outbox`).
    registrations: std::sync::Mutex<HashMap<String, (bool, std::time::Instant)>>,
    /// Turns for number lookups (shared with the supervisor's
    /// `check_number`).
    lookups: Arc<crate::pacing::Pacer>,
    /// LIDs whose number WhatsApp did not give, and until when it is not
    /// asked again (see `sender`).
    hidden_lids: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

/// The tasks [`Messages::start`] spawned.
pub struct MessageTasks {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    publisher: Option<publisher::PublisherHandle>,
}

impl MessageTasks {
    /// Stops the tasks; the publisher says DISCONNECT (bounded by `grace`).
    pub async fn shutdown(self, grace: Duration) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(publisher) = self.publisher {
            publisher.shutdown(grace).await;
        }
    }
}

impl Messages {
    /// Starts the publisher, the outbox worker and the depth reporter.
    /// `None` when messages are disabled.
    pub fn start(
        config: Arc<Config>,
        store: Arc<outlet_store::SqliteStore>,
        health: watch::Receiver<Health>,
        commands: Commands,
        lookups: Arc<crate::pacing::Pacer>,
    ) -> Option<(Arc<Messages>, MessageTasks)> {
        if !config.messages_enabled() {
            return None;
        }
        let topics = match Topics::new(&config.mqtt.topic_prefix, &config.outlet.id) {
            Ok(topics) => topics,
            Err(e) => {
                tracing::error!(error = %e, "messages: bad MQTT topic prefix; messages are off");
                return None;
            }
        };
        let (client, _) = watch::channel(None);
        let (report, _) = watch::channel(MessageHealth::default());
        let (session_events, events_rx) = mpsc::unbounded_channel();
        let spool = media::spool::Spool::new(&config.storage.data_dir);
        let messages = Arc::new(Messages {
            config,
            store,
            topics,
            client,
            health,
            report,
            publish_wake: Notify::new(),
            outbox_wake: Notify::new(),
            depth_wake: Notify::new(),
            media_wake: Notify::new(),
            spool,
            session_events,
            commands,
            registrations: std::sync::Mutex::default(),
            hidden_lids: std::sync::Mutex::default(),
            lookups,
        });
        let publisher = publisher::spawn(messages.clone());
        let tasks = vec![
            tokio::spawn(outbox::run(messages.clone())),
            tokio::spawn(outbox::track(messages.clone(), events_rx)),
            tokio::spawn(report_depths(messages.clone())),
            tokio::spawn(media::download::run(messages.clone())),
        ];
        Some((messages.clone(), MessageTasks { tasks, publisher }))
    }

    /// The session is connected on `client`: sends may go out.
    pub fn connected(&self, client: Arc<Client>) {
        self.client.send_replace(Some(client));
    }

    /// The session's connection ended.
    pub fn disconnected(&self) {
        self.client.send_replace(None);
    }

    /// What to register on each session's client.
    pub fn hook(self: &Arc<Self>) -> inbox::InboxHook {
        inbox::InboxHook::new(self.clone())
    }

    /// Forwards the session's receipts and server acks to the outbox.
    pub fn session_events(&self) -> mpsc::UnboundedSender<Arc<Event>> {
        self.session_events.clone()
    }

    /// The report the supervisor copies into the health snapshot.
    pub fn report(&self) -> watch::Receiver<MessageHealth> {
        self.report.subscribe()
    }

    fn limits_inbox(&self) -> outlet_store::Limits {
        outlet_store::Limits {
            max_messages: self.config.messages.inbox_max_messages,
            max_bytes: self.config.messages.inbox_max_bytes,
        }
    }

    fn limits_outbox(&self) -> outlet_store::Limits {
        outlet_store::Limits {
            max_messages: self.config.messages.outbox_max_messages,
            max_bytes: self.config.messages.outbox_max_bytes,
        }
    }

    fn queued_for_broker(&self) {
        self.publish_wake.notify_one();
        self.depth_wake.notify_one();
    }
}

/// Keeps the report's depths and ages current, and prunes what is older
/// than `messages.keep_days`.
async fn report_depths(messages: Arc<Messages>) {
    let keep = chrono::Duration::days(i64::from(messages.config.messages.keep_days));
    let mut pruned_at: Option<DateTime<Utc>> = None;
    // The largest the queues were since they were last empty.
    let mut high_water = 0u64;
    loop {
        let now = Utc::now();
        if pruned_at.is_none_or(|at| now - at > chrono::Duration::hours(1)) {
            pruned_at = Some(now);
            if let Err(e) = messages.store.prune_messages(now - keep).await {
                tracing::warn!(error = %e, "messages: cannot prune old message records");
            }
            if let Err(e) = messages.store.prune_media_jobs(now - keep).await {
                tracing::warn!(error = %e, "messages: cannot prune old media jobs");
            }
            let journal = chrono::Duration::days(i64::from(messages.config.messages.journal_days));
            match messages
                .store
                .prune_journal(now - journal, messages.config.messages.journal_max_bytes)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    records = n,
                    "messages: the oldest journaled records went (age or size)"
                ),
                Err(e) => tracing::warn!(error = %e, "messages: cannot prune the journal"),
            }
        }
        // Received files not yet fetched and published (or reported).
        let media_pending = messages.store.media_pending().await.ok();
        match messages.store.message_depths().await {
            Ok(depths) => {
                let pending = depths.inbox_messages + depths.outbox_messages;
                high_water = high_water.max(pending);
                if pending == 0 && high_water >= TRIM_AFTER {
                    // A drained queue of thousands leaves megabytes of freed
                    // heap that glibc keeps (the messages bench: 11.4 → 4.9 MiB
                    // anonymous after a trim); give them back.
                    high_water = 0;
                    crate::memory::release_free_memory();
                }
                messages.report.send_if_modified(|report| {
                    let next = MessageHealth {
                        inbox_pending: depths.inbox_messages,
                        inbox_bytes: depths.inbox_bytes,
                        inbox_oldest_at: depths.inbox_oldest,
                        outbox_pending: depths.outbox_messages,
                        outbox_oldest_at: depths.outbox_oldest,
                        statuses_pending: depths.statuses,
                        last_message_in_at: depths.last_in.or(report.last_message_in_at),
                        last_message_out_at: depths.last_out.or(report.last_message_out_at),
                        inbox_full: report.inbox_full,
                        set_aside: report.set_aside,
                        media_pending: media_pending.unwrap_or(report.media_pending),
                    };
                    let changed = next != *report;
                    *report = next;
                    changed
                });
            }
            Err(e) => tracing::warn!(error = %e, "messages: cannot read the queue depths"),
        }
        let _ = tokio::time::timeout(DEPTH_IDLE_REFRESH, messages.depth_wake.notified()).await;
        tokio::time::sleep(DEPTH_REFRESH).await;
    }
}

/// Runs file I/O (the spool, kept records) on tokio's blocking pool:
/// `f`'s error, or the task's (a panic) as an I/O error, so callers handle
/// one kind.
pub(crate) async fn blocking_io<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// A lock whose holder panicked still guards plain data: keep going.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
