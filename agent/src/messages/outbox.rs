//! The outbox: HQ's sends, durable from the moment they are answered.
//!
//! [`accept`] checks a `send` (number, text, limits, linked), writes it to
//! the store fsynced and only then answers `{"id","client_id","queued_at"}`.
//! The WhatsApp message id is chosen then, so a send repeated after a crash
//! (the stanza went out, the server's ack did not come back) carries the
//! same id and the recipient's phone shows one message. A `client_id` seen
//! before gets the first answer and is never queued twice.
//!
//! [`run`] sends the queue in order while connected, paced by
//! `messages.max_per_minute` with jitter. [`track`] turns the server's acks
//! into `sent` and the recipients' receipts into `delivered` and `read`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::RngExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use whatsapp_rust::Jid;
use whatsapp_rust::client::Client;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::waproto::whatsapp as wa;

use super::Messages;
use super::status::{self, rfc3339};
use crate::command::{CommandError, CommandResult, SendRequest, SendTarget};
use crate::health::SessionState;
use crate::phone::normalize_phone;

/// WhatsApp's limit on a text message, in characters.
pub const MAX_TEXT_CHARS: usize = 65_536;
/// `client_id`, `quoted_id` and the ids of `read` are ids, not documents.
pub(super) const MAX_ID_LEN: usize = 128;
/// How long a registration lookup at `send` time may take before the send
/// is queued unchecked (it is checked again before it goes out).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// A send that failed for a reason other than the connection is tried this
/// many times before it is reported failed.
const MAX_ATTEMPTS: u32 = 5;
/// Between such tries.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long a registration lookup is trusted, and how many are kept.
const REGISTERED_TTL: Duration = Duration::from_secs(24 * 3600);
const UNREGISTERED_TTL: Duration = Duration::from_secs(600);
const REGISTRATIONS_KEPT: usize = 10_000;
/// How long a send waits for the supervisor's first word after a start.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pacing jitter: each gap is the even spacing times a factor in this range.
const JITTER: (f64, f64) = (0.7, 1.3);

/// The recipient's JID for `to`: a JID as given (users, groups, LIDs), or
/// a number in any form `check_number` accepts.
pub fn recipient(to: &str, country_code: &str) -> Result<Jid, CommandError> {
    let to = to.trim();
    if to.contains('@') {
        let jid: Jid = to
            .parse()
            .map_err(|_| CommandError::InvalidFormat("not a JID".into()))?;
        let known = ["@s.whatsapp.net", "@g.us", "@lid"];
        if jid.user.is_empty() || !known.iter().any(|s| to.ends_with(s)) {
            return Err(CommandError::InvalidFormat(
                "a JID must end in @s.whatsapp.net, @g.us or @lid".into(),
            ));
        }
        return Ok(jid.to_non_ad());
    }
    Ok(Jid::pn(normalize_phone(to, country_code)?))
}

/// A character a reader sees: not whitespace, not a control character,
/// not one of the invisible format characters (zero-width spaces and
/// joiners, direction marks, the word joiner, the byte-order mark, soft
/// hyphen, variation selectors, Hangul and Braille blanks) that make a
/// text look empty on the customer's phone.
fn visible(c: char) -> bool {
    !c.is_whitespace()
        && !c.is_control()
        && !matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{206A}'..='\u{206F}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
        )
}

fn check_id(field: &str, value: &Option<String>) -> Result<(), CommandError> {
    match value {
        Some(v) if v.is_empty() || v.len() > MAX_ID_LEN => Err(CommandError::InvalidFormat(
            format!("{field} must be 1-{MAX_ID_LEN} characters"),
        )),
        _ => Ok(()),
    }
}

/// A WhatsApp-style message id (`3EB0` + 20 hex digits, as WhatsApp Web's).
fn new_message_id() -> String {
    let mut bytes = [0u8; 10];
    rand::fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    format!("3EB0{hex}")
}

/// Right after a start, sends the broker kept for the agent arrive before
/// the supervisor has read the stored identity: wait for it (briefly) so
/// they are not refused as "not linked".
async fn settled(messages: &Messages) {
    let mut health = messages.health.clone();
    let _ = tokio::time::timeout(
        SETTLE_TIMEOUT,
        health.wait_for(|h| h.state != SessionState::Starting || h.phone.is_some()),
    )
    .await;
}

/// The device cannot send for any account right now: unpaired, pairing,
/// or just unlinked. (Merely reconnecting is fine: the send waits.)
fn not_linked(messages: &Messages) -> Option<String> {
    let h = messages.health.borrow();
    match h.state {
        SessionState::Pairing
        | SessionState::PairingCode
        | SessionState::PairingIdle
        | SessionState::LoggedOut => Some(format!("the outlet is {} (not linked)", h.state)),
        _ if h.phone.is_none() => Some("the outlet has not been linked yet".into()),
        _ => None,
    }
}

fn answer(entry: &outlet_store::OutboxEntry, duplicate: bool) -> Value {
    let mut body = json!({
        "id": entry.message_id,
        "client_id": entry.client_id,
        "queued_at": rfc3339(&entry.queued_at),
        "status": entry.status,
    });
    if duplicate && let Value::Object(map) = &mut body {
        map.insert("duplicate".into(), Value::Bool(true));
    }
    body
}

/// Checks and queues a send; answers once it is durable.
#[async_trait::async_trait]
impl SendTarget for Messages {
    async fn accept(&self, request: SendRequest) -> CommandResult {
        accept(self, request).await
    }

    async fn read(&self, chat: String, ids: Vec<String>, sender: Option<String>) -> CommandResult {
        super::read::read(self, chat, ids, sender).await
    }
}

pub async fn accept(messages: &Messages, request: SendRequest) -> CommandResult {
    let jid = recipient(&request.to, &messages.config.outlet.country_code)?;
    let chars = request.text.chars().count();
    if !request.text.chars().any(visible) {
        return Err(CommandError::InvalidFormat(
            "empty text (nothing a customer could see)".into(),
        ));
    }

    if chars > MAX_TEXT_CHARS {
        return Err(CommandError::TextTooLong(format!(
            "{chars} characters; WhatsApp's limit is {MAX_TEXT_CHARS}"
        )));
    }
    check_id("client_id", &request.client_id)?;
    check_id("quoted_id", &request.quoted_id)?;
    settled(messages).await;
    let own = messages.health.borrow().phone.clone();
    if jid.is_pn() && own.is_some_and(|own| own == format!("+{}", jid.user)) {
        return Err(CommandError::InvalidFormat(
            "that is the outlet's own number".into(),
        ));
    }
    if let Some(reason) = not_linked(messages) {
        return Err(CommandError::NotLinked(reason));
    }
    // A repeated client_id gets the first answer whatever else changed.
    if let Some(client_id) = &request.client_id
        && let Some(existing) = existing(messages, client_id).await?
    {
        return Ok(answer(&existing, true));
    }
    // Connected: say "not on WhatsApp" now rather than in a status later.
    let client = messages.client.borrow().clone();
    if let Some(client) = client
        && jid.is_pn()
        && registered(messages, &client, &jid, Turn::IfFree).await == Some(false)
    {
        return Err(CommandError::NotOnWhatsApp);
    }
    let queued_at = Utc::now();
    let row = outlet_store::OutboundRequest {
        message_id: new_message_id(),
        client_id: request.client_id,
        to_jid: jid.to_string(),
        text: request.text,
        quoted_id: request.quoted_id,
        queued_at,
    };
    let queued_status = status::payload_bytes(&outlet_store::OutboxEntry {
        seq: 0,
        message_id: row.message_id.clone(),
        client_id: row.client_id.clone(),
        to_jid: row.to_jid.clone(),
        text: None,
        quoted_id: None,
        queued_at,
        status: status::QUEUED.into(),
        error: None,
        attempts: 0,
        updated_at: queued_at,
    });
    let outcome = messages
        .store
        .enqueue_outbound(row, messages.limits_outbox(), queued_status)
        .await
        .map_err(|e| CommandError::Failed(format!("cannot queue the message: {e}")))?;
    match outcome {
        outlet_store::Enqueued::Queued(entry) => {
            tracing::info!(id = %entry.message_id, "messages: send queued");
            messages.outbox_wake.notify_one();
            messages.queued_for_broker();
            Ok(answer(&entry, false))
        }
        outlet_store::Enqueued::Existing(entry) => Ok(answer(&entry, true)),
        outlet_store::Enqueued::Full { messages: n, bytes } => Err(CommandError::OutboxFull(
            format!("{n} messages ({bytes} bytes) wait to be sent; try again later"),
        )),
    }
}

async fn existing(
    messages: &Messages,
    client_id: &str,
) -> Result<Option<outlet_store::OutboxEntry>, CommandError> {
    messages
        .store
        .outbound_by_client_id(client_id)
        .await
        .map_err(|e| CommandError::Failed(format!("cannot read the outbox: {e}")))
}

/// Moves a send to a new status and queues the status for the broker.
async fn set_status(
    messages: &Messages,
    message_id: &str,
    from: &'static [&'static str],
    to: &'static str,
    error: Option<String>,
) -> Option<outlet_store::OutboxEntry> {
    match messages
        .store
        .set_outbound_status(message_id, from, to, error, Utc::now(), |entry| {
            status::payload_bytes(entry)
        })
        .await
    {
        Ok(Some(entry)) => {
            tracing::info!(id = %message_id, status = to, "messages: send status");
            messages.queued_for_broker();
            Some(entry)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, id = %message_id, "messages: cannot record a send status");
            None
        }
    }
}

/// A queued send failed for good, and HQ hears why.
async fn fail(messages: &Messages, message_id: &str, reason: impl Into<String>) {
    set_status(
        messages,
        message_id,
        status::TO_FAILED,
        status::FAILED,
        Some(reason.into()),
    )
    .await;
}

/// The gap before the next send.
fn pacing_gap(max_per_minute: u32) -> Duration {
    if max_per_minute == 0 {
        return Duration::ZERO;
    }
    let even = 60.0 / f64::from(max_per_minute);
    Duration::from_secs_f64(even * rand::rng().random_range(JITTER.0..JITTER.1))
}

fn text_message(text: String, quoted_id: Option<String>, to: &Jid) -> wa::Message {
    match quoted_id {
        None => wa::Message {
            conversation: Some(text),
            ..Default::default()
        },
        Some(quoted) => wa::Message {
            extended_text_message: buffa::MessageField::some(wa::message::ExtendedTextMessage {
                text: Some(text),
                context_info: buffa::MessageField::some(wa::ContextInfo {
                    stanza_id: Some(quoted),
                    participant: Some(to.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

/// Sends the queue, in order, while connected.
pub(super) async fn run(messages: Arc<Messages>) {
    let mut clients = messages.client.subscribe();
    let mut health = messages.health.clone();
    let mut next_at = Instant::now();
    // The last send handed to WhatsApp on the previous connection.
    let mut handed_through = 0;
    loop {
        fail_all_if_unlinked(&messages, &mut health).await;
        let client = clients.borrow_and_update().clone();
        let Some(client) = client else {
            tokio::select! {
                _ = clients.changed() => {}
                _ = health.changed() => {}
            }
            continue;
        };
        // A new connection starts from the first queued send: what went out
        // unacked on the last one goes again, with the same id.
        if handed_through > 0 {
            match messages.store.queued_outbound_through(handed_through).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(n, "messages: sending again what the server did not ack"),
                Err(e) => tracing::warn!(error = %e, "messages: cannot read the outbox"),
            }
        }
        handed_through = send_while_connected(&messages, &client, &mut clients, &mut next_at).await;
    }
}

/// Sends until the connection's client changes. Returns the seq of the last
/// send handed to WhatsApp on it (0 for none).
async fn send_while_connected(
    messages: &Messages,
    client: &Arc<Client>,
    clients: &mut tokio::sync::watch::Receiver<Option<Arc<Client>>>,
    next_at: &mut Instant,
) -> i64 {
    // Sends go in seq order; everything up to here went out on this
    // connection (see `next_outbound_after`).
    let mut handed_through = 0;
    loop {
        let next = match messages.store.next_outbound_after(handed_through).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "messages: cannot read the outbox");
                None
            }
        };
        let Some(entry) = next else {
            tokio::select! {
                _ = clients.changed() => return handed_through,
                () = messages.outbox_wake.notified() => continue,
                () = tokio::time::sleep(Duration::from_secs(5)) => continue,
            }
        };
        // Pacing, but a lost connection ends the wait.
        let wait = next_at.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            tokio::select! {
                _ = clients.changed() => return handed_through,
                () = tokio::time::sleep(wait) => {}
            }
        }
        let Some(text) = entry.text.clone() else {
            // Text already cleared: the server had it; nothing to send.
            handed_through = entry.seq;
            continue;
        };
        let Ok(jid) = entry.to_jid.parse::<Jid>() else {
            fail(messages, &entry.message_id, "invalid_recipient").await;
            continue;
        };
        if jid.is_pn() && registered(messages, client, &jid, Turn::Wait).await == Some(false) {
            fail(messages, &entry.message_id, status::NOT_ON_WHATSAPP).await;
            continue;
        }
        let message = text_message(text, entry.quoted_id.clone(), &jid);
        let options =
            whatsapp_rust::send::SendOptions::default().with_message_id(entry.message_id.clone());
        let result = client
            .send_message_with_options(jid.clone(), message, options)
            .await;
        *next_at = Instant::now() + pacing_gap(messages.config.messages.max_per_minute);
        match result {
            Ok(_) => handed_through = entry.seq,
            Err(whatsapp_rust::send::SendError::InvalidRequest(why)) => {
                tracing::warn!(id = %entry.message_id, %why, "messages: WhatsApp refused the send");
                fail(
                    messages,
                    &entry.message_id,
                    format!("invalid_request: {why}"),
                )
                .await;
            }
            Err(e @ whatsapp_rust::send::SendError::NotLoggedIn)
            | Err(e @ whatsapp_rust::send::SendError::Client(_)) => {
                // The connection: the send waits for the next one.
                tracing::info!(error = %e, id = %entry.message_id, "messages: send waits for the connection");
                tokio::select! {
                    _ = clients.changed() => return handed_through,
                    () = tokio::time::sleep(RETRY_AFTER) => {}
                }
            }
            Err(e) => {
                let attempts = messages
                    .store
                    .count_attempt(&entry.message_id)
                    .await
                    .unwrap_or(MAX_ATTEMPTS);
                tracing::warn!(error = %e, id = %entry.message_id, attempts, "messages: send failed");
                if attempts >= MAX_ATTEMPTS {
                    fail(messages, &entry.message_id, format!("send_failed: {e}")).await;
                } else {
                    tokio::select! {
                        _ = clients.changed() => return handed_through,
                        () = tokio::time::sleep(RETRY_AFTER) => {}
                    }
                }
            }
        }
    }
}

/// Whether `jid` has WhatsApp: remembered (a day for yes, ten minutes for
/// no: a customer may install it), so a broadcast to many numbers or a
/// send checked at `send` time and again before it goes out costs one
/// lookup. `None`: the lookup failed; the send itself then says what is
/// wrong.
async fn registered(messages: &Messages, client: &Client, jid: &Jid, turn: Turn) -> Option<bool> {
    let key = jid.to_string();
    {
        let known = super::lock(&messages.registrations);
        if let Some((answer, at)) = known.get(&key) {
            let ttl = if *answer {
                REGISTERED_TTL
            } else {
                UNREGISTERED_TTL
            };
            if at.elapsed() < ttl {
                return Some(*answer);
            }
        }
    }
    // A number this outlet has reached before has WhatsApp: no lookup.
    let reached = messages.store.reached_before(&key).await.unwrap_or(false);
    let answer = if reached {
        true
    } else {
        // Paced with every other lookup; no turn: unknown, and the send
        // itself says what is wrong.
        match turn {
            Turn::Wait => messages.lookups.turn().await.ok()?,
            Turn::IfFree => messages.lookups.try_now().then_some(())?,
        }
        match tokio::time::timeout(
            LOOKUP_TIMEOUT,
            client.contacts().is_on_whatsapp(std::slice::from_ref(jid)),
        )
        .await
        {
            Ok(Ok(results)) => results.iter().any(|r| r.is_registered),
            _ => return None,
        }
    };
    let mut known = super::lock(&messages.registrations);
    if known.len() >= REGISTRATIONS_KEPT {
        known.clear();
    }
    known.insert(key, (answer, Instant::now()));
    Some(answer)
}

/// How a lookup takes its turn (`crate::pacing`).
#[derive(Debug, Clone, Copy)]
enum Turn {
    /// Before a send goes out: the outbox waits anyway (sends are paced).
    Wait,
    /// While HQ waits for `send`'s answer: only a free turn, else the check
    /// is left to the outbox.
    IfFree,
}

/// An unlinked device cannot send for the account that unlinked it: what
/// is still queued fails, and HQ hears why.
async fn fail_all_if_unlinked(
    messages: &Messages,
    health: &mut tokio::sync::watch::Receiver<Health>,
) {
    let logged_out = health.borrow_and_update().state == SessionState::LoggedOut;
    if !logged_out {
        return;
    }
    let Ok(queued) = messages.store.queued_outbound().await else {
        return;
    };
    for entry in queued {
        fail(
            messages,
            &entry.message_id,
            format!("{}: the device was unlinked", status::NOT_LINKED),
        )
        .await;
    }
}

use crate::health::Health;

/// The session's server acks and receipts → statuses.
pub(super) async fn track(
    messages: Arc<Messages>,
    mut events: mpsc::UnboundedReceiver<Arc<Event>>,
) {
    while let Some(event) = events.recv().await {
        match &*event {
            Event::ServerAck(ack) if ack.class.as_deref() == Some("message") => match &ack.error {
                None => {
                    set_status(&messages, &ack.id, status::TO_SENT, status::SENT, None).await;
                }
                Some(code) => {
                    fail(
                        &messages,
                        &ack.id,
                        format!("refused_by_server: error {code}"),
                    )
                    .await;
                }
            },
            Event::Receipt(receipt) => {
                use whatsapp_rust::types::presence::ReceiptType;
                let (from, to) = match receipt.r#type {
                    ReceiptType::Delivered => (status::TO_DELIVERED, status::DELIVERED),
                    ReceiptType::Read | ReceiptType::Played => (status::TO_READ, status::READ),
                    _ => continue,
                };
                for id in &receipt.message_ids {
                    // Receipts can overtake each other and the server's ack:
                    // whatsapp-rust hands them to listeners concurrently, and
                    // a read receipt may come before the delivery one. A read
                    // message was delivered, a delivered one sent: the
                    // statuses HQ sees have no hole.
                    set_status(&messages, id.as_str(), status::TO_SENT, status::SENT, None).await;
                    if to == status::READ {
                        set_status(
                            &messages,
                            id.as_str(),
                            status::TO_DELIVERED,
                            status::DELIVERED,
                            None,
                        )
                        .await;
                    }
                    set_status(&messages, id.as_str(), from, to, None).await;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_jids_name_a_recipient() {
        let pn = recipient("0811-1111-1111", "62").unwrap();
        assert_eq!(pn.to_string(), "6281111111111@s.whatsapp.net");
        let device = recipient("6281111111111:3@s.whatsapp.net", "62").unwrap();
        assert_eq!(device.to_string(), "6281111111111@s.whatsapp.net");
        let group = recipient("120363000000000000@g.us", "62").unwrap();
        assert_eq!(group.to_string(), "120363000000000000@g.us");
        for bad in ["", "abc", "12", "x@example.com", "@s.whatsapp.net"] {
            assert!(recipient(bad, "62").is_err(), "{bad}");
        }
    }

    #[test]
    fn a_text_of_invisible_characters_is_empty() {
        for empty in [
            " \n\t",
            "\u{200B}\u{200D}",
            "\u{FEFF}\u{2060}",
            "\u{3164}",
            "\u{2800} \u{00AD}",
        ] {
            assert!(!empty.chars().any(visible), "{empty:?}");
        }
        for text in ["ok", " a ", "😀", "\u{200B}x", "٣"] {
            assert!(text.chars().any(visible), "{text:?}");
        }
    }

    #[test]
    fn message_ids_look_like_whatsapp_webs() {
        let a = new_message_id();
        assert_eq!(a.len(), 24);
        assert!(a.starts_with("3EB0"));
        assert_ne!(a, new_message_id());
    }

    #[test]
    fn pacing_spreads_sends_around_the_even_spacing() {
        for _ in 0..100 {
            let gap = pacing_gap(20).as_secs_f64();
            assert!((2.1..=3.9).contains(&gap), "{gap}");
        }
        assert_eq!(pacing_gap(0), Duration::ZERO);
    }

    #[test]
    fn a_reply_quotes_its_message() {
        let to = Jid::pn("6281111111111");
        let m = text_message("hi".into(), Some("ABC".into()), &to);
        let ctx = m.extended_text_message.context_info.clone();
        assert_eq!(ctx.stanza_id.as_deref(), Some("ABC"));
        assert_eq!(
            text_message("hi".into(), None, &to).conversation.as_deref(),
            Some("hi")
        );
    }
}
