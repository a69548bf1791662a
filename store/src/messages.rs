//! The message tables: what the outlet received and has not yet handed to
//! the broker, what HQ asked it to send, and the statuses of those sends.
//!
//! They live in the session database so that a message and the keys that
//! decrypted it survive (or are lost) together, and so that one fsynced
//! transaction is all a received message costs before WhatsApp is told it
//! arrived. The store keeps bytes and states; what a payload means (its
//! JSON shape, which status may follow which) is the agent's business.
//!
//! - `message_inbound_seen`: the (chat, sender, id) of every committed
//!   inbound message, so a redelivery is recognised however late it comes.
//! - `message_publish_queue`: inbound messages and status updates waiting
//!   for the broker's PUBACK, in order.
//! - `message_outbox`: sends, from `queued` to a final status.
//! - `message_journal`: what the broker took, for HQ's replays, within an
//!   age and a byte limit.
//!
//! What a message costs the SD card (BENCHMARKS.md): a row the broker has
//! acked is not deleted in a commit of its own. [`SqliteStore::delete_publications`]
//! notes its seq in the in-memory TEMP table `acked_publications`, every
//! read of the queue leaves those rows out, and the writer thread moves
//! them to the journal inside the next commit that writes anyway (usually
//! the one that queues the next row, on the same leaf page) or after
//! [`crate::writer::DEFER_AT_MOST`]. A crash before that publishes them
//! once more, as a power cut before a checkpoint always could: at least
//! once, never lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Result, StoreError};
use crate::store::SqliteStore;

/// One decrypted inbound message, ready for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRow {
    pub chat: String,
    pub sender: String,
    pub message_id: String,
    pub received_at: DateTime<Utc>,
    /// What is published on `message/in`.
    pub payload: Vec<u8>,
    /// The file to fetch, for a picture, voice note, document…: its job is
    /// committed with the message.
    pub media: Option<crate::media::MediaJob>,
}

/// How much the inbox may hold before the outlet stops taking messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_messages: u64,
    pub max_bytes: u64,
}

/// What [`SqliteStore::commit_inbound`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundCommit {
    /// Durable: `new` rows queued for the broker, `duplicates` recognised.
    Committed { new: usize, duplicates: usize },
    /// Nothing written: the new messages would not fit.
    Full { messages: u64, bytes: u64 },
}

/// What a publication is, so depths can be counted per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicationKind {
    /// An inbound message (`message/in`).
    Inbound,
    /// An outbox status (`message/status`).
    Status,
}

impl PublicationKind {
    fn as_sql(self) -> &'static str {
        match self {
            PublicationKind::Inbound => "in",
            PublicationKind::Status => "status",
        }
    }

    fn from_sql(s: &str) -> Result<Self> {
        match s {
            "in" => Ok(PublicationKind::Inbound),
            "status" => Ok(PublicationKind::Status),
            other => Err(StoreError::invalid("publication kind", other.to_string())),
        }
    }
}

/// A row of the publish queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub seq: i64,
    pub kind: PublicationKind,
    pub payload: Vec<u8>,
}

/// A send HQ asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRequest {
    /// The WhatsApp message id, chosen when queued, so a send repeated after
    /// a crash carries the same id and the recipient sees one message.
    pub message_id: String,
    pub client_id: Option<String>,
    pub to_jid: String,
    pub text: String,
    pub quoted_id: Option<String>,
    pub queued_at: DateTime<Utc>,
}

/// An outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub seq: i64,
    pub message_id: String,
    pub client_id: Option<String>,
    pub to_jid: String,
    /// `None` once the server has the message.
    pub text: Option<String>,
    pub quoted_id: Option<String>,
    pub queued_at: DateTime<Utc>,
    pub status: String,
    pub error: Option<String>,
    pub attempts: u32,
    pub updated_at: DateTime<Utc>,
}

/// What [`SqliteStore::enqueue_outbound`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    Queued(OutboxEntry),
    /// The `client_id` was seen before: the first request's row.
    Existing(OutboxEntry),
    /// The outbox is at its limit; nothing written.
    Full {
        messages: u64,
        bytes: u64,
    },
}

/// How full the inbox and the outbox are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depths {
    pub inbox_messages: u64,
    pub inbox_bytes: u64,
    pub inbox_oldest: Option<DateTime<Utc>>,
    pub statuses: u64,
    pub outbox_messages: u64,
    pub outbox_bytes: u64,
    pub outbox_oldest: Option<DateTime<Utc>>,
    /// The newest inbound message committed (within `keep_days`).
    pub last_in: Option<DateTime<Utc>>,
    /// The newest send the server took.
    pub last_out: Option<DateTime<Utc>>,
}

/// What the store keeps in memory about the message tables.
#[derive(Debug)]
pub(crate) struct MessageState {
    /// `MAX(received_at)` of the redelivery keys, in millis, once read
    /// ([`UNKNOWN`] until then, and again after a prune).
    last_in: AtomicI64,
}

const UNKNOWN: i64 = i64::MIN;

/// At open: the TEMP table of acked publications not yet deleted, and the
/// in-memory state.
pub(crate) fn prepare_connection(conn: &Connection) -> Result<MessageState> {
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS acked_publications (seq INTEGER PRIMARY KEY)",
    )?;
    Ok(MessageState {
        last_in: AtomicI64::new(UNKNOWN),
    })
}

/// The writer's deferred work: move the publications the broker acked into
/// the journal (which also keeps their seqs from being used again).
pub(crate) fn journal_acked_publications(conn: &Connection) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO message_journal (seq, kind, published_at, payload)
         SELECT seq, kind, ?1, payload FROM message_publish_queue
         WHERE seq IN (SELECT seq FROM temp.acked_publications)",
    )?
    .execute([millis(&Utc::now())])?;
    conn.prepare_cached(
        "DELETE FROM message_publish_queue
         WHERE seq IN (SELECT seq FROM temp.acked_publications)",
    )?
    .execute([])?;
    conn.prepare_cached("DELETE FROM temp.acked_publications")?
        .execute([])?;
    Ok(())
}

pub(crate) fn millis(t: &DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::invalid("timestamp", format!("{ms} ms is out of range")))
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

const OUTBOX_COLUMNS: &str = "seq, message_id, client_id, to_jid, text, quoted_id, queued_at, \
     status, error, attempts, updated_at";

fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(OutboxEntry, i64, i64)> {
    Ok((
        OutboxEntry {
            seq: r.get(0)?,
            message_id: r.get(1)?,
            client_id: r.get(2)?,
            to_jid: r.get(3)?,
            text: r.get(4)?,
            quoted_id: r.get(5)?,
            queued_at: Utc::now(),
            status: r.get(7)?,
            error: r.get(8)?,
            attempts: u32::try_from(r.get::<_, i64>(9)?).unwrap_or(u32::MAX),
            updated_at: Utc::now(),
        },
        r.get(6)?,
        r.get(10)?,
    ))
}

fn finish_outbox_row((mut entry, queued, updated): (OutboxEntry, i64, i64)) -> Result<OutboxEntry> {
    entry.queued_at = from_millis(queued)?;
    entry.updated_at = from_millis(updated)?;
    Ok(entry)
}

fn outbox_where(conn: &Connection, clause: &str, key: &str) -> Result<Option<OutboxEntry>> {
    conn.prepare_cached(&format!(
        "SELECT {OUTBOX_COLUMNS} FROM message_outbox WHERE {clause}"
    ))?
    .query_row([key], outbox_row)
    .optional()?
    .map(finish_outbox_row)
    .transpose()
}

fn inbox_depth(conn: &Connection) -> Result<(u64, u64)> {
    let (n, bytes): (i64, i64) = conn
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM message_publish_queue
             WHERE kind = 'in' AND seq NOT IN (SELECT seq FROM temp.acked_publications)",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((count(n), count(bytes)))
}

fn outbox_depth(conn: &Connection) -> Result<(u64, u64)> {
    let (n, bytes): (i64, i64) = conn
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM message_outbox WHERE status = 'queued'",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((count(n), count(bytes)))
}

/// Queues a record under the outlet's next seq: one above every row still
/// queued or journaled and above the highest ever pruned from the journal
/// (`message_sequence.last_seq`), so seqs have no gaps (a job rolled back
/// takes its seq with it) and are never used twice, across restarts too.
/// (Every acked row moves to the journal, so only a prune can drop the
/// highest seq: it writes `last_seq` first, once an hour, rather than every
/// delete writing it.)
fn queue_publication(
    conn: &Connection,
    kind: PublicationKind,
    at: &DateTime<Utc>,
    payload: &[u8],
) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO message_publish_queue (seq, kind, queued_at, payload)
             VALUES (MAX((SELECT COALESCE(MAX(seq), 0) FROM message_publish_queue),
                         (SELECT COALESCE(MAX(seq), 0) FROM message_journal),
                         COALESCE((SELECT last_seq FROM message_sequence WHERE id = 1), 0)) + 1,
                     ?1, ?2, ?3)
             RETURNING seq",
        )?
        .query_row(params![kind.as_sql(), millis(at), payload], |r| r.get(0))?)
}

impl SqliteStore {
    /// Commits a batch of inbound messages, all or nothing, fsynced before
    /// returning: only then may WhatsApp be told they arrived.
    ///
    /// A message whose (chat, sender, id) was committed before is a
    /// redelivery (a crash came between this commit and WhatsApp's ack) and
    /// is not queued again. When the new ones would take the inbox past
    /// `limits`, nothing is written and the caller leaves them unacked:
    /// WhatsApp keeps them until there is room.
    pub async fn commit_inbound(
        &self,
        rows: Vec<InboundRow>,
        limits: Limits,
    ) -> Result<InboundCommit> {
        let (outcome, newest) = self
            .write_synced(move |c| {
                let mut fresh = Vec::with_capacity(rows.len());
                for row in &rows {
                    let seen: bool = c
                        .prepare_cached(
                            "SELECT EXISTS (SELECT 1 FROM message_inbound_seen
                         WHERE chat = ?1 AND sender = ?2 AND message_id = ?3)",
                        )?
                        .query_row(params![row.chat, row.sender, row.message_id], |r| r.get(0))?;
                    // A batch can carry the same message twice (a duplicated
                    // stanza): the second is a duplicate too.
                    let repeated = fresh.iter().any(|f: &&InboundRow| {
                        f.chat == row.chat
                            && f.sender == row.sender
                            && f.message_id == row.message_id
                    });
                    if !seen && !repeated {
                        fresh.push(row);
                    }
                }
                if !fresh.is_empty() {
                    let (messages, bytes) = inbox_depth(c)?;
                    let adding: u64 = fresh.iter().map(|r| r.payload.len() as u64).sum();
                    if messages + fresh.len() as u64 > limits.max_messages
                        || bytes + adding > limits.max_bytes
                    {
                        return Ok((InboundCommit::Full { messages, bytes }, None));
                    }
                }
                for row in &fresh {
                    c.prepare_cached(
                        "INSERT INTO message_inbound_seen (chat, sender, message_id, received_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![
                        row.chat,
                        row.sender,
                        row.message_id,
                        millis(&row.received_at)
                    ])?;
                    queue_publication(c, PublicationKind::Inbound, &row.received_at, &row.payload)?;
                    if let Some(job) = &row.media {
                        crate::media::insert_job(c, &row.message_id, job)?;
                    }
                }
                let newest = fresh.iter().map(|r| millis(&r.received_at)).max();
                Ok((
                    InboundCommit::Committed {
                        new: fresh.len(),
                        duplicates: rows.len() - fresh.len(),
                    },
                    newest,
                ))
            })
            .await?;
        if let Some(newest) = newest {
            let last_in = &self.message_state.last_in;
            // Only raise a value already read: UNKNOWN stays unknown.
            let _ = last_in.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                (v != UNKNOWN && v < newest).then_some(newest)
            });
        }
        Ok(outcome)
    }

    /// Up to `limit` publications after `after_seq`, oldest first, and
    /// only what is on disk: a status waiting for its fsync (and all after
    /// it) is held back until [`SqliteStore::sync_gate`] releases it, so
    /// that no seq HQ has seen can be lost to a power cut and given to
    /// another record.
    pub async fn publications_after(&self, after_seq: i64, limit: u32) -> Result<Vec<Publication>> {
        let gate = Arc::clone(self.sync_gate());
        self.read(move |c| {
            let held_from = gate.held_from();
            let mut stmt = c.prepare_cached(
                "SELECT seq, kind, payload FROM message_publish_queue
                 WHERE seq > ?1 AND seq < ?3
                   AND seq NOT IN (SELECT seq FROM temp.acked_publications)
                 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![after_seq, limit, held_from], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(seq, kind, payload)| {
                    Ok(Publication {
                        seq,
                        kind: PublicationKind::from_sql(&kind)?,
                        payload,
                    })
                })
                .collect()
        })
        .await
    }

    /// The broker has these: they leave the queue. From the answer on, no
    /// read of the queue returns them (nor counts them); the rows move to
    /// the journal with the next commit that writes anyway, within
    /// [`crate::writer::DEFER_AT_MOST`] (module docs). Not fsynced: a delete
    /// lost to a crash or a power cut publishes the message once more (at
    /// least once), never loses it.
    pub async fn delete_publications(&self, seqs: Vec<i64>) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.write_deferring(move |c| {
            let mut stmt = c.prepare_cached(
                "INSERT OR IGNORE INTO temp.acked_publications (seq) VALUES (?1)",
            )?;
            for seq in seqs {
                stmt.execute([seq])?;
            }
            Ok(())
        })
        .await
    }

    /// Replaces the payload of a queued publication (one the broker keeps
    /// refusing is replaced by a short notice; the agent keeps the original
    /// elsewhere first). Fsynced: the original is already on disk, and the
    /// notice must not be lost to a power cut either. False when the row is
    /// no longer queued.
    pub async fn replace_publication(&self, seq: i64, payload: Vec<u8>) -> Result<bool> {
        self.write_synced(move |c| {
            let changed = c
                .prepare_cached("UPDATE message_publish_queue SET payload = ?2 WHERE seq = ?1")?
                .execute(params![seq, payload])?;
            Ok(changed > 0)
        })
        .await
    }

    /// Journaled records from `from_seq` on (up to `to_seq`, at most
    /// `limit` of them and, beyond the first, `max_bytes` of payload), in
    /// order; the first seq the journal still holds; and whether a limit
    /// stopped the read before `to_seq` (there may be more to ask for).
    pub async fn journal_range(
        &self,
        from_seq: i64,
        to_seq: i64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<(Vec<Publication>, Option<i64>, bool)> {
        self.read(move |c| {
            // Acked rows not yet moved (the move is deferred, see the module
            // doc) are in the journal already as far as HQ is concerned.
            let first: Option<i64> = c.query_row(
                "SELECT MIN(seq) FROM (
                     SELECT MIN(seq) AS seq FROM message_journal
                     UNION ALL SELECT MIN(seq) FROM temp.acked_publications)",
                [],
                |r| r.get(0),
            )?;
            let mut stmt = c.prepare_cached(
                "SELECT seq, kind, payload FROM message_journal
                 WHERE seq >= ?1 AND seq <= ?2
                 UNION ALL
                 SELECT seq, kind, payload FROM message_publish_queue
                 WHERE seq >= ?1 AND seq <= ?2
                   AND seq IN (SELECT seq FROM temp.acked_publications)
                 ORDER BY seq LIMIT ?3",
            )?;
            let mut found = stmt.query(params![from_seq, to_seq, limit])?;
            let mut rows = Vec::new();
            let mut bytes = 0usize;
            let mut limited = false;
            while let Some(r) = found.next()? {
                let payload: Vec<u8> = r.get(2)?;
                if !rows.is_empty() && bytes + payload.len() > max_bytes {
                    limited = true;
                    break;
                }
                bytes += payload.len();
                rows.push(Publication {
                    seq: r.get(0)?,
                    kind: PublicationKind::from_sql(&r.get::<_, String>(1)?)?,
                    payload,
                });
            }
            // As many rows as asked for: the next may be there too.
            limited |= u32::try_from(rows.len()).is_ok_and(|n| n >= limit)
                && rows.last().is_some_and(|r| r.seq < to_seq);
            Ok((rows, first, limited))
        })
        .await
    }

    /// Drops journaled records published before `cutoff`, then the oldest
    /// until the rest fit in `max_bytes`. Returns how many went.
    pub async fn prune_journal(&self, cutoff: DateTime<Utc>, max_bytes: u64) -> Result<u64> {
        let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        self.write(move |c| {
            // The journal's highest seq may go: remember it, so it is never
            // used again.
            c.prepare_cached(
                "UPDATE message_sequence
                 SET last_seq = MAX(last_seq, (SELECT MAX(seq) FROM message_journal))
                 WHERE id = 1 AND (SELECT MAX(seq) FROM message_journal) > last_seq",
            )?
            .execute([])?;
            let old = c
                .prepare_cached("DELETE FROM message_journal WHERE published_at < ?1")?
                .execute([millis(&cutoff)])?;
            let over = c
                .prepare_cached(
                    "DELETE FROM message_journal WHERE seq <= (
                         SELECT seq FROM (
                             SELECT seq, SUM(length(payload)) OVER (ORDER BY seq DESC) AS kept
                             FROM message_journal)
                         WHERE kept > ?1 ORDER BY seq DESC LIMIT 1)",
                )?
                .execute([max_bytes])?;
            Ok((old + over) as u64)
        })
        .await
    }

    /// The epoch of this database's record sequence: made once, with the
    /// database, so HQ can tell a new start (seqs from 1 again) from a gap.
    pub async fn message_epoch(&self) -> Result<String> {
        self.read(|c| {
            Ok(
                c.query_row("SELECT epoch FROM message_sequence WHERE id = 1", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
    }

    /// Queues a send, fsynced before returning: HQ is answered only once the
    /// request would survive a power cut. A `client_id` seen before returns
    /// the first request's row and writes nothing. `status_payload` is what
    /// `message/status` says about the new row (`queued`).
    pub async fn enqueue_outbound(
        &self,
        request: OutboundRequest,
        limits: Limits,
        status_payload: Vec<u8>,
    ) -> Result<Enqueued> {
        self.write_synced(move |c| {
            if let Some(client_id) = &request.client_id
                && let Some(existing) = outbox_where(c, "client_id = ?1", client_id)?
            {
                return Ok(Enqueued::Existing(existing));
            }
            let (messages, bytes) = outbox_depth(c)?;
            let size = request.text.len() as u64;
            if messages + 1 > limits.max_messages || bytes + size > limits.max_bytes {
                return Ok(Enqueued::Full { messages, bytes });
            }
            let at = millis(&request.queued_at);
            c.prepare_cached(
                "INSERT INTO message_outbox (message_id, client_id, to_jid, text, quoted_id,
                     bytes, queued_at, status, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?7)",
            )?
            .execute(params![
                request.message_id,
                request.client_id,
                request.to_jid,
                request.text,
                request.quoted_id,
                i64::try_from(size).unwrap_or(i64::MAX),
                at
            ])?;
            queue_publication(
                c,
                PublicationKind::Status,
                &request.queued_at,
                &status_payload,
            )?;
            let entry = outbox_where(c, "message_id = ?1", &request.message_id)?
                .ok_or_else(|| StoreError::invalid("outbox", "the new row is missing"))?;
            Ok(Enqueued::Queued(entry))
        })
        .await
    }

    /// The oldest queued send after `after_seq`. The outbox task keeps
    /// `after_seq` in memory: what it handed to WhatsApp on this connection
    /// (sends go in seq order), back to 0 on every new connection, so what
    /// the server never acked goes again with the same id. Kept out of the
    /// database because a new connection starts over anyway, after a
    /// restart too: a commit per send for nothing (BENCHMARKS.md, "What the
    /// SD card pays per message").
    pub async fn next_outbound_after(&self, after_seq: i64) -> Result<Option<OutboxEntry>> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {OUTBOX_COLUMNS} FROM message_outbox
                 WHERE status = 'queued' AND seq > ?1 ORDER BY seq LIMIT 1"
            ))?
            .query_row([after_seq], outbox_row)
            .optional()?
            .map(finish_outbox_row)
            .transpose()
        })
        .await
    }

    /// How many sends up to `seq` are still queued: on a new connection,
    /// those the last one handed over without the server's ack.
    pub async fn queued_outbound_through(&self, seq: i64) -> Result<u64> {
        self.read(move |c| {
            let n: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM message_outbox WHERE status = 'queued' AND seq <= ?1",
                )?
                .query_row([seq], |r| r.get(0))?;
            Ok(count(n))
        })
        .await
    }

    /// The outbox row of `message_id`.
    pub async fn outbound(&self, message_id: &str) -> Result<Option<OutboxEntry>> {
        let id = message_id.to_string();
        self.read(move |c| outbox_where(c, "message_id = ?1", &id))
            .await
    }

    /// Whether a send to `to_jid` ever reached WhatsApp's server (`sent` or
    /// later), within the outbox's retention: that number has WhatsApp, and
    /// the agent need not look it up again.
    pub async fn reached_before(&self, to_jid: &str) -> Result<bool> {
        let to = to_jid.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM message_outbox
                   WHERE to_jid = ?1 AND status IN ('sent', 'delivered', 'read'))",
            )?
            .query_row([to], |r| r.get(0))?)
        })
        .await
    }

    /// The outbox row queued with `client_id`.
    pub async fn outbound_by_client_id(&self, client_id: &str) -> Result<Option<OutboxEntry>> {
        let id = client_id.to_string();
        self.read(move |c| outbox_where(c, "client_id = ?1", &id))
            .await
    }

    /// A send that failed on the way out and is tried again later: counts
    /// the attempt, keeps it queued.
    pub async fn count_attempt(&self, message_id: &str) -> Result<u32> {
        let id = message_id.to_string();
        self.write(move |c| {
            let attempts: i64 = c
                .prepare_cached(
                    "UPDATE message_outbox SET attempts = attempts + 1 WHERE message_id = ?1
                     RETURNING attempts",
                )?
                .query_row([id], |r| r.get(0))?;
            Ok(u32::try_from(attempts).unwrap_or(u32::MAX))
        })
        .await
    }

    /// Moves the send `message_id` to `status` if it is now in one of
    /// `from`, and queues `status_payload(entry)` for the broker, in one
    /// transaction, fsynced within [`crate::writer::SYNC_AT_MOST`] with
    /// whatever else comes (the record is held back from the publisher
    /// until then). Why not at once: the library acknowledges a receipt to
    /// WhatsApp without waiting for this commit, so an fsync here never
    /// made a status safe from a power cut, only narrowed the window (a
    /// `sent` lost to one sends the message again with the same id);
    /// sharing one fsync between statuses halves what a send writes to the
    /// SD card. Returns the updated row, or `None` when the
    /// row is unknown or not in one of `from` (a late or repeated receipt).
    /// Once the server has the message (any status but `queued`), its text
    /// is cleared: the library keeps what retries need. Statuses must only
    /// move forward (a row never returns to a status it left): a call that
    /// does not apply is answered from a read, without a commit.
    pub async fn set_outbound_status<F>(
        &self,
        message_id: &str,
        from: &'static [&'static str],
        status: &'static str,
        error: Option<String>,
        at: DateTime<Utc>,
        status_payload: F,
    ) -> Result<Option<OutboxEntry>>
    where
        F: FnOnce(&OutboxEntry) -> Vec<u8> + Send + 'static,
    {
        let id = message_id.to_string();
        // Most calls do not apply (a receipt repeats what an earlier one
        // said; a read receipt also tries `sent` and `delivered`): a read
        // tells, without a commit. A fsynced group that changes nothing
        // still syncs whatever else it carries, which cost a fsync per
        // receipt. Statuses only move forward, so a row found outside
        // `from` (or missing) stays so; the write below checks again.
        let check = id.clone();
        let current: Option<String> = self
            .read(move |c| {
                Ok(
                    c.prepare_cached("SELECT status FROM message_outbox WHERE message_id = ?1")?
                        .query_row([check], |r| r.get(0))
                        .optional()?,
                )
            })
            .await?;
        if !current.is_some_and(|s| from.contains(&s.as_str())) {
            return Ok(None);
        }
        let gate = Arc::clone(self.sync_gate());
        self.write_soon(move |c| {
            let Some(entry) = outbox_where(c, "message_id = ?1", &id)? else {
                return Ok(None);
            };
            if !from.contains(&entry.status.as_str()) {
                return Ok(None);
            }
            let sent = (status == "sent").then(|| millis(&at));
            c.prepare_cached(
                "UPDATE message_outbox SET status = ?2, error = ?3, updated_at = ?4,
                     text = CASE WHEN ?2 = 'queued' THEN text ELSE NULL END,
                     sent_at = COALESCE(?5, sent_at)
                 WHERE message_id = ?1",
            )?
            .execute(params![id, status, error, millis(&at), sent])?;
            let updated = outbox_where(c, "message_id = ?1", &id)?
                .ok_or_else(|| StoreError::invalid("outbox", "the updated row is missing"))?;
            let seq =
                queue_publication(c, PublicationKind::Status, &at, &status_payload(&updated))?;
            gate.hold(seq);
            Ok(Some(updated))
        })
        .await
    }

    /// Every queued send, oldest first (to fail them all when the device
    /// is unlinked, say).
    pub async fn queued_outbound(&self) -> Result<Vec<OutboxEntry>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {OUTBOX_COLUMNS} FROM message_outbox WHERE status = 'queued' ORDER BY seq"
            ))?;
            let rows = stmt
                .query_map([], outbox_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(finish_outbox_row).collect()
        })
        .await
    }

    /// How full the inbox and the outbox are, and their oldest entries.
    pub async fn message_depths(&self) -> Result<Depths> {
        let state = self.message_state.clone();
        self.read(move |c| {
            let (inbox_messages, inbox_bytes) = inbox_depth(c)?;
            let (outbox_messages, outbox_bytes) = outbox_depth(c)?;
            let statuses: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM message_publish_queue WHERE kind = 'status'
                     AND seq NOT IN (SELECT seq FROM temp.acked_publications)",
                )?
                .query_row([], |r| r.get(0))?;
            let inbox_oldest: Option<i64> = c
                .prepare_cached(
                    "SELECT MIN(queued_at) FROM message_publish_queue WHERE kind = 'in'
                     AND seq NOT IN (SELECT seq FROM temp.acked_publications)",
                )?
                .query_row([], |r| r.get(0))?;
            let outbox_oldest: Option<i64> = c
                .prepare_cached(
                    "SELECT MIN(queued_at) FROM message_outbox WHERE status = 'queued'",
                )?
                .query_row([], |r| r.get(0))?;
            // Read once (a scan: the table has no index on the time, which
            // every message would rewrite), then kept by commit_inbound.
            let last_in = match state.last_in.load(Ordering::SeqCst) {
                UNKNOWN => {
                    let read: Option<i64> = c
                        .prepare_cached("SELECT MAX(received_at) FROM message_inbound_seen")?
                        .query_row([], |r| r.get(0))?;
                    let _ = state.last_in.compare_exchange(
                        UNKNOWN,
                        read.unwrap_or(UNKNOWN + 1),
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                    read
                }
                v if v == UNKNOWN + 1 => None,
                v => Some(v),
            };
            let last_out: Option<i64> = c
                .prepare_cached("SELECT MAX(sent_at) FROM message_outbox")?
                .query_row([], |r| r.get(0))?;
            Ok(Depths {
                last_in: last_in.map(from_millis).transpose()?,
                last_out: last_out.map(from_millis).transpose()?,
                inbox_messages,
                inbox_bytes,
                inbox_oldest: inbox_oldest.map(from_millis).transpose()?,
                statuses: count(statuses),
                outbox_messages,
                outbox_bytes,
                outbox_oldest: outbox_oldest.map(from_millis).transpose()?,
            })
        })
        .await
    }

    /// Forgets what is older than `cutoff`: redelivery keys (WhatsApp does
    /// not redeliver that late) and finished sends (their `client_id`s may
    /// be reused after that). Queued sends and unpublished messages are
    /// never pruned.
    pub async fn prune_messages(&self, cutoff: DateTime<Utc>) -> Result<(u64, u64)> {
        let state = self.message_state.clone();
        self.write(move |c| {
            let seen = c
                .prepare_cached("DELETE FROM message_inbound_seen WHERE received_at < ?1")?
                .execute([millis(&cutoff)])?;
            // The newest row stays, however old: the outbox's seqs are
            // rowids, and a new send must never take a seq at or below
            // one the outbox task has already handed over on this
            // connection (it would wait for the next one).
            let sends = c
                .prepare_cached(
                    "DELETE FROM message_outbox WHERE status <> 'queued' AND updated_at < ?1
                       AND seq < (SELECT MAX(seq) FROM message_outbox)",
                )?
                .execute([millis(&cutoff)])?;
            if seen > 0 {
                state.last_in.store(UNKNOWN, Ordering::SeqCst);
            }
            Ok((seen as u64, sends as u64))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataDir, SqliteStore};

    const ROOMY: Limits = Limits {
        max_messages: 100,
        max_bytes: 1 << 20,
    };

    async fn open() -> (tempfile::TempDir, SqliteStore, crate::DataDirLock) {
        let dir = tempfile::tempdir().unwrap();
        let lock = DataDir::lock(dir.path()).unwrap();
        let (store, _) = SqliteStore::open(&lock).await.unwrap();
        (dir, store, lock)
    }

    fn inbound(chat: &str, id: &str, payload: &str) -> InboundRow {
        InboundRow {
            chat: chat.into(),
            sender: chat.into(),
            message_id: id.into(),
            received_at: Utc::now(),
            payload: payload.as_bytes().to_vec(),
            media: None,
        }
    }

    fn send(id: &str, client_id: Option<&str>, text: &str) -> OutboundRequest {
        OutboundRequest {
            message_id: id.into(),
            client_id: client_id.map(str::to_string),
            to_jid: "6281111111111@s.whatsapp.net".into(),
            text: text.into(),
            quoted_id: None,
            queued_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn a_redelivered_message_is_recognised_and_not_queued_again() {
        let (_dir, store, _lock) = open().await;
        let first = store
            .commit_inbound(
                vec![inbound("a", "1", "one"), inbound("b", "1", "b one")],
                ROOMY,
            )
            .await
            .unwrap();
        assert_eq!(
            first,
            InboundCommit::Committed {
                new: 2,
                duplicates: 0
            }
        );
        // Same id in another chat is another message; same key is not.
        let again = store
            .commit_inbound(
                vec![inbound("a", "1", "one"), inbound("a", "2", "two")],
                ROOMY,
            )
            .await
            .unwrap();
        assert_eq!(
            again,
            InboundCommit::Committed {
                new: 1,
                duplicates: 1
            }
        );
        let queued = store.publications_after(0, 10).await.unwrap();
        let payloads: Vec<&[u8]> = queued.iter().map(|p| p.payload.as_slice()).collect();
        assert_eq!(payloads, [&b"one"[..], b"b one", b"two"]);
        // Published and deleted: a later redelivery still is a duplicate.
        store
            .delete_publications(queued.iter().map(|p| p.seq).collect())
            .await
            .unwrap();
        let late = store
            .commit_inbound(vec![inbound("a", "1", "one")], ROOMY)
            .await
            .unwrap();
        assert_eq!(
            late,
            InboundCommit::Committed {
                new: 0,
                duplicates: 1
            }
        );
        assert!(store.publications_after(0, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_row_queued_after_the_queue_emptied_comes_after_every_earlier_one() {
        let (_dir, store, _lock) = open().await;
        store
            .commit_inbound(vec![inbound("a", "1", "x")], ROOMY)
            .await
            .unwrap();
        let first = store.publications_after(0, 10).await.unwrap();
        store.delete_publications(vec![first[0].seq]).await.unwrap();
        // Really deleted (the queue is empty), not only out of sight.
        store.flush().await.unwrap();
        assert_eq!(rows_in_queue(&store).await, 0);
        // The publisher goes on after the last row it handed over.
        store
            .commit_inbound(vec![inbound("a", "2", "y")], ROOMY)
            .await
            .unwrap();
        let next = store.publications_after(first[0].seq, 10).await.unwrap();
        assert_eq!(next.len(), 1, "the new row must not reuse an old seq");
    }

    async fn rows_in_queue(store: &SqliteStore) -> i64 {
        store
            .read(|c| {
                Ok(
                    c.query_row("SELECT COUNT(*) FROM message_publish_queue", [], |r| {
                        r.get(0)
                    })?,
                )
            })
            .await
            .unwrap()
    }

    /// An acked publication leaves every read of the queue at once, but its
    /// row is deleted only with the next commit that writes anyway (no
    /// commit of its own), or after DEFER_AT_MOST, or at close.
    #[tokio::test]
    async fn acked_publications_are_deleted_with_the_next_commit() {
        let (_dir, store, _lock) = open().await;
        store
            .commit_inbound(
                vec![inbound("a", "1", "one"), inbound("a", "2", "two")],
                ROOMY,
            )
            .await
            .unwrap();
        let queued = store.publications_after(0, 10).await.unwrap();
        store
            .delete_publications(vec![queued[0].seq])
            .await
            .unwrap();
        // Out of sight at once: a reconnect's read from the start, the depths.
        let left = store.publications_after(0, 10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].payload, b"two");
        let depths = store.message_depths().await.unwrap();
        assert_eq!((depths.inbox_messages, depths.inbox_bytes), (1, 3));
        // Still in the table: nothing was committed for it.
        assert_eq!(rows_in_queue(&store).await, 2);
        // The next commit that writes takes it along.
        store
            .enqueue_outbound(send("M1", None, "x"), ROOMY, b"queued".to_vec())
            .await
            .unwrap();
        assert_eq!(rows_in_queue(&store).await, 2, "one deleted, one added");
        assert_eq!(store.publications_after(0, 10).await.unwrap().len(), 2);

        // With nothing else to write, it goes within DEFER_AT_MOST.
        let all: Vec<i64> = store
            .publications_after(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|p| p.seq)
            .collect();
        store.delete_publications(all).await.unwrap();
        assert_eq!(rows_in_queue(&store).await, 2);
        tokio::time::sleep(crate::writer::DEFER_AT_MOST + std::time::Duration::from_millis(500))
            .await;
        assert_eq!(rows_in_queue(&store).await, 0);
        assert!(store.publications_after(0, 10).await.unwrap().is_empty());
    }

    /// A row left in the queue by the last run (a crash before its delete)
    /// is handed over again after the restart; once it is acked and
    /// deleted, the queue is empty, yet the next row must still come after
    /// it, or the publisher (going on after the last row it handed over)
    /// would skip it.
    #[tokio::test]
    async fn after_a_restart_new_rows_come_after_the_ones_left_over() {
        let dir = tempfile::tempdir().unwrap();
        {
            let lock = DataDir::lock(dir.path()).unwrap();
            let (store, _) = SqliteStore::open(&lock).await.unwrap();
            for id in ["1", "2"] {
                store
                    .commit_inbound(vec![inbound("a", id, id)], ROOMY)
                    .await
                    .unwrap();
            }
            store.close().await.unwrap();
        }
        let lock = DataDir::lock(dir.path()).unwrap();
        let (store, _) = SqliteStore::open(&lock).await.unwrap();
        let left = store.publications_after(0, 10).await.unwrap();
        assert_eq!(left.len(), 2);
        let cursor = left[1].seq;
        store
            .delete_publications(left.iter().map(|p| p.seq).collect())
            .await
            .unwrap();
        store.flush().await.unwrap();
        assert_eq!(rows_in_queue(&store).await, 0);
        store
            .commit_inbound(vec![inbound("a", "3", "three")], ROOMY)
            .await
            .unwrap();
        let next = store.publications_after(cursor, 10).await.unwrap();
        assert_eq!(
            next.len(),
            1,
            "the new row must come after the left-over ones"
        );
        assert_eq!(next[0].payload, b"three");
        store.close().await.unwrap();
    }

    /// Seqs run on without a gap and are never used twice, also when the
    /// queue empties and the store is opened again; the epoch stays.
    #[tokio::test]
    async fn record_seqs_are_never_reused_across_an_empty_queue_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let seqs_of = |rows: &[Publication]| rows.iter().map(|r| r.seq).collect::<Vec<_>>();
        let epoch = {
            let lock = DataDir::lock(dir.path()).unwrap();
            let (store, _) = SqliteStore::open(&lock).await.unwrap();
            store
                .commit_inbound(
                    vec![inbound("a", "1", "one"), inbound("a", "2", "two")],
                    ROOMY,
                )
                .await
                .unwrap();
            let queued = store.publications_after(0, 10).await.unwrap();
            assert_eq!(seqs_of(&queued), [1, 2]);
            store.delete_publications(seqs_of(&queued)).await.unwrap();
            // The queue is empty; the next record still goes on from 2.
            store
                .commit_inbound(vec![inbound("a", "3", "three")], ROOMY)
                .await
                .unwrap();
            let queued = store.publications_after(0, 10).await.unwrap();
            assert_eq!(seqs_of(&queued), [3]);
            store.delete_publications(seqs_of(&queued)).await.unwrap();
            let epoch = store.message_epoch().await.unwrap();
            assert_eq!(epoch.len(), 16, "{epoch}");
            store.close().await.unwrap();
            epoch
        };
        let lock = DataDir::lock(dir.path()).unwrap();
        let (store, _) = SqliteStore::open(&lock).await.unwrap();
        assert_eq!(rows_in_queue(&store).await, 0);
        store
            .commit_inbound(vec![inbound("a", "4", "four")], ROOMY)
            .await
            .unwrap();
        let queued = store.publications_after(0, 10).await.unwrap();
        assert_eq!(seqs_of(&queued), [4], "not 1 again after a restart");
        assert_eq!(store.message_epoch().await.unwrap(), epoch);
        // Nor after the journal lost everything to a prune.
        store.delete_publications(vec![4]).await.unwrap();
        store
            .enqueue_outbound(send("M1", None, "x"), ROOMY, b"queued".to_vec())
            .await
            .unwrap();
        store
            .prune_journal(Utc::now() + chrono::Duration::days(1), 0)
            .await
            .unwrap();
        assert_eq!(
            store
                .journal_range(1, i64::MAX, 10, 1 << 20)
                .await
                .unwrap()
                .1,
            None
        );
        let after: Vec<i64> = store
            .publications_after(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(after, [5], "the queued status");
        store.delete_publications(vec![5]).await.unwrap();
        store
            .enqueue_outbound(send("M2", None, "y"), ROOMY, b"queued".to_vec())
            .await
            .unwrap();
        store
            .prune_journal(Utc::now() + chrono::Duration::days(1), 0)
            .await
            .unwrap();
        store
            .commit_inbound(vec![inbound("a", "5", "five")], ROOMY)
            .await
            .unwrap();
        let last = store.publications_after(0, 10).await.unwrap();
        assert_eq!(seqs_of(&last), [6, 7], "M2's status, then the message");
        store.close().await.unwrap();
    }

    /// What the broker took stays for replays, moved or not yet, until its
    /// age or the byte cap sends the oldest away.
    #[tokio::test]
    async fn the_journal_keeps_what_the_broker_took_within_its_limits() {
        let (_dir, store, _lock) = open().await;
        store
            .commit_inbound(
                vec![
                    inbound("a", "1", "one"),
                    inbound("a", "2", "two"),
                    inbound("a", "3", "three"),
                ],
                ROOMY,
            )
            .await
            .unwrap();
        let seqs: Vec<i64> = store
            .publications_after(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        store.delete_publications(seqs[..2].to_vec()).await.unwrap();
        // Acked, not yet moved: replayable all the same; the unacked one is not.
        let (rows, first, more) = store.journal_range(1, i64::MAX, 10, 1 << 20).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!((first, more), (Some(1), false));
        // A limit that stops the read says there may be more: by bytes
        // ("one" is 3, "two" would pass 4), and by count.
        let (rows, _, more) = store.journal_range(1, i64::MAX, 10, 4).await.unwrap();
        assert_eq!((rows.len(), more), (1, true));
        let (rows, _, more) = store.journal_range(1, i64::MAX, 1, 1 << 20).await.unwrap();
        assert_eq!((rows.len(), more), (1, true));
        let (rows, _, more) = store.journal_range(1, 1, 1, 1 << 20).await.unwrap();
        assert_eq!((rows.len(), more), (1, false));
        // After the deferred move, the same.
        store
            .enqueue_outbound(send("M1", None, "x"), ROOMY, b"queued".to_vec())
            .await
            .unwrap();
        let (rows, _, _) = store.journal_range(2, 2, 10, 1 << 20).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].payload, b"two");
        // The byte cap keeps the newest that fit ("two" is 3 bytes)...
        assert_eq!(
            store
                .prune_journal(Utc::now() - chrono::Duration::days(1), 3)
                .await
                .unwrap(),
            1
        );
        let (rows, first, _) = store.journal_range(1, i64::MAX, 10, 1 << 20).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [2]);
        assert_eq!(first, Some(2));
        // ...and the age the rest.
        assert_eq!(
            store
                .prune_journal(Utc::now() + chrono::Duration::seconds(1), 1 << 20)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store.journal_range(1, i64::MAX, 10, 1 << 20).await.unwrap(),
            (vec![], None, false)
        );
    }

    /// What was acked is deleted before the store closes.
    #[tokio::test]
    async fn acked_publications_are_deleted_at_close() {
        let dir = tempfile::tempdir().unwrap();
        {
            let lock = DataDir::lock(dir.path()).unwrap();
            let (store, _) = SqliteStore::open(&lock).await.unwrap();
            store
                .commit_inbound(vec![inbound("a", "1", "one")], ROOMY)
                .await
                .unwrap();
            let queued = store.publications_after(0, 10).await.unwrap();
            store
                .delete_publications(vec![queued[0].seq])
                .await
                .unwrap();
            store.close().await.unwrap();
        }
        let lock = DataDir::lock(dir.path()).unwrap();
        let (store, _) = SqliteStore::open(&lock).await.unwrap();
        assert_eq!(rows_in_queue(&store).await, 0);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_full_inbox_takes_nothing_of_a_batch_and_says_how_full() {
        let (_dir, store, _lock) = open().await;
        let small = Limits {
            max_messages: 2,
            max_bytes: 1 << 20,
        };
        store
            .commit_inbound(vec![inbound("a", "1", "x")], small)
            .await
            .unwrap();
        let full = store
            .commit_inbound(vec![inbound("a", "2", "y"), inbound("a", "3", "z")], small)
            .await
            .unwrap();
        assert_eq!(
            full,
            InboundCommit::Full {
                messages: 1,
                bytes: 1
            }
        );
        assert_eq!(store.message_depths().await.unwrap().inbox_messages, 1);
        // The byte limit counts too.
        let tiny = Limits {
            max_messages: 100,
            max_bytes: 3,
        };
        assert!(matches!(
            store
                .commit_inbound(vec![inbound("a", "4", "long")], tiny)
                .await
                .unwrap(),
            InboundCommit::Full { .. }
        ));
    }

    #[tokio::test]
    async fn a_client_id_is_queued_once_and_answered_with_the_first_row() {
        let (_dir, store, _lock) = open().await;
        let first = store
            .enqueue_outbound(send("M1", Some("c1"), "hello"), ROOMY, b"queued".to_vec())
            .await
            .unwrap();
        let Enqueued::Queued(row) = first else {
            panic!("{first:?}")
        };
        let again = store
            .enqueue_outbound(send("M2", Some("c1"), "hello again"), ROOMY, b"q".to_vec())
            .await
            .unwrap();
        assert_eq!(again, Enqueued::Existing(row.clone()));
        assert_eq!(store.queued_outbound().await.unwrap(), vec![row]);
        // One status for one row.
        assert_eq!(store.message_depths().await.unwrap().statuses, 1);
    }

    #[tokio::test]
    async fn the_outbox_sends_in_order_and_resends_what_the_server_never_acked() {
        let (_dir, store, _lock) = open().await;
        for id in ["M1", "M2"] {
            store
                .enqueue_outbound(send(id, None, id), ROOMY, Vec::new())
                .await
                .unwrap();
        }
        let first = store.next_outbound_after(0).await.unwrap().unwrap();
        assert_eq!(first.message_id, "M1");
        // Handed over; the next one is M2.
        let second = store.next_outbound_after(first.seq).await.unwrap().unwrap();
        assert_eq!(second.message_id, "M2");
        assert!(
            store
                .next_outbound_after(second.seq)
                .await
                .unwrap()
                .is_none()
        );
        // The connection broke before the server's acks: both wait, and a
        // new connection starts from the first again.
        assert_eq!(store.queued_outbound_through(second.seq).await.unwrap(), 2);
        store
            .set_outbound_status("M1", &["queued"], "sent", None, Utc::now(), |_| Vec::new())
            .await
            .unwrap();
        assert_eq!(store.queued_outbound_through(second.seq).await.unwrap(), 1);
        let again = store.next_outbound_after(0).await.unwrap().unwrap();
        assert_eq!((again.message_id.as_str(), again.attempts), ("M2", 0));
    }

    #[tokio::test]
    async fn statuses_only_move_forward_and_clear_the_text() {
        let (_dir, store, _lock) = open().await;
        store
            .enqueue_outbound(send("M1", None, "secret words"), ROOMY, Vec::new())
            .await
            .unwrap();
        let sent = store
            .set_outbound_status("M1", &["queued"], "sent", None, Utc::now(), |e| {
                e.status.clone().into_bytes()
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!((sent.status.as_str(), sent.text), ("sent", None));
        // A second "sent" (a repeated ack) changes nothing.
        assert!(
            store
                .set_outbound_status("M1", &["queued"], "sent", None, Utc::now(), |_| Vec::new())
                .await
                .unwrap()
                .is_none()
        );
        // Held back from the publisher until the WAL is fsynced (unless
        // the writer's fsync already came, on a slow machine).
        let early = store.publications_after(0, 10).await.unwrap();
        if store.sync_gate().held_from() != i64::MAX {
            assert!(early.iter().all(|p| p.payload != b"sent"));
        }
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while store.sync_gate().held_from() != i64::MAX {
                store.sync_gate().released().await;
            }
        })
        .await
        .expect("the status is fsynced within SYNC_AT_MOST");
        let pubs = store.publications_after(0, 10).await.unwrap();
        assert_eq!(pubs.last().unwrap().payload, b"sent");
        assert_eq!(store.message_depths().await.unwrap().outbox_messages, 0);
    }

    #[tokio::test]
    async fn the_outbox_refuses_past_its_limits() {
        let (_dir, store, _lock) = open().await;
        let one = Limits {
            max_messages: 1,
            max_bytes: 1 << 20,
        };
        store
            .enqueue_outbound(send("M1", None, "a"), one, Vec::new())
            .await
            .unwrap();
        assert_eq!(
            store
                .enqueue_outbound(send("M2", None, "b"), one, Vec::new())
                .await
                .unwrap(),
            Enqueued::Full {
                messages: 1,
                bytes: 1
            }
        );
    }

    #[tokio::test]
    async fn pruning_keeps_what_is_still_pending() {
        let (_dir, store, _lock) = open().await;
        store
            .commit_inbound(vec![inbound("a", "1", "x")], ROOMY)
            .await
            .unwrap();
        store
            .enqueue_outbound(send("M1", None, "a"), ROOMY, Vec::new())
            .await
            .unwrap();
        let future = Utc::now() + chrono::Duration::days(1);
        assert_eq!(store.prune_messages(future).await.unwrap(), (1, 0));
        assert_eq!(store.publications_after(0, 10).await.unwrap().len(), 2);
        assert_eq!(store.queued_outbound().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_number_reached_before_is_known() {
        let (_dir, store, _lock) = open().await;
        store
            .enqueue_outbound(send("M1", None, "a"), ROOMY, Vec::new())
            .await
            .unwrap();
        let to = store.outbound("M1").await.unwrap().expect("queued").to_jid;
        // Queued is not reached.
        assert!(!store.reached_before(&to).await.unwrap());
        store
            .set_outbound_status("M1", &["queued"], "sent", None, Utc::now(), |_| Vec::new())
            .await
            .unwrap();
        assert!(store.reached_before(&to).await.unwrap());
        assert!(!store.reached_before("628999@s.whatsapp.net").await.unwrap());
    }

    /// Old final sends go, but never the newest row: a seq, once handed
    /// out, is not given to a later send (the outbox task's cursor).
    #[tokio::test]
    async fn pruning_keeps_the_newest_send_so_seqs_only_grow() {
        let (_dir, store, _lock) = open().await;
        for id in ["M1", "M2"] {
            store
                .enqueue_outbound(send(id, None, id), ROOMY, Vec::new())
                .await
                .unwrap();
            store
                .set_outbound_status(id, &["queued"], "sent", None, Utc::now(), |_| Vec::new())
                .await
                .unwrap();
        }
        let future = Utc::now() + chrono::Duration::days(1);
        assert_eq!(store.prune_messages(future).await.unwrap(), (0, 1));
        let newest = store.outbound("M2").await.unwrap().expect("kept");
        let next = store
            .enqueue_outbound(send("M3", None, "c"), ROOMY, Vec::new())
            .await
            .unwrap();
        let Enqueued::Queued(next) = next else {
            panic!("not queued: {next:?}");
        };
        assert!(next.seq > newest.seq, "{} after {}", next.seq, newest.seq);
    }
}
