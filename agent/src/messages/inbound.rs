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
//! {"id", "chat", "from", "from_name"?, "at", "kind",
//!  "text"?, "caption"?, "media"?: {"mimetype", "size", "sha256", "file_name"?},
//!  "location"?: {"latitude", "longitude", "name"?, "address"?},
//!  "contact"?: {"display_name", "vcard"}, "reaction"?: {"emoji", "to"},
//!  "quoted_id"?, "edit_of"?, "revoked"?, "group"?}
//! ```
//!
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

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use whatsapp_rust::Jid;
use whatsapp_rust::wacore::proto_helpers::MessageExt as _;
use whatsapp_rust::wacore::types::message::MessageInfo;
use whatsapp_rust::wacore_binary::JidExt as _;
use whatsapp_rust::waproto::buffa::MessageField;
use whatsapp_rust::waproto::whatsapp as wa;

use wa::message::protocol_message::Type as ProtocolType;
use wa::message::secret_encrypted_message::SecretEncType;

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
    let reply_chat = if source.chat.is_broadcast_list() {
        source.sender.to_non_ad_string()
    } else {
        chat.clone()
    };

    fields.insert("id".into(), info.id.clone().into());
    fields.insert("chat".into(), reply_chat.into());
    fields.insert("from".into(), from(&source.sender).into());
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

/// What HQ calls the message's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Image,
    Video,
    Audio,
    Document,
    Sticker,
    Location,
    Contact,
    Reaction,
    Edit,
    Revoke,
    Unknown,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Image => "image",
            Kind::Video => "video",
            Kind::Audio => "audio",
            Kind::Document => "document",
            Kind::Sticker => "sticker",
            Kind::Location => "location",
            Kind::Contact => "contact",
            Kind::Reaction => "reaction",
            Kind::Edit => "edit",
            Kind::Revoke => "revoke",
            Kind::Unknown => "unknown",
        }
    }
}

/// The kind and the payload fields that depend on it; [`describe`] adds the
/// ones every message has.
struct Content {
    kind: Kind,
    fields: Map<String, Value>,
}

impl Content {
    fn new(kind: Kind) -> Self {
        Content {
            kind,
            fields: Map::new(),
        }
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// Sets `key` only when there is a value, so absent fields stay absent
    /// instead of turning into `null` or `""`.
    fn with_some(self, key: &str, value: Option<impl Into<Value>>) -> Self {
        match value {
            Some(value) => self.with(key, value),
            None => self,
        }
    }
}

/// How deep [`unwrap`] digs: real messages nest two or three envelopes, and
/// a bound keeps a hostile message from making us loop.
const MAX_ENVELOPES: usize = 8;

/// The message itself, out of the envelopes WhatsApp puts around it.
///
/// wacore's `get_base_message` peels the common ones (device-sent,
/// ephemeral, view-once, document-with-caption, edited) in one pass; on top
/// of that we peel the ones it leaves, that still wrap a user's content:
/// album pictures, animated stickers, group mentions and bot invocations.
fn unwrap(message: &wa::Message) -> &wa::Message {
    let mut current = message;
    for _ in 0..MAX_ENVELOPES {
        let base = current.get_base_message();
        let inner = [
            &base.associated_child_message,
            &base.lottie_sticker_message,
            &base.group_mentioned_message,
            &base.bot_invoke_message,
        ]
        .into_iter()
        .find_map(|envelope| envelope.as_option().and_then(|e| e.message.as_option()));
        match inner {
            Some(inner) => current = inner,
            None => return base,
        }
    }
    current.get_base_message()
}

/// Sorts an unwrapped message into a kind, `None` when no person sent it.
///
/// Protocol messages come first: a revoke or an edit is a protocol message,
/// and every other protocol message is housekeeping.
fn classify(m: &wa::Message) -> Option<Content> {
    if let Some(protocol) = m.protocol_message.as_option()
        && let Some(content) = protocol_content(protocol)
    {
        return Some(content);
    }
    if let Some(reaction) = m.reaction_message.as_option() {
        return Some(reaction_content(reaction));
    }
    if let Some(text) = non_empty(m.conversation.as_deref()) {
        return Some(Content::new(Kind::Text).with("text", text));
    }
    if let Some(ext) = m.extended_text_message.as_option()
        && let Some(text) = non_empty(ext.text.as_deref())
    {
        return Some(
            Content::new(Kind::Text)
                .with("text", text)
                .with_some("quoted_id", quoted_id(&ext.context_info)),
        );
    }
    if let Some(media) = media(m) {
        return Some(media.into_content());
    }
    if let Some(loc) = m.location_message.as_option() {
        return Some(location_content(
            loc.degrees_latitude,
            loc.degrees_longitude,
            Place {
                name: loc.name.as_deref(),
                address: loc.address.as_deref(),
            },
            loc.comment.as_deref(),
            &loc.context_info,
        ));
    }
    if let Some(live) = m.live_location_message.as_option() {
        return Some(location_content(
            live.degrees_latitude,
            live.degrees_longitude,
            Place::default(),
            live.caption.as_deref(),
            &live.context_info,
        ));
    }
    if let Some(card) = m.contact_message.as_option() {
        return Some(contact_content(
            card.display_name.as_deref().unwrap_or_default(),
            card.vcard.clone().unwrap_or_default(),
            &card.context_info,
        ));
    }
    if let Some(cards) = m.contacts_array_message.as_option() {
        let display_name = non_empty(cards.display_name.as_deref())
            .or_else(|| {
                cards
                    .contacts
                    .first()
                    .and_then(|c| c.display_name.as_deref())
            })
            .unwrap_or_default();
        // One vCard stream: each card ends at END:VCARD, so they can
        // follow one another; the trim keeps blank lines out between them.
        let vcard = cards
            .contacts
            .iter()
            .filter_map(|c| non_empty(c.vcard.as_deref()))
            .map(|v| v.trim_end_matches(['\r', '\n']))
            .collect::<Vec<_>>()
            .join("\n");
        return Some(contact_content(display_name, vcard, &cards.context_info));
    }
    // An end-to-end-encrypted edit that whatsapp-rust could not open (it
    // has no secret for the original): the customer did edit, we just
    // cannot say to what.
    if let Some(secret) = m.secret_encrypted_message.as_option()
        && secret.secret_enc_type == Some(SecretEncType::MESSAGE_EDIT)
        && let Some(of) = non_empty(
            secret
                .target_message_key
                .as_option()
                .and_then(|k| k.id.as_deref()),
        )
    {
        return Some(Content::new(Kind::Edit).with("edit_of", of));
    }
    has_user_content(m).then(|| Content::new(Kind::Unknown))
}

/// A revoke or an edit; `None` for every other protocol message: those are
/// clients and devices keeping each other in step (key shares, history
/// sync, ephemeral settings, peer data operations, …), not anything a
/// person wrote.
fn protocol_content(protocol: &wa::message::ProtocolMessage) -> Option<Content> {
    let target = non_empty(protocol.key.as_option().and_then(|k| k.id.as_deref()));
    if protocol.r#type == Some(ProtocolType::REVOKE) {
        return target.map(|id| Content::new(Kind::Revoke).with("revoked", id));
    }
    // The decrypted form of an encrypted edit carries the new content but
    // may leave the type out, so the content counts as much as the type.
    if protocol.r#type == Some(ProtocolType::MESSAGE_EDIT) || protocol.edited_message.is_set() {
        // An edit that does not say of what is still the customer's doing:
        // unknown rather than dropped.
        let Some(of) = target else {
            return Some(Content::new(Kind::Unknown));
        };
        let text = protocol
            .edited_message
            .as_option()
            .and_then(|edited| edited.text_content().or_else(|| edited.get_caption()));
        return Some(
            Content::new(Kind::Edit)
                .with("edit_of", of)
                .with_some("text", non_empty(text)),
        );
    }
    None
}

/// A reaction; an empty emoji is the customer taking their reaction back.
fn reaction_content(reaction: &wa::message::ReactionMessage) -> Content {
    let Some(to) = non_empty(reaction.key.as_option().and_then(|k| k.id.as_deref())) else {
        // A reaction to nothing we could name: still theirs, so not dropped.
        return Content::new(Kind::Unknown);
    };
    let emoji = reaction.text.as_deref().unwrap_or_default();
    Content::new(Kind::Reaction).with("reaction", serde_json::json!({ "emoji": emoji, "to": to }))
}

/// The parts of a media message HQ gets: enough to tell what arrived and to
/// check a download against, not the keys to fetch it.
struct Media<'a> {
    kind: Kind,
    mimetype: Option<&'a str>,
    size: Option<u64>,
    sha256: Option<&'a [u8]>,
    file_name: Option<&'a str>,
    caption: Option<&'a str>,
    context: &'a MessageField<wa::ContextInfo>,
}

/// The media message in `m`, if there is one. A video note (`ptvMessage`)
/// is a video to HQ.
fn media(m: &wa::Message) -> Option<Media<'_>> {
    if let Some(image) = m.image_message.as_option() {
        return Some(Media {
            kind: Kind::Image,
            mimetype: image.mimetype.as_deref(),
            size: image.file_length,
            sha256: image.file_sha256.as_deref(),
            file_name: None,
            caption: image.caption.as_deref(),
            context: &image.context_info,
        });
    }
    if let Some(video) = m.video_message.as_option().or(m.ptv_message.as_option()) {
        return Some(Media {
            kind: Kind::Video,
            mimetype: video.mimetype.as_deref(),
            size: video.file_length,
            sha256: video.file_sha256.as_deref(),
            file_name: None,
            caption: video.caption.as_deref(),
            context: &video.context_info,
        });
    }
    if let Some(audio) = m.audio_message.as_option() {
        return Some(Media {
            kind: Kind::Audio,
            mimetype: audio.mimetype.as_deref(),
            size: audio.file_length,
            sha256: audio.file_sha256.as_deref(),
            file_name: None,
            caption: None,
            context: &audio.context_info,
        });
    }
    if let Some(document) = m.document_message.as_option() {
        return Some(Media {
            kind: Kind::Document,
            mimetype: document.mimetype.as_deref(),
            size: document.file_length,
            sha256: document.file_sha256.as_deref(),
            file_name: document.file_name.as_deref(),
            caption: document.caption.as_deref(),
            context: &document.context_info,
        });
    }
    if let Some(sticker) = m.sticker_message.as_option() {
        return Some(Media {
            kind: Kind::Sticker,
            mimetype: sticker.mimetype.as_deref(),
            size: sticker.file_length,
            sha256: sticker.file_sha256.as_deref(),
            file_name: None,
            caption: None,
            context: &sticker.context_info,
        });
    }
    None
}

impl Media<'_> {
    /// `mimetype`, `size` and `sha256` are always there (as `""`/`0` if
    /// WhatsApp left them out), so HQ reads `media` with one shape.
    fn into_content(self) -> Content {
        let mut media = Map::new();
        media.insert("mimetype".into(), self.mimetype.unwrap_or_default().into());
        media.insert("size".into(), self.size.unwrap_or_default().into());
        media.insert("sha256".into(), hex(self.sha256.unwrap_or_default()).into());
        if let Some(file_name) = non_empty(self.file_name) {
            media.insert("file_name".into(), file_name.into());
        }
        Content::new(self.kind)
            .with("media", Value::Object(media))
            .with_some("caption", non_empty(self.caption))
            .with_some("quoted_id", quoted_id(self.context))
    }
}

/// What a pinned location may say besides where it is.
#[derive(Default)]
struct Place<'a> {
    name: Option<&'a str>,
    address: Option<&'a str>,
}

/// A location, or `unknown` when it has no usable position: a made-up 0,0
/// would send a rider into the Gulf of Guinea, and a NaN would become the
/// `null` the payload promises never to carry.
fn location_content(
    latitude: Option<f64>,
    longitude: Option<f64>,
    place: Place<'_>,
    comment: Option<&str>,
    context: &MessageField<wa::ContextInfo>,
) -> Content {
    let (Some(latitude), Some(longitude)) = (
        latitude.filter(|l| l.is_finite()),
        longitude.filter(|l| l.is_finite()),
    ) else {
        return Content::new(Kind::Unknown);
    };
    let mut location = Map::new();
    location.insert("latitude".into(), latitude.into());
    location.insert("longitude".into(), longitude.into());
    if let Some(name) = non_empty(place.name) {
        location.insert("name".into(), name.into());
    }
    if let Some(address) = non_empty(place.address) {
        location.insert("address".into(), address.into());
    }
    Content::new(Kind::Location)
        .with("location", Value::Object(location))
        .with_some("caption", non_empty(comment))
        .with_some("quoted_id", quoted_id(context))
}

fn contact_content(
    display_name: &str,
    vcard: String,
    context: &MessageField<wa::ContextInfo>,
) -> Content {
    Content::new(Kind::Contact)
        .with(
            "contact",
            serde_json::json!({ "display_name": display_name, "vcard": vcard }),
        )
        .with_some("quoted_id", quoted_id(context))
}

/// Whether anything is left once the parts no person wrote are taken away.
///
/// The list is of what carries no content: key distributions, the
/// message's metadata, protocol messages (a revoke or edit was handled
/// before we get here), sticker sync, group key shares, and album headers
/// (their pictures arrive as messages of their own). Anything else set is a
/// user's message we have no mapping for. The copy is only made for such
/// leftovers, never for the common kinds.
fn has_user_content(m: &wa::Message) -> bool {
    let mut rest = m.clone();
    rest.sender_key_distribution_message = Default::default();
    rest.fast_ratchet_key_sender_key_distribution_message = Default::default();
    rest.message_context_info = Default::default();
    rest.protocol_message = Default::default();
    rest.sticker_sync_rmr_message = Default::default();
    rest.group_root_key_share = Default::default();
    rest.root_secret_distribute_message = Default::default();
    rest.album_message = Default::default();
    if rest.conversation.as_deref() == Some("") {
        rest.conversation = None;
    }
    rest != wa::Message::default()
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

/// The id of the message this one replies to.
fn quoted_id(context: &MessageField<wa::ContextInfo>) -> Option<&str> {
    non_empty(context.as_option().and_then(|c| c.stanza_id.as_deref()))
}

/// WhatsApp leaves strings empty as often as it leaves them out; to HQ both
/// are absent.
fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// Lowercase hex, the way `sha256sum` prints it.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;
    use serde_json::json;
    use whatsapp_rust::wacore::types::message::MessageSource;

    const CUSTOMER: &str = "4915112345678";
    const LID: &str = "123456789012345";
    const GROUP: &str = "120363041234567890";

    fn customer() -> Jid {
        Jid::pn_device(CUSTOMER, 3)
    }

    /// A customer's 1:1 message as whatsapp-rust parses it: the chat is the
    /// sender without their device.
    fn direct_info() -> MessageInfo {
        info(Jid::pn(CUSTOMER), customer())
    }

    fn info(chat: Jid, sender: Jid) -> MessageInfo {
        MessageInfo {
            source: MessageSource {
                is_group: chat.is_group(),
                chat,
                sender,
                ..Default::default()
            },
            id: "3EB0A1B2C3D4E5F6".into(),
            push_name: "Ada".into(),
            timestamp: Utc.with_ymd_and_hms(2026, 10, 1, 12, 30, 5).unwrap(),
            ..Default::default()
        }
    }

    fn conversation(text: &str) -> wa::Message {
        wa::Message {
            conversation: Some(text.into()),
            ..Default::default()
        }
    }

    fn key(id: &str) -> MessageField<wa::MessageKey> {
        MessageField::some(wa::MessageKey {
            remote_jid: Some(format!("{CUSTOMER}@s.whatsapp.net")),
            from_me: Some(false),
            id: Some(id.into()),
            ..Default::default()
        })
    }

    fn quoting(id: &str) -> MessageField<wa::ContextInfo> {
        MessageField::some(wa::ContextInfo {
            stanza_id: Some(id.into()),
            participant: Some("4930000000@s.whatsapp.net".into()),
            ..Default::default()
        })
    }

    fn envelope(message: wa::Message) -> MessageField<wa::message::FutureProofMessage> {
        MessageField::some(wa::message::FutureProofMessage {
            message: MessageField::some(message),
        })
    }

    fn protocol(protocol: wa::message::ProtocolMessage) -> wa::Message {
        wa::Message {
            protocol_message: MessageField::some(protocol),
            ..Default::default()
        }
    }

    /// The payload of a message that must be published, checked for the
    /// one thing every payload promises: no `null` anywhere.
    fn payload(message: &wa::Message, info: &MessageInfo) -> Value {
        let record = describe(message, info).expect("a customer's message is published");
        assert_no_null(&record.payload);
        record.payload
    }

    fn assert_no_null(value: &Value) {
        match value {
            Value::Null => panic!("the payload carries a null"),
            Value::Array(items) => items.iter().for_each(assert_no_null),
            Value::Object(fields) => fields.values().for_each(assert_no_null),
            _ => {}
        }
    }

    fn keys(value: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn text() {
        let info = direct_info();
        let record = describe(&conversation("Two pizzas, please"), &info).unwrap();
        assert_eq!(record.chat, format!("{CUSTOMER}@s.whatsapp.net"));
        assert_eq!(record.sender, format!("{CUSTOMER}:3@s.whatsapp.net"));
        assert_eq!(record.id, "3EB0A1B2C3D4E5F6");
        assert_eq!(record.at, info.timestamp);
        assert_eq!(
            record.payload,
            json!({
                "id": "3EB0A1B2C3D4E5F6",
                "chat": format!("{CUSTOMER}@s.whatsapp.net"),
                "from": format!("+{CUSTOMER}"),
                "from_name": "Ada",
                "at": "2026-10-01T12:30:05Z",
                "kind": "text",
                "text": "Two pizzas, please",
            })
        );
    }

    #[test]
    fn reply() {
        let message = wa::Message {
            extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
                text: Some("Yes, that one".into()),
                context_info: quoting("3EB0OUTLET"),
                ..Default::default()
            }),
            ..Default::default()
        };
        let payload = payload(&message, &direct_info());
        assert_eq!(payload["kind"], "text");
        assert_eq!(payload["text"], "Yes, that one");
        assert_eq!(payload["quoted_id"], "3EB0OUTLET");
    }

    #[test]
    fn image_with_caption_in_an_ephemeral_view_once_envelope() {
        let image = wa::Message {
            image_message: MessageField::some(wa::message::ImageMessage {
                mimetype: Some("image/jpeg".into()),
                caption: Some("This is what arrived".into()),
                file_sha256: Some(vec![0x00, 0xab, 0x0f, 0xff]),
                file_length: Some(48_213),
                context_info: quoting("3EB0ORDER"),
                ..Default::default()
            }),
            ..Default::default()
        };
        let message = wa::Message {
            ephemeral_message: envelope(wa::Message {
                view_once_message_v2: envelope(image),
                ..Default::default()
            }),
            ..Default::default()
        };
        let payload = payload(&message, &direct_info());
        assert_eq!(payload["kind"], "image");
        assert_eq!(
            payload["media"],
            json!({ "mimetype": "image/jpeg", "size": 48_213, "sha256": "00ab0fff" })
        );
        assert_eq!(payload["caption"], "This is what arrived");
        assert_eq!(payload["quoted_id"], "3EB0ORDER");
    }

    #[test]
    fn document_with_file_name_and_caption() {
        let message = wa::Message {
            document_with_caption_message: envelope(wa::Message {
                document_message: MessageField::some(wa::message::DocumentMessage {
                    mimetype: Some("application/pdf".into()),
                    file_name: Some("order-17.pdf".into()),
                    caption: Some("Our order".into()),
                    file_sha256: Some(vec![0xde, 0xad]),
                    file_length: Some(1024),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let payload = payload(&message, &direct_info());
        assert_eq!(payload["kind"], "document");
        assert_eq!(
            payload["media"],
            json!({
                "mimetype": "application/pdf",
                "size": 1024,
                "sha256": "dead",
                "file_name": "order-17.pdf",
            })
        );
        assert_eq!(payload["caption"], "Our order");
        assert!(payload.get("quoted_id").is_none());
    }

    #[test]
    fn other_media_kinds() {
        let cases = [
            (
                wa::Message {
                    video_message: MessageField::some(Default::default()),
                    ..Default::default()
                },
                "video",
            ),
            (
                wa::Message {
                    ptv_message: MessageField::some(Default::default()),
                    ..Default::default()
                },
                "video",
            ),
            (
                wa::Message {
                    audio_message: MessageField::some(Default::default()),
                    ..Default::default()
                },
                "audio",
            ),
            (
                wa::Message {
                    sticker_message: MessageField::some(Default::default()),
                    ..Default::default()
                },
                "sticker",
            ),
        ];
        for (message, kind) in cases {
            let payload = payload(&message, &direct_info());
            assert_eq!(payload["kind"], kind);
            // What WhatsApp left out is empty, not missing: one shape.
            assert_eq!(
                payload["media"],
                json!({ "mimetype": "", "size": 0, "sha256": "" })
            );
        }
    }

    #[test]
    fn location() {
        let message = wa::Message {
            location_message: MessageField::some(wa::message::LocationMessage {
                degrees_latitude: Some(52.520_008),
                degrees_longitude: Some(13.404_954),
                name: Some("Alexanderplatz".into()),
                address: Some("10178 Berlin".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let payload = payload(&message, &direct_info());
        assert_eq!(payload["kind"], "location");
        assert_eq!(
            payload["location"],
            json!({
                "latitude": 52.520_008,
                "longitude": 13.404_954,
                "name": "Alexanderplatz",
                "address": "10178 Berlin",
            })
        );
    }

    #[test]
    fn live_location_is_a_location() {
        let message = wa::Message {
            live_location_message: MessageField::some(wa::message::LiveLocationMessage {
                degrees_latitude: Some(-33.868_8),
                degrees_longitude: Some(151.209_3),
                caption: Some("On my way".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let payload = payload(&message, &direct_info());
        assert_eq!(payload["kind"], "location");
        assert_eq!(
            payload["location"],
            json!({ "latitude": -33.868_8, "longitude": 151.209_3 })
        );
        assert_eq!(payload["caption"], "On my way");
    }

    #[test]
    fn location_without_a_position_is_unknown() {
        let message = wa::Message {
            location_message: MessageField::some(wa::message::LocationMessage {
                degrees_latitude: Some(f64::NAN),
                degrees_longitude: Some(13.4),
                ..Default::default()
            }),
            ..Default::default()
        };
        let payload = payload(&message, &direct_info());
        assert_eq!(payload["kind"], "unknown");
        assert!(payload.get("location").is_none());
    }

    const VCARD_BOB: &str = "BEGIN:VCARD\nVERSION:3.0\nFN:Bob\nTEL:+4915100000001\nEND:VCARD\n";
    const VCARD_EVE: &str = "BEGIN:VCARD\nVERSION:3.0\nFN:Eve\nTEL:+4915100000002\nEND:VCARD";

    #[test]
    fn contact() {
        let message = wa::Message {
            contact_message: MessageField::some(wa::message::ContactMessage {
                display_name: Some("Bob".into()),
                vcard: Some(VCARD_BOB.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let payload = payload(&message, &direct_info());
        assert_eq!(payload["kind"], "contact");
        assert_eq!(
            payload["contact"],
            json!({ "display_name": "Bob", "vcard": VCARD_BOB })
        );
    }

    #[test]
    fn contacts_array_is_one_contact_with_every_card() {
        let card = |name: &str, vcard: &str| wa::message::ContactMessage {
            display_name: Some(name.into()),
            vcard: Some(vcard.into()),
            ..Default::default()
        };
        let message = wa::Message {
            contacts_array_message: MessageField::some(wa::message::ContactsArrayMessage {
                display_name: Some("2 contacts".into()),
                contacts: vec![card("Bob", VCARD_BOB), card("Eve", VCARD_EVE)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let payload = payload(&message, &direct_info());
        assert_eq!(payload["kind"], "contact");
        assert_eq!(payload["contact"]["display_name"], "2 contacts");
        assert_eq!(
            payload["contact"]["vcard"],
            format!("{}\n{VCARD_EVE}", VCARD_BOB.trim_end())
        );
    }

    fn reacting(emoji: &str) -> wa::Message {
        wa::Message {
            reaction_message: MessageField::some(wa::message::ReactionMessage {
                key: key("3EB0OUTLET"),
                text: Some(emoji.into()),
                sender_timestamp_ms: Some(1_790_000_000_000),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn reaction() {
        let payload = payload(&reacting("👍"), &direct_info());
        assert_eq!(payload["kind"], "reaction");
        assert_eq!(
            payload["reaction"],
            json!({ "emoji": "👍", "to": "3EB0OUTLET" })
        );
    }

    #[test]
    fn reaction_removed() {
        let payload = payload(&reacting(""), &direct_info());
        assert_eq!(payload["kind"], "reaction");
        assert_eq!(
            payload["reaction"],
            json!({ "emoji": "", "to": "3EB0OUTLET" })
        );
    }

    #[test]
    fn edit() {
        // The shape WhatsApp sends: the protocol message inside an
        // `editedMessage` envelope.
        let message = wa::Message {
            edited_message: envelope(protocol(wa::message::ProtocolMessage {
                key: key("3EB0FIRST"),
                r#type: Some(ProtocolType::MESSAGE_EDIT),
                edited_message: MessageField::some(conversation("Three pizzas, please")),
                timestamp_ms: Some(1_790_000_000_000),
                ..Default::default()
            })),
            ..Default::default()
        };
        let payload = payload(&message, &direct_info());
        assert_eq!(payload["kind"], "edit");
        assert_eq!(payload["edit_of"], "3EB0FIRST");
        assert_eq!(payload["text"], "Three pizzas, please");
    }

    #[test]
    fn edit_of_a_caption_decrypted_without_a_type() {
        // An encrypted edit as whatsapp-rust surfaces it once decrypted: the
        // new content is there, the type need not be.
        let new_caption = wa::Message {
            image_message: MessageField::some(wa::message::ImageMessage {
                caption: Some("The left one".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let message = protocol(wa::message::ProtocolMessage {
            key: key("3EB0PHOTO"),
            edited_message: MessageField::some(new_caption),
            ..Default::default()
        });
        let payload = payload(&message, &direct_info());
        assert_eq!(payload["kind"], "edit");
        assert_eq!(payload["edit_of"], "3EB0PHOTO");
        assert_eq!(payload["text"], "The left one");
    }

    #[test]
    fn encrypted_edit_that_could_not_be_opened() {
        let message = wa::Message {
            secret_encrypted_message: MessageField::some(wa::message::SecretEncryptedMessage {
                target_message_key: key("3EB0FIRST"),
                enc_payload: Some(vec![1; 32]),
                enc_iv: Some(vec![2; 12]),
                secret_enc_type: Some(SecretEncType::MESSAGE_EDIT),
                ..Default::default()
            }),
            ..Default::default()
        };
        let payload = payload(&message, &direct_info());
        assert_eq!(payload["kind"], "edit");
        assert_eq!(payload["edit_of"], "3EB0FIRST");
        assert!(payload.get("text").is_none());
    }

    #[test]
    fn revoke() {
        let message = protocol(wa::message::ProtocolMessage {
            key: key("3EB0FIRST"),
            r#type: Some(ProtocolType::REVOKE),
            ..Default::default()
        });
        let payload = payload(&message, &direct_info());
        assert_eq!(payload["kind"], "revoke");
        assert_eq!(payload["revoked"], "3EB0FIRST");
    }

    #[test]
    fn group_message_names_the_group_and_a_lid_sender() {
        let info = info(Jid::group(GROUP), Jid::lid_device(LID, 2));
        let record = describe(&conversation("Table for six tonight?"), &info).unwrap();
        assert_eq!(record.chat, format!("{GROUP}@g.us"));
        assert_eq!(record.sender, format!("{LID}:2@lid"));
        assert_eq!(record.payload["chat"], format!("{GROUP}@g.us"));
        assert_eq!(record.payload["group"], format!("{GROUP}@g.us"));
        assert_eq!(record.payload["from"], format!("{LID}@lid"));
        assert_eq!(record.payload["kind"], "text");
    }

    #[test]
    fn broadcast_list_message_is_answered_in_the_senders_chat() {
        let info = info(
            Jid::new("1790000000", whatsapp_rust::Server::Broadcast),
            customer(),
        );
        let record = describe(&conversation("We are open on Sunday"), &info).unwrap();
        assert_eq!(record.chat, "1790000000@broadcast");
        assert_eq!(record.payload["chat"], format!("{CUSTOMER}@s.whatsapp.net"));
        assert!(record.payload.get("group").is_none());
    }

    #[test]
    fn own_message_is_not_published() {
        let mut info = direct_info();
        info.source.is_from_me = true;
        assert_eq!(describe(&conversation("On its way"), &info), None);
    }

    #[test]
    fn status_updates_and_channel_posts_are_not_published() {
        let status = info(Jid::status_broadcast(), customer());
        assert_eq!(describe(&conversation("My holiday"), &status), None);
        let channel = info(
            Jid::newsletter("120363000000000000"),
            Jid::newsletter("120363000000000000"),
        );
        assert_eq!(describe(&conversation("Weekly news"), &channel), None);
    }

    fn sender_key_distribution() -> MessageField<wa::message::SenderKeyDistributionMessage> {
        MessageField::some(wa::message::SenderKeyDistributionMessage {
            group_id: Some(format!("{GROUP}@g.us")),
            axolotl_sender_key_distribution_message: Some(vec![3; 64]),
        })
    }

    #[test]
    fn sender_key_distribution_alone_is_not_published() {
        let message = wa::Message {
            sender_key_distribution_message: sender_key_distribution(),
            message_context_info: MessageField::some(Default::default()),
            ..Default::default()
        };
        let info = info(Jid::group(GROUP), Jid::lid_device(LID, 2));
        assert_eq!(describe(&message, &info), None);
    }

    #[test]
    fn sender_key_distribution_with_text_is_the_text() {
        let message = wa::Message {
            sender_key_distribution_message: sender_key_distribution(),
            conversation: Some("Hello".into()),
            ..Default::default()
        };
        let info = info(Jid::group(GROUP), Jid::lid_device(LID, 2));
        assert_eq!(payload(&message, &info)["text"], "Hello");
    }

    #[test]
    fn app_state_key_share_is_not_published() {
        let message = protocol(wa::message::ProtocolMessage {
            r#type: Some(ProtocolType::APP_STATE_SYNC_KEY_SHARE),
            app_state_sync_key_share: MessageField::some(Default::default()),
            ..Default::default()
        });
        assert_eq!(describe(&message, &direct_info()), None);
    }

    #[test]
    fn other_protocol_messages_are_not_published() {
        // whatsapp-rust takes the history sync payload out before dispatch,
        // so only the type is left to say what the message was.
        for kind in [
            ProtocolType::HISTORY_SYNC_NOTIFICATION,
            ProtocolType::EPHEMERAL_SETTING,
            ProtocolType::PEER_DATA_OPERATION_REQUEST_RESPONSE_MESSAGE,
            ProtocolType::LID_MIGRATION_MAPPING_SYNC,
        ] {
            let message = protocol(wa::message::ProtocolMessage {
                key: key("3EB0FIRST"),
                r#type: Some(kind),
                ephemeral_expiration: Some(86_400),
                ..Default::default()
            });
            assert_eq!(describe(&message, &direct_info()), None, "{kind:?}");
        }
    }

    #[test]
    fn empty_messages_are_not_published() {
        assert_eq!(describe(&wa::Message::default(), &direct_info()), None);
        assert_eq!(describe(&conversation(""), &direct_info()), None);
        let context_only = wa::Message {
            message_context_info: MessageField::some(Default::default()),
            ..Default::default()
        };
        assert_eq!(describe(&context_only, &direct_info()), None);
    }

    #[test]
    fn album_header_is_not_published_but_its_pictures_are() {
        let header = wa::Message {
            album_message: MessageField::some(wa::message::AlbumMessage {
                expected_image_count: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(describe(&header, &direct_info()), None);

        let child = wa::Message {
            associated_child_message: envelope(wa::Message {
                image_message: MessageField::some(wa::message::ImageMessage {
                    mimetype: Some("image/jpeg".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(payload(&child, &direct_info())["kind"], "image");
    }

    #[test]
    fn unknown_user_type_is_published_as_unknown() {
        let message = wa::Message {
            poll_creation_message_v3: MessageField::some(wa::message::PollCreationMessage {
                name: Some("Pizza or pasta?".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let payload = payload(&message, &direct_info());
        assert_eq!(payload["kind"], "unknown");
        assert_eq!(
            keys(&payload),
            ["at", "chat", "from", "from_name", "id", "kind"]
        );
    }

    #[test]
    fn absent_optional_fields_are_omitted_not_null() {
        let mut info = info(Jid::lid(LID), Jid::lid_device(LID, 0));
        info.push_name = String::new();
        let message = wa::Message {
            extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
                text: Some("Hi".into()),
                // A context without a quote, as forwards carry.
                context_info: MessageField::some(wa::ContextInfo {
                    is_forwarded: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = payload(&message, &info);
        assert_eq!(keys(&text), ["at", "chat", "from", "id", "kind", "text"]);
        assert_eq!(text["from"], format!("{LID}@lid"));

        let image = wa::Message {
            image_message: MessageField::some(wa::message::ImageMessage {
                caption: Some(String::new()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let image = payload(&image, &info);
        assert_eq!(keys(&image), ["at", "chat", "from", "id", "kind", "media"]);
        assert_eq!(keys(&image["media"]), ["mimetype", "sha256", "size"]);
    }
}
