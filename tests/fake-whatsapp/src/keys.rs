//! The server's key directory, as WhatsApp keeps it: each device's uploaded
//! bundle (registration id, identity, signed pre-key, one-time pre-keys), the
//! `encrypt` IQs over it (upload, rotate, count, fetch, digest), and the ADV
//! key-index list a device-list answer carries.
//!
//! A fetch hands out one one-time pre-key and forgets it, as the real server
//! does: two senders never build sessions on the same one-time key. When
//! none is left the bundle goes out without `<key>` (X3DH on the signed
//! pre-key alone), which clients accept.

use std::collections::VecDeque;

use buffa::Message as _;
use wacore::libsignal::protocol::{IdentityKey, PreKeyBundle, PublicKey};
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, NodeContent};
use waproto::whatsapp as wa;

/// One device's published keys.
#[derive(Debug, Clone)]
pub(crate) struct KeyBundle {
    pub registration_id: u32,
    pub identity: [u8; 32],
    /// id, public key, signature (by the identity key).
    pub signed_pre_key: (u32, [u8; 32], Vec<u8>),
    /// Unused one-time pre-keys, oldest first.
    pub pre_keys: VecDeque<(u32, [u8; 32])>,
    /// `ADVSignedDeviceIdentity` of a companion (account and device
    /// signatures), returned with its bundle so a fetcher can check the
    /// companion belongs to the account. `None` for primaries.
    pub device_identity: Option<Vec<u8>>,
}

impl KeyBundle {
    /// The bundle as libsignal takes it, with `one_time` as the pre-key.
    pub(crate) fn to_libsignal(
        &self,
        device: u16,
        one_time: Option<(u32, [u8; 32])>,
    ) -> Result<PreKeyBundle, String> {
        let key = |bytes: &[u8; 32]| {
            PublicKey::from_djb_public_key_bytes(bytes).map_err(|e| format!("bad key: {e}"))
        };
        let pre_key = match one_time {
            Some((id, public)) => Some((id.into(), key(&public)?)),
            None => None,
        };
        PreKeyBundle::new(
            self.registration_id,
            u32::from(device).into(),
            pre_key,
            self.signed_pre_key.0.into(),
            key(&self.signed_pre_key.1)?,
            self.signed_pre_key.2.clone(),
            IdentityKey::new(key(&self.identity)?),
        )
        .map_err(|e| format!("bundle: {e}"))
    }

    /// What a key fetch and a digest both start with: registration id, key
    /// type, identity and the signed pre-key.
    fn bundle_head(&self) -> [Node; 4] {
        [
            NodeBuilder::new("registration")
                .bytes(self.registration_id.to_be_bytes().to_vec())
                .build(),
            NodeBuilder::new("type").bytes(vec![5u8]).build(),
            NodeBuilder::new("identity")
                .bytes(self.identity.to_vec())
                .build(),
            NodeBuilder::new("skey")
                .children([
                    NodeBuilder::new("id")
                        .bytes(self.signed_pre_key.0.to_be_bytes()[1..].to_vec())
                        .build(),
                    NodeBuilder::new("value")
                        .bytes(self.signed_pre_key.1.to_vec())
                        .build(),
                    NodeBuilder::new("signature")
                        .bytes(self.signed_pre_key.2.clone())
                        .build(),
                ])
                .build(),
        ]
    }

    /// The `<user>` element of a key-fetch answer, consuming one one-time
    /// pre-key.
    fn fetch_node(&mut self, jid: &Jid) -> Node {
        let mut children = Vec::from(self.bundle_head());
        if let Some((id, public)) = self.pre_keys.pop_front() {
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
        if let Some(identity) = &self.device_identity {
            children.push(
                NodeBuilder::new("device-identity")
                    .bytes(identity.clone())
                    .build(),
            );
        }
        NodeBuilder::new("user")
            .attr("jid", jid.clone())
            .children(children)
            .build()
    }

    /// The `<digest>` answer: what the server holds, and a SHA-1 over the
    /// same material the client hashes locally.
    pub(crate) fn digest_node(&self) -> Node {
        let keys: Vec<&[u8]> = self.pre_keys.iter().map(|(_, k)| k.as_slice()).collect();
        let hash = wacore::prekeys::compute_key_bundle_digest(
            &self.identity,
            &self.signed_pre_key.1,
            &self.signed_pre_key.2,
            &keys,
        );
        NodeBuilder::new("digest")
            .children(
                self.bundle_head().into_iter().chain([
                    NodeBuilder::new("list")
                        .children(self.pre_keys.iter().map(|(id, _)| {
                            NodeBuilder::new("id")
                                .bytes(id.to_be_bytes()[1..].to_vec())
                                .build()
                        }))
                        .build(),
                    NodeBuilder::new("hash").bytes(hash).build(),
                ]),
            )
            .build()
    }
}

/// Takes one one-time key from a bundle (for simulated senders, who fetch
/// from the directory like a client would).
pub(crate) fn take_one_time(bundle: &mut KeyBundle) -> Option<(u32, [u8; 32])> {
    bundle.pre_keys.pop_front()
}

/// The key-fetch `<user>` for `jid` from `bundle`, or a 404 when the server
/// has no keys for that device.
pub(crate) fn fetch_answer(jid: &Jid, bundle: Option<&mut KeyBundle>) -> Node {
    match bundle {
        Some(bundle) => bundle.fetch_node(jid),
        None => NodeBuilder::new("user")
            .attr("jid", jid.clone())
            .children([NodeBuilder::new("error")
                .attr("code", "404")
                .attr("text", "item-not-found")
                .build()])
            .build(),
    }
}

fn bytes_of<'a>(node: &'a Node, tag: &str) -> Option<&'a [u8]> {
    match node.get_optional_child(tag)?.content.as_ref()? {
        NodeContent::Bytes(b) => Some(b.as_slice()),
        _ => None,
    }
}

fn uint_of(node: &Node, tag: &str) -> Option<u32> {
    let b = bytes_of(node, tag)?;
    if b.is_empty() || b.len() > 4 {
        return None;
    }
    let mut buf = [0u8; 4];
    buf[4 - b.len()..].copy_from_slice(b);
    Some(u32::from_be_bytes(buf))
}

fn key32(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

/// A signed pre-key element (`<skey><id/><value/><signature/></skey>`).
pub(crate) fn parse_skey(skey: &Node) -> Option<(u32, [u8; 32], Vec<u8>)> {
    Some((
        uint_of(skey, "id")?,
        key32(bytes_of(skey, "value")?)?,
        bytes_of(skey, "signature")?.to_vec(),
    ))
}

/// Reads a pre-key upload (`<iq xmlns="encrypt" type="set">` with
/// `registration`, `type`, `identity`, `list`, `skey` children).
pub(crate) fn parse_upload(iq: &Node) -> Option<KeyBundle> {
    let registration_id = uint_of(iq, "registration")?;
    let identity = key32(bytes_of(iq, "identity")?)?;
    let signed_pre_key = parse_skey(iq.get_optional_child("skey")?)?;
    let pre_keys = iq
        .get_optional_child("list")
        .map(|list| {
            list.get_children_by_tag("key")
                .filter_map(|k| Some((uint_of(k, "id")?, key32(bytes_of(k, "value")?)?)))
                .collect()
        })
        .unwrap_or_default();
    Some(KeyBundle {
        registration_id,
        identity,
        signed_pre_key,
        pre_keys,
        device_identity: None,
    })
}

/// The account's signed ADV key-index list (`<key-index-list>` of a device
/// list): which companion key indexes are valid, signed by the account key
/// over `[6, 2] ‖ details`. The client reads `raw_id` to tell an account
/// reinstall from a device change, and drops companions whose key index is
/// not listed.
pub(crate) fn key_index_list(
    account: &wacore::libsignal::protocol::KeyPair,
    raw_id: u32,
    timestamp: u64,
    valid_indexes: Vec<u32>,
) -> Vec<u8> {
    let current_index = valid_indexes.iter().copied().max().unwrap_or(0);
    let details = wa::ADVKeyIndexList {
        raw_id: Some(raw_id),
        timestamp: Some(timestamp),
        current_index: Some(current_index),
        valid_indexes,
        ..Default::default()
    }
    .encode_to_vec();
    let mut message = vec![6u8, 2];
    message.extend_from_slice(&details);
    let signature = account
        .private_key
        .calculate_signature(&message, &mut rand::rng())
        .map(|s| s.to_vec())
        .unwrap_or_default();
    wa::ADVSignedKeyIndexList {
        details: Some(details),
        account_signature: Some(signature),
        ..Default::default()
    }
    .encode_to_vec()
}
