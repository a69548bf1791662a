//! `<prefix>/request/<command>` → a [`Command`] for the supervisor, and the
//! `<prefix>/response/<command>` payloads.
//!
//! Anything a broker can deliver arrives here: bad JSON, unknown commands,
//! wrong fields, megabytes. Each gets an error response and the agent goes
//! on; nothing here can fail in a way that touches the session.

use serde_json::{Map, Value, json};

use crate::command::{Command, CommandError};
use crate::command::{MAX_REQUEST_BYTES, MAX_SEND_REQUEST_BYTES};

/// The commands MQTT may send, with the fields each accepts. `qr` is
/// missing on purpose: the QR string carries the pairing secret and is for
/// the local control socket only.
pub const COMMANDS: &[(&str, &[&str])] = &[
    ("status", &[]),
    ("reconnect", &[]),
    ("refresh_qr", &[]),
    ("pause", &[]),
    ("resume", &[]),
    ("logout", &["confirm"]),
    ("check_number", &["phone"]),
    ("pair_code", &["phone"]),
    ("send", &["to", "text", "client_id", "quoted_id"]),
    ("read", &["chat", "ids", "sender"]),
];

/// The size limit of a request named `name`.
fn size_limit(name: &str) -> usize {
    if name == "send" {
        MAX_SEND_REQUEST_BYTES
    } else {
        MAX_REQUEST_BYTES
    }
}

/// Error texts stay short whatever the input (serde quotes unknown field
/// names, which a sender controls).
const MAX_ERROR_LEN: usize = 300;

/// A request the supervisor can run.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub command: Command,
    /// Echoed in the response so a caller can match its answers.
    pub transaction: Option<Value>,
}

/// A request that was refused before reaching the supervisor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Rejected {
    pub message: String,
    pub transaction: Option<Value>,
}

/// Parses the request for `name` (the last topic level).
pub fn parse(name: &str, payload: &[u8]) -> Result<Request, Rejected> {
    let reject = |message: String, transaction: Option<Value>| Rejected {
        message: truncate(message),
        transaction,
    };
    let limit = size_limit(name);
    if payload.len() > limit {
        return Err(reject(
            format!("payload too large: {} bytes (limit {limit})", payload.len()),
            None,
        ));
    }
    let mut fields = match parse_object(payload) {
        Ok(fields) => fields,
        Err(message) => return Err(reject(message, None)),
    };
    let transaction = fields.remove("transaction");
    if name == "qr" {
        return Err(reject(
            "refused: the QR code is not available over MQTT (it carries the pairing secret)"
                .into(),
            transaction,
        ));
    }
    let Some((_, allowed)) = COMMANDS.iter().find(|(known, _)| *known == name) else {
        return Err(reject(
            format!("unknown command {:?}", truncate(name.to_string())),
            transaction,
        ));
    };
    // serde accepts any extra field next to a unit variant's tag: a typo
    // (`{"confrim":true}`) must not pass silently.
    if let Some(unknown) = fields
        .keys()
        .find(|k| k.as_str() != "command" && !allowed.contains(&k.as_str()))
    {
        let expected = if allowed.is_empty() {
            "no fields".to_string()
        } else {
            allowed.join(", ")
        };
        return Err(reject(
            format!("unknown field {unknown:?} for {name} (expected {expected})"),
            transaction,
        ));
    }
    match fields.remove("command") {
        None => {}
        Some(Value::String(c)) if c == name => {}
        Some(other) => {
            return Err(reject(
                format!("the \"command\" field ({other}) does not match the topic ({name})"),
                transaction,
            ));
        }
    }
    fields.insert("command".into(), Value::String(name.to_string()));
    match serde_json::from_value::<Command>(Value::Object(fields)) {
        Ok(Command::Qr) => Err(reject("refused: qr".into(), transaction)),
        Ok(command) => Ok(Request {
            command,
            transaction,
        }),
        Err(e) => Err(reject(format!("bad request: {e}"), transaction)),
    }
}

/// The `transaction` of a request that will not be parsed further, so its
/// refusal still reaches the caller that sent it.
pub fn transaction_of(payload: &[u8]) -> Option<Value> {
    if payload.len() > MAX_SEND_REQUEST_BYTES {
        return None;
    }
    parse_object(payload).ok()?.remove("transaction")
}

/// An empty payload means "no arguments" (what a bare button press sends).
fn parse_object(payload: &[u8]) -> Result<Map<String, Value>, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "payload is not UTF-8".to_string())?;
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the request must be a JSON object".into()),
        Err(e) => Err(format!("bad JSON: {e}")),
    }
}

/// `{"status":"ok","data":…}` or `{"status":"error","error":"…"}`, with the
/// request's transaction when it had one.
pub fn response(result: &Result<Value, String>, transaction: Option<Value>) -> Value {
    let mut body = match result {
        Ok(data) => json!({ "status": "ok", "data": data }),
        Err(error) => json!({ "status": "error", "error": truncate(error.clone()) }),
    };
    if let (Some(t), Value::Object(map)) = (transaction, &mut body) {
        map.insert("transaction".into(), t);
    }
    body
}

/// The text of a supervisor's refusal, as callers see it.
pub fn command_error(e: &CommandError) -> String {
    e.to_string()
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_ERROR_LEN {
        let mut cut = MAX_ERROR_LEN;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(name: &str, payload: &str) -> String {
        parse(name, payload.as_bytes())
            .expect_err("rejected")
            .message
    }

    #[test]
    fn valid_requests_become_commands() {
        let r = parse("status", b"").expect("valid");
        assert_eq!(r.command, Command::Status);
        let r = parse(
            "check_number",
            br#"{"phone":"0812 3456 7890","transaction":"t-1"}"#,
        )
        .expect("valid");
        assert_eq!(
            r.command,
            Command::CheckNumber {
                phone: "0812 3456 7890".into()
            }
        );
        assert_eq!(r.transaction, Some(json!("t-1")));
        let r = parse("logout", br#"{"command":"logout"}"#).expect("valid");
        assert_eq!(r.command, Command::Logout { confirm: false });
    }

    #[test]
    fn everything_else_is_a_clear_error() {
        assert!(error_of("qr", "{}").contains("not available over MQTT"));
        assert!(error_of("pair_code", "{}").contains("missing field"));
        assert!(error_of("pair_code", r#"{"phone":"0812","code":"X"}"#).contains("unknown field"));
        assert!(error_of("explode", "{}").starts_with("unknown command"));
        assert!(error_of("status", "{").starts_with("bad JSON"));
        assert!(error_of("status", "[1]").contains("JSON object"));
        assert!(error_of("status", r#"{"x":1}"#).contains("unknown field"));
        assert!(error_of("check_number", "{}").contains("missing field"));
        assert!(error_of("check_number", r#"{"phone":5}"#).starts_with("bad request"));
        assert!(error_of("status", r#"{"command":"logout"}"#).contains("does not match"));
        let big = format!(r#"{{"phone":"{}"}}"#, "1".repeat(5000));
        assert!(error_of("check_number", &big).starts_with("payload too large"));
        assert!(parse("status", &[0xff, 0xfe]).is_err());
    }

    #[test]
    fn errors_keep_the_transaction_when_there_is_one() {
        let e = parse("status", br#"{"x":1,"transaction":42}"#).expect_err("rejected");
        assert_eq!(e.transaction, Some(json!(42)));
        let body = response(&Err(e.message), e.transaction);
        assert_eq!(body["status"], "error");
        assert_eq!(body["transaction"], 42);
    }

    #[test]
    fn long_error_texts_are_cut() {
        let name = "x".repeat(2000);
        let e = error_of(&name, "{}");
        assert!(e.len() < MAX_ERROR_LEN + 10, "{}", e.len());
    }
}
