//! `read`: HQ says it read customers' messages; the customers get read
//! receipts (blue ticks).
//!
//! The agent never marks anything read by itself: while it is linked, the
//! outlet's phone still shows its unread badges, and a customer sees blue
//! ticks only when somebody at HQ has read the message. Read receipts are
//! not queued: one asked for while the session is down is refused with
//! `not_connected` and HQ asks again, as it does for `check_number`.

use whatsapp_rust::Jid;
use whatsapp_rust::wacore_binary::JidExt as _;

use super::Messages;
use super::outbox::{MAX_ID_LEN, recipient};
use crate::command::{CommandError, CommandResult};

/// At most this many ids in one request (WhatsApp's cap on one receipt).
pub const MAX_READ_IDS: usize = 256;
/// How long the receipts may take to go out.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn read(
    messages: &Messages,
    chat: String,
    ids: Vec<String>,
    sender: Option<String>,
) -> CommandResult {
    let country = &messages.config.outlet.country_code;
    let chat = recipient(&chat, country)?;
    let sender = sender.map(|s| recipient(&s, country)).transpose()?;
    if ids.is_empty() || ids.len() > MAX_READ_IDS {
        return Err(CommandError::InvalidFormat(format!(
            "ids must hold 1-{MAX_READ_IDS} message ids"
        )));
    }
    if ids.iter().any(|id| id.is_empty() || id.len() > MAX_ID_LEN) {
        return Err(CommandError::InvalidFormat(format!(
            "a message id is 1-{MAX_ID_LEN} characters"
        )));
    }
    if chat.is_group() && sender.is_none() {
        return Err(CommandError::InvalidFormat(
            "a group's messages need their sender (message/in's from)".into(),
        ));
    }
    let Some(client) = messages.client.borrow().clone() else {
        return Err(CommandError::NotConnected);
    };
    // HQ names a customer by number; a customer who wrote by LID reads
    // their receipts in the LID chat.
    let chat = addressed_as_whatsapp_does(&client, chat).await;
    let sender = match sender {
        Some(s) => Some(addressed_as_whatsapp_does(&client, s).await),
        None => None,
    };
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    // The messages connection handles requests one at a time: a stalled
    // session must not hold the ones behind this.
    tokio::time::timeout(
        READ_TIMEOUT,
        client.mark_as_read(&chat, sender.as_ref(), &refs),
    )
    .await
    .map_err(|_| CommandError::Failed("read receipts not sent: timed out".into()))?
    .map_err(|e| CommandError::Failed(format!("read receipts not sent: {e}")))?;
    Ok(serde_json::json!({ "read": ids.len() }))
}

/// The LID of a number the session's store maps to one, else the JID as is.
async fn addressed_as_whatsapp_does(client: &whatsapp_rust::client::Client, jid: Jid) -> Jid {
    if !jid.is_pn() {
        return jid;
    }
    match client.get_lid_pn_entry(&jid).await {
        Ok(Some(entry)) => Jid::lid(entry.lid.to_string()),
        _ => jid,
    }
}
