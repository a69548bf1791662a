//! Hands the publish queue to the broker, and forgets a row only after the
//! broker's PUBACK for it.
//!
//! Why a connection of its own (client id `<client id>-messages`), beside
//! the link that carries state and commands: to know *which* message a
//! PUBACK is for. rumqttc reports an outgoing publish and its PUBACK by
//! packet id only, in the order the client's channel delivered them. On a
//! connection that carries nothing but these publishes, the n-th
//! `Outgoing::Publish` is the n-th row handed over, so packet id → row is
//! exact.
//!
//! Why a new rumqttc client and event loop for every connection: rumqttc
//! keeps unacknowledged publishes and its channel across reconnects and
//! drops them when the broker starts a clean session; a publish handed over
//! during the outage could then go out on the *next* connection and break
//! the mapping. A fresh event loop per connection has none of that: after
//! every connect the queue is published again from its first row, and
//! whatever the broker had already acked but the store not yet deleted goes
//! out a second time (at least once, never lost).
//!
//! Why HQ's `send` and `read` come in on this connection too: it is a
//! persistent session (clean session off, a fixed client id) subscribed to
//! them at QoS 1, so the broker keeps what HQ publishes while the agent
//! restarts or reconnects, and delivers it when the agent is back. (The
//! link's connection stays a clean session: a late `logout` must not run.)
//! They are handled one at a time, in order, and acknowledged to the broker
//! only once done (a send is in the outbox); a burst waits on the broker,
//! not in memory. Their answers go out here as well, each handed over with
//! a marker in place of a row, so the packet ids still map exactly; and a
//! request is acknowledged only once the broker has its answer: a broker
//! that goes down in between delivers the request again, and HQ gets the
//! answer again (a send's repeat says `duplicate`), rather than none.
//!
//! Why a record can be set aside: a broker drops the connection of a client
//! that publishes a packet over its limit, and the same oldest record would
//! then go out first after every reconnect, forever, with everything behind
//! it. Records are built below `mqtt.max_packet_bytes` (see
//! `inbound::fit`), but the broker's real limit may be lower than
//! configured. A record larger than any the broker has acknowledged, that
//! was the oldest unacknowledged one when [`STRIKES`] connections in a row
//! ended within [`STRIKE_WINDOW`] of handing it over, is replaced in the queue by a short notice with the same
//! id (`set_aside: true`, `bytes`) and kept whole in the data directory
//! (`set-aside/`); the queue moves on. A flapping network could at worst
//! set aside a record that would have gone through: it is kept, and HQ is
//! told which one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Outgoing, Packet, Publish, QoS, SubscribeFilter};
use tokio::sync::{mpsc, watch};

mod hq_requests;
mod media;
mod set_aside;

use super::Messages;
use crate::backoff::Backoff;
use crate::config::ReconnectConfig;
use crate::mqtt::options;
use crate::mqtt::requests;

/// Publishes the broker has not acked yet, at most. Below rumqttc's
/// in-flight limit, so its packet ids never collide.
const WINDOW: usize = 32;
const INFLIGHT: u16 = 64;
/// Acked rows are deleted in batches of up to this many.
const DELETE_BATCH: usize = 256;
/// Looks at the queue at least this often, woken or not.
const POLL: Duration = Duration::from_secs(1);
const CLIENT_CHANNEL: usize = WINDOW * 2;
/// Connections in a row that end right after a record was handed over
/// before it is set aside.
const STRIKES: u32 = 3;
/// How soon after the hand-over a connection's end counts against a record.
const STRIKE_WINDOW: Duration = Duration::from_secs(10);
/// A failure that persists is warned about again this often.
const REWARN_AFTER: Duration = Duration::from_secs(15 * 60);

/// Records one `replay` publishes at most, and bytes of them (at least one
/// record); HQ asks again from where it ended (`more`).
const MAX_REPLAY: u32 = 500;
const MAX_REPLAY_BYTES: usize = 4 * 1024 * 1024;
/// In `Handed`, a publish that is neither a queue row nor an answer a
/// request waits for (a replayed record). Queue rows are positive seqs;
/// an answer is the negative of its [`Publisher::answers`] number.
const NOT_A_ROW: i64 = 0;
/// How long an answer may wait for room in the client's channel.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Rows handed to the client, in order, not yet seen going out.
type Handed = Arc<HandedQueue>;

/// What one connection's driver and the publisher share.
#[derive(Default)]
struct HandedQueue {
    /// Markers of what was handed to the client, in order (see [`NOT_A_ROW`]).
    markers: Mutex<VecDeque<i64>>,
    /// The connection's event loop has ended: nothing handed to its client
    /// goes out any more, so nobody should wait for room there.
    closed: std::sync::atomic::AtomicBool,
}

impl HandedQueue {
    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

enum DriverEvent {
    Ready {
        connection: u64,
        client: AsyncClient,
        handed: Handed,
    },
    Connected {
        connection: u64,
    },
    Acked {
        connection: u64,
        seq: i64,
    },
    /// The broker has the answer numbered `answer`: its request may go.
    AnswerAcked {
        connection: u64,
        answer: i64,
    },
    /// A `send`, `read` or `replay` from HQ.
    Request {
        connection: u64,
        publish: Publish,
    },
    Failed {
        connection: u64,
        error: String,
    },
    Stopped,
}

pub struct PublisherHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl PublisherHandle {
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

pub(super) fn spawn(messages: Arc<Messages>) -> Option<PublisherHandle> {
    let (stop, stop_rx) = watch::channel(false);
    let (tx, rx) = mpsc::channel(1024);
    let client_id = format!("{}-messages", messages.config.mqtt_client_id());
    let driver = tokio::spawn(drive(messages.clone(), client_id, tx, stop_rx.clone()));
    let task = tokio::spawn(async move {
        Publisher::new(messages).run(rx, stop_rx).await;
        driver.abort();
    });
    Some(PublisherHandle { stop, task })
}

struct Publisher {
    messages: Arc<Messages>,
    connection: u64,
    client: Option<(AsyncClient, Handed)>,
    connected: bool,
    /// The last row handed over on this connection.
    cursor: i64,
    in_flight: HashSet<i64>,
    /// When each row in flight was handed to the client, and its size.
    handed_at: HashMap<i64, (Instant, usize)>,
    /// The largest record the broker has acknowledged: one no larger is
    /// not what a broker's size limit refuses.
    largest_acked: usize,
    /// The row the last connections ended on, and how many in a row.
    suspect: Option<(i64, u32)>,
    /// Rows to set aside (see the module doc).
    to_set_aside: Vec<i64>,
    acked: Vec<i64>,
    last_warned: Option<Instant>,
    /// The store's record epoch, once read.
    epoch: Option<String>,
    /// Answers handed over on this connection so far (they are numbered).
    answers: i64,
    /// Requests whose answer the broker has not acknowledged yet, by the
    /// answer's number: acknowledged once it has (see the module doc).
    unanswered: HashMap<i64, Publish>,
    /// Requests to acknowledge, in order, once the client's channel has
    /// room: an acknowledgement dropped for a full channel would hold one
    /// of the broker's in-flight slots until the next connection (after
    /// about 20, the broker stops delivering). At most the broker's
    /// in-flight window.
    acks_due: VecDeque<Publish>,
    /// The received file being published (see `media`).
    media: Option<media::MediaOut>,
}

impl Publisher {
    fn new(messages: Arc<Messages>) -> Self {
        Self {
            messages,
            connection: 0,
            client: None,
            connected: false,
            cursor: 0,
            in_flight: HashSet::new(),
            handed_at: HashMap::new(),
            largest_acked: 0,
            suspect: None,
            to_set_aside: Vec::new(),
            acked: Vec::new(),
            last_warned: None,
            epoch: None,
            answers: 0,
            unanswered: HashMap::new(),
            acks_due: VecDeque::new(),
            media: None,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<DriverEvent>, mut stop: watch::Receiver<bool>) {
        let mut poll = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                event = rx.recv() => match event {
                    Some(DriverEvent::Stopped) | None => return,
                    Some(DriverEvent::Request { connection, publish }) => {
                        self.on_request(connection, publish).await;
                    }
                    Some(event) => self.on_driver(event),
                },
                () = self.messages.publish_wake.notified() => {}
                // Statuses held back until their fsync are now on disk.
                () = self.messages.store.sync_gate().released() => {}
                _ = poll.tick() => {}
            }
            // Everything the driver has said so far, before acting on it.
            while let Ok(event) = rx.try_recv() {
                match event {
                    DriverEvent::Stopped => return,
                    DriverEvent::Request {
                        connection,
                        publish,
                    } => self.on_request(connection, publish).await,
                    event => self.on_driver(event),
                }
            }
            self.ack_due();
            self.delete_acked().await;
            self.set_aside().await;
            self.fill().await;
            self.media_progress().await;
            self.fill_media().await;
        }
        // Acked rows are deleted before the clean DISCONNECT.
        self.delete_acked().await;
        if let Some((client, _)) = &self.client {
            let _ = client.try_disconnect();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            match event {
                DriverEvent::Stopped => break,
                // Not taken: the broker delivers it again to the next run.
                DriverEvent::Request { .. } => {}
                other => self.on_driver(other),
            }
        }
        self.delete_acked().await;
    }

    fn on_driver(&mut self, event: DriverEvent) {
        match event {
            DriverEvent::Ready {
                connection,
                client,
                handed,
            } => {
                self.connection = connection;
                self.client = Some((client, handed));
                self.connected = false;
                self.in_flight.clear();
                self.handed_at.clear();
                // Not acknowledged on the connection that got them: the
                // broker delivers them again.
                self.unanswered.clear();
                self.acks_due.clear();
                self.media_reset();
            }
            DriverEvent::Connected { connection } if connection == self.connection => {
                tracing::info!("messages: connected to the broker");
                self.connected = true;
                self.cursor = 0;
                self.in_flight.clear();
                self.handed_at.clear();
                self.last_warned = None;
                self.media_reset();
            }
            DriverEvent::Acked { connection, seq } if connection == self.connection => {
                self.in_flight.remove(&seq);
                if let Some((_, size)) = self.handed_at.remove(&seq) {
                    self.largest_acked = self.largest_acked.max(size);
                }
                if self.suspect.is_some_and(|(s, _)| s == seq) {
                    self.suspect = None;
                }
                self.acked.push(seq);
            }
            DriverEvent::AnswerAcked { connection, answer } if connection == self.connection => {
                if self.media_acked(answer) {
                    // A part of the file being published.
                } else if let Some(request) = self.unanswered.remove(&answer) {
                    self.acks_due.push_back(request);
                }
            }
            DriverEvent::AnswerAcked { .. } => {}
            DriverEvent::Acked { seq, .. } => {
                // Acked on a connection that has since ended: the broker has
                // it all the same.
                self.acked.push(seq);
            }
            DriverEvent::Failed { connection, error } if connection == self.connection => {
                self.strike();
                let rewarn = self
                    .last_warned
                    .is_none_or(|at| at.elapsed() >= REWARN_AFTER);
                if rewarn {
                    self.last_warned = Some(Instant::now());
                    tracing::warn!(%error, "messages: broker connection failed; messages wait in the inbox");
                } else {
                    tracing::debug!(%error, "messages: broker connection failed");
                }
                self.connected = false;
                self.client = None;
                self.in_flight.clear();
                self.handed_at.clear();
                self.unanswered.clear();
                self.acks_due.clear();
                self.media_reset();
            }
            DriverEvent::Connected { .. } | DriverEvent::Failed { .. } => {}
            DriverEvent::Request { .. } | DriverEvent::Stopped => {}
        }
    }

    /// Acknowledges the requests that are done, as far as the client's
    /// channel has room; the rest on the next turn.
    fn ack_due(&mut self) {
        let Some((client, _)) = &self.client else {
            return;
        };
        while let Some(request) = self.acks_due.front() {
            if client.try_ack(request).is_err() {
                break;
            }
            self.acks_due.pop_front();
        }
    }

    async fn delete_acked(&mut self) {
        if self.acked.is_empty() {
            return;
        }
        let batch: Vec<i64> = self
            .acked
            .drain(..self.acked.len().min(DELETE_BATCH))
            .collect();
        match self.messages.store.delete_publications(batch.clone()).await {
            Ok(()) => {
                self.messages.depth_wake.notify_one();
                super::inbox::reopen_if_drained(&self.messages).await;
            }
            Err(e) => {
                // Kept: published again after the next connect, at worst.
                tracing::warn!(error = %e, "messages: cannot forget published messages");
                self.acked.extend(batch);
            }
        }
    }

    /// Where a queued record of `kind` goes.
    fn topic_of(&self, kind: outlet_store::PublicationKind) -> String {
        match kind {
            outlet_store::PublicationKind::Inbound => self.messages.topics.message_in(),
            outlet_store::PublicationKind::Status => self.messages.topics.message_status(),
        }
    }

    /// Hands rows to the client until the window is full.
    async fn fill(&mut self) {
        if !self.connected {
            return;
        }
        let Some((client, handed)) = self.client.clone() else {
            return;
        };
        if self.epoch.is_none() {
            match self.messages.store.message_epoch().await {
                Ok(epoch) => self.epoch = Some(epoch),
                Err(e) => {
                    tracing::warn!(error = %e, "messages: cannot read the record epoch");
                    return;
                }
            }
        }
        let epoch = self.epoch.clone().unwrap_or_default();
        while self.in_flight.len() < WINDOW {
            let room = (WINDOW - self.in_flight.len()) as u32;
            let rows = match self
                .messages
                .store
                .publications_after(self.cursor, room)
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "messages: cannot read the publish queue");
                    return;
                }
            };
            if rows.is_empty() {
                return;
            }
            for row in rows {
                let topic = self.topic_of(row.kind);
                // Recorded before the client can send it, so the driver
                // always finds it when the publish goes out.
                lock(&handed).push_back(row.seq);
                self.handed_at
                    .insert(row.seq, (Instant::now(), row.payload.len()));
                if client
                    .try_publish(
                        topic,
                        QoS::AtLeastOnce,
                        false,
                        with_sequence(&row.payload, row.seq, &epoch, false),
                    )
                    .is_err()
                {
                    lock(&handed).pop_back();
                    self.handed_at.remove(&row.seq);
                    return;
                }
                self.in_flight.insert(row.seq);
                self.cursor = row.seq;
            }
        }
    }
}

/// The record as HQ gets it: its `seq` in the outlet's record sequence and
/// the sequence's `epoch` first (after `"replay": true` when it is published
/// again), then the fields as they were queued. The queue keeps the seq in
/// its row, not in the payload, so a record is written once.
fn with_sequence(payload: &[u8], seq: i64, epoch: &str, replay: bool) -> Vec<u8> {
    let replay = if replay { r#""replay":true,"# } else { "" };
    let head = format!(
        r#"{{{replay}"seq":{seq},"epoch":{}"#,
        serde_json::Value::from(epoch)
    );
    let mut out = Vec::with_capacity(payload.len() + head.len() + 1);
    out.extend_from_slice(head.as_bytes());
    match payload.strip_prefix(b"{") {
        Some(rest) if rest.first() == Some(&b'}') => out.extend_from_slice(rest),
        Some(rest) => {
            out.push(b',');
            out.extend_from_slice(rest);
        }
        // Not an object (never queued so): sent as it was.
        None => return payload.to_vec(),
    }
    out
}

fn lock(handed: &Handed) -> std::sync::MutexGuard<'_, VecDeque<i64>> {
    handed
        .markers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One event loop per connection (see the module doc).
async fn drive(
    messages: Arc<Messages>,
    client_id: String,
    tx: mpsc::Sender<DriverEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let config = &messages.config.mqtt;
    let mut backoff = Backoff::new(&ReconnectConfig {
        first_delay_ms: config.reconnect_first_delay_ms,
        max_delay_secs: config.reconnect_max_delay_secs,
        jitter: 0.2,
        stable_after_secs: 10,
        connect_timeout_secs: options::CONNECT_TIMEOUT_SECS,
    });
    let mut failover = options::Failover::new(config, &client_id);
    let mut connection = 0u64;
    loop {
        connection += 1;
        let error = match options::client_options(config, failover.url(), &client_id, None) {
            Ok(mut opts) => {
                opts.set_inflight(INFLIGHT);
                // The broker keeps HQ's sends for this session while the
                // agent is away (see the module doc).
                opts.set_clean_session(false);
                // A request is acknowledged only once it is done (a send is
                // in the outbox): a crash before that, and the broker
                // delivers it again.
                opts.set_manual_acks(true);
                let (client, mut eventloop) = AsyncClient::new(opts, CLIENT_CHANNEL);
                let subscriber = client.clone();
                eventloop.set_network_options(options::network_options());
                let handed: Handed = Arc::default();
                let ready = DriverEvent::Ready {
                    connection,
                    client,
                    handed: handed.clone(),
                };
                if tx.send(ready).await.is_err() {
                    return;
                }
                let mut packet_rows: HashMap<u16, i64> = HashMap::new();
                let mut connected_at = None;
                let error = loop {
                    let event = match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            connected_at = Some(Instant::now());
                            // Again on every connect: a broker that lost the
                            // session (no persistence) must learn it anew.
                            let filters = requests::MESSAGE_REQUESTS.iter().map(|name| {
                                SubscribeFilter::new(
                                    messages.topics.request(name),
                                    QoS::AtLeastOnce,
                                )
                            });
                            if subscriber.try_subscribe_many(filters).is_err() {
                                tracing::warn!("messages: cannot subscribe to HQ's sends");
                            }
                            DriverEvent::Connected { connection }
                        }
                        Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                            if let Some(marker) = lock(&handed).pop_front()
                                && marker != NOT_A_ROW
                            {
                                packet_rows.insert(pkid, marker);
                            }
                            continue;
                        }
                        Ok(Event::Incoming(Packet::Publish(publish))) => DriverEvent::Request {
                            connection,
                            publish,
                        },
                        Ok(Event::Incoming(Packet::PubAck(ack))) => {
                            match packet_rows.remove(&ack.pkid) {
                                Some(seq) if seq > 0 => DriverEvent::Acked { connection, seq },
                                Some(answer) => DriverEvent::AnswerAcked {
                                    connection,
                                    answer: -answer,
                                },
                                None => continue,
                            }
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                            let _ = tx.send(DriverEvent::Stopped).await;
                            return;
                        }
                        Ok(_) => continue,
                        Err(e) => {
                            handed
                                .closed
                                .store(true, std::sync::atomic::Ordering::SeqCst);
                            break e.to_string();
                        }
                    };
                    if tx.send(event).await.is_err() {
                        return;
                    }
                };
                if let Some(at) = connected_at {
                    backoff.connection_ended(at.elapsed());
                }
                error
            }
            Err(e) => e.to_string(),
        };
        let error = format!("{}: {error}", failover.shown());
        failover.failed();
        if tx
            .send(DriverEvent::Failed { connection, error })
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            _ = stop.changed() => {
                let _ = tx.send(DriverEvent::Stopped).await;
                return;
            }
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_their_seq_and_epoch_first() {
        let out = with_sequence(br#"{"id":"A","text":"hi"}"#, 7, "e1", false);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(
            v,
            serde_json::json!({"seq": 7, "epoch": "e1", "id": "A", "text": "hi"})
        );
        let empty = with_sequence(b"{}", 1, "e1", false);
        assert_eq!(empty, br#"{"seq":1,"epoch":"e1"}"#);
        let again = with_sequence(br#"{"id":"A"}"#, 7, "e1", true);
        assert_eq!(again, br#"{"replay":true,"seq":7,"epoch":"e1","id":"A"}"#);
    }
}
