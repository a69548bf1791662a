//! What leaves the device over MQTT.
//!
//! Project rule: no key material, no QR string and no full phone number in
//! MQTT unless configured. `Health` never serialises the QR string; this
//! module adds it only where `pairing.publish_qr` asks for it, masks phone
//! numbers to their last four digits, and masks phone numbers and JIDs in
//! the free-text fields (error texts and transition reasons come partly from
//! whatsapp-rust, which writes JIDs — phone numbers — into its errors, and
//! a refused request may quote the number it was sent).

use serde_json::Value;

use crate::config::Config;
use crate::health::{Health, Transition};
use crate::phone::{mask_phone, mask_phone_numbers};

/// What the configuration allows to be published in full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Disclosure {
    /// `mqtt.publish_full_phone`.
    pub full_phone: bool,
    /// `pairing.publish_qr`: the QR string in `state`, for a dashboard that
    /// shows codes remotely.
    pub qr: bool,
}

impl Disclosure {
    pub fn from_config(config: &Config) -> Self {
        Self {
            full_phone: config.mqtt.publish_full_phone,
            qr: config.pairing.publish_qr,
        }
    }
}

/// The `state` payload.
pub fn health_json(health: &Health, disclosure: Disclosure) -> Value {
    let mut value = serde_json::to_value(health).unwrap_or(Value::Null);
    mask_health_value(&mut value, disclosure.full_phone);
    if disclosure.qr
        && let Some(qr) = &health.qr
        && let Some(Value::Object(shown)) = value.get_mut("qr")
    {
        shown.insert("code".into(), Value::String(qr.code.clone()));
    }
    value
}

/// A command's answer as it goes out on `response/<command>`: the phone
/// number it names (`check_number`, `pair_code`, `status`) and any number
/// quoted in an error are masked.
pub fn answer_json(name: &str, result: &mut Result<Value, String>, full_phone: bool) {
    if full_phone {
        return;
    }
    match result {
        Ok(data) if name == "status" => mask_health_value(data, false),
        Ok(Value::Object(data)) => {
            if let Some(Value::String(phone)) = data.get_mut("phone") {
                *phone = mask_phone(phone);
            }
        }
        Ok(_) => {}
        Err(text) => *text = masked(text),
    }
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
        *text = masked(text);
    }
}

fn masked(text: &str) -> String {
    String::from_utf8_lossy(&mask_phone_numbers(text.as_bytes())).into_owned()
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

    const MASKED: Disclosure = Disclosure {
        full_phone: false,
        qr: false,
    };

    #[test]
    fn phone_numbers_leave_masked_by_default() {
        let text = health_json(&health(), MASKED).to_string();
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
        let full = Disclosure {
            full_phone: true,
            ..MASKED
        };
        let text = health_json(&health(), full).to_string();
        assert!(text.contains("\"phone\":\"+6281234567890\""), "{text}");
    }

    #[test]
    fn the_qr_string_only_when_configured() {
        let mut h = health();
        h.qr = Some(crate::health::QrStatus {
            index: 1,
            count: 6,
            issued_at: Utc::now(),
            expires_at: Utc::now(),
            code: "2@secret-ref,noise,identity,adv".into(),
        });
        let hidden = health_json(&h, MASKED);
        assert!(!hidden.to_string().contains("secret-ref"), "{hidden}");
        assert_eq!(hidden["qr"]["index"], 1);
        let shown = health_json(&h, Disclosure { qr: true, ..MASKED });
        assert_eq!(shown["qr"]["code"], "2@secret-ref,noise,identity,adv");
        assert!(!shown.to_string().contains("6281234567890"), "{shown}");
    }

    #[test]
    fn answers_name_numbers_masked() {
        let mut checked = Ok(serde_json::json!({"phone": "+6281111111111", "registered": true}));
        answer_json("check_number", &mut checked, false);
        assert_eq!(
            checked,
            Ok(serde_json::json!({"phone": "+*********1111", "registered": true}))
        );
        let mut refused = Err("bad request: invalid type: integer `6281111111111`".to_string());
        answer_json("check_number", &mut refused, false);
        assert_eq!(
            refused,
            Err("bad request: invalid type: integer `*********1111`".to_string())
        );
        // The supervisor writes times to the second, which stay readable.
        let mut later =
            Err("link codes used up for this hour; next at 2026-11-29T19:02:03Z".into());
        answer_json("pair_code", &mut later, false);
        assert_eq!(
            later,
            Err("link codes used up for this hour; next at 2026-11-29T19:02:03Z".to_string())
        );
        let mut status = Ok(serde_json::to_value(health()).expect("json"));
        answer_json("status", &mut status, false);
        let text = format!("{status:?}");
        assert!(!text.contains("6281234567890"), "{text}");
        let mut full = Ok(serde_json::json!({"phone": "+6281111111111"}));
        answer_json("pair_code", &mut full, true);
        assert_eq!(full, Ok(serde_json::json!({"phone": "+6281111111111"})));
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
