//! Every record fits in one MQTT packet.
//!
//! A broker drops the connection of a client that sends a packet over its
//! limit, and the MQTT client refuses one over its own; either way the
//! publish queue would offer the same oldest record again after every
//! reconnect and never move past it. So no record is built larger than
//! `mqtt.max_packet_bytes` allows: the longest text in it is cut (at a
//! character boundary) until the record fits, and the field beside it says
//! so (`text_truncated: true`, `caption_truncated`, `vcard_truncated`, …).
//! A text over WhatsApp's own limit (65 536 characters, which only a
//! modified client can send) is cut to it first.

use serde_json::{Map, Value};

/// WhatsApp's limit on a text, in characters.
pub const MAX_TEXT_CHARS: usize = 65_536;
/// Room left in a packet for its fixed header, topic and packet id.
pub const PACKET_OVERHEAD: usize = 1024;
/// Cuts after which a record that still does not fit is cut to its head.
const MAX_CUTS: usize = 16;
/// Fields that say who, where, when and what, never cut.
const KEPT: &[&str] = &["id", "chat", "from", "from_lid", "at", "kind", "group"];

/// Whether `payload`, `encoded_len` bytes of JSON, goes out as it is: it
/// fits and its text is within WhatsApp's limit. (The inbox encodes every
/// record once; only one that does not fit pays for [`fit`].)
pub fn fits(payload: &Value, encoded_len: usize, max_bytes: usize) -> bool {
    encoded_len <= max_bytes
        && payload
            .get("text")
            .and_then(Value::as_str)
            .is_none_or(|t| t.len() <= MAX_TEXT_CHARS || t.chars().count() <= MAX_TEXT_CHARS)
}

/// Cuts `payload` to at most `max_bytes` of JSON. Returns the paths of the
/// fields it cut (empty when it fit as it was).
pub fn fit(payload: &mut Value, max_bytes: usize) -> Vec<String> {
    let mut cut = Vec::new();
    if let Some(text) = payload.get_mut("text")
        && let Value::String(s) = text
        && s.chars().count() > MAX_TEXT_CHARS
    {
        let end = s
            .char_indices()
            .nth(MAX_TEXT_CHARS)
            .map_or(s.len(), |(i, _)| i);
        s.truncate(end);
        mark(payload, &[], "text");
        cut.push("text".to_string());
    }
    for _ in 0..MAX_CUTS {
        let size = encoded_len(payload);
        if size <= max_bytes {
            return cut;
        }
        let Some((path, len)) = longest_string(payload, &mut Vec::new()) else {
            break;
        };
        // The marker takes a few bytes of its own.
        let excess = size - max_bytes + 32 + path.last().map_or(0, String::len);
        let keep = len.saturating_sub(excess);
        let Some(field) = get_mut(payload, &path) else {
            break;
        };
        if let Value::String(s) = field {
            truncate_escaped(s, keep);
        }
        let (leaf, parent) = path
            .split_last()
            .map_or((String::new(), &[][..]), |(l, p)| (l.clone(), p));
        mark(payload, parent, &leaf);
        let shown = path.join(".");
        if !cut.contains(&shown) {
            cut.push(shown);
        }
    }
    if encoded_len(payload) > max_bytes {
        // Nothing long enough to cut: keep who, where and when.
        let mut head = Map::new();
        if let Value::Object(fields) = payload {
            for key in KEPT {
                if let Some(v) = fields.get(*key) {
                    head.insert((*key).to_string(), v.clone());
                }
            }
        }
        head.insert("truncated".into(), Value::Bool(true));
        *payload = Value::Object(head);
        cut.push("*".into());
    }
    cut
}

fn encoded_len(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |v| v.len())
}

/// The longest string leaf outside [`KEPT`]: its path and encoded length.
fn longest_string(value: &Value, path: &mut Vec<String>) -> Option<(Vec<String>, usize)> {
    match value {
        Value::String(_) if path.len() != 1 || !KEPT.contains(&path[0].as_str()) => {
            Some((path.clone(), encoded_len(value)))
        }
        Value::Object(fields) => {
            let mut best: Option<(Vec<String>, usize)> = None;
            for (key, v) in fields {
                path.push(key.clone());
                if let Some(found) = longest_string(v, path)
                    && best.as_ref().is_none_or(|(_, len)| found.1 > *len)
                {
                    best = Some(found);
                }
                path.pop();
            }
            best
        }
        _ => None,
    }
}

fn get_mut<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, key| v.get_mut(key))
}

/// `<leaf>_truncated: true` beside the field at `parent`.`leaf`.
fn mark(payload: &mut Value, parent: &[String], leaf: &str) {
    if let Some(Value::Object(fields)) = get_mut(payload, parent) {
        fields.insert(format!("{leaf}_truncated"), Value::Bool(true));
    }
}

/// Cuts `s` so that its JSON encoding (quotes included) is at most `max`
/// bytes, at a character boundary.
fn truncate_escaped(s: &mut String, max: usize) {
    let mut used = 2;
    let mut end = 0;
    for (i, c) in s.char_indices() {
        let escaped = match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if used + escaped > max {
            break;
        }
        used += escaped;
        end = i + c.len_utf8();
    }
    s.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(text: &str) -> Value {
        json!({"id": "3EB0", "chat": "62811@s.whatsapp.net", "from": "+62811",
               "at": "2026-12-07T00:00:00Z", "kind": "text", "text": text})
    }

    #[test]
    fn a_record_that_fits_is_left_alone() {
        let mut r = record("halo");
        let before = r.clone();
        let len = serde_json::to_vec(&r).unwrap().len();
        assert!(fits(&r, len, 16 * 1024));
        assert!(fit(&mut r, 16 * 1024).is_empty());
        assert_eq!(r, before);
    }

    #[test]
    fn what_does_not_fit_is_exactly_what_fit_cuts() {
        let long = record(&"a".repeat(MAX_TEXT_CHARS + 1));
        let len = serde_json::to_vec(&long).unwrap().len();
        assert!(!fits(&long, len, 1024 * 1024), "over WhatsApp's limit");
        assert!(!fit(&mut long.clone(), 1024 * 1024).is_empty());
        let emoji = record(&"😀".repeat(MAX_TEXT_CHARS));
        let len = serde_json::to_vec(&emoji).unwrap().len();
        assert!(
            fits(&emoji, len, 1024 * 1024),
            "at the limit, in characters"
        );
        assert!(!fits(&emoji, len, 128 * 1024), "over the packet");
        assert!(!fit(&mut emoji.clone(), 128 * 1024).is_empty());
    }

    #[test]
    fn control_characters_are_counted_as_they_are_escaped() {
        // 200 000 control characters escape to 1.2 MB of JSON.
        let mut r = record(&"\u{1}".repeat(200_000));
        let cut = fit(&mut r, 256 * 1024);
        assert_eq!(cut, ["text"]);
        assert!(serde_json::to_vec(&r).unwrap().len() <= 256 * 1024);
        assert_eq!(r["text_truncated"], true);
        assert_eq!(r["id"], "3EB0");
        assert!(r["text"].as_str().unwrap().chars().all(|c| c == '\u{1}'));
    }

    #[test]
    fn emoji_are_cut_at_a_character_boundary_below_the_limit() {
        let mut r = record(&"😀".repeat(35_000));
        fit(&mut r, 128 * 1024 - PACKET_OVERHEAD);
        let bytes = serde_json::to_vec(&r).unwrap();
        assert!(
            bytes.len() <= 128 * 1024 - PACKET_OVERHEAD,
            "{}",
            bytes.len()
        );
        assert!(
            bytes.len() > 100 * 1024,
            "cut no more than needed: {}",
            bytes.len()
        );
        assert!(r["text"].as_str().unwrap().chars().all(|c| c == '😀'));
        assert_eq!(r["text_truncated"], true);
    }

    #[test]
    fn a_text_over_whatsapps_limit_is_cut_to_it() {
        let mut r = record(&"a".repeat(MAX_TEXT_CHARS + 10));
        assert_eq!(fit(&mut r, 1024 * 1024), ["text"]);
        assert_eq!(r["text"].as_str().unwrap().len(), MAX_TEXT_CHARS);
    }

    #[test]
    fn nested_fields_are_cut_and_marked_beside_themselves() {
        let mut r = json!({"id": "1", "kind": "contact",
                           "contact": {"display_name": "Budi", "vcard": "v".repeat(50_000)}});
        assert_eq!(fit(&mut r, 20_000), ["contact.vcard"]);
        assert_eq!(r["contact"]["vcard_truncated"], true);
        assert_eq!(r["contact"]["display_name"], "Budi");
        assert!(serde_json::to_vec(&r).unwrap().len() <= 20_000);
    }

    #[test]
    fn a_record_of_many_small_fields_keeps_its_head() {
        let mut fields = Map::new();
        fields.insert("id".into(), json!("1"));
        fields.insert("kind".into(), json!("unknown"));
        for i in 0..5_000 {
            fields.insert(format!("f{i}"), json!(i));
        }
        let mut r = Value::Object(fields);
        let cut = fit(&mut r, 1_000);
        assert_eq!(cut.last().map(String::as_str), Some("*"));
        assert_eq!(r, json!({"id": "1", "kind": "unknown", "truncated": true}));
    }
}
