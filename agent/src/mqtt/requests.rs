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
    ("replay", &["from_seq", "to_seq"]),
    ("media", &["sha256"]),
];

/// The requests the messages' own connection subscribes to, at QoS 1 on a
/// persistent session, so the broker keeps them while the agent is away
/// (`messages::publisher`); the link leaves them to it.
pub const MESSAGE_REQUESTS: &[&str] = &["send", "read", "replay", "media"];

/// The answer to a retained request.
pub const RETAINED_REQUEST: &str = "refused: retained requests are not run (they would run again on every \
     reconnect); publish requests without the retain flag and clear this one";

/// The size limit of a request named `name`.
fn size_limit(name: &str) -> usize {
    match name {
        "send" => MAX_SEND_REQUEST_BYTES,
        // 256 message ids of up to 128 characters, quoted, and the chat.
        "read" => 40 * 1024,
        _ => MAX_REQUEST_BYTES,
    }
}

/// Error texts stay short whatever the input (serde quotes unknown field
/// names, which a sender controls).
const MAX_ERROR_LEN: usize = 300;

/// What every answer to a request repeats, so the caller can match it:
/// the request's `transaction` and its `client_id` (a send's own id, which
/// HQ retries by), whatever the answer — `busy` and errors included.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Echo {
    pub transaction: Option<Value>,
    pub client_id: Option<Value>,
}

impl Echo {
    fn of(fields: &Map<String, Value>) -> Echo {
        Echo {
            transaction: fields.get("transaction").cloned(),
            // An id, not a document: a long or non-string one is not echoed.
            client_id: fields
                .get("client_id")
                .filter(|v| v.as_str().is_some_and(|s| s.len() <= 128))
                .cloned(),
        }
    }
}

/// A request the supervisor can run.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub command: Command,
    /// Echoed in the response so a caller can match its answers.
    pub echo: Echo,
}

/// A request that was refused before reaching the supervisor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Rejected {
    pub message: String,
    pub echo: Echo,
}

/// Parses the request for `name` (the last topic level).
pub fn parse(name: &str, payload: &[u8]) -> Result<Request, Rejected> {
    let reject = |message: String, echo: Echo| Rejected {
        message: truncate(message),
        echo,
    };
    let limit = size_limit(name);
    if payload.len() > limit {
        return Err(reject(
            format!("payload too large: {} bytes (limit {limit})", payload.len()),
            Echo::default(),
        ));
    }
    let mut fields = match parse_object(payload) {
        Ok(fields) => fields,
        Err(message) => return Err(reject(message, Echo::default())),
    };
    let echo = Echo::of(&fields);
    fields.remove("transaction");
    if name == "qr" {
        return Err(reject(
            "refused: the QR code is not available over MQTT (it carries the pairing secret)"
                .into(),
            echo,
        ));
    }
    let Some((_, allowed)) = COMMANDS.iter().find(|(known, _)| *known == name) else {
        return Err(reject(
            format!("unknown command {:?}", truncate(name.to_string())),
            echo,
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
            echo,
        ));
    }
    match fields.remove("command") {
        None => {}
        Some(Value::String(c)) if c == name => {}
        Some(other) => {
            return Err(reject(
                format!("the \"command\" field ({other}) does not match the topic ({name})"),
                echo,
            ));
        }
    }
    fields.insert("command".into(), Value::String(name.to_string()));
    match serde_json::from_value::<Command>(Value::Object(fields)) {
        Ok(Command::Qr) => Err(reject("refused: qr".into(), echo)),
        Ok(command) => Ok(Request { command, echo }),
        Err(e) => Err(reject(format!("bad request: {e}"), echo)),
    }
}

/// The [`Echo`] of a request that will not be parsed further, so its
/// refusal still reaches the caller that sent it.
pub fn echo_of(payload: &[u8]) -> Echo {
    if payload.len() > MAX_SEND_REQUEST_BYTES {
        return Echo::default();
    }
    parse_object(payload)
        .map(|fields| Echo::of(&fields))
        .unwrap_or_default()
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
/// request's `transaction` and `client_id` when it had them.
pub fn response(result: &Result<Value, String>, echo: Echo) -> Value {
    let mut body = match result {
        Ok(data) => json!({ "status": "ok", "data": data }),
        Err(error) => json!({ "status": "error", "error": truncate(error.clone()) }),
    };
    if let Value::Object(map) = &mut body {
        if let Some(t) = echo.transaction {
            map.insert("transaction".into(), t);
        }
        if let Some(id) = echo.client_id {
            map.insert("client_id".into(), id);
        }
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
        assert_eq!(r.echo.transaction, Some(json!("t-1")));
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
    fn every_answer_names_the_requests_client_id() {
        let echo = echo_of(br#"{"to":"0811","text":"hi","client_id":"c-7","transaction":"t"}"#);
        let busy = response(&Err("busy: try again".into()), echo.clone());
        assert_eq!(busy["client_id"], "c-7");
        assert_eq!(busy["transaction"], "t");
        let e = parse("send", br#"{"to":"0811","client_id":"c-8"}"#).expect_err("no text");
        assert_eq!(response(&Err(e.message), e.echo)["client_id"], "c-8");
        // Only an id is echoed, not a document.
        let long = format!(r#"{{"client_id":"{}"}}"#, "x".repeat(200));
        assert_eq!(echo_of(long.as_bytes()).client_id, None);
    }

    #[test]
    fn errors_keep_the_transaction_when_there_is_one() {
        let e = parse("status", br#"{"x":1,"transaction":42}"#).expect_err("rejected");
        assert_eq!(e.echo.transaction, Some(json!(42)));
        let body = response(&Err(e.message), e.echo);
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
