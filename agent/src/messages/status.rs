//! The `message/status` payload and the order statuses move in.
//!
//! `queued` → `sent` (the server took it) → `delivered` → `read`, or
//! `failed` with a reason. A status only moves forward: a late delivery
//! receipt after a read receipt changes nothing.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

pub const QUEUED: &str = "queued";
pub const SENT: &str = "sent";
pub const DELIVERED: &str = "delivered";
pub const READ: &str = "read";
pub const FAILED: &str = "failed";

/// From which statuses each one may be reached.
pub const TO_SENT: &[&str] = &[QUEUED];
pub const TO_DELIVERED: &[&str] = &[QUEUED, SENT];
pub const TO_READ: &[&str] = &[QUEUED, SENT, DELIVERED];
pub const TO_FAILED: &[&str] = &[QUEUED];

/// Reasons a send failed, machine-readable.
pub const NOT_ON_WHATSAPP: &str = "not_on_whatsapp";
pub const NOT_LINKED: &str = "not_linked";

/// `to` as HQ wrote it back: `+<digits>` for a phone number, the JID for
/// groups and LIDs.
pub fn shown_recipient(jid: &str) -> String {
    match jid.strip_suffix("@s.whatsapp.net") {
        Some(user) => format!("+{}", user.split(':').next().unwrap_or(user)),
        None => jid.to_string(),
    }
}

pub fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `{"id","client_id","to","status","at","error"?}`, to which the publisher
/// adds `seq` and `epoch` in front.
pub fn payload(entry: &outlet_store::OutboxEntry) -> Value {
    let mut body = json!({
        "id": entry.message_id,
        "client_id": entry.client_id,
        "to": shown_recipient(&entry.to_jid),
        "status": entry.status,
        "at": rfc3339(&entry.updated_at),
    });
    if let (Some(error), Value::Object(map)) = (&entry.error, &mut body) {
        map.insert("error".into(), Value::String(error.clone()));
    }
    body
}

pub fn payload_bytes(entry: &outlet_store::OutboxEntry) -> Vec<u8> {
    payload(entry).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_shown_as_numbers_or_jids() {
        assert_eq!(
            shown_recipient("6281111111111@s.whatsapp.net"),
            "+6281111111111"
        );
        assert_eq!(shown_recipient("120363@g.us"), "120363@g.us");
    }

    #[test]
    fn a_failure_says_why_and_a_success_has_no_error_field() {
        let mut entry = outlet_store::OutboxEntry {
            seq: 1,
            message_id: "3EB0AA".into(),
            client_id: Some("c1".into()),
            to_jid: "6281111111111@s.whatsapp.net".into(),
            text: None,
            quoted_id: None,
            queued_at: Utc::now(),
            status: SENT.into(),
            error: None,
            attempts: 1,
            updated_at: Utc::now(),
        };
        let ok = payload(&entry);
        assert!(ok.get("error").is_none(), "{ok}");
        assert_eq!(ok["to"], "+6281111111111");
        entry.status = FAILED.into();
        entry.error = Some(NOT_ON_WHATSAPP.into());
        assert_eq!(payload(&entry)["error"], NOT_ON_WHATSAPP);
    }
}
