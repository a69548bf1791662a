//! Who wrote: a customer's number and LID, found before the inbox commits
//! their message.
//!
//! WhatsApp now addresses most chats by LID (`<digits>@lid`) and names the
//! customer's number beside it (`sender_pn`, `participant_pn`; whatsapp-rust's
//! `sender_alt`) only when the customer shares it. HQ knows its customers by
//! number, so the inbox looks for it in this order:
//!
//! 1. the message itself (the sender or the address beside it);
//! 2. the LID↔number mappings of the session's store (`lid_pn_mappings` in
//!    session.db), which whatsapp-rust fills from earlier messages and
//!    lookups;
//! 3. WhatsApp (a usync lookup by LID), which names the number only when the
//!    customer shares it. A LID without one is remembered for
//!    [`HIDDEN_TTL`] (a failed lookup for 30 s), so a chatty hidden customer
//!    costs one lookup, not one per message.
//!
//! A mapping the message carried is written to the store when the store
//! does not have it yet: whatsapp-rust keeps the ones it learns from live
//! messages but not from messages delivered while the agent was offline.

use std::time::{Duration, Instant};

use whatsapp_rust::Jid;
use whatsapp_rust::client::Client;
use whatsapp_rust::wacore::types::lid_pn::LearningSource;
use whatsapp_rust::wacore::types::message::MessageInfo;
use whatsapp_rust::wacore_binary::JidExt as _;

use super::Messages;
use super::inbound::KnownSender;

/// A lookup in the inbox's path may hold back the acks of its batch this
/// long at most.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a LID whose number WhatsApp did not give is not asked again…
pub(super) const HIDDEN_TTL: Duration = Duration::from_secs(600);
/// …and one whose lookup failed or timed out.
const FAILED_TTL: Duration = Duration::from_secs(30);
/// Bound of the remembered hidden LIDs (forgotten all at once when full).
const HIDDEN_KEPT: usize = 10_000;

/// The sender of `info` by number and LID, as far as the message, the
/// store and WhatsApp know. Never fails: what cannot be found is left out.
pub(super) async fn resolve(
    messages: &Messages,
    client: &Client,
    info: &MessageInfo,
) -> KnownSender {
    let source = &info.source;
    let mut who = KnownSender::from_source(source);
    if source.is_from_me || source.chat.is_status_broadcast() || source.chat.is_newsletter() {
        return who;
    }
    match (who.number.clone(), who.lid.clone()) {
        (Some(number), Some(lid)) => remember(client, &lid, &number).await,
        (None, Some(lid)) => {
            who.number = match stored(client, &Jid::lid(lid.clone())).await {
                Some(entry) => Some(entry.phone_number.to_string()),
                None => ask_whatsapp(messages, client, &lid).await,
            };
        }
        (Some(number), None) => {
            who.lid = stored(client, &Jid::pn(number))
                .await
                .map(|entry| entry.lid.to_string());
        }
        (None, None) => {}
    }
    who
}

async fn stored(
    client: &Client,
    jid: &Jid,
) -> Option<whatsapp_rust::wacore::types::lid_pn::LidPnEntry> {
    match client.get_lid_pn_entry(jid).await {
        Ok(entry) => entry,
        Err(e) => {
            tracing::warn!(error = %e, "messages: cannot read the LID mappings of the session store");
            None
        }
    }
}

/// Writes `lid` ↔ `number` to the session's store unless it holds it.
async fn remember(client: &Client, lid: &str, number: &str) {
    let known = stored(client, &Jid::lid(lid.to_string())).await;
    if known.is_some_and(|e| &*e.phone_number == number) {
        return;
    }
    if let Err(e) = client
        .add_lid_pn_mapping(lid, number, LearningSource::PeerLidMessage)
        .await
    {
        tracing::warn!(error = %e, "messages: cannot keep a customer's LID mapping");
    }
}

/// WhatsApp's answer to "whose LID is this", when the customer shares the
/// number. whatsapp-rust stores the mapping it learns.
async fn ask_whatsapp(messages: &Messages, client: &Client, lid: &str) -> Option<String> {
    {
        let hidden = super::lock(&messages.hidden_lids);
        if hidden.get(lid).is_some_and(|until| Instant::now() < *until) {
            return None;
        }
    }
    // Paced with every other lookup, but the inbox never waits for a
    // turn: without one the customer is named by the LID this time, and
    // asked about again soon.
    if !messages.lookups.try_now() {
        tracing::debug!("messages: no lookup turn free for a LID");
        let mut hidden = super::lock(&messages.hidden_lids);
        if hidden.len() >= HIDDEN_KEPT {
            hidden.clear();
        }
        hidden.insert(lid.to_string(), Instant::now() + FAILED_TTL);
        return None;
    }
    let asked = tokio::time::timeout(
        LOOKUP_TIMEOUT,
        client
            .contacts()
            .is_on_whatsapp(&[Jid::lid(lid.to_string())]),
    )
    .await;
    let (number, ttl) = match asked {
        Ok(Ok(results)) => (
            results
                .iter()
                .find_map(|r| r.pn_jid.as_ref().map(|pn| pn.user.to_string())),
            HIDDEN_TTL,
        ),
        // A failed or slow lookup is not tried again for every message
        // either (the inbox must not wait on it), but soon.
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "messages: a LID lookup failed");
            (None, FAILED_TTL)
        }
        Err(_) => (None, FAILED_TTL),
    };
    if number.is_none() {
        let mut hidden = super::lock(&messages.hidden_lids);
        if hidden.len() >= HIDDEN_KEPT {
            hidden.clear();
        }
        hidden.insert(lid.to_string(), Instant::now() + ttl);
    }
    number
}
