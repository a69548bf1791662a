//! Answers to the IQs a logged-in client sends: what it needs to reach
//! `Connected` and to stay there.
//!
//! Anything this server does not model is answered with an IQ error at once
//! (`501 feature-not-implemented`): the client treats that as a failed
//! optional query, where silence would cost it a 75 s IQ timeout.

use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use crate::state::Shared;

/// What the connection should do besides sending the answer.
#[derive(Debug, Default)]
pub(crate) struct Followup {
    /// The client went active: deliver the offline queue.
    pub offline_delivery: bool,
    /// The client uploaded its pre-keys.
    pub uploaded: Option<crate::keys::KeyBundle>,
}

/// The answer to one IQ `get`/`set` from the client. `device` is the
/// companion the connection is logged in as.
pub(crate) fn answer(shared: &Shared, device: Option<u16>, iq: &Node) -> (Node, Followup) {
    let id = attr(iq, "id").unwrap_or_default();
    let xmlns = attr(iq, "xmlns").unwrap_or_default();
    let first_child = iq
        .children()
        .and_then(|c| c.first())
        .map(|c| c.tag.to_string())
        .unwrap_or_default();
    let mut followup = Followup::default();

    let content: Result<Vec<Node>, (u16, &'static str)> =
        match (xmlns.as_str(), first_child.as_str()) {
            // Keepalive.
            ("w:p", _) => Ok(Vec::new()),
            // Passive / active mode. Going active starts offline delivery.
            ("passive", child) => {
                followup.offline_delivery = child == "active";
                Ok(Vec::new())
            }
            // App-state sync: every requested collection is empty at version 0.
            ("w:sync:app:state", "sync") => Ok(vec![empty_sync(iq)]),
            // Pre-key upload: kept as the device's bundle.
            ("encrypt", "registration") => match crate::keys::parse_upload(iq) {
                Some(bundle) if device.is_some() => {
                    followup.uploaded = Some(bundle);
                    Ok(Vec::new())
                }
                _ => Err((400, "bad-request")),
            },
            ("encrypt", "rotate") => {
                rotate(shared, device, iq);
                Ok(Vec::new())
            }
            // Pre-key count: what is left of the uploaded one-time keys.
            ("encrypt", "count") => {
                let count = own_bundle(shared, device, |b| b.pre_keys.len()).unwrap_or(0);
                Ok(vec![
                    NodeBuilder::new("count")
                        .attr("value", count.to_string())
                        .build(),
                ])
            }
            ("encrypt", "key") => Ok(vec![fetch(shared, iq)]),
            ("encrypt", "digest") => {
                match own_bundle(shared, device, crate::keys::KeyBundle::digest_node) {
                    Some(digest) => Ok(vec![digest]),
                    None => Err((404, "item-not-found")),
                }
            }
            ("usync", "usync") => Ok(vec![usync(shared, iq)]),
            ("blocklist", _) => Ok(vec![NodeBuilder::new("list").build()]),
            ("privacy", _) => Ok(vec![NodeBuilder::new("privacy").build()]),
            ("abt", _) => Ok(vec![
                NodeBuilder::new("props").attr("protocol", "1").build(),
            ]),
            ("w", "props") => Ok(vec![
                NodeBuilder::new("props").attr("protocol", "1").build(),
            ]),
            // The media servers' route and upload token.
            ("w:m", "media_conn") => Ok(vec![media_conn(shared)]),
            // Groups, profile pictures...
            _ => Err((501, "feature-not-implemented")),
        };

    let node = match content {
        Ok(children) => {
            let builder = NodeBuilder::new("iq")
                .attr("from", "s.whatsapp.net")
                .attr("id", id)
                .attr("type", "result");
            if children.is_empty() {
                builder.build()
            } else {
                builder.children(children).build()
            }
        }
        Err((code, text)) => NodeBuilder::new("iq")
            .attr("from", "s.whatsapp.net")
            .attr("id", id)
            .attr("type", "error")
            .children([NodeBuilder::new("error")
                .attr("code", code.to_string())
                .attr("text", text)
                .build()])
            .build(),
    };
    (node, followup)
}

/// `<ib><offline count="N"/></ib>`: the offline queue (N stanzas) was
/// delivered. Without it the client waits a minute before it considers
/// itself connected.
pub(crate) fn offline_done(count: usize) -> Node {
    NodeBuilder::new("ib")
        .attr("from", "s.whatsapp.net")
        .children([NodeBuilder::new("offline")
            .attr("count", count.to_string())
            .build()])
        .build()
}

/// Reads the logged-in companion's own bundle.
fn own_bundle<T>(
    shared: &Shared,
    device: Option<u16>,
    f: impl FnOnce(&crate::keys::KeyBundle) -> T,
) -> Option<T> {
    let device = device?;
    let key = crate::messaging::party_key(&shared.config.account.phone, device);
    shared.state().messaging.bundles.get(&key).map(f)
}

/// A signed pre-key rotation replaces the stored one.
fn rotate(shared: &Shared, device: Option<u16>, iq: &Node) {
    let Some(device) = device else { return };
    let Some(skey) = iq
        .get_optional_child("rotate")
        .and_then(|r| r.get_optional_child("skey"))
        .and_then(crate::keys::parse_skey)
    else {
        return;
    };
    let key = crate::messaging::party_key(&shared.config.account.phone, device);
    if let Some(bundle) = shared.state().messaging.bundles.get_mut(&key) {
        bundle.signed_pre_key = skey;
    }
}

/// Key fetch: one `<user>` per requested device, each taking one one-time
/// pre-key, or a 404 for a device the server has no keys for.
fn fetch(shared: &Shared, iq: &Node) -> Node {
    let mut state = shared.state();
    let users: Vec<Node> = iq
        .get_optional_child("key")
        .map(|key| {
            key.get_children_by_tag("user")
                .filter_map(|u| attr(u, "jid").and_then(|j| j.parse::<wacore_binary::Jid>().ok()))
                .map(|jid| {
                    // Asked by LID or by number: the same device's keys.
                    let k = state
                        .messaging
                        .pn_of(&shared.config.account, &jid)
                        .map(|pn| crate::messaging::party_key(&pn.user, pn.device))
                        .unwrap_or_default();
                    crate::keys::fetch_answer(&jid, state.messaging.bundles.get_mut(&k))
                })
                .collect()
        })
        .unwrap_or_default();
    NodeBuilder::new("list").children(users).build()
}

fn empty_sync(iq: &Node) -> Node {
    let collections = iq
        .get_optional_child("sync")
        .map(|sync| {
            sync.get_children_by_tag("collection")
                .filter_map(|c| attr(c, "name"))
                .map(|name| {
                    NodeBuilder::new("collection")
                        .attr("name", name)
                        .attr("version", "0")
                        .build()
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    NodeBuilder::new("sync").children(collections).build()
}

/// Contact, device and LID lookups. A `<contact>` query is answered from
/// the configured registered numbers; a device query for the account lists
/// the phone (device 0) and every linked companion. A user may be asked
/// for by number or by LID; the answer names it as it was asked, and a
/// `<lid>` query gives the LID of the account and of every contact.
fn usync(shared: &Shared, iq: &Node) -> Node {
    let Some(request) = iq.get_optional_child("usync") else {
        return NodeBuilder::new("usync").build();
    };
    let wants = |tag: &str| {
        request
            .get_optional_child("query")
            .and_then(|q| q.get_optional_child(tag))
            .is_some()
    };
    let (wants_contact, wants_devices, wants_lid) =
        (wants("contact"), wants("devices"), wants("lid"));
    let state = shared.state();
    let account = &shared.config.account;

    let users: Vec<Node> = request
        .get_optional_child("list")
        .map(|list| {
            list.get_children_by_tag("user")
                .map(|user| {
                    let number = user
                        .get_optional_child("contact")
                        .and_then(|c| c.content_as_string())
                        .map(|s| s.chars().filter(char::is_ascii_digit).collect::<String>())
                        .filter(|d| !d.is_empty())
                        .or_else(|| {
                            attr(user, "jid")
                                .and_then(|j| j.split(['@', ':']).next().map(str::to_string))
                        })
                        .unwrap_or_default();
                    // A LID stands for its user's number.
                    let asked_lid = attr(user, "jid").is_some_and(|j| j.ends_with("@lid"));
                    let number = if asked_lid {
                        state
                            .messaging
                            .pn_of(account, &wacore_binary::Jid::lid(number.clone()))
                            .map_or(number, |pn| pn.user.to_string())
                    } else {
                        number
                    };
                    let contact = state.messaging.contacts.get(&number);
                    let registered = number == account.phone
                        || contact.is_some_and(|c| c.on_whatsapp)
                        || (contact.is_none() && state.registered_numbers.contains(&number));
                    let mut children = Vec::new();
                    if wants_contact {
                        children.push(
                            NodeBuilder::new("contact")
                                .attr("type", if registered { "in" } else { "out" })
                                .build(),
                        );
                    }
                    if wants_devices && registered {
                        children.push(device_list(shared, &state, &number));
                    }
                    let lid = if number == account.phone {
                        Some(account.lid.clone())
                    } else {
                        contact.map(|c| c.lid.clone())
                    };
                    if wants_lid && let Some(lid) = &lid {
                        children.push(
                            NodeBuilder::new("lid")
                                .attr("val", format!("{lid}@lid"))
                                .build(),
                        );
                    }
                    let jid = match &lid {
                        Some(lid) if asked_lid => format!("{lid}@lid"),
                        _ => format!("{number}@s.whatsapp.net"),
                    };
                    let mut b = NodeBuilder::new("user").attr("jid", jid);
                    // Asked by LID, WhatsApp names the number beside it
                    // (`pn_jid`) only when the user shares it.
                    let shares_number = number == account.phone
                        || contact
                            .is_some_and(|c| c.addressing != crate::config::Addressing::LidHidden);
                    if asked_lid && lid.is_some() && shares_number {
                        b = b.attr("pn_jid", format!("{number}@s.whatsapp.net"));
                    }
                    b.children(children).build()
                })
                .collect()
        })
        .unwrap_or_default();

    NodeBuilder::new("usync")
        .children([NodeBuilder::new("list").children(users).build()])
        .build()
}

/// `<devices>` for a user: the phone (0) and its companions, each with its
/// ADV key index, and the account's signed key-index list — without it the
/// client ignores every companion ("no signedKeyIndexBytes").
fn device_list(shared: &Shared, state: &crate::state::State, number: &str) -> Node {
    let account = &shared.config.account;
    // (device id, key index), the signing key and the raw id.
    let (devices, signer, raw_id): (Vec<(u16, u32)>, Option<_>, u32) = if number == account.phone {
        (
            state
                .devices
                .iter()
                .map(|(id, d)| (*id, d.key_index))
                .collect(),
            Some(shared.phone_identity.clone()),
            shared.raw_id,
        )
    } else if let Some(contact) = state.messaging.contacts.get(number) {
        (
            contact
                .devices
                .iter()
                .filter(|d| **d != 0)
                .map(|d| (*d, u32::from(*d)))
                .collect(),
            Some(contact.account_key.clone()),
            contact.raw_id,
        )
    } else {
        (Vec::new(), None, 0)
    };
    let mut list = vec![NodeBuilder::new("device").attr("id", "0").build()];
    list.extend(devices.iter().map(|(id, index)| {
        NodeBuilder::new("device")
            .attr("id", id.to_string())
            .attr("key-index", index.to_string())
            .build()
    }));
    let mut children = vec![NodeBuilder::new("device-list").children(list).build()];
    if !devices.is_empty()
        && let Some(signer) = signer
    {
        let ts = crate::connection::unix_now();
        // Signed by the user's phone (its account identity key), as
        // WhatsApp's lists are: a client that checks the signature against
        // the identity it holds for that user accepts it.
        let indexes = devices.iter().map(|(_, i)| *i).collect();
        children.push(
            NodeBuilder::new("key-index-list")
                .attr("ts", ts.to_string())
                .bytes(crate::keys::key_index_list(&signer, raw_id, ts, indexes))
                .build(),
        );
    }
    NodeBuilder::new("devices")
        .attr("version", "2")
        .children(children)
        .build()
}

/// An attribute as a string (JIDs and tokens included).
pub(crate) fn attr(node: &Node, key: &str) -> Option<String> {
    node.attrs.get(key).map(|v| v.to_string())
}

/// `<media_conn>`: the upload token and the one host, as WhatsApp builds it
/// (wacore's own server-side type, so the client parses what it expects).
fn media_conn(shared: &Shared) -> Node {
    use wacore::iq::mediaconn::{HostType, MediaConnHostExtended, MediaConnResponseExtended};
    use wacore::protocol::ProtocolNode;
    let mut host = MediaConnHostExtended::simple(shared.media.hostname(), HostType::Primary);
    host.upload = true;
    host.download = true;
    host.download_categories = [
        "image", "video", "audio", "document", "gif", "ptt", "sticker",
    ]
    .map(String::from)
    .to_vec();
    MediaConnResponseExtended::mock(
        shared.media.auth().to_string(),
        crate::media::MEDIA_CONN_TTL,
        vec![host],
    )
    .into_node()
}

#[cfg(test)]
mod tests {
    use super::*;
    use buffa::Message as _;
    use waproto::whatsapp as wa;

    /// A contact's device list is signed by its phone, as WhatsApp's are:
    /// the key-index list verifies against the identity key that phone
    /// publishes (the one a client holds for the contact), over
    /// `[6, 2] ‖ details`.
    #[tokio::test]
    async fn a_contacts_device_list_is_signed_by_its_phone() {
        let media = crate::media::MediaHost::start().await.expect("media host");
        let shared = Shared::new(crate::config::ServerConfig::default(), media);
        let sari = "6282222222222";
        let state = shared.state();
        let list = device_list(&shared, &state, sari);
        let key_index = list
            .get_optional_child("key-index-list")
            .and_then(|n| match &n.content {
                Some(wacore_binary::NodeContent::Bytes(b)) => Some(b.clone()),
                _ => None,
            })
            .expect("a key-index list (Sari has a companion)");
        let signed = wa::ADVSignedKeyIndexList::decode_from_slice(&key_index).expect("decodes");
        let details = signed.details.expect("details");
        let signature = signed.account_signature.expect("a signature");
        let published = state.messaging.bundles[&crate::messaging::party_key(sari, 0)].identity;
        let phone = wacore::libsignal::protocol::PublicKey::from_djb_public_key_bytes(&published)
            .expect("a key");
        let mut message = vec![6u8, 2];
        message.extend_from_slice(&details);
        assert!(
            phone.verify_signature(&message, &signature),
            "signed by Sari's phone"
        );
    }
}
