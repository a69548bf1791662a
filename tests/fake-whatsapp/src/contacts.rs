//! The handle tests (and the control port) use to act as the account's
//! contacts: send messages of every kind, read what each contact decrypted
//! and which receipts it got, make one reinstall, post in a group, and
//! inject message faults.

use std::sync::Arc;
use std::time::Duration;

use wacore::proto_helpers::MessageBuilderExt as _;
use waproto::whatsapp as wa;

use crate::messaging::{self, InboxEntry, MessageError, QueuedSummary, ReceiptEntry};
use crate::state::Shared;

/// The kinds of media a contact can send with [`Contacts::send_media`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Document,
}

impl std::str::FromStr for MediaKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "image" => Ok(Self::Image),
            "video" => Ok(Self::Video),
            "audio" => Ok(Self::Audio),
            "document" => Ok(Self::Document),
            other => Err(format!(
                "unknown media kind {other:?} (image, video, audio, document)"
            )),
        }
    }
}

/// Handle to the simulated contacts of a running [`crate::FakeServer`].
#[derive(Clone)]
pub struct Contacts {
    pub(crate) shared: Arc<Shared>,
}

impl Contacts {
    /// The contact sends `text`; returns the message id.
    pub async fn send_text(&self, number: &str, text: &str) -> Result<String, MessageError> {
        self.send(number, wa::Message::text(text)).await
    }

    /// The contact sends any message (`wa::Message`); returns its id.
    pub async fn send(&self, number: &str, message: wa::Message) -> Result<String, MessageError> {
        messaging::contact_send(&self.shared, number, message).await
    }

    /// A burst: `n` texts (`<prefix> 1` … `<prefix> n`) back to back, as a
    /// busy customer or a forwarded list produces. Returns the ids in order.
    pub async fn send_burst(
        &self,
        number: &str,
        n: usize,
        prefix: &str,
    ) -> Result<Vec<String>, MessageError> {
        let mut ids = Vec::with_capacity(n);
        for i in 1..=n {
            ids.push(self.send_text(number, &format!("{prefix} {i}")).await?);
        }
        Ok(ids)
    }

    /// A reply quoting the account's message `quoted_id` (an
    /// `extendedTextMessage` with `contextInfo.stanzaId`).
    pub async fn send_reply(
        &self,
        number: &str,
        quoted_id: &str,
        text: &str,
    ) -> Result<String, MessageError> {
        let message = wa::Message {
            extended_text_message: buffa::MessageField::some(wa::message::ExtendedTextMessage {
                text: Some(text.to_string()),
                context_info: buffa::MessageField::some(wa::ContextInfo {
                    stanza_id: Some(quoted_id.to_string()),
                    participant: Some(format!(
                        "{}@s.whatsapp.net",
                        self.shared.config.account.phone
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.send(number, message).await
    }

    /// A reaction (`emoji`, empty to remove) to the account's message `id`.
    pub async fn send_reaction(
        &self,
        number: &str,
        id: &str,
        emoji: &str,
    ) -> Result<String, MessageError> {
        let message = wa::Message {
            reaction_message: buffa::MessageField::some(wa::message::ReactionMessage {
                key: buffa::MessageField::some(wa::MessageKey {
                    remote_jid: Some(format!("{number}@s.whatsapp.net")),
                    from_me: Some(false),
                    id: Some(id.to_string()),
                    ..Default::default()
                }),
                text: Some(emoji.to_string()),
                sender_timestamp_ms: Some(
                    i64::try_from(crate::connection::unix_now() * 1000).unwrap_or_default(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.send(number, message).await
    }

    /// A shared location.
    pub async fn send_location(
        &self,
        number: &str,
        latitude: f64,
        longitude: f64,
        name: &str,
    ) -> Result<String, MessageError> {
        let message = wa::Message {
            location_message: buffa::MessageField::some(wa::message::LocationMessage {
                degrees_latitude: Some(latitude),
                degrees_longitude: Some(longitude),
                name: Some(name.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.send(number, message).await
    }

    /// A media message: metadata and caption only. The media itself is not
    /// downloadable — the URL and direct path point at nothing this server
    /// serves — because what the outlet forwards is the metadata
    /// (mimetype, size, SHA-256, file name, caption).
    pub async fn send_media(
        &self,
        number: &str,
        kind: MediaKind,
        caption: &str,
    ) -> Result<String, MessageError> {
        self.send(number, media_message(kind, caption)).await
    }

    /// A real file from `number`: encrypted with a fresh media key, stored
    /// on the media host, and sent with its url, direct path, key and both
    /// hashes, so a client downloads and decrypts it as from WhatsApp. The
    /// kind follows `file_name`'s extension ([`crate::media`]).
    pub async fn send_file(
        &self,
        number: &str,
        file_name: &str,
        data: &[u8],
        caption: &str,
    ) -> Result<String, MessageError> {
        let message = crate::media::file_message(&self.shared.media, file_name, data, caption)
            .map_err(|e| MessageError::Media(e.to_string()))?;
        self.send(number, message).await
    }

    /// `number` posts `text` in `group` (a `…@g.us` JID), encrypted with its
    /// sender key.
    pub async fn send_group_text(
        &self,
        group: &str,
        number: &str,
        text: &str,
    ) -> Result<String, MessageError> {
        messaging::group_send(&self.shared, group, number, wa::Message::text(text)).await
    }

    /// What `number`'s devices decrypted from the account, in order.
    pub fn inbox(&self, number: &str) -> Result<Vec<InboxEntry>, MessageError> {
        let state = self.shared.state();
        state
            .messaging
            .contacts
            .get(number)
            .map(|c| c.inbox.clone())
            .ok_or_else(|| MessageError::UnknownContact(number.to_string()))
    }

    /// The receipts `number` got from the account, in order.
    pub fn receipts(&self, number: &str) -> Result<Vec<ReceiptEntry>, MessageError> {
        let state = self.shared.state();
        state
            .messaging
            .contacts
            .get(number)
            .map(|c| c.receipts.clone())
            .ok_or_else(|| MessageError::UnknownContact(number.to_string()))
    }

    /// What the account's phone decrypted: the companions' own-device copies
    /// of what they sent.
    pub fn phone_inbox(&self) -> Vec<InboxEntry> {
        self.shared.state().messaging.phone_inbox.clone()
    }

    /// `number` reinstalls WhatsApp: a new identity and new keys on all its
    /// devices, and an identity notification to the account's companions.
    pub async fn change_identity(&self, number: &str) -> Result<(), MessageError> {
        messaging::change_identity(&self.shared, number).await
    }

    /// `number`'s devices lose their sessions (a restored backup without
    /// them, same identity): the next message from the account fails to
    /// decrypt and the contact asks for a retry.
    pub async fn forget_sessions(&self, number: &str) -> Result<(), MessageError> {
        let devices = self
            .shared
            .state()
            .messaging
            .contacts
            .get(number)
            .map(|c| c.devices.clone())
            .ok_or_else(|| MessageError::UnknownContact(number.to_string()))?;
        let mut parties = self.shared.parties.lock().await;
        for d in devices {
            if let Some(party) = parties.devices.get_mut(&messaging::party_key(number, d)) {
                party.forget_all_sessions();
            }
        }
        Ok(())
    }

    /// Whether `number` is on WhatsApp (a contact lookup, the device list and
    /// sending all follow it).
    pub fn set_on_whatsapp(&self, number: &str, on: bool) -> Result<(), MessageError> {
        self.change(number, |c| c.on_whatsapp = on)
    }

    /// Changes what the server holds of contact `number`.
    fn change(
        &self,
        number: &str,
        f: impl FnOnce(&mut messaging::ContactState),
    ) -> Result<(), MessageError> {
        let mut state = self.shared.state();
        let contact = state
            .messaging
            .contacts
            .get_mut(number)
            .ok_or_else(|| MessageError::UnknownContact(number.to_string()))?;
        f(contact);
        Ok(())
    }

    /// The stanzas waiting for a companion's ack (`PHONE:DEV@s.whatsapp.net`).
    pub fn offline_queue(&self, jid: &str) -> Option<Vec<QueuedSummary>> {
        let device = {
            let state = self.shared.state();
            state
                .devices
                .keys()
                .copied()
                .find(|id| self.shared.device_jid(*id) == jid)?
        };
        Some(messaging::queue_of(&self.shared, device))
    }

    /// The next `n` message stanzas to a companion are delivered twice.
    pub fn duplicate_next(&self, n: u32) {
        self.shared.state().messaging.faults.duplicate_next = n;
    }

    /// The connection is closed right after each of the next `n` message
    /// stanzas, before the client can ack them.
    pub fn drop_after_next(&self, n: u32) {
        self.shared.state().messaging.faults.drop_after_next = n;
    }

    /// The next `n` pairwise ciphertexts a party sends are garbled, so the
    /// client fails to decrypt them and sends a retry receipt.
    pub fn corrupt_next(&self, n: u32) {
        self.shared.state().messaging.faults.corrupt_next = n;
    }

    /// Contacts stop (or resume) returning receipts.
    pub fn withhold_receipts(&self, on: bool) {
        self.shared.state().messaging.faults.withhold_receipts = on;
    }

    /// Contacts wait this long before returning each receipt.
    pub fn delay_receipts(&self, delay: Option<Duration>) {
        self.shared.state().messaging.faults.receipt_delay = delay;
    }

    /// Whether contacts can write to the account's companions yet: a
    /// companion is reachable once it has uploaded its pre-keys (right
    /// after its first login), as on the real directory.
    pub fn companions_reachable(&self) -> bool {
        let state = self.shared.state();
        let devices: Vec<u16> = state.devices.keys().copied().filter(|d| *d != 0).collect();
        !devices.is_empty()
            && !state
                .messaging
                .account_targets(&self.shared, &devices)
                .is_empty()
    }

    /// The LID of `number`: the account's own, a contact's, or the one
    /// WhatsApp would give any other number ([`crate::config::lid_for`]).
    pub fn lid(&self, number: &str) -> String {
        let account = &self.shared.config.account;
        if number == account.phone {
            return account.lid.clone();
        }
        self.shared
            .state()
            .messaging
            .contacts
            .get(number)
            .map_or_else(|| crate::config::lid_for(number), |c| c.lid.clone())
    }

    /// How `number`'s messages are addressed from now on.
    pub fn set_addressing(
        &self,
        number: &str,
        addressing: crate::config::Addressing,
    ) -> Result<(), MessageError> {
        self.change(number, |c| c.addressing = addressing)
    }

    /// The configured contacts' numbers.
    pub fn numbers(&self) -> Vec<String> {
        self.shared
            .state()
            .messaging
            .contacts
            .keys()
            .cloned()
            .collect()
    }
}

/// A media message of `kind` with plausible metadata.
pub(crate) fn media_message(kind: MediaKind, caption: &str) -> wa::Message {
    let sha: [u8; 32] = rand::random();
    let enc_sha: [u8; 32] = rand::random();
    let key: [u8; 32] = rand::random();
    let url = "https://127.0.0.1:9/v/t62.7118-24/fake-media-not-served".to_string();
    let direct = "/v/t62.7118-24/fake-media-not-served".to_string();
    let caption = Some(caption.to_string()).filter(|c| !c.is_empty());
    let mut message = wa::Message::default();
    match kind {
        MediaKind::Image => {
            message.image_message = buffa::MessageField::some(wa::message::ImageMessage {
                url: Some(url),
                direct_path: Some(direct),
                mimetype: Some("image/jpeg".into()),
                caption,
                file_sha256: Some(sha.to_vec()),
                file_enc_sha256: Some(enc_sha.to_vec()),
                media_key: Some(key.to_vec()),
                file_length: Some(48_213),
                width: Some(640),
                height: Some(480),
                ..Default::default()
            });
        }
        MediaKind::Video => {
            message.video_message = buffa::MessageField::some(wa::message::VideoMessage {
                url: Some(url),
                direct_path: Some(direct),
                mimetype: Some("video/mp4".into()),
                caption,
                file_sha256: Some(sha.to_vec()),
                file_enc_sha256: Some(enc_sha.to_vec()),
                media_key: Some(key.to_vec()),
                file_length: Some(1_048_576),
                seconds: Some(7),
                ..Default::default()
            });
        }
        MediaKind::Audio => {
            message.audio_message = buffa::MessageField::some(wa::message::AudioMessage {
                url: Some(url),
                direct_path: Some(direct),
                mimetype: Some("audio/ogg; codecs=opus".into()),
                file_sha256: Some(sha.to_vec()),
                file_enc_sha256: Some(enc_sha.to_vec()),
                media_key: Some(key.to_vec()),
                file_length: Some(9_120),
                seconds: Some(3),
                ptt: Some(true),
                ..Default::default()
            });
        }
        MediaKind::Document => {
            message.document_message = buffa::MessageField::some(wa::message::DocumentMessage {
                url: Some(url),
                direct_path: Some(direct),
                mimetype: Some("application/pdf".into()),
                caption,
                title: Some("invoice.pdf".into()),
                file_name: Some("invoice.pdf".into()),
                file_sha256: Some(sha.to_vec()),
                file_enc_sha256: Some(enc_sha.to_vec()),
                media_key: Some(key.to_vec()),
                file_length: Some(23_456),
                ..Default::default()
            });
        }
    }
    message
}
