//! Received files to HQ on the messages' connection: `message/media`, then
//! the chunks on `media/<sha256>/<index>`, one job at a time, after the
//! queued records (a chat's text never waits behind a video).
//!
//! A job's parts are numbered: 0 is the announcement, `i + 1` is chunk `i`.
//! At most [`MEDIA_WINDOW`] parts are with the client at once (so a file
//! is read from the spool a chunk at a time, never whole), each handed over
//! with an answer number as its marker, so its PUBACK is known. The job
//! stores the first part the broker has not acknowledged; a new connection
//! or a restart publishes again from there (HQ may get a part twice, never
//! miss one).

use std::collections::{BTreeSet, HashMap};

use rumqttc::QoS;

use super::{Publisher, lock};
use crate::messages::media::{self, spool};

/// Parts handed to the client and not yet acknowledged, at most: 1 MiB of
/// chunks.
pub(super) const MEDIA_WINDOW: usize = 4;

/// The job being published.
pub(super) struct MediaOut {
    row: outlet_store::MediaJobRow,
    /// Its parts: the announcement and the chunks (1 for an error).
    parts: u32,
    /// The spooled file's length.
    size: u64,
    /// Its chunks' size (`media::chunk_bytes`).
    chunk: usize,
    /// The next part to hand over.
    next: u32,
    /// Acknowledged parts at or after `stored`.
    acked: BTreeSet<u32>,
    /// The first part the store says is unacknowledged.
    stored: u32,
    /// Parts with the client, by their answer number.
    in_flight: HashMap<i64, u32>,
}

impl Publisher {
    /// The broker acknowledged the publish numbered `answer`: `true` when it
    /// was a part of the job being published.
    pub(super) fn media_acked(&mut self, answer: i64) -> bool {
        let Some(out) = self.media.as_mut() else {
            return false;
        };
        let Some(part) = out.in_flight.remove(&answer) else {
            return false;
        };
        if part >= out.stored {
            out.acked.insert(part);
        }
        true
    }

    /// A new connection: parts with the old one are published again from
    /// the first unacknowledged.
    pub(super) fn media_reset(&mut self) {
        if let Some(out) = self.media.as_mut() {
            out.in_flight.clear();
            out.next = out.stored;
            out.acked.clear();
        }
    }

    /// Stores how far the broker has acknowledged, finishing the job when
    /// it has every part.
    pub(super) async fn media_progress(&mut self) {
        let Some(out) = self.media.as_mut() else {
            return;
        };
        let mut first_unacked = out.stored;
        while out.acked.remove(&first_unacked) {
            first_unacked += 1;
        }
        if first_unacked == out.stored {
            return;
        }
        let store = &self.messages.store;
        let id = out.row.id;
        let result = if first_unacked >= out.parts {
            store.media_done(id).await
        } else {
            store.media_published_to(id, first_unacked).await
        };
        match result {
            Ok(()) => {
                out.stored = first_unacked;
                if first_unacked >= out.parts {
                    tracing::info!(
                        sha256 = %media::short(&out.row.job.sha256),
                        parts = out.parts,
                        "media: HQ's broker has the file"
                    );
                    self.media = None;
                    self.messages.depth_wake.notify_one();
                }
            }
            Err(e) => {
                // Acks are kept: stored with the next one.
                for part in out.stored..first_unacked {
                    out.acked.insert(part);
                }
                tracing::warn!(error = %e, "media: cannot record published chunks");
            }
        }
    }

    /// Hands the current job's next parts to the client, as far as the
    /// window and the client's channel allow; picks the next job when
    /// there is none.
    pub(super) async fn fill_media(&mut self) {
        if !self.connected {
            return;
        }
        let Some((client, handed)) = self.client.clone() else {
            return;
        };
        if self.media.is_none() {
            let row = match self.messages.store.next_media_publish().await {
                Ok(Some(row)) => row,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "media: cannot read the publish jobs");
                    return;
                }
            };
            let Some(out) = self.start_job(row).await else {
                return;
            };
            self.media = Some(out);
        }
        let topics = self.messages.topics.clone();
        while let Some(out) = self.media.as_mut() {
            if out.in_flight.len() >= MEDIA_WINDOW || out.next >= out.parts {
                return;
            }
            let part = out.next;
            let (topic, payload) = if part == 0 {
                let body = match &out.row.job.error {
                    Some(error) if out.row.state == outlet_store::MediaState::Report => {
                        media::failure(&out.row, error)
                    }
                    _ => media::announcement(&out.row, out.size, out.chunk),
                };
                (topics.message_media(), body.to_string().into_bytes())
            } else {
                let (sha, index, chunk) = (out.row.job.sha256.clone(), part - 1, out.chunk);
                let (reading, name) = (self.messages.spool.clone(), sha.clone());
                match crate::messages::blocking_io(move || reading.chunk(&name, index, chunk)).await
                {
                    Ok(chunk) => (topics.media_chunk(&sha, index), chunk),
                    Err(error) => {
                        tracing::warn!(%error, "media: a spooled file cannot be read; HQ is told");
                        let id = out.row.id;
                        self.media = None;
                        self.lost(id).await;
                        return;
                    }
                }
            };
            self.answers += 1;
            let answer = self.answers;
            lock(&handed).push_back(-answer);
            if client
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .is_err()
            {
                // The channel is full: the rest on a later turn.
                lock(&handed).pop_back();
                return;
            }
            out.in_flight.insert(answer, part);
            out.next += 1;
        }
    }

    /// The job as it is to be published, or `None` (reported as lost) when
    /// its file is no longer in the spool.
    async fn start_job(&mut self, row: outlet_store::MediaJobRow) -> Option<MediaOut> {
        let chunk = media::chunk_bytes(self.messages.config.mqtt.max_packet_bytes);
        let (parts, size) = if row.state == outlet_store::MediaState::Report {
            (1, 0)
        } else {
            match self.messages.spool.len_of(&row.job.sha256) {
                Some(size) => (1 + media::chunk_count(size, chunk), size),
                None => {
                    tracing::warn!(
                        "media: a fetched file left the spool before it was published; HQ is told"
                    );
                    self.lost(row.id).await;
                    return None;
                }
            }
        };
        let stored = row.part.min(parts);
        Some(MediaOut {
            row,
            parts,
            size,
            chunk,
            next: stored,
            acked: BTreeSet::new(),
            stored,
            in_flight: HashMap::new(),
        })
    }

    /// Job `id`'s file is no longer in the spool: HQ is told it is not held.
    async fn lost(&self, id: i64) {
        if let Err(e) = self
            .messages
            .store
            .media_give_up(id, media::NOT_HELD.to_string())
            .await
        {
            tracing::warn!(error = %e, "media: cannot record a lost file");
        }
    }

    /// `request/media`: the file `sha256` published again while the spool
    /// holds it.
    pub(super) async fn media_again(&mut self, sha256: String) -> crate::command::CommandResult {
        use crate::command::CommandError;
        if !spool::is_sha256(&sha256) {
            return Err(CommandError::InvalidFormat(
                "sha256 is 64 lower-case hex digits".into(),
            ));
        }
        let Some(size) = self.messages.spool.len_of(&sha256) else {
            return Err(CommandError::Refused(format!(
                "{}: the spool does not hold that file",
                media::NOT_HELD
            )));
        };
        let queued = self
            .messages
            .store
            .media_again(sha256.clone())
            .await
            .map_err(|e| CommandError::Failed(format!("media jobs: {e}")))?;
        if !queued {
            // Being fetched or published now: it is on its way anyway.
            let pending = self
                .media
                .as_ref()
                .is_some_and(|m| m.row.job.sha256 == sha256);
            if !pending {
                return Err(CommandError::Refused(format!(
                    "{}: no delivered message carried that file",
                    media::NOT_HELD
                )));
            }
        }
        self.messages.publish_wake.notify_one();
        let chunk = media::chunk_bytes(self.messages.config.mqtt.max_packet_bytes);
        Ok(serde_json::json!({
            "sha256": sha256,
            "size": size,
            "chunks": media::chunk_count(size, chunk),
        }))
    }
}
