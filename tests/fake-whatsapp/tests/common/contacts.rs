//! Helpers for the messaging tests: reading messages and receipts off a
//! plain client's events, and waiting on what the simulated contacts saw.

#![allow(dead_code)]

use std::sync::Arc;

use fake_whatsapp::{FakeServer, ServerEvent};
use tokio::sync::broadcast;
use waproto::whatsapp as wa;
use whatsapp_rust::types::events::Event;

use super::{DEADLINE, TestClient};

/// An inbound message as a test looks at it.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub id: String,
    /// Who sent it, as a phone shows it: the number beside a LID sender
    /// when WhatsApp gave one (`sender_pn`), else the sender's JID.
    pub from: String,
    /// The sender JID as the stanza carried it (a LID or a number).
    pub sender: String,
    /// The other address WhatsApp gave for the sender, if any.
    pub sender_alt: Option<String>,
    pub chat: String,
    pub message: Arc<wa::Message>,
    pub offline: bool,
}

impl Inbound {
    /// The text of a plain or extended text message.
    pub fn text(&self) -> Option<String> {
        self.message.conversation.clone().or_else(|| {
            self.message
                .extended_text_message
                .as_option()
                .and_then(|e| e.text.clone())
        })
    }
}

/// True when `address` (a JID a stanza or a queue entry carries) is
/// `number`'s, by its number or by its LID.
pub fn is_from(address: &str, number: &str) -> bool {
    address.starts_with(number) || address.starts_with(&fake_whatsapp::lid_for(number))
}

/// Every inbound message of an event (a batch may carry several).
pub fn inbound(event: &Event) -> Vec<Inbound> {
    match event {
        Event::Messages(batch) => batch
            .iter()
            .map(|m| Inbound {
                id: m.info.id.to_string(),
                from: match &m.info.source.sender_alt {
                    Some(alt) if m.info.source.sender.is_lid() && alt.is_pn() => alt.to_string(),
                    _ => m.info.source.sender.to_string(),
                },
                sender: m.info.source.sender.to_string(),
                sender_alt: m.info.source.sender_alt.as_ref().map(ToString::to_string),
                chat: m.info.source.chat.to_string(),
                message: m.message.clone(),
                offline: m.info.is_offline,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Collects the next `n` inbound messages accepted by `keep`, in order.
pub async fn messages(
    client: &mut TestClient,
    n: usize,
    mut keep: impl FnMut(&Inbound) -> bool,
) -> Vec<Inbound> {
    let mut out = Vec::new();
    let events = &mut client.events;
    let wait = async {
        while out.len() < n {
            let event = events.recv().await.expect("client event stream ended");
            out.extend(inbound(&event).into_iter().filter(|m| keep(m)));
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {n} messages"));
    out
}

/// Waits for the next server event `pick` maps to `Some`.
pub async fn server_pick<T>(
    events: &mut broadcast::Receiver<ServerEvent>,
    what: &str,
    mut pick: impl FnMut(&ServerEvent) -> Option<T>,
) -> T {
    let mut found = None;
    FakeServer::wait_for(events, DEADLINE, what, |e| {
        found = pick(e);
        found.is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    found.expect("picked")
}

/// The JID of a contact's phone.
pub fn jid(number: &str) -> whatsapp_rust::Jid {
    format!("{number}@s.whatsapp.net").parse().expect("jid")
}
