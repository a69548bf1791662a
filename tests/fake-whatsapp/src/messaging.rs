//! Messages between the account's companions and the simulated world: the
//! phone, contacts (and their companions), groups.
//!
//! The server side behaves like WhatsApp's: every stanza for a companion goes
//! into that device's queue first and leaves it only when the client acks it
//! (`<ack class=…>`); a live, active connection gets it at once, an offline
//! companion at its next login, before `<offline count=N/>`. A stanza that was
//! sent but never acked is sent again at the next login.
//!
//! The parties' side is real Signal (see [`crate::signal`]): a contact's text
//! is a protobuf `Message`, padded as clients pad it, encrypted on a session
//! built from the companion's uploaded bundle (`pkmsg` first, `msg` after),
//! and what the client sends a contact is decrypted by that contact's own
//! session state — or it is not, and the contact asks for a retry like a
//! phone would.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use buffa::Message as _;
use wacore::messages::MessageUtils;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, JidExt as _, Node, NodeContent};
use waproto::whatsapp as wa;

use crate::config::{Account, Addressing, ServerConfig};
use crate::keys::{self, KeyBundle};
use crate::observe::ServerEvent;
use crate::responder::attr;
use crate::signal::{EncType, SignalDevice};
use crate::state::{ConnCommand, Shared};

/// Key of a device in the directory and among the parties: `user:device`.
pub(crate) fn party_key(user: &str, device: u16) -> String {
    format!("{user}:{device}")
}

fn device_jid(user: &str, device: u16) -> Jid {
    Jid::pn_device(user.to_string(), device)
}

/// The Signal state of every simulated device, by [`party_key`].
#[derive(Default)]
pub(crate) struct Parties {
    pub devices: HashMap<String, SignalDevice>,
}

/// A stanza waiting for a companion's ack.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    /// `message`, `receipt` or `notification`: the ack's `class`.
    pub class: String,
    pub id: String,
    /// The stanza's `type` for receipts (`read`, …), which the ack echoes;
    /// empty when it has none.
    pub kind: String,
    pub node: Node,
    /// Delivered on a connection that is still open, not yet acked.
    pub sent: bool,
}

/// What one contact device decrypted from the account.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InboxEntry {
    pub id: String,
    /// The sending device, `PHONE:DEV@s.whatsapp.net`.
    pub from: String,
    /// The contact's device that decrypted it (0 = its phone).
    pub device: u16,
    pub enc: EncType,
    /// `text`, `extended_text`, `reaction`, `location`, `image`, …
    pub kind: String,
    pub text: Option<String>,
    pub quoted_id: Option<String>,
    /// The chat it was addressed to (a group JID for group messages).
    pub chat: String,
    /// A file the message carried, as the contact downloaded and decrypted
    /// it from the media host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<Box<crate::media::ReceivedFile>>,
}

/// A receipt a contact got from the account.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReceiptEntry {
    /// The message ids it covers.
    pub ids: Vec<String>,
    /// `delivery`, `read`, `read-self`, `played`, `retry`, …
    pub kind: String,
    /// The account device that sent it.
    pub from: String,
}

/// A message a contact sent, kept so it can be encrypted again when the
/// client asks for a retry.
#[derive(Debug, Clone)]
struct SentRecord {
    number: String,
    message: wa::Message,
    group: Option<String>,
}

pub(crate) struct ContactState {
    pub name: String,
    /// Its LID user part ([`crate::config::lid_for`] of its number).
    pub lid: String,
    /// How its messages to the account are addressed.
    pub addressing: Addressing,
    pub devices: Vec<u16>,
    pub on_whatsapp: bool,
    pub inbox: Vec<InboxEntry>,
    /// Receipts from the account, in arrival order.
    pub receipts: Vec<ReceiptEntry>,
    /// ADV raw id; new at each reinstall.
    pub raw_id: u32,
    /// Its phone's identity key pair: signs its companions' ADV identities
    /// and its device list's key-index list, as WhatsApp's phones do.
    pub account_key: wacore::libsignal::protocol::KeyPair,
}

/// Injected message faults, applied to the next stanzas.
#[derive(Debug, Clone, Default)]
pub(crate) struct MessageFaults {
    /// Deliver the next N message stanzas twice (same id).
    pub duplicate_next: u32,
    /// Close the connection right after the next message stanza was sent,
    /// before the client can ack it.
    pub drop_after_next: u32,
    /// Contacts return no receipts while set.
    pub withhold_receipts: bool,
    /// Contacts wait this long before each receipt.
    pub receipt_delay: Option<Duration>,
    /// Garble the next N pairwise ciphertexts a party sends (the client
    /// cannot decrypt them and asks for a retry).
    pub corrupt_next: u32,
}

pub(crate) struct MessagingState {
    pub bundles: HashMap<String, KeyBundle>,
    pub queues: BTreeMap<u16, Vec<Queued>>,
    pub contacts: BTreeMap<String, ContactState>,
    /// Companions the phone already shared its app-state key with.
    pub key_share_sent: BTreeSet<u16>,
    /// Companions the phone sent the initial history sync to.
    pub history_sent: BTreeSet<u16>,
    /// What the phone decrypted: the companions' own-device copies.
    pub phone_inbox: Vec<InboxEntry>,
    pub faults: MessageFaults,
    sent: HashMap<String, SentRecord>,
    /// group JID → members (contact numbers) who already gave each companion
    /// their sender key.
    skdm_sent: BTreeSet<(String, String, u16)>,
    /// (party device JID, message id) → retry receipts it sent for it.
    retry_counts: HashMap<(String, String), u32>,
    next_id: u64,
}

impl MessagingState {
    /// The phone-number JID (same device) of `jid`, which may be a LID:
    /// WhatsApp takes either address of a user interchangeably in key
    /// fetches, device lists, recipients and receipts. `None` for a LID
    /// nobody on this server has.
    pub(crate) fn pn_of(&self, account: &Account, jid: &Jid) -> Option<Jid> {
        if !jid.is_lid() {
            return Some(jid.clone());
        }
        let number = if jid.user == account.lid {
            account.phone.clone()
        } else {
            self.contacts
                .iter()
                .find(|(_, c)| c.lid == jid.user)
                .map(|(number, _)| number.clone())?
        };
        Some(device_jid(&number, jid.device))
    }

    /// How `(number, device)` is addressed on a stanza to the account:
    /// the sender (or group participant) JID, and the phone-number JID
    /// that goes beside a LID when the contact shares its number.
    fn address_of(&self, number: &str, device: u16) -> (Jid, Option<Jid>) {
        let pn = device_jid(number, device);
        match self.contacts.get(number) {
            Some(c) if c.addressing == Addressing::Lid => {
                (Jid::lid_device(c.lid.clone(), device), Some(pn))
            }
            Some(c) if c.addressing == Addressing::LidHidden => {
                (Jid::lid_device(c.lid.clone(), device), None)
            }
            _ => (pn, None),
        }
    }

    /// True when `number` is addressed by its LID.
    fn lid_addressed(&self, number: &str) -> bool {
        self.contacts
            .get(number)
            .is_some_and(|c| c.addressing != Addressing::Pn)
    }

    /// Companions with an uploaded bundle (the ones a sender encrypts for).
    pub(crate) fn account_targets(&self, shared: &Shared, devices: &[u16]) -> Vec<u16> {
        let phone = &shared.config.account.phone;
        devices
            .iter()
            .copied()
            .filter(|d| self.bundles.contains_key(&party_key(phone, *d)))
            .collect()
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!(
            "3EB0{:016X}",
            (u64::from(rand::random::<u32>()) << 20) ^ self.next_id
        )
    }
}

/// Builds the phone's and the contacts' Signal devices and their bundles.
pub(crate) fn setup(
    config: &ServerConfig,
    phone_identity: &wacore::libsignal::protocol::KeyPair,
    _raw_id: u32,
) -> (Parties, MessagingState) {
    let mut parties = Parties::default();
    let mut state = MessagingState {
        bundles: HashMap::new(),
        queues: BTreeMap::new(),
        contacts: BTreeMap::new(),
        key_share_sent: BTreeSet::new(),
        history_sent: BTreeSet::new(),
        phone_inbox: Vec::new(),
        faults: MessageFaults::default(),
        sent: HashMap::new(),
        skdm_sent: BTreeSet::new(),
        retry_counts: HashMap::new(),
        next_id: 0,
    };
    let phone = &config.account.phone;
    let device = SignalDevice::new(device_jid(phone, 0), Some(phone_identity.clone()));
    state
        .bundles
        .insert(party_key(phone, 0), device.published_bundle(None));
    parties.devices.insert(party_key(phone, 0), device);

    for contact in &config.contacts {
        let devices: Vec<u16> = (0..=contact.companions).collect();
        let raw_id = rand::random::<u32>();
        let account_key = install_contact(
            &mut parties,
            &mut state,
            &contact.number,
            &devices,
            raw_id,
            None,
        );
        state.contacts.insert(
            contact.number.clone(),
            ContactState {
                name: contact.name.clone(),
                lid: crate::config::lid_for(&contact.number),
                addressing: contact.addressing,
                devices,
                on_whatsapp: true,
                inbox: Vec::new(),
                receipts: Vec::new(),
                raw_id,
                account_key,
            },
        );
    }
    (parties, state)
}

/// (Re)creates a contact's devices and publishes their bundles; companions
/// carry an ADV identity signed by the contact's phone. Returns the phone's
/// identity key pair (the contact's account key).
fn install_contact(
    parties: &mut Parties,
    state: &mut MessagingState,
    number: &str,
    devices: &[u16],
    raw_id: u32,
    _previous: Option<()>,
) -> wacore::libsignal::protocol::KeyPair {
    let primary = SignalDevice::new(device_jid(number, 0), None);
    let account_pair = primary.identity_pair().clone();
    state
        .bundles
        .insert(party_key(number, 0), primary.published_bundle(None));
    parties.devices.insert(party_key(number, 0), primary);
    for &d in devices.iter().filter(|d| **d != 0) {
        let companion = SignalDevice::new(device_jid(number, d), None);
        let identity = companion_identity(&account_pair, companion.identity_pair(), raw_id, d);
        state
            .bundles
            .insert(party_key(number, d), companion.published_bundle(identity));
        parties.devices.insert(party_key(number, d), companion);
    }
    account_pair.into()
}

/// `ADVSignedDeviceIdentity` for a contact's companion: account signature
/// (`[6,0]`) by the contact's phone, device signature (`[6,1]`) by the
/// companion. `account_signature_key` is left out, as WhatsApp leaves it out
/// for a contact's companions: the client checks against the contact's
/// primary identity it already holds.
fn companion_identity(
    account: &wacore::libsignal::protocol::IdentityKeyPair,
    device: &wacore::libsignal::protocol::IdentityKeyPair,
    raw_id: u32,
    key_index: u16,
) -> Option<Vec<u8>> {
    let mut rng = rand::make_rng::<rand::rngs::StdRng>();
    let details = wa::ADVDeviceIdentity {
        raw_id: Some(raw_id),
        timestamp: Some(crate::connection::unix_now()),
        key_index: Some(u32::from(key_index)),
        ..Default::default()
    }
    .encode_to_vec();
    let device_pub = device.public_key().public_key_bytes().to_vec();
    let account_pub = account.public_key().public_key_bytes().to_vec();
    let account_msg = [&[6u8, 0][..], &details, &device_pub].concat();
    let device_msg = [&[6u8, 1][..], &details, &device_pub, &account_pub].concat();
    let account_signature = account
        .private_key()
        .calculate_signature(&account_msg, &mut rng)
        .ok()?;
    let device_signature = device
        .private_key()
        .calculate_signature(&device_msg, &mut rng)
        .ok()?;
    Some(
        wa::ADVSignedDeviceIdentity {
            details: Some(details),
            account_signature: Some(account_signature.to_vec()),
            device_signature: Some(device_signature.to_vec()),
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

/// Why a simulated party could not send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("{0} is not a contact of this server")]
    UnknownContact(String),
    #[error("{0} is not on WhatsApp")]
    NotOnWhatsApp(String),
    #[error("the account has no linked device with keys to send to")]
    NoDevices,
    #[error("signal: {0}")]
    Signal(String),
    #[error("media: {0}")]
    Media(String),
}

/// Summary of a message kind and its text, for inboxes and events.
pub(crate) fn summarize(message: &wa::Message) -> (String, Option<String>, Option<String>) {
    let m = wacore::messages::unwrap_device_sent(message.clone());
    let quoted = |ctx: &buffa::MessageField<wa::ContextInfo>| {
        ctx.as_option().and_then(|c| c.stanza_id.clone())
    };
    if let Some(text) = &m.conversation {
        return ("text".into(), Some(text.clone()), None);
    }
    if let Some(ext) = m.extended_text_message.as_option() {
        return (
            "extended_text".into(),
            ext.text.clone(),
            quoted(&ext.context_info),
        );
    }
    if let Some(r) = m.reaction_message.as_option() {
        return (
            "reaction".into(),
            r.text.clone(),
            r.key.as_option().and_then(|k| k.id.clone()),
        );
    }
    if let Some(l) = m.location_message.as_option() {
        return ("location".into(), l.name.clone(), quoted(&l.context_info));
    }
    if let Some(i) = m.image_message.as_option() {
        return ("image".into(), i.caption.clone(), quoted(&i.context_info));
    }
    if let Some(v) = m.video_message.as_option() {
        return ("video".into(), v.caption.clone(), quoted(&v.context_info));
    }
    if let Some(d) = m.document_message.as_option() {
        return (
            "document".into(),
            d.caption.clone(),
            quoted(&d.context_info),
        );
    }
    if m.audio_message.is_set() {
        return ("audio".into(), None, None);
    }
    if m.sticker_message.is_set() {
        return ("sticker".into(), None, None);
    }
    if m.protocol_message.is_set() {
        return ("protocol".into(), None, None);
    }
    if m.sender_key_distribution_message.is_set() {
        return ("sender_key".into(), None, None);
    }
    ("other".into(), None, None)
}

/// Puts a stanza into a companion's queue and, when the companion is live
/// and active, sends it now. Applies the duplicate and drop faults to
/// message stanzas.
pub(crate) fn enqueue(shared: &Shared, device: u16, queued: Queued) {
    let mut state = shared.state();
    let live = state
        .connections
        .values()
        .find(|c| c.device_id == Some(device) && c.active)
        .map(|c| c.tx.clone());
    let is_message = queued.class == "message";
    let faults = &mut state.messaging.faults;
    let duplicate = is_message && faults.duplicate_next > 0;
    if duplicate {
        faults.duplicate_next -= 1;
    }
    let drop_after = is_message && faults.drop_after_next > 0 && live.is_some();
    if drop_after {
        faults.drop_after_next -= 1;
    }
    let mut queued = queued;
    queued.sent = live.is_some();
    let node = queued.node.clone();
    state
        .messaging
        .queues
        .entry(device)
        .or_default()
        .push(queued);
    drop(state);
    if let Some(tx) = live {
        if drop_after {
            let _ = tx.send(ConnCommand::DeliverAndClose(node));
        } else {
            let _ = tx.send(ConnCommand::Deliver(node.clone()));
            if duplicate {
                let _ = tx.send(ConnCommand::Deliver(node));
            }
        }
    }
}

/// What a companion gets when it goes active: every queued stanza, marked
/// `offline`, in order. Marks the connection active under the same lock, so
/// a stanza queued a moment later is sent live, after these.
pub(crate) fn go_active(shared: &Shared, conn: crate::observe::ConnectionId) -> Vec<Node> {
    let mut state = shared.state();
    let Some(live) = state.connections.get_mut(&conn) else {
        return Vec::new();
    };
    live.active = true;
    let Some(device) = live.device_id else {
        return Vec::new();
    };
    let Some(queue) = state.messaging.queues.get_mut(&device) else {
        return Vec::new();
    };
    queue
        .iter_mut()
        .map(|q| {
            q.sent = true;
            let mut node = q.node.clone();
            node.attrs.insert("offline", "1");
            node
        })
        .collect()
}

/// The client acked a stanza: it leaves the queue.
pub(crate) fn on_ack(shared: &Shared, device: u16, ack: &Node) {
    let class = attr(ack, "class").unwrap_or_default();
    let id = attr(ack, "id").unwrap_or_default();
    let kind = attr(ack, "type").unwrap_or_default();
    let removed = {
        let mut state = shared.state();
        let Some(queue) = state.messaging.queues.get_mut(&device) else {
            return;
        };
        let position = queue
            .iter()
            .position(|q| q.class == class && q.id == id && (q.kind == kind || class == "message"));
        position.map(|p| queue.remove(p)).is_some()
    };
    if removed {
        shared.emit(ServerEvent::Acked {
            jid: shared.device_jid(device),
            class,
            id,
        });
    }
}

/// A receipt from the client for messages it got (delivery, `read`,
/// `peer_msg`, an aggregate `<list>` after offline delivery, even `retry`)
/// takes them out of its queue, as on WhatsApp: the receipt is how a
/// client acknowledges a message; `<ack class="message">` is only for the
/// ones it will not answer.
pub(crate) fn on_receipt_ack(shared: &Shared, device: u16, receipt: &Node) {
    let mut ids = vec![attr(receipt, "id").unwrap_or_default()];
    if let Some(list) = receipt.get_optional_child("list") {
        ids.extend(
            list.get_children_by_tag("item")
                .filter_map(|i| attr(i, "id")),
        );
    }
    let removed: Vec<String> = {
        let mut state = shared.state();
        let Some(queue) = state.messaging.queues.get_mut(&device) else {
            return;
        };
        let before: Vec<String> = queue
            .iter()
            .filter(|q| q.class == "message" && ids.contains(&q.id))
            .map(|q| q.id.clone())
            .collect();
        queue.retain(|q| !(q.class == "message" && ids.contains(&q.id)));
        before
    };
    for id in removed {
        shared.emit(ServerEvent::Acked {
            jid: shared.device_jid(device),
            class: "message".into(),
            id,
        });
    }
}

/// The stanzas still waiting for `device`'s ack, for `offline-queue`.
pub(crate) fn queue_of(shared: &Shared, device: u16) -> Vec<QueuedSummary> {
    let state = shared.state();
    state
        .messaging
        .queues
        .get(&device)
        .map(|q| {
            q.iter()
                .map(|q| QueuedSummary {
                    class: q.class.clone(),
                    id: q.id.clone(),
                    kind: q.kind.clone(),
                    from: attr(&q.node, "from").unwrap_or_default(),
                    sent: q.sent,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One entry of a companion's offline queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueuedSummary {
    pub class: String,
    pub id: String,
    pub kind: String,
    pub from: String,
    /// Already sent on a connection, not acked yet.
    pub sent: bool,
}

fn enc_node(kind: EncType, ciphertext: Vec<u8>, media: Option<&str>) -> Node {
    let mut b = NodeBuilder::new("enc")
        .attr("v", "2")
        .attr("type", kind.as_wire());
    if let Some(m) = media {
        b = b.attr("mediatype", m.to_string());
    }
    b.bytes(ciphertext).build()
}

fn stanza_type(message: &wa::Message) -> &'static str {
    wacore::send::stanza_type_from_message(message)
}

/// A contact sends `message` to the account: one stanza per companion
/// (each with its own `pkmsg`/`msg`), through the queues. Returns the id.
pub(crate) async fn contact_send(
    shared: &Arc<Shared>,
    number: &str,
    message: wa::Message,
) -> Result<String, MessageError> {
    let (id, targets, name) = {
        let mut state = shared.state();
        let messaging = &mut state.messaging;
        let contact = messaging
            .contacts
            .get(number)
            .ok_or_else(|| MessageError::UnknownContact(number.to_string()))?;
        if !contact.on_whatsapp {
            return Err(MessageError::NotOnWhatsApp(number.to_string()));
        }
        let name = contact.name.clone();
        let devices: Vec<u16> = state.devices.keys().copied().collect();
        let targets = state.messaging.account_targets(shared, &devices);
        if targets.is_empty() {
            return Err(MessageError::NoDevices);
        }
        let id = state.messaging.new_id();
        state.messaging.sent.insert(
            id.clone(),
            SentRecord {
                number: number.to_string(),
                message: message.clone(),
                group: None,
            },
        );
        (id, targets, name)
    };
    for device in targets {
        send_pairwise(shared, number, 0, device, &id, &message, Some(&name), None).await?;
    }
    Ok(id)
}

/// Encrypts `message` from `(from_user, from_device)` for the account's
/// companion `device`, building the session from the directory when there
/// is none, and queues the stanza.
#[allow(clippy::too_many_arguments)]
async fn send_pairwise(
    shared: &Arc<Shared>,
    from_user: &str,
    from_device: u16,
    device: u16,
    id: &str,
    message: &wa::Message,
    notify: Option<&str>,
    group: Option<(&str, Vec<u8>)>,
) -> Result<EncType, MessageError> {
    let phone = shared.config.account.phone.clone();
    let peer = device_jid(&phone, device);
    let plaintext = MessageUtils::encode_and_pad(message);
    let (kind, ciphertext) = {
        let mut parties = shared.parties.lock().await;
        let party = parties
            .devices
            .get_mut(&party_key(from_user, from_device))
            .ok_or_else(|| MessageError::UnknownContact(from_user.to_string()))?;
        if !party.has_session(&peer) {
            let fetched = {
                let mut state = shared.state();
                state
                    .messaging
                    .bundles
                    .get_mut(&party_key(&phone, device))
                    .map(|b| {
                        let one_time = keys::take_one_time(b);
                        (b.clone(), one_time)
                    })
            };
            let (bundle, one_time) = fetched.ok_or(MessageError::NoDevices)?;
            party
                .start_session(&peer, &bundle, one_time)
                .await
                .map_err(MessageError::Signal)?;
        }
        let (kind, mut ciphertext) = party
            .encrypt(&peer, &plaintext)
            .await
            .map_err(MessageError::Signal)?;
        let corrupt = {
            let mut state = shared.state();
            let faults = &mut state.messaging.faults;
            let corrupt = faults.corrupt_next > 0;
            faults.corrupt_next = faults.corrupt_next.saturating_sub(1);
            corrupt
        };
        if corrupt && let Some(last) = ciphertext.last_mut() {
            // The MAC: the ciphertext still parses, and fails to verify.
            *last ^= 0x5a;
        }
        (kind, ciphertext)
    };
    let media = wacore::send::media_type_from_message(message);
    let mut encs = vec![enc_node(kind, ciphertext, media)];
    if let Some((_, ref skmsg)) = group {
        encs.push(
            NodeBuilder::new("enc")
                .attr("v", "2")
                .attr("type", "skmsg")
                .bytes(skmsg.clone())
                .build(),
        );
    }
    let b = NodeBuilder::new("message")
        .attr("id", id.to_string())
        .attr("t", crate::connection::unix_now().to_string())
        .attr("type", stanza_type(message));
    let (mut b, from) = if from_user == phone {
        let from = device_jid(from_user, from_device).to_string();
        (b.attr("from", from.clone()).attr("category", "peer"), from)
    } else {
        let state = shared.state();
        sender_attrs(
            b,
            &state.messaging,
            from_user,
            from_device,
            group.as_ref().map(|(g, _)| *g),
        )
    };
    if let Some(n) = notify {
        b = b.attr("notify", n.to_string());
    }
    let node = b.children(encs).build();
    enqueue(
        shared,
        device,
        Queued {
            class: "message".into(),
            id: id.to_string(),
            kind: String::new(),
            node,
            sent: false,
        },
    );
    shared.emit(ServerEvent::MessageToDevice {
        from,
        to: shared.device_jid(device),
        id: id.to_string(),
        enc: kind,
    });
    Ok(kind)
}

/// The sender's attributes of a stanza from a contact's device, as
/// WhatsApp addresses them, and the `from` it carries:
/// - one-to-one: `from` is the phone-number JID (`pn`) or the LID, with the
///   number in `sender_pn` when the contact shares it (`lid`);
/// - group: `from` is the group, `participant` the member as above, with
///   `addressing_mode` and, for a shared number, `participant_pn`.
fn sender_attrs(
    b: NodeBuilder,
    messaging: &MessagingState,
    number: &str,
    device: u16,
    group: Option<&str>,
) -> (NodeBuilder, String) {
    let (address, number_beside) = messaging.address_of(number, device);
    match group {
        Some(group) => {
            let mode = if messaging.lid_addressed(number) {
                "lid"
            } else {
                "pn"
            };
            let mut b = b
                .attr("from", group.to_string())
                .attr("participant", address.to_string())
                .attr("addressing_mode", mode);
            if let Some(pn) = number_beside {
                b = b.attr("participant_pn", pn.to_string());
            }
            (b, group.to_string())
        }
        None => {
            let mut b = b.attr("from", address.to_string());
            if let Some(pn) = number_beside {
                b = b.attr("sender_pn", pn.to_string());
            }
            (b, address.to_string())
        }
    }
}

/// A contact posts `text` in `group`, as WhatsApp delivers group messages: a
/// `skmsg` under the sender's sender key, preceded (once per companion) by
/// that key's distribution message over the pairwise session.
pub(crate) async fn group_send(
    shared: &Arc<Shared>,
    group: &str,
    number: &str,
    message: wa::Message,
) -> Result<String, MessageError> {
    let (id, targets, name) = {
        let mut state = shared.state();
        let contact = state
            .messaging
            .contacts
            .get(number)
            .ok_or_else(|| MessageError::UnknownContact(number.to_string()))?;
        let name = contact.name.clone();
        let devices: Vec<u16> = state.devices.keys().copied().collect();
        let targets = state.messaging.account_targets(shared, &devices);
        if targets.is_empty() {
            return Err(MessageError::NoDevices);
        }
        let id = state.messaging.new_id();
        state.messaging.sent.insert(
            id.clone(),
            SentRecord {
                number: number.to_string(),
                message: message.clone(),
                group: Some(group.to_string()),
            },
        );
        (id, targets, name)
    };
    let (skdm, skmsg) = {
        let mut parties = shared.parties.lock().await;
        let party = parties
            .devices
            .get_mut(&party_key(number, 0))
            .ok_or_else(|| MessageError::UnknownContact(number.to_string()))?;
        let skdm = party
            .sender_key_distribution(group)
            .await
            .map_err(MessageError::Signal)?;
        let padded = MessageUtils::encode_and_pad(&message);
        let skmsg = party
            .group_encrypt(group, &padded)
            .await
            .map_err(MessageError::Signal)?;
        (skdm, skmsg)
    };
    for device in targets {
        let first = shared.state().messaging.skdm_sent.insert((
            group.to_string(),
            number.to_string(),
            device,
        ));
        // The distribution message rides in the pairwise `enc` of the same
        // stanza; without it the companion cannot read the `skmsg`.
        let pairwise = wa::Message {
            sender_key_distribution_message: buffa::MessageField::some(
                wa::message::SenderKeyDistributionMessage {
                    group_id: Some(group.to_string()),
                    axolotl_sender_key_distribution_message: Some(skdm.clone()),
                },
            ),
            ..Default::default()
        };
        if first {
            send_pairwise(
                shared,
                number,
                0,
                device,
                &id,
                &pairwise,
                Some(&name),
                Some((group, skmsg.clone())),
            )
            .await?;
        } else {
            let b = {
                let state = shared.state();
                sender_attrs(
                    NodeBuilder::new("message"),
                    &state.messaging,
                    number,
                    0,
                    Some(group),
                )
                .0
            };
            let node = b
                .attr("id", id.clone())
                .attr("t", crate::connection::unix_now().to_string())
                .attr("type", stanza_type(&message))
                .attr("notify", name.clone())
                .children([NodeBuilder::new("enc")
                    .attr("v", "2")
                    .attr("type", "skmsg")
                    .bytes(skmsg.clone())
                    .build()])
                .build();
            enqueue(
                shared,
                device,
                Queued {
                    class: "message".into(),
                    id: id.clone(),
                    kind: String::new(),
                    node,
                    sent: false,
                },
            );
        }
    }
    Ok(id)
}

/// The phone shares an app-state sync key with a companion that just
/// uploaded its keys, as the primary does after linking: a
/// `protocolMessage` of type `APP_STATE_SYNC_KEY_SHARE`, over a Signal
/// session it builds with the companion's bundle (a `pkmsg`).
pub(crate) async fn phone_key_share(shared: Arc<Shared>, device: u16) {
    let first = shared.state().messaging.key_share_sent.insert(device);
    if !first {
        return;
    }
    let key_id: [u8; 6] = rand::random();
    let key_data: [u8; 32] = rand::random();
    let message = wa::Message {
        protocol_message: buffa::MessageField::some(wa::message::ProtocolMessage {
            r#type: Some(wa::message::protocol_message::Type::AppStateSyncKeyShare),
            app_state_sync_key_share: buffa::MessageField::some(
                wa::message::AppStateSyncKeyShare {
                    keys: vec![wa::message::AppStateSyncKey {
                        key_id: buffa::MessageField::some(wa::message::AppStateSyncKeyId {
                            key_id: Some(key_id.to_vec()),
                        }),
                        key_data: buffa::MessageField::some(wa::message::AppStateSyncKeyData {
                            key_data: Some(key_data.to_vec()),
                            fingerprint: buffa::MessageField::some(
                                wa::message::AppStateSyncKeyFingerprint {
                                    raw_id: Some(shared.raw_id),
                                    current_index: Some(u32::from(device)),
                                    device_indexes: vec![0, u32::from(device)],
                                },
                            ),
                            timestamp: Some(
                                i64::try_from(crate::connection::unix_now() * 1000)
                                    .unwrap_or_default(),
                            ),
                        }),
                    }],
                },
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = shared.state().messaging.new_id();
    let phone = shared.config.account.phone.clone();
    match send_pairwise(&shared, &phone, 0, device, &id, &message, None, None).await {
        Ok(_) => shared.emit(ServerEvent::KeyShareSent {
            jid: shared.device_jid(device),
        }),
        Err(e) => tracing::warn!(error = %e, "the phone could not share the app-state key"),
    }
}

/// The client uploaded (or re-uploaded) its pre-keys.
pub(crate) fn on_upload(shared: &Arc<Shared>, device: u16, bundle: KeyBundle) {
    let phone = shared.config.account.phone.clone();
    {
        let mut state = shared.state();
        state
            .messaging
            .bundles
            .insert(party_key(&phone, device), bundle);
    }
    // The key share, then the history, as a phone sends them.
    let shared = shared.clone();
    tokio::spawn(async move {
        phone_key_share(shared.clone(), device).await;
        phone_history_sync(shared, device).await;
    });
}

fn bytes(node: &Node) -> Option<&[u8]> {
    match node.content.as_ref()? {
        NodeContent::Bytes(b) => Some(b.as_slice()),
        _ => None,
    }
}

/// A `<message>` from a companion: ack it at once (that is the server
/// taking it), then hand each `<to>` copy to the device it is for.
pub(crate) async fn on_client_message(shared: Arc<Shared>, sender: u16, node: Node) {
    let phone = shared.config.account.phone.clone();
    let sender_jid = device_jid(&phone, sender);
    let id = attr(&node, "id").unwrap_or_default();
    let to = attr(&node, "to").unwrap_or_default();
    let (withhold, delay) = {
        let state = shared.state();
        (
            state.messaging.faults.withhold_receipts,
            state.messaging.faults.receipt_delay,
        )
    };
    let chat: Jid = match to.parse() {
        Ok(j) => j,
        Err(_) => return,
    };
    let mut copies: Vec<(Jid, EncType, Vec<u8>)> = Vec::new();
    let mut skmsg: Option<Vec<u8>> = None;
    let mut push_enc = |target: Jid, enc: &Node| {
        let kind = match attr(enc, "type").as_deref() {
            Some("pkmsg") => Some(EncType::Pkmsg),
            Some("msg") => Some(EncType::Msg),
            _ => None,
        };
        if let (Some(kind), Some(b)) = (kind, bytes(enc)) {
            copies.push((target, kind, b.to_vec()));
        }
    };
    if let Some(participants) = node.get_optional_child("participants") {
        for to_node in participants.get_children_by_tag("to") {
            let Some(target) = attr(to_node, "jid").and_then(|j| j.parse::<Jid>().ok()) else {
                continue;
            };
            for enc in to_node.get_children_by_tag("enc") {
                push_enc(target.clone(), enc);
            }
        }
    }
    for enc in node.get_children_by_tag("enc") {
        if attr(enc, "type").as_deref() == Some("skmsg") {
            skmsg = bytes(enc).map(<[u8]>::to_vec);
        } else if !chat.is_group() {
            push_enc(chat.clone(), enc);
        }
    }
    shared.emit(ServerEvent::MessageFromDevice {
        from: sender_jid.to_string(),
        to: to.clone(),
        id: id.clone(),
        copies: copies.len(),
    });

    let mut decrypted_by: BTreeSet<String> = BTreeSet::new();
    for (addressed, kind, ciphertext) in copies {
        // The client may address a device by its LID or its number.
        let resolved = shared
            .state()
            .messaging
            .pn_of(&shared.config.account, &addressed);
        let Some(target) = resolved else { continue };
        let key = party_key(&target.user, target.device);
        let result = {
            let mut parties = shared.parties.lock().await;
            match parties.devices.get_mut(&key) {
                Some(party) => Some(party.decrypt(&sender_jid, kind, &ciphertext).await),
                None => None,
            }
        };
        let Some(result) = result else { continue };
        let message = result.and_then(|padded| {
            wacore::messages::decode_plaintext(&padded, 2).map_err(|e| e.to_string())
        });
        match message {
            Ok(message) => {
                if let Some(skdm) = message.sender_key_distribution_message.as_option()
                    && let Some(bytes) = &skdm.axolotl_sender_key_distribution_message
                {
                    let mut parties = shared.parties.lock().await;
                    if let Some(party) = parties.devices.get_mut(&key) {
                        let _ = party.process_sender_key(&to, &sender_jid, bytes).await;
                    }
                }
                record_inbox(
                    &shared,
                    &target,
                    InboxEntry {
                        id: id.clone(),
                        from: sender_jid.to_string(),
                        device: target.device,
                        enc: kind,
                        kind: String::new(),
                        text: None,
                        quoted_id: None,
                        chat: to.clone(),
                        file: None,
                    },
                    &message,
                );
                decrypted_by.insert(target.user.to_string());
            }
            Err(why) => {
                shared.emit(ServerEvent::DecryptFailed {
                    by: target.to_string(),
                    from: sender_jid.to_string(),
                    id: id.clone(),
                    error: why,
                });
                if target.user != phone {
                    contact_retry(&shared, &target, &addressed, &id, sender).await;
                }
            }
        }
    }
    // Group: every member device that holds the sender key reads the skmsg.
    if let Some(skmsg) = skmsg {
        let members: Vec<String> = {
            let parties = shared.parties.lock().await;
            parties.devices.keys().cloned().collect()
        };
        for key in members {
            let (user, dev) = key.rsplit_once(':').unwrap_or((&key, "0"));
            if user == phone {
                continue;
            }
            let target = device_jid(user, dev.parse().unwrap_or(0));
            let plain = {
                let mut parties = shared.parties.lock().await;
                match parties.devices.get_mut(&key) {
                    Some(p) => p.group_decrypt(&to, &sender_jid, &skmsg).await.ok(),
                    None => None,
                }
            };
            let Some(padded) = plain else { continue };
            if let Ok(message) = wacore::messages::decode_plaintext(&padded, 2) {
                record_inbox(
                    &shared,
                    &target,
                    InboxEntry {
                        id: id.clone(),
                        from: sender_jid.to_string(),
                        device: target.device,
                        enc: EncType::Msg,
                        kind: String::new(),
                        text: None,
                        quoted_id: None,
                        chat: to.clone(),
                        file: None,
                    },
                    &message,
                );
            }
        }
    }
    // Each contact that read the message says so: delivery, then read —
    // unless receipts were withheld when it arrived.
    if withhold {
        return;
    }
    for number in decrypted_by.into_iter().filter(|n| *n != phone) {
        let group = chat.is_group().then(|| to.clone());
        // A receipt comes from the address the sender used: the LID the
        // client wrote to, or the member's address in a group.
        let via_lid = if chat.is_group() {
            shared.state().messaging.lid_addressed(&number)
        } else {
            chat.is_lid()
        };
        let (shared, id) = (shared.clone(), id.clone());
        // Its own task: a delayed receipt must not hold up later messages.
        tokio::spawn(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            contact_receipts(&shared, &number, via_lid, &id, sender, group.as_deref());
        });
    }
}

fn record_inbox(shared: &Shared, target: &Jid, mut entry: InboxEntry, message: &wa::Message) {
    let (kind, text, quoted) = summarize(message);
    if kind == "sender_key" {
        return;
    }
    entry.kind = kind;
    entry.text = text;
    entry.quoted_id = quoted;
    entry.file = crate::media::received_file(&shared.media, message).map(Box::new);
    let phone = &shared.config.account.phone;
    {
        let mut state = shared.state();
        // A phone shows one message per id and sender, however often it
        // arrives (a sender that crashed before the server's ack sends it
        // again with the same id): so does the fake.
        let inbox = if target.user == *phone {
            Some(&mut state.messaging.phone_inbox)
        } else {
            state
                .messaging
                .contacts
                .get_mut(target.user.as_str())
                .map(|c| &mut c.inbox)
        };
        if let Some(inbox) = inbox {
            if inbox
                .iter()
                .any(|e| e.id == entry.id && e.from == entry.from && e.device == entry.device)
            {
                return;
            }
            inbox.push(entry.clone());
        }
    }
    shared.emit(ServerEvent::Decrypted {
        by: target.to_string(),
        entry,
    });
}

/// A contact's phone confirms it got and read `id`, through the sender
/// companion's queue.
fn contact_receipts(
    shared: &Arc<Shared>,
    number: &str,
    via_lid: bool,
    id: &str,
    device: u16,
    group: Option<&str>,
) {
    let lid = shared
        .state()
        .messaging
        .contacts
        .get(number)
        .map(|c| c.lid.clone());
    let address = match lid {
        Some(lid) if via_lid => Jid::lid(lid),
        _ => device_jid(number, 0),
    };
    for kind in ["", "read"] {
        let mut b = NodeBuilder::new("receipt")
            .attr("id", id.to_string())
            .attr("t", crate::connection::unix_now().to_string());
        match group {
            Some(g) => {
                b = b
                    .attr("from", g.to_string())
                    .attr("participant", address.to_string());
            }
            None => b = b.attr("from", address.to_string()),
        }
        if !kind.is_empty() {
            b = b.attr("type", kind);
        }
        enqueue(
            shared,
            device,
            Queued {
                class: "receipt".into(),
                id: id.to_string(),
                kind: kind.to_string(),
                node: b.build(),
                sent: false,
            },
        );
        shared.emit(ServerEvent::ReceiptToDevice {
            from: number.to_string(),
            to: shared.device_jid(device),
            id: id.to_string(),
            kind: if kind.is_empty() { "delivery" } else { kind }.to_string(),
        });
    }
}

/// A contact device could not decrypt: it asks the sender to try again,
/// with its registration id, as a phone does. `target` is the device by
/// its number, `addressed` as the sender addressed it (the receipt comes
/// from there).
async fn contact_retry(shared: &Arc<Shared>, target: &Jid, addressed: &Jid, id: &str, device: u16) {
    // The count grows with each retry of the same message; after five the
    // device gives up, as phones do. Its keys ride along (a one-time key
    // taken from its published ones), so the sender can build a new session
    // without a fetch.
    let (registration, count, keys) = {
        let mut state = shared.state();
        let messaging = &mut state.messaging;
        let count = {
            let c = messaging
                .retry_counts
                .entry((target.to_string(), id.to_string()))
                .or_insert(0);
            *c += 1;
            *c
        };
        let bundle = messaging
            .bundles
            .get_mut(&party_key(&target.user, target.device));
        let registration = bundle
            .as_ref()
            .map(|b| b.registration_id)
            .unwrap_or_default();
        let keys = bundle.map(|b| {
            let one_time = keys::take_one_time(b);
            retry_keys_node(b, one_time)
        });
        (registration, count, keys)
    };
    if count > 5 {
        return;
    }
    let t = crate::connection::unix_now().to_string();
    let mut children = vec![
        NodeBuilder::new("retry")
            .attr("count", count.to_string())
            .attr("id", id.to_string())
            .attr("t", t.clone())
            .attr("v", "1")
            .build(),
        NodeBuilder::new("registration")
            .bytes(registration.to_be_bytes().to_vec())
            .build(),
    ];
    children.extend(keys);
    let node = NodeBuilder::new("receipt")
        .attr("from", addressed.to_string())
        .attr("id", id.to_string())
        .attr("type", "retry")
        .attr("t", t)
        .children(children)
        .build();
    enqueue(
        shared,
        device,
        Queued {
            class: "receipt".into(),
            id: id.to_string(),
            kind: "retry".into(),
            node,
            sent: false,
        },
    );
    shared.emit(ServerEvent::ReceiptToDevice {
        from: target.to_string(),
        to: shared.device_jid(device),
        id: id.to_string(),
        kind: "retry".into(),
    });
}

/// A `<receipt>` from a companion: for a contact, recorded in its receipts;
/// a retry receipt makes the contact encrypt that message again on a new
/// session.
pub(crate) async fn on_client_receipt(shared: Arc<Shared>, sender: u16, node: Node) {
    let to = attr(&node, "to").unwrap_or_default();
    let Ok(to_jid) = to.parse::<Jid>() else {
        return;
    };
    // Either address of the contact (LID or number) names it.
    let addressed = if to_jid.is_group() {
        attr(&node, "participant").and_then(|p| p.parse::<Jid>().ok())
    } else {
        Some(to_jid.clone())
    };
    let resolved =
        addressed.and_then(|j| shared.state().messaging.pn_of(&shared.config.account, &j));
    let number = resolved
        .as_ref()
        .map(|j| j.user.to_string())
        .unwrap_or_default();
    let kind = attr(&node, "type").unwrap_or_else(|| "delivery".into());
    let mut ids = vec![attr(&node, "id").unwrap_or_default()];
    if let Some(list) = node.get_optional_child("list") {
        ids.extend(
            list.get_children_by_tag("item")
                .filter_map(|i| attr(i, "id")),
        );
    }
    let entry = ReceiptEntry {
        ids: ids.clone(),
        kind: kind.clone(),
        from: shared.device_jid(sender),
    };
    let known = {
        let mut state = shared.state();
        match state.messaging.contacts.get_mut(&number) {
            Some(c) => {
                c.receipts.push(entry.clone());
                true
            }
            // To the account itself: its phone (a `hist_sync` receipt for
            // the history it sent, say).
            None => number == shared.config.account.phone,
        }
    };
    if known {
        shared.emit(ServerEvent::ReceiptFromDevice {
            to: number.clone(),
            entry,
        });
    }
    if kind == "retry" {
        let device = resolved.map_or(to_jid.device, |j| j.device);
        for id in ids {
            resend_after_retry(&shared, &number, device, sender, &id, &node).await;
        }
    }
}

/// The contact answers a retry receipt: a new session on the keys the
/// receipt carries (or, without them, a fresh fetch), and the same message
/// under the same id.
async fn resend_after_retry(
    shared: &Arc<Shared>,
    number: &str,
    from_device: u16,
    device: u16,
    id: &str,
    receipt: &Node,
) {
    let record = shared.state().messaging.sent.get(id).cloned();
    let Some(record) = record else {
        return;
    };
    if record.number != number {
        return;
    }
    let phone = shared.config.account.phone.clone();
    let peer = device_jid(&phone, device);
    // Keys in the receipt replace what the directory holds for the device.
    if let Some(keys_node) = receipt.get_optional_child("keys")
        && let Some(bundle) = parse_retry_keys(receipt, keys_node)
    {
        shared
            .state()
            .messaging
            .bundles
            .insert(party_key(&phone, device), bundle);
    }
    {
        let mut parties = shared.parties.lock().await;
        if let Some(party) = parties.devices.get_mut(&party_key(number, from_device)) {
            party.drop_session(&peer);
        }
    }
    let name = shared
        .state()
        .messaging
        .contacts
        .get(number)
        .map(|c| c.name.clone());
    let result = match &record.group {
        None => {
            send_pairwise(
                shared,
                number,
                from_device,
                device,
                id,
                &record.message,
                name.as_deref(),
                None,
            )
            .await
        }
        Some(group) => {
            // Group retries go pairwise, as WhatsApp's do.
            send_pairwise(
                shared,
                number,
                from_device,
                device,
                id,
                &record.message,
                name.as_deref(),
                None,
            )
            .await
            .inspect(|_| {
                let _ = group;
            })
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "a contact could not answer a retry receipt");
    }
}

/// The `<keys>` of a retry receipt: the device's identity, signed
/// pre-key and (when it has one left) a one-time pre-key.
fn retry_keys_node(bundle: &KeyBundle, one_time: Option<(u32, [u8; 32])>) -> Node {
    let (skey_id, skey_pub, skey_sig) = &bundle.signed_pre_key;
    let mut children = vec![
        NodeBuilder::new("type").bytes(vec![5u8]).build(),
        NodeBuilder::new("identity")
            .bytes(bundle.identity.to_vec())
            .build(),
    ];
    if let Some((id, public)) = one_time {
        children.push(
            NodeBuilder::new("key")
                .children([
                    NodeBuilder::new("id")
                        .bytes(id.to_be_bytes()[1..].to_vec())
                        .build(),
                    NodeBuilder::new("value").bytes(public.to_vec()).build(),
                ])
                .build(),
        );
    }
    children.push(
        NodeBuilder::new("skey")
            .children([
                NodeBuilder::new("id")
                    .bytes(skey_id.to_be_bytes()[1..].to_vec())
                    .build(),
                NodeBuilder::new("value").bytes(skey_pub.to_vec()).build(),
                NodeBuilder::new("signature")
                    .bytes(skey_sig.clone())
                    .build(),
            ])
            .build(),
    );
    NodeBuilder::new("keys").children(children).build()
}

fn parse_retry_keys(receipt: &Node, keys_node: &Node) -> Option<KeyBundle> {
    let registration = receipt.get_optional_child("registration").and_then(bytes)?;
    let mut reg = [0u8; 4];
    let n = registration.len().min(4);
    reg[4 - n..].copy_from_slice(&registration[..n]);
    let identity: [u8; 32] = keys_node
        .get_optional_child("identity")
        .and_then(bytes)?
        .try_into()
        .ok()?;
    let skey = keys::parse_skey(keys_node.get_optional_child("skey")?)?;
    let one_time = keys_node.get_optional_child("key").and_then(|k| {
        let id = k.get_optional_child("id").and_then(bytes)?;
        let mut idb = [0u8; 4];
        let n = id.len().min(4);
        idb[4 - n..].copy_from_slice(&id[..n]);
        let value: [u8; 32] = k
            .get_optional_child("value")
            .and_then(bytes)?
            .try_into()
            .ok()?;
        Some((u32::from_be_bytes(idb), value))
    });
    Some(KeyBundle {
        registration_id: u32::from_be_bytes(reg),
        identity,
        signed_pre_key: skey,
        pre_keys: one_time.into_iter().collect(),
        device_identity: None,
    })
}

/// A contact reinstalls WhatsApp: new identity and keys on every device.
/// The server tells the account's live companions
/// (`<notification type="encrypt"><identity/></notification>`), as WhatsApp
/// does, so they drop their sessions with it.
pub(crate) async fn change_identity(
    shared: &Arc<Shared>,
    number: &str,
) -> Result<(), MessageError> {
    let devices = shared
        .state()
        .messaging
        .contacts
        .get(number)
        .map(|c| c.devices.clone())
        .ok_or_else(|| MessageError::UnknownContact(number.to_string()))?;
    let raw_id = rand::random::<u32>();
    {
        let mut parties = shared.parties.lock().await;
        let mut state = shared.state();
        let messaging = &mut state.messaging;
        let account_key = install_contact(&mut parties, messaging, number, &devices, raw_id, None);
        if let Some(c) = messaging.contacts.get_mut(number) {
            c.raw_id = raw_id;
            c.account_key = account_key;
        }
        messaging.skdm_sent.retain(|(_, n, _)| n != number);
    }
    let companions: Vec<u16> = shared.state().devices.keys().copied().collect();
    for device in companions {
        let id = shared.state().messaging.new_id();
        let node = NodeBuilder::new("notification")
            .attr("from", device_jid(number, 0).to_string())
            .attr("id", id.clone())
            .attr("type", "encrypt")
            .attr("t", crate::connection::unix_now().to_string())
            .children([NodeBuilder::new("identity").build()])
            .build();
        enqueue(
            shared,
            device,
            Queued {
                class: "notification".into(),
                id,
                kind: String::new(),
                node,
                sent: false,
            },
        );
    }
    shared.emit(ServerEvent::IdentityChanged {
        number: number.to_string(),
    });
    Ok(())
}

/// Tells the account's other companions that `changed` was linked
/// (`added`) or unlinked, as WhatsApp does with `<notification
/// type="devices">`: one operation, the device (with its key index when
/// added), the new device-list hash, and the account's key-index list
/// signed by the phone. Queued like any stanza, so an offline companion
/// gets it when it connects.
pub(crate) fn notify_devices(shared: &Shared, changed: u16, added: bool) {
    let phone = shared.config.account.phone.clone();
    let (others, indexes, changed_index) = {
        let state = shared.state();
        let others: Vec<u16> = state
            .devices
            .keys()
            .copied()
            .filter(|d| *d != changed)
            .collect();
        let indexes: Vec<u32> = state.devices.values().map(|d| d.key_index).collect();
        let changed_index = state.devices.get(&changed).map(|d| d.key_index);
        (others, indexes, changed_index)
    };
    if others.is_empty() {
        return;
    }
    let ts = crate::connection::unix_now();
    let list = crate::keys::key_index_list(&shared.phone_identity, shared.raw_id, ts, indexes);
    let changed_jid = shared.device_jid(changed);
    let mut jids: Vec<String> = std::iter::once(format!("{phone}@s.whatsapp.net"))
        .chain(others.iter().map(|d| shared.device_jid(*d)))
        .chain(added.then(|| changed_jid.clone()))
        .collect();
    jids.sort();
    let hash = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(jids.join("").as_bytes());
        use base64::Engine;
        format!(
            "2:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(&digest[..6])
        )
    };
    let operation = if added { "add" } else { "remove" };
    let mut device = NodeBuilder::new("device").attr("jid", changed_jid.clone());
    if let Some(index) = changed_index.filter(|_| added) {
        device = device.attr("key-index", index.to_string());
    }
    let device = device.build();
    for other in others {
        let id = shared.state().messaging.new_id();
        let node = NodeBuilder::new("notification")
            .attr("from", format!("{phone}@s.whatsapp.net"))
            .attr("id", id.clone())
            .attr("type", "devices")
            .attr("t", ts.to_string())
            .children([NodeBuilder::new(operation)
                .attr("device_hash", hash.clone())
                .children([
                    device.clone(),
                    NodeBuilder::new("key-index-list")
                        .attr("ts", ts.to_string())
                        .bytes(list.clone())
                        .build(),
                ])
                .build()])
            .build();
        enqueue(
            shared,
            other,
            Queued {
                class: "notification".into(),
                id: id.clone(),
                // The client's ack echoes the notification's type.
                kind: "devices".into(),
                node,
                sent: false,
            },
        );
        shared.emit(ServerEvent::DevicesNotified {
            to: shared.device_jid(other),
            id,
            operation: operation.into(),
            device: changed_jid.clone(),
        });
    }
}

/// The phone's initial history sync to a companion that just linked, as
/// WhatsApp's phones send it: a `protocolMessage` of type
/// `HISTORY_SYNC_NOTIFICATION` over the pairwise session, naming a blob on
/// the media host (a zlib-compressed `HistorySync`, encrypted as
/// `md-msg-hist` media). The history itself is empty. Clients that skip
/// history answer with a `hist_sync` receipt.
pub(crate) async fn phone_history_sync(shared: Arc<Shared>, device: u16) {
    let first = shared.state().messaging.history_sent.insert(device);
    if !first {
        return;
    }
    // An empty history, as the issue allows: the contacts' number↔LID
    // mappings and push names, which real phones put here, would change how
    // a client addresses contacts from then on (by LID), which the LID
    // tests do not cover yet.
    let history = wa::HistorySync {
        sync_type: wa::history_sync::HistorySyncType::InitialBootstrap,
        chunk_order: Some(0),
        progress: Some(100),
        ..Default::default()
    };
    let compressed = {
        use std::io::Write as _;
        let mut encoder =
            flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = encoder.write_all(&history.encode_to_vec());
        encoder.finish().unwrap_or_default()
    };
    let enc = match wacore::upload::encrypt_media(&compressed, wacore::download::MediaType::History)
    {
        Ok(enc) => enc,
        Err(e) => {
            tracing::warn!(error = %e, "the phone could not encrypt the history sync");
            return;
        }
    };
    let (_, direct_path) = shared.media.put(enc.data_to_upload, "md-msg-hist");
    let message = wa::Message {
        protocol_message: buffa::MessageField::some(wa::message::ProtocolMessage {
            r#type: Some(wa::message::protocol_message::Type::HistorySyncNotification),
            history_sync_notification: buffa::MessageField::some(
                wa::message::HistorySyncNotification {
                    file_sha256: Some(enc.file_sha256.to_vec()),
                    file_length: Some(compressed.len() as u64),
                    media_key: Some(enc.media_key.to_vec()),
                    file_enc_sha256: Some(enc.file_enc_sha256.to_vec()),
                    direct_path: Some(direct_path),
                    sync_type: Some(wa::message::HistorySyncType::InitialBootstrap),
                    chunk_order: Some(0),
                    progress: Some(100),
                    ..Default::default()
                },
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = shared.state().messaging.new_id();
    let phone = shared.config.account.phone.clone();
    match send_pairwise(&shared, &phone, 0, device, &id, &message, None, None).await {
        Ok(_) => shared.emit(ServerEvent::HistorySyncSent {
            jid: shared.device_jid(device),
            id,
        }),
        Err(e) => tracing::warn!(error = %e, "the phone could not send the history sync"),
    }
}
