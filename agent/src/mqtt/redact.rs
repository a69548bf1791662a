//! What of the health leaves the device.
//!
//! Project rule: no key material, no QR string and no full phone number in
//! MQTT unless configured. `Health` never serialises the QR string; this
//! module masks the phone number to its last four digits, and masks long
//! digit runs in the free-text fields (error texts and transition reasons
//! come partly from whatsapp-rust, which writes JIDs — phone numbers — into
//! its errors).

use serde_json::Value;

use crate::health::{Health, Transition, mask_phone};
use crate::logging::mask_digit_runs;

/// The `state` payload (and the `status` response).
pub fn health_json(health: &Health, full_phone: bool) -> Value {
    let mut value = serde_json::to_value(health).unwrap_or(Value::Null);
    mask_health_value(&mut value, full_phone);
    value
}

/// Masks a health snapshot already in JSON form (the supervisor's answer
/// to `status`).
pub fn mask_health_value(value: &mut Value, full_phone: bool) {
    if !full_phone && let Value::Object(map) = value {
        if let Some(Value::String(phone)) = map.get_mut("phone") {
            *phone = mask_phone(phone);
        }
        if let Some(Value::Object(code)) = map.get_mut("pair_code")
            && let Some(Value::String(phone)) = code.get_mut("phone")
        {
            *phone = mask_phone(phone);
        }
        mask_text(map.get_mut("last_error"));
        if let Some(Value::Object(disconnect)) = map.get_mut("last_disconnect") {
            mask_text(disconnect.get_mut("reason"));
        }
    }
}

/// One `event` payload.
pub fn transition_json(transition: &Transition, full_phone: bool) -> Value {
    let mut value = serde_json::to_value(transition).unwrap_or(Value::Null);
    if !full_phone && let Value::Object(map) = &mut value {
        mask_text(map.get_mut("reason"));
    }
    value
}

fn mask_text(field: Option<&mut Value>) {
    if let Some(Value::String(text)) = field {
        *text = String::from_utf8_lossy(&mask_digit_runs(text.as_bytes())).into_owned();
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::health::{LastDisconnect, SessionState};

    fn health() -> Health {
        let mut h = Health::new("jkt-01", Utc::now(), chrono::Duration::seconds(60));
        h.phone = Some("+6281234567890".into());
        h.last_error = Some("iq to 6281234567890@s.whatsapp.net timed out".into());
        h.last_disconnect = Some(LastDisconnect {
            at: Utc::now(),
            reason: "stream error from 6281234567890:3@s.whatsapp.net".into(),
        });
        h
    }

    #[test]
    fn phone_numbers_leave_masked_by_default() {
        let text = health_json(&health(), false).to_string();
        assert!(!text.contains("6281234567890"), "{text}");
        assert!(text.contains("\"phone\":\"+*********7890\""), "{text}");
        assert!(text.contains("*********7890@s.whatsapp.net"), "{text}");
        // Timestamps keep their digits.
        let h = health();
        assert!(
            text.contains(
                &serde_json::to_value(h.since)
                    .expect("ts")
                    .as_str()
                    .expect("s")[..4]
            )
        );
    }

    #[test]
    fn full_numbers_only_when_configured() {
        let text = health_json(&health(), true).to_string();
        assert!(text.contains("\"phone\":\"+6281234567890\""), "{text}");
    }

    #[test]
    fn transition_reasons_are_masked() {
        let t = Transition {
            at: Utc::now(),
            from: SessionState::Pairing,
            to: SessionState::Connecting,
            reason: "linked to 6281234567890".into(),
        };
        let text = transition_json(&t, false).to_string();
        assert!(!text.contains("6281234567890"), "{text}");
        assert!(text.contains("\"from\":\"pairing\""), "{text}");
    }
}
