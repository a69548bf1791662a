//! The inbox: received messages are committed before WhatsApp hears they
//! arrived.
//!
//! whatsapp-rust calls [`InboxHook::on_messages`] for every decrypted batch
//! and sends the server's acks only when it returns `Ok`. So the order is:
//! decrypt → commit (fsynced) → ack → publish → PUBACK → delete. A crash or
//! power cut anywhere costs nothing: before the commit, WhatsApp still has
//! the message (and the library's pending-inbound buffer its decrypted
//! copy); after it, the inbox has it. A redelivery of a committed message is
//! recognised by (chat, sender, id) and acked without a second publish.

use std::sync::Arc;

use whatsapp_rust::InboundDurabilityHook;
use whatsapp_rust::client::Client;
use whatsapp_rust::types::durability_hook::InboundMessage;

use super::Messages;
use crate::command::Command;

/// Room this large (a fraction of the limits) must be free again before a
/// full inbox asks WhatsApp to redeliver what it left unacked.
const REOPEN_AT: f64 = 0.9;

pub struct InboxHook {
    messages: Arc<Messages>,
}

impl InboxHook {
    pub(super) fn new(messages: Arc<Messages>) -> Self {
        Self { messages }
    }
}

#[async_trait::async_trait]
impl InboundDurabilityHook for InboxHook {
    async fn on_messages(
        &self,
        client: Arc<Client>,
        batch: &[InboundMessage],
    ) -> anyhow::Result<()> {
        let mut records = Vec::with_capacity(batch.len());
        let max_file = self.messages.config.messages.media_max_file_bytes;
        for m in batch {
            let who = super::sender::resolve(&self.messages, &client, &m.info).await;
            if let Some(record) = super::inbound::describe_as(&m.message, &m.info, &who) {
                // The file's reference is committed with its message: its
                // key exists nowhere else once WhatsApp has the ack.
                let media = super::inbound::media_reference(&m.message)
                    .and_then(|reference| super::media::job_for(&reference, max_file));
                records.push((record, media));
            }
        }
        let max_bytes = usize::try_from(self.messages.config.mqtt.max_packet_bytes)
            .unwrap_or(usize::MAX)
            .saturating_sub(super::inbound::fit::PACKET_OVERHEAD);
        let mut rows: Vec<outlet_store::InboundRow> = Vec::with_capacity(records.len());
        let mut with_media = false;
        for (mut record, media) in records {
            let Ok(mut payload) = serde_json::to_vec(&record.payload) else {
                continue;
            };
            if !super::inbound::fit::fits(&record.payload, payload.len(), max_bytes) {
                let cut = super::inbound::fit::fit(&mut record.payload, max_bytes);
                tracing::warn!(
                    id = %record.id,
                    fields = ?cut,
                    "messages: a message too large for one MQTT packet was cut; \
                     the whole of it is kept in the data directory's truncated/"
                );
                let Ok(cut_payload) = serde_json::to_vec(&record.payload) else {
                    continue;
                };
                let whole = std::mem::replace(&mut payload, cut_payload);
                let user = record.chat.split(['@', ':']).next().unwrap_or_default();
                // Best effort: the cut record goes to HQ all the same.
                let _ = super::kept::keep(
                    &self.messages,
                    super::kept::TRUNCATED,
                    &format!("{user}-{}", record.id),
                    whole,
                )
                .await;
            }
            with_media |= media.is_some();
            rows.push(outlet_store::InboundRow {
                chat: record.chat,
                sender: record.sender,
                message_id: record.id,
                received_at: record.at,
                payload,
                media,
            });
        }
        if rows.is_empty() {
            // Receipts of our own sends on other devices, protocol
            // messages: nothing for HQ, and WhatsApp may drop them.
            return Ok(());
        }
        let messages = &self.messages;
        match messages
            .store
            .commit_inbound(rows, messages.limits_inbox())
            .await
        {
            Ok(outlet_store::InboundCommit::Committed { new, duplicates }) => {
                if duplicates > 0 {
                    tracing::info!(duplicates, "messages: redelivered messages recognised");
                }
                if new > 0 {
                    tracing::debug!(new, "messages: committed to the inbox");
                    messages.report.send_modify(|r| {
                        r.last_message_in_at = Some(chrono::Utc::now());
                    });
                    messages.queued_for_broker();
                    if with_media {
                        messages.media_wake.notify_one();
                    }
                }
                Ok(())
            }
            Ok(outlet_store::InboundCommit::Full { messages: n, bytes }) => {
                // `inbox_full` is both what the snapshot says and the flag
                // that asks for a reconnect once there is room again.
                let first = messages
                    .report
                    .send_if_modified(|r| !std::mem::replace(&mut r.inbox_full, true));
                if first {
                    tracing::warn!(
                        pending = n,
                        bytes,
                        "messages: the inbox is full (the broker is not taking messages); \
                         WhatsApp keeps new ones until there is room"
                    );
                }
                anyhow::bail!("inbox full: {n} messages, {bytes} bytes wait for the broker")
            }
            Err(e) => {
                tracing::error!(error = %e, "messages: cannot commit received messages; WhatsApp keeps them");
                Err(anyhow::anyhow!("inbox commit failed: {e}"))
            }
        }
    }
}

/// Called after the broker took messages: if a full inbox refused some and
/// there is room again, a reconnect makes WhatsApp redeliver them. The
/// depths are read only while a refusal is outstanding: this runs after
/// every batch of PUBACKs.
pub(super) async fn reopen_if_drained(messages: &Messages) {
    if !messages.report.borrow().inbox_full {
        return;
    }
    let Ok(depths) = messages.store.message_depths().await else {
        return;
    };
    let limits = messages.limits_inbox();
    let roomy = (depths.inbox_messages as f64) < limits.max_messages as f64 * REOPEN_AT
        && (depths.inbox_bytes as f64) < limits.max_bytes as f64 * REOPEN_AT;
    if !roomy {
        return;
    }
    // Only one caller clears it, so only one reconnect is asked for.
    if !messages
        .report
        .send_if_modified(|r| std::mem::take(&mut r.inbox_full))
    {
        return;
    }
    tracing::info!("messages: the inbox has room again; reconnecting so WhatsApp redelivers");
    if let Err(e) = messages.commands.send(Command::Reconnect).await {
        tracing::warn!(error = %e, "messages: the reconnect after a full inbox was refused");
    }
}
