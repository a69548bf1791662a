//! What the dashboard knows of every outlet: the last retained `state`,
//! `availability` and `telemetry`, and the recent `event`s, as the broker
//! delivered them.
//!
//! The model keeps what the agents published, minus what a browser at HQ
//! must not see: the QR string (it carries the pairing secret) and the full
//! phone number. Whether an outlet is stale is decided by the page against
//! its own clock, so a snapshot goes stale on screen even when nothing
//! arrives at all.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value, json};

use crate::phone::mask_phone;
use crate::topics::PrefixPattern;

/// Transitions kept per outlet for its detail view.
pub const EVENTS_KEPT: usize = 20;
/// The largest `state`, `telemetry` or response taken (an agent's are a
/// few hundred bytes to a few KiB).
pub const MAX_RECORD_BYTES: usize = 16 * 1024;
/// The largest `event` taken (a transition: a few hundred bytes).
pub const MAX_EVENT_BYTES: usize = 4 * 1024;
/// Outlets known at once; messages of more are refused.
pub const MAX_OUTLETS: usize = 10_000;
/// The longest outlet id taken.
pub const MAX_ID_LEN: usize = 128;
// So an outlet's view is at most about 2 × 16 + 20 × 4 = 112 KiB of JSON
// whatever it publishes, a fleet's model is bounded by its size, and a
// change sent to the pages is one such view.

/// One outlet, as the broker last told it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutletView {
    pub availability: Option<String>,
    pub state: Option<Value>,
    pub telemetry: Option<Value>,
    /// HQ's audit of its numbered records (`fleet audit`'s retained
    /// summary: last seq, missing, lost), if an audit runs.
    pub audit: Option<Value>,
    /// Newest last.
    pub events: VecDeque<Value>,
}

impl OutletView {
    pub fn to_json(&self, id: &str) -> Value {
        json!({
            "id": id,
            "availability": self.availability,
            "state": self.state,
            "telemetry": self.telemetry,
            "audit": self.audit,
            "events": self.events,
        })
    }
}

/// What a message changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// An outlet's view (send it to the pages).
    Outlet(String),
    /// An outlet's retained messages were all cleared: it is gone.
    Removed(String),
    /// An agent's answer to a request (`transaction`, the whole response).
    Response { outlet: String, response: Value },
}

/// Every outlet under one prefix pattern.
#[derive(Debug)]
pub struct FleetModel {
    pattern: PrefixPattern,
    outlets: BTreeMap<String, OutletView>,
}

impl FleetModel {
    pub fn new(pattern: PrefixPattern) -> Self {
        Self {
            pattern,
            outlets: BTreeMap::new(),
        }
    }

    pub fn pattern(&self) -> &PrefixPattern {
        &self.pattern
    }

    pub fn len(&self) -> usize {
        self.outlets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outlets.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&OutletView> {
        self.outlets.get(id)
    }

    /// Every outlet's view, in id order.
    pub fn snapshot(&self) -> Vec<Value> {
        self.outlets
            .iter()
            .map(|(id, view)| view.to_json(id))
            .collect()
    }

    /// Applies one message from the broker. Payloads that are not what an
    /// agent publishes are ignored (logged by the caller, never fatal): a
    /// broken outlet must not take the page down for the others.
    pub fn apply(&mut self, topic: &str, payload: &[u8]) -> Result<Option<Change>, String> {
        let Some((id, leaf)) = self.pattern.split_leaves(topic) else {
            return Ok(None);
        };
        let limit = if leaf == "event" {
            MAX_EVENT_BYTES
        } else {
            MAX_RECORD_BYTES
        };
        if payload.len() > limit {
            return Err(format!(
                "{topic}: {} bytes, over the dashboard's {limit}",
                payload.len()
            ));
        }
        if id.len() > MAX_ID_LEN {
            return Err(format!("{topic}: an outlet id over {MAX_ID_LEN} bytes"));
        }
        if self.outlets.len() >= MAX_OUTLETS
            && !self.outlets.contains_key(id)
            && !payload.is_empty()
        {
            return Err(format!(
                "{topic}: more than {MAX_OUTLETS} outlets; not shown"
            ));
        }
        if let Some(command) = leaf.strip_prefix("response/") {
            let mut response: Value =
                serde_json::from_slice(payload).map_err(|e| format!("{topic}: not JSON: {e}"))?;
            if let Some(data) = response.get_mut("data") {
                redact(data);
            }
            response["command"] = json!(command);
            return Ok(Some(Change::Response {
                outlet: id.to_string(),
                response,
            }));
        }
        if leaf == "audit" {
            return self.apply_audit(topic, id, payload);
        }
        if !matches!(leaf, "state" | "availability" | "telemetry" | "event") {
            return Ok(None);
        }
        if payload.is_empty() {
            // A cleared retained message: the outlet was decommissioned
            // (or its state removed by hand). Gone once nothing is left.
            let Some(view) = self.outlets.get_mut(id) else {
                return Ok(None);
            };
            match leaf {
                "state" => view.state = None,
                "availability" => view.availability = None,
                "telemetry" => view.telemetry = None,
                _ => return Ok(None),
            }
            if view.state.is_none() && view.availability.is_none() && view.telemetry.is_none() {
                self.outlets.remove(id);
                return Ok(Some(Change::Removed(id.to_string())));
            }
            return Ok(Some(Change::Outlet(id.to_string())));
        }
        match leaf {
            "availability" => {
                let text = std::str::from_utf8(payload)
                    .map_err(|_| format!("{topic}: not UTF-8"))?
                    .trim();
                if text.len() > 32 {
                    return Err(format!(
                        "{topic}: not an availability ({} bytes)",
                        text.len()
                    ));
                }
                let view = self.outlets.entry(id.to_string()).or_default();
                view.availability = Some(text.to_string());
            }
            _ => {
                let mut value: Value = serde_json::from_slice(payload)
                    .map_err(|e| format!("{topic}: not JSON: {e}"))?;
                if !value.is_object() {
                    return Err(format!("{topic}: not a JSON object"));
                }
                redact(&mut value);
                let view = self.outlets.entry(id.to_string()).or_default();
                match leaf {
                    "state" => view.state = Some(value),
                    "telemetry" => view.telemetry = Some(value),
                    _ => {
                        view.events.push_back(value);
                        while view.events.len() > EVENTS_KEPT {
                            view.events.pop_front();
                        }
                    }
                }
            }
        }
        Ok(Some(Change::Outlet(id.to_string())))
    }
}

impl FleetModel {
    /// The audit's summary of an outlet the dashboard knows (a summary
    /// alone, of an outlet gone, does not bring it back).
    fn apply_audit(
        &mut self,
        topic: &str,
        id: &str,
        payload: &[u8],
    ) -> Result<Option<Change>, String> {
        let Some(view) = self.outlets.get_mut(id) else {
            return Ok(None);
        };
        if payload.is_empty() {
            view.audit = None;
            return Ok(Some(Change::Outlet(id.to_string())));
        }
        let value: Value =
            serde_json::from_slice(payload).map_err(|e| format!("{topic}: not JSON: {e}"))?;
        // Only the numbers the page shows: a summary is not a place for
        // anything else to reach the browser.
        let mut summary = serde_json::Map::new();
        for key in ["last_seq", "received", "replayed", "missing", "lost"] {
            let n = value
                .get(key)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("{topic}: not an audit summary (no {key})"))?;
            summary.insert(key.to_string(), json!(n));
        }
        if let Some(at) = value
            .get("at")
            .and_then(Value::as_str)
            .filter(|a| a.len() <= 40)
        {
            summary.insert("at".to_string(), json!(at));
        }
        view.audit = Some(Value::Object(summary));
        Ok(Some(Change::Outlet(id.to_string())))
    }
}

/// Removes what a browser must not get: the QR string (the pairing secret)
/// and full phone numbers. The pairing code itself stays: showing it is
/// what "pair by code" is for.
fn redact(value: &mut Value) {
    if let Some(qr) = value.get_mut("qr").and_then(Value::as_object_mut) {
        qr.remove("code");
    }
    if let Some(phone) = value.get("phone").and_then(Value::as_str) {
        let masked = mask_phone(phone);
        value["phone"] = json!(masked);
    }
    if let Some(pair) = value.get_mut("pair_code").and_then(Value::as_object_mut)
        && let Some(phone) = pair.get("phone").and_then(Value::as_str)
    {
        let masked = mask_phone(phone);
        pair.insert("phone".into(), json!(masked));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> FleetModel {
        FleetModel::new(PrefixPattern::parse("outlet").expect("prefix"))
    }

    #[test]
    fn keeps_each_outlets_latest_messages_and_recent_events() {
        let mut m = model();
        assert_eq!(
            m.apply("outlet/a/availability", b"online"),
            Ok(Some(Change::Outlet("a".into())))
        );
        m.apply("outlet/a/state", br#"{"state":"connected"}"#)
            .expect("state");
        m.apply("outlet/a/telemetry", br#"{"uptime_secs":5}"#)
            .expect("telemetry");
        for i in 0..(EVENTS_KEPT + 5) {
            m.apply("outlet/a/event", format!(r#"{{"n":{i}}}"#).as_bytes())
                .expect("event");
        }
        let a = m.get("a").expect("outlet a");
        assert_eq!(a.availability.as_deref(), Some("online"));
        assert_eq!(
            a.state.as_ref().map(|s| s["state"].clone()),
            Some(json!("connected"))
        );
        assert_eq!(a.events.len(), EVENTS_KEPT);
        assert_eq!(
            a.events.back().map(|e| e["n"].clone()),
            Some(json!(EVENTS_KEPT + 4))
        );
        assert_eq!(m.apply("other/b/state", b"{}"), Ok(None));
        assert_eq!(m.apply("outlet/a/message/in", b"{}"), Ok(None));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn bad_payloads_are_refused_and_change_nothing() {
        let mut m = model();
        m.apply("outlet/a/state", br#"{"state":"connected"}"#)
            .expect("state");
        assert!(m.apply("outlet/a/state", b"not json").is_err());
        assert!(m.apply("outlet/a/state", b"[1,2]").is_err());
        assert!(m.apply("outlet/a/availability", &[0xff, 0xfe]).is_err());
        assert!(m.apply("outlet/a/response/pause", b"{").is_err());
        let a = m.get("a").expect("outlet a");
        assert_eq!(
            a.state.as_ref().map(|s| s["state"].clone()),
            Some(json!("connected"))
        );
    }

    #[test]
    fn oversized_records_are_refused_and_the_view_stays_bounded() {
        let mut m = model();
        m.apply("outlet/a/state", br#"{"state":"connected"}"#)
            .expect("state");
        let big = format!(r#"{{"state":"{}"}}"#, "x".repeat(MAX_RECORD_BYTES));
        let err = m
            .apply("outlet/a/state", big.as_bytes())
            .expect_err("too big");
        assert!(err.contains("over the dashboard's"), "{err}");
        let big_event = format!(r#"{{"reason":"{}"}}"#, "x".repeat(MAX_EVENT_BYTES));
        for _ in 0..100 {
            assert!(m.apply("outlet/a/event", big_event.as_bytes()).is_err());
        }
        let a = m.get("a").expect("a");
        assert_eq!(
            a.state.as_ref().map(|s| s["state"].clone()),
            Some(json!("connected"))
        );
        assert!(a.events.is_empty());
        let long_id = format!("outlet/{}/state", "i".repeat(MAX_ID_LEN + 1));
        assert!(m.apply(&long_id, b"{}").is_err());
    }

    #[test]
    fn the_qr_string_and_full_numbers_never_reach_the_page() {
        let mut m = model();
        m.apply(
            "outlet/a/state",
            br#"{"state":"waiting_for_scan","phone":"+6281234567890",
                "qr":{"index":1,"count":6,"code":"2@secret"},
                "pair_code":{"phone":"+6281234567890","code":"ABCD-EFGH"}}"#,
        )
        .expect("state");
        let text = m.snapshot()[0].to_string();
        assert!(!text.contains("2@secret"), "{text}");
        assert!(!text.contains("6281234567890"), "{text}");
        assert!(text.contains("+*********7890"), "{text}");
        assert!(text.contains("ABCD-EFGH"), "{text}");
    }

    #[test]
    fn responses_are_passed_on_with_their_command() {
        let mut m = model();
        let change = m
            .apply(
                "outlet/a/response/pair_code",
                br#"{"status":"ok","transaction":"t1","data":{"code":"ABCD-EFGH","phone":"+6281234567890"}}"#,
            )
            .expect("response");
        let Some(Change::Response { outlet, response }) = change else {
            panic!("not a response: {change:?}");
        };
        assert_eq!(outlet, "a");
        assert_eq!(response["command"], "pair_code");
        assert_eq!(response["transaction"], "t1");
        assert_eq!(response["data"]["phone"], "+*********7890");
    }

    #[test]
    fn the_audits_summary_shows_on_known_outlets_only() {
        let mut m = model();
        assert_eq!(
            m.apply(
                "outlet/a/audit",
                br#"{"last_seq":9,"received":5,"replayed":2,"missing":2,"lost":0}"#
            ),
            Ok(None)
        );
        m.apply("outlet/a/availability", b"online")
            .expect("availability");
        let summary = br#"{"last_seq":9,"received":5,"replayed":2,"missing":2,"lost":0,
            "gaps":[{"from":3,"to":4}],"epoch":"e","at":"2026-12-07T21:00:00Z"}"#;
        assert_eq!(
            m.apply("outlet/a/audit", summary),
            Ok(Some(Change::Outlet("a".into())))
        );
        let view = m.snapshot()[0].clone();
        assert_eq!(view["audit"]["missing"], 2, "{view}");
        assert_eq!(view["audit"]["at"], "2026-12-07T21:00:00Z", "{view}");
        assert!(view["audit"].get("gaps").is_none(), "{view}");
        assert!(m.apply("outlet/a/audit", br#"{"missing":"many"}"#).is_err());
        assert_eq!(
            m.get("a")
                .and_then(|a| a.audit.clone())
                .map(|a| a["missing"].clone()),
            Some(json!(2))
        );
        m.apply("outlet/a/audit", b"").expect("cleared");
        assert!(m.get("a").expect("a").audit.is_none());
    }

    #[test]
    fn an_outlet_whose_retained_messages_are_cleared_is_removed() {
        let mut m = model();
        m.apply("outlet/a/availability", b"online")
            .expect("availability");
        m.apply("outlet/a/state", b"{}").expect("state");
        assert_eq!(
            m.apply("outlet/a/state", b""),
            Ok(Some(Change::Outlet("a".into())))
        );
        assert_eq!(
            m.apply("outlet/a/availability", b""),
            Ok(Some(Change::Removed("a".into())))
        );
        assert!(m.is_empty());
        assert_eq!(m.apply("outlet/z/state", b""), Ok(None));
    }
}
