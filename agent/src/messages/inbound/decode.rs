//! Decoding WhatsApp's message: out of its envelopes, sorted into the kind
//! HQ sees, with the fields that kind carries. What no person sent (key
//! shares, history sync, settings, …) decodes to nothing.

use serde_json::{Map, Value};
use whatsapp_rust::wacore::proto_helpers::MessageExt as _;
use whatsapp_rust::waproto::buffa::MessageField;
use whatsapp_rust::waproto::whatsapp as wa;

use wa::message::protocol_message::Type as ProtocolType;
use wa::message::secret_encrypted_message::SecretEncType;

/// What HQ calls the message's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
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
    pub(super) fn as_str(self) -> &'static str {
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
pub(super) struct Content {
    pub(super) kind: Kind,
    pub(super) fields: Map<String, Value>,
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
pub(super) fn unwrap(message: &wa::Message) -> &wa::Message {
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
pub(super) fn classify(m: &wa::Message) -> Option<Content> {
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
    /// Where the encrypted file is, and its key: for the download only,
    /// never in what HQ gets.
    direct_path: Option<&'a str>,
    media_key: Option<&'a [u8]>,
    enc_sha256: Option<&'a [u8]>,
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
            direct_path: image.direct_path.as_deref(),
            media_key: image.media_key.as_deref(),
            enc_sha256: image.file_enc_sha256.as_deref(),
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
            direct_path: video.direct_path.as_deref(),
            media_key: video.media_key.as_deref(),
            enc_sha256: video.file_enc_sha256.as_deref(),
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
            direct_path: audio.direct_path.as_deref(),
            media_key: audio.media_key.as_deref(),
            enc_sha256: audio.file_enc_sha256.as_deref(),
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
            direct_path: document.direct_path.as_deref(),
            media_key: document.media_key.as_deref(),
            enc_sha256: document.file_enc_sha256.as_deref(),
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
            direct_path: sticker.direct_path.as_deref(),
            media_key: sticker.media_key.as_deref(),
            enc_sha256: sticker.file_enc_sha256.as_deref(),
        });
    }
    None
}

/// What a download of the file in `m` needs, when `m` carries one with a
/// full reference (a message without its key or path cannot be fetched).
pub(super) fn media_reference(m: &wa::Message) -> Option<super::MediaReference> {
    let media = media(m)?;
    let media_type = match media.kind {
        Kind::Image => "image",
        Kind::Video => "video",
        Kind::Audio => "audio",
        Kind::Document => "document",
        Kind::Sticker => "sticker",
        _ => return None,
    };
    let non_empty_bytes = |b: Option<&[u8]>| b.filter(|b| !b.is_empty()).map(<[u8]>::to_vec);
    Some(super::MediaReference {
        kind: media.kind.as_str(),
        media_type,
        mimetype: media.mimetype.unwrap_or_default().to_string(),
        file_name: non_empty(media.file_name).map(str::to_string),
        size: media.size.unwrap_or_default(),
        sha256: hex(non_empty_bytes(media.sha256)?.as_slice()),
        direct_path: non_empty(media.direct_path)?.to_string(),
        media_key: non_empty_bytes(media.media_key)?,
        enc_sha256: non_empty_bytes(media.enc_sha256)?,
    })
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
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}
