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
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Followup {
    /// The client went active: deliver the (empty) offline queue.
    pub offline_delivery: bool,
}

/// The answer to one IQ `get`/`set` from the client.
pub(crate) fn answer(shared: &Shared, iq: &Node) -> (Node, Followup) {
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
            // Pre-key upload and rotation.
            ("encrypt", "registration" | "rotate") => Ok(Vec::new()),
            // Pre-key count: plenty, so the client does not top up.
            ("encrypt", "count") => {
                Ok(vec![NodeBuilder::new("count").attr("value", "812").build()])
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
            // Pre-key bundles of other devices, digest checks, media hosts...
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

/// `<ib><offline count="0"/></ib>`: the offline queue is empty. Without it
/// the client waits a minute before it considers itself connected.
pub(crate) fn offline_done() -> Node {
    NodeBuilder::new("ib")
        .attr("from", "s.whatsapp.net")
        .children([NodeBuilder::new("offline").attr("count", "0").build()])
        .build()
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

/// Contact and device lookups. A `<contact>` query is answered from the
/// configured registered numbers; a device query for the account lists the
/// phone (device 0) and every linked companion.
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
                    let registered =
                        number == account.phone || state.registered_numbers.contains(&number);
                    let mut children = Vec::new();
                    if wants_contact {
                        children.push(
                            NodeBuilder::new("contact")
                                .attr("type", if registered { "in" } else { "out" })
                                .build(),
                        );
                    }
                    if wants_devices && registered {
                        let mut ids = vec![0u16];
                        if number == account.phone {
                            ids.extend(state.devices.keys().copied());
                        }
                        children.push(
                            NodeBuilder::new("devices")
                                .attr("version", "2")
                                .children([NodeBuilder::new("device-list")
                                    .children(ids.into_iter().map(|id| {
                                        NodeBuilder::new("device")
                                            .attr("id", id.to_string())
                                            .build()
                                    }))
                                    .build()])
                                .build(),
                        );
                    }
                    if wants_lid && number == account.phone {
                        children.push(
                            NodeBuilder::new("lid")
                                .attr("val", format!("{}@lid", account.lid))
                                .build(),
                        );
                    }
                    NodeBuilder::new("user")
                        .attr("jid", format!("{number}@s.whatsapp.net"))
                        .children(children)
                        .build()
                })
                .collect()
        })
        .unwrap_or_default();

    NodeBuilder::new("usync")
        .children([NodeBuilder::new("list").children(users).build()])
        .build()
}

/// An attribute as a string (JIDs and tokens included).
pub(crate) fn attr(node: &Node, key: &str) -> Option<String> {
    node.attrs.get(key).map(|v| v.to_string())
}
