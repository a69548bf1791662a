//! One decrypted inbound WhatsApp message, as HQ receives it on
//! `<prefix>/message/in`.
//!
//! WhatsApp hands the agent a protobuf with well over a hundred optional
//! fields, most of them envelopes, key exchanges and sync chatter that no
//! person typed. HQ wants none of that: it wants to know who wrote what, in
//! which chat, so it can answer. [`describe`] is the one place that draws
//! the line. It is pure (no client, no store, no clock) so every decision
//! below is a unit test, and the inbox and the MQTT publisher can share it.
//!
//! # The payload
//!
//! ```text
//! {"seq", "epoch", "id", "chat", "from", "from_lid"?, "from_name"?, "at", "kind",
//!  "text"?, "caption"?, "media"?: {"mimetype", "size", "sha256", "file_name"?},
//!  "location"?: {"latitude", "longitude", "name"?, "address"?},
//!  "contact"?: {"display_name", "vcard"}, "reaction"?: {"emoji", "to"},
//!  "quoted_id"?, "edit_of"?, "revoked"?, "group"?}
//! ```
//!
//! `seq` and `epoch` are added by the publisher as it hands the record to
//! the broker (the outlet's record sequence, `messages::publisher`).
//! A field marked `?` is left out when it has no value; the payload never
//! carries `null`, so HQ can tell "absent" with one `in` check. `kind` is
//! one of `text`, `image`, `video`, `audio`, `document`, `sticker`,
//! `location`, `contact`, `reaction`, `edit`, `revoke` and `unknown`.
//!
//! # What is and is not a message
//!
//! A message someone sent that we have no mapping for (a poll, a payment,
//! a button reply) still goes out, as `kind: "unknown"`: dropping it would
//! leave a customer unanswered without anyone knowing. What does *not* go
//! out is what no person sent to the outlet: the account's own messages,
//! protocol messages (key shares, history sync, ephemeral settings, peer
//! data operations, …), sender-key distributions, status updates and
//! channel posts, album headers (each picture of an album arrives as its
//! own message) and empty messages.
//!
//! # Choices HQ should know about
//!
//! - A contact card with several contacts (`contactsArrayMessage`) becomes
//!   one `contact` whose `vcard` holds all the cards one after another (a
//!   vCard stream may hold several, RFC 6350 §3.1), so `contact` has one
//!   shape whatever was shared and no card is lost.
//! - A live location is `kind: "location"` with the position it started
//!   from; later updates are not messages.
//! - An edit is a protocol message (`MESSAGE_EDIT`, usually inside an
//!   `editedMessage` envelope). whatsapp-rust decrypts the newer
//!   end-to-end-encrypted edits into that same shape when it has the
//!   original's secret; when it has not, the edit still goes out, with
//!   `edit_of` and without `text`.
//! - `chat` is where HQ replies. For a message a customer sent through
//!   their own broadcast list it is the customer, not the list, which only
//!   its owner can post to.
//! - Customers are known by their number. WhatsApp now addresses most
//!   chats by LID (`<digits>@lid`, the number hidden) and names the number
//!   beside it when the customer shares it; the inbox also asks the
//!   session's store and, failing that, WhatsApp ([`KnownSender`]). With
//!   the number known, `from` is `+<number>` and a one-to-one `chat` is
//!   `<number>@s.whatsapp.net` whichever address the message came from, so
//!   one customer is one chat; `from_lid` carries the LID. A customer who
//!   hides the number is `from` = `chat` = the LID, with `from_name`.
//!
//! # Layout
//!
//! - this file: [`InboundRecord`] and [`describe`], which builds HQ's record
//!   (who wrote, in which chat, when) around what [`decode`] found;
//! - [`decode`]: WhatsApp's protobuf → the kind and its fields, out of the
//!   envelopes, with everything no person sent left out;
//! - [`fit`]: every record below the broker's packet limit, a cut text
//!   marked.
//!
//! Pure: no client, store, clock or MQTT; it must not import anything of
//! the agent but the plain rules.

mod decode;
pub mod fit;
#[cfg(test)]
mod tests;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use whatsapp_rust::Jid;
use whatsapp_rust::wacore::types::message::{MessageInfo, MessageSource};
use whatsapp_rust::wacore_binary::JidExt as _;
use whatsapp_rust::waproto::whatsapp as wa;

pub(crate) use decode::hex;
use decode::{Content, classify, unwrap};

/// A received file's reference: what a download needs and what HQ is told
/// of it. Its key is for the download only and goes nowhere else.
#[derive(Clone, PartialEq, Eq)]
pub struct MediaReference {
    /// `message/in`'s kind: `image`, `video`, `audio`, `document`, `sticker`.
    pub kind: &'static str,
    /// whatsapp-rust's media type (its key derivation): the kind's name.
    pub media_type: &'static str,
    pub mimetype: String,
    pub file_name: Option<String>,
    /// The plaintext's length as the sender declared it.
    pub size: u64,
    /// The plaintext's SHA-256 as the sender declared it, lower-case hex.
    pub sha256: String,
    pub direct_path: String,
    pub media_key: Vec<u8>,
    pub enc_sha256: Vec<u8>,
}

impl std::fmt::Debug for MediaReference {
    /// Without the key and path: a debug print may reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaReference")
            .field("kind", &self.kind)
            .field("mimetype", &self.mimetype)
            .field("size", &self.size)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// The file a customer's message carries, for the download: `None` for a
/// message without one, or one not to forward (see [`describe`]), or whose
/// reference is incomplete.
pub fn media_reference(message: &wa::Message) -> Option<MediaReference> {
    decode::media_reference(unwrap(message))
}

/// One inbound message as HQ receives it, plus the keys the inbox dedups by.
///
/// `chat`, `sender` and `id` are the triple whatsapp-rust's
/// `InboundDurabilityHook` says to deduplicate by: a message id is unique
/// only within one chat and sender, and a redelivered message comes back
/// with the same three.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundRecord {
    /// `info.source.chat` as a JID string.
    pub chat: String,
    /// `info.source.sender` as a JID string, device included.
    pub sender: String,
    /// The message id.
    pub id: String,
    /// When the sender sent it (the stanza's timestamp).
    pub at: DateTime<Utc>,
    /// The JSON object published on `<prefix>/message/in`.
    pub payload: Value,
}

/// The message as HQ receives it, or `None` for messages that are not a
/// customer's message to the outlet: the account's own
/// (`info.source.is_from_me`), protocol and housekeeping messages (sender
/// key distribution alone, app-state key share, history sync
/// notifications, peer data operations, ephemeral settings, …), status
/// updates, channel posts and empty messages.
pub fn describe(message: &wa::Message, info: &MessageInfo) -> Option<InboundRecord> {
    describe_as(message, info, &KnownSender::from_source(&info.source))
}

/// Who wrote, by number and LID, as far as the message, the session's store
/// and WhatsApp know (the inbox finds out; see `messages::sender`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownSender {
    /// The phone number's digits, with country code.
    pub number: Option<String>,
    /// The LID's user part.
    pub lid: Option<String>,
}

impl KnownSender {
    /// What the stanza itself says: the sender's JID and the other address
    /// WhatsApp put beside it (`sender_pn`, `participant_pn`, …).
    pub fn from_source(source: &MessageSource) -> Self {
        let mut known = KnownSender::default();
        for jid in std::iter::once(&source.sender).chain(source.sender_alt.as_ref()) {
            let user = jid.user.as_str();
            if user.is_empty() || !user.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if jid.server.is_lid_family() {
                known.lid.get_or_insert_with(|| user.to_string());
            } else if jid.server.is_pn_family() {
                known.number.get_or_insert_with(|| user.to_string());
            }
        }
        known
    }
}

/// [`describe`] with what is known of the sender beyond the stanza.
pub fn describe_as(
    message: &wa::Message,
    info: &MessageInfo,
    who: &KnownSender,
) -> Option<InboundRecord> {
    let source = &info.source;
    // Our own messages (typed on the phone, or echoed to this device) are
    // not the customer's; status updates and channel posts are addressed
    // to nobody in particular.
    if source.is_from_me || source.chat.is_status_broadcast() || source.chat.is_newsletter() {
        return None;
    }
    let Content { kind, mut fields } = classify(unwrap(message))?;

    let chat = source.chat.to_string();
    // Only a broadcast list's owner can post to it; the recipient's phone
    // shows the message in the 1:1 chat with the sender, so that is where
    // HQ must answer.
    // A one-to-one chat is the customer's number whenever it is known, so
    // it is the same chat whether WhatsApp used the number or the LID.
    let one_to_one = !source.chat.is_group() && !source.chat.is_broadcast_list();
    let reply_chat = match &who.number {
        Some(number) if one_to_one || source.chat.is_broadcast_list() => {
            format!("{number}@s.whatsapp.net")
        }
        _ if source.chat.is_broadcast_list() => source.sender.to_non_ad_string(),
        _ => chat.clone(),
    };

    fields.insert("id".into(), info.id.clone().into());
    fields.insert("chat".into(), reply_chat.into());
    let from = match &who.number {
        Some(number) => format!("+{number}"),
        None => from(&source.sender),
    };
    fields.insert("from".into(), from.into());
    if let Some(lid) = &who.lid {
        fields.insert("from_lid".into(), format!("{lid}@lid").into());
    }
    if !info.push_name.is_empty() {
        fields.insert("from_name".into(), info.push_name.clone().into());
    }
    fields.insert(
        "at".into(),
        info.timestamp
            .to_rfc3339_opts(SecondsFormat::Secs, true)
            .into(),
    );
    fields.insert("kind".into(), kind.as_str().into());
    if source.chat.is_group() {
        fields.insert("group".into(), chat.clone().into());
    }

    Some(InboundRecord {
        chat,
        sender: source.sender.to_string(),
        id: info.id.clone(),
        at: info.timestamp,
        payload: Value::Object(fields),
    })
}

/// `from`: a phone number when the sender is addressed by one, since that
/// is how HQ knows its customers; otherwise (a LID, which hides the number)
/// the JID without its device, which is the same for all their devices.
fn from(sender: &Jid) -> String {
    let user = sender.user.as_str();
    if sender.server.is_pn_family() && !user.is_empty() && user.bytes().all(|b| b.is_ascii_digit())
    {
        format!("+{user}")
    } else {
        sender.to_non_ad_string()
    }
}
