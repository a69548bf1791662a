//! HQ's `send`, `read`, `replay` and `media` on the messages' own connection: run one
//! at a time, answered on the same connection, and acknowledged to the
//! broker once it has the answer (see the parent module's doc for why).

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Publish, QoS};

use super::{
    ANSWER_WAIT, Handed, MAX_REPLAY, MAX_REPLAY_BYTES, NOT_A_ROW, Publisher, lock, with_sequence,
};
use crate::command::{Command, CommandError, SendTarget};
use crate::mqtt::{redact, requests};

impl Publisher {
    /// A `send`, `read` or `replay` from HQ: run, then answered on this
    /// connection.
    pub(super) async fn on_request(&mut self, connection: u64, publish: Publish) {
        let messages = self.messages.clone();
        let topics = &messages.topics;
        let Some((client, handed)) = self.client.clone() else {
            return;
        };
        if connection != self.connection || !self.connected || handed.is_closed() {
            // Its connection is gone, unacknowledged: the broker delivers it
            // again on the next one. Nothing was done for it here.
            return;
        }
        let Some(name) = topics
            .request_name(&publish.topic)
            .filter(|name| requests::MESSAGE_REQUESTS.contains(name))
            .map(str::to_string)
        else {
            // A subscription the session kept from another prefix or outlet
            // id: acknowledged and dropped, so it cannot fill the broker's
            // in-flight window.
            tracing::info!(topic = %publish.topic, "messages: a request on another outlet's topic was dropped");
            self.acks_due.push_back(publish);
            return;
        };
        let (result, echo) = if publish.retain {
            (
                Err(requests::RETAINED_REQUEST.to_string()),
                requests::echo_of(&publish.payload),
            )
        } else {
            match requests::parse(&name, &publish.payload) {
                Err(rejected) => (Err(rejected.message), rejected.echo),
                Ok(request) => {
                    let result = match request.command {
                        Command::Replay { from_seq, to_seq } => self.replay(from_seq, to_seq).await,
                        Command::Media { sha256 } => self.media_again(sha256).await,
                        // `send` and `read`: the messaging module's own
                        // entry, as for every other source (not through
                        // `Commands`, which learns of the module only
                        // after this connection may already be up).
                        command => SendTarget::run(&*self.messages, command).await,
                    };
                    (
                        result.map_err(|e| requests::command_error(&e)),
                        request.echo,
                    )
                }
            }
        };
        let mut result = result;
        redact::answer_json(
            &name,
            &mut result,
            self.messages.config.mqtt.publish_full_phone,
        );
        if let Err(e) = &result {
            tracing::info!(command = %name, error = %e, "MQTT request refused");
        } else {
            tracing::info!(command = %name, "MQTT request");
        }
        let body = requests::response(&result, echo).to_string();
        // Done (a send is in the outbox), but the broker forgets the
        // request only once it has the answer: until then a broker that
        // goes down delivers the request again, and HQ gets its answer.
        self.answers += 1;
        let answer = self.answers;
        if hand_over(
            &client,
            &handed,
            -answer,
            topics.response(&name),
            body.into_bytes(),
        )
        .await
        {
            self.unanswered.insert(answer, publish);
        } else {
            // Left unacknowledged: the next connection brings it again.
            tracing::warn!(command = %name, "messages: an answer to HQ could not be handed to the broker connection");
        }
    }

    /// Publishes journaled records from `from_seq` again, in order, as they
    /// went the first time plus `"replay": true`. Answers what it did and
    /// the first seq the journal still holds (a range no longer there is
    /// not an error: HQ learns where the journal starts).
    pub(super) async fn replay(
        &mut self,
        from_seq: i64,
        to_seq: Option<i64>,
    ) -> crate::command::CommandResult {
        // Acks this loop has heard but not yet handed to the store: those
        // records are the broker's, so they are replayable now, not after
        // this request (a replay asked right after a reconnect would
        // otherwise miss the record the reconnect published again).
        while !self.acked.is_empty() {
            let before = self.acked.len();
            self.delete_acked().await;
            if self.acked.len() >= before {
                break;
            }
        }
        let Some((client, handed)) = self.client.clone() else {
            return Err(CommandError::NotConnected);
        };
        if from_seq < 1 || to_seq.is_some_and(|to| to < from_seq) {
            return Err(CommandError::InvalidFormat(
                "from_seq is 1 or more, and to_seq (when given) not below it".into(),
            ));
        }
        let epoch = match self.messages.store.message_epoch().await {
            Ok(epoch) => epoch,
            Err(e) => return Err(CommandError::Failed(format!("journal: {e}"))),
        };
        let (rows, first_held, limited) = self
            .messages
            .store
            .journal_range(
                from_seq,
                to_seq.unwrap_or(i64::MAX),
                MAX_REPLAY,
                MAX_REPLAY_BYTES,
            )
            .await
            .map_err(|e| CommandError::Failed(format!("journal: {e}")))?;
        let mut last = None;
        for row in &rows {
            let topic = self.topic_of(row.kind);
            let payload = with_sequence(&row.payload, row.seq, &epoch, true);
            if !hand_over(&client, &handed, NOT_A_ROW, topic, payload).await {
                break;
            }
            last = Some(row.seq);
        }
        // More to ask for: this answer stopped before the end of what was
        // read, or read no further than its limits allowed.
        let read_to = rows.last().map(|r| r.seq);
        let stopped_early = read_to.is_some() && last != read_to;
        let more = stopped_early || limited;
        Ok(serde_json::json!({
            "epoch": epoch,
            "replayed": rows.iter().take_while(|r| Some(r.seq) <= last).count(),
            "first_seq": rows.first().map(|r| r.seq),
            "last_seq": last,
            "first_held": first_held,
            "more": more,
        }))
    }
}

/// Hands a publish that is not a queue row (an answer, a replayed record) to
/// the client, with `marker` in `handed` (an answer's negative number, or
/// [`NOT_A_ROW`]). `try_publish` is synchronous:
/// the marker and the publish go in together or not at all, so the packet
/// ids keep mapping to rows. Waits (a little at a time) for room in the
/// client's channel, [`ANSWER_WAIT`] at most.
async fn hand_over(
    client: &AsyncClient,
    handed: &Handed,
    marker: i64,
    topic: String,
    payload: Vec<u8>,
) -> bool {
    let deadline = Instant::now() + ANSWER_WAIT;
    loop {
        lock(handed).push_back(marker);
        match client.try_publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone()) {
            Ok(()) => return true,
            Err(_) => {
                lock(handed).pop_back();
                // A closed connection never makes room.
                if handed.is_closed() || Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
