//! Commands to the supervisor, from the control socket, MQTT or the button.
//!
//! Every source turns its input into a [`Command`] and gets back a
//! [`CommandResult`]; the supervisor is the only one that acts on them, so a
//! command can never race the session it changes.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::{Arc, OnceLock, Weak};

use tokio::sync::{mpsc, oneshot};

/// What can be asked of the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// The current health snapshot.
    Status,
    /// The current QR string (control socket only: it is a secret).
    Qr,
    /// Drop the connection and connect again now.
    Reconnect,
    /// Start a new pairing round now (after codes ran out, or to refresh).
    RefreshQr,
    /// Disconnect and stay disconnected until `resume`.
    Pause,
    Resume,
    /// Unlink this device and wipe its keys. Refused without `confirm`.
    Logout {
        #[serde(default)]
        confirm: bool,
    },
    /// Is this number on WhatsApp? Never guessed: `not_connected` without a
    /// live session.
    CheckNumber {
        phone: String,
    },
    /// Link by code instead of QR ("Link with phone number instead"): an
    /// 8-character code for the outlet's WhatsApp number, shown on the screen
    /// and returned to the caller.
    PairCode {
        phone: String,
    },
    /// A message to a customer, into the durable outbox (the messaging
    /// module answers it, not the supervisor).
    Send {
        to: String,
        text: String,
        #[serde(default)]
        client_id: Option<String>,
        #[serde(default)]
        quoted_id: Option<String>,
    },
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Qr => "qr",
            Command::Reconnect => "reconnect",
            Command::RefreshQr => "refresh_qr",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Logout { .. } => "logout",
            Command::CheckNumber { .. } => "check_number",
            Command::PairCode { .. } => "pair_code",
            Command::Send { .. } => "send",
        }
    }
}

/// Why a command was not carried out. The `Display` text is what callers
/// see in `{"status":"error","error":…}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("not_connected")]
    NotConnected,
    #[error("invalid_format: {0}")]
    InvalidFormat(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("failed: {0}")]
    Failed(String),
    #[error("agent is shutting down")]
    ShuttingDown,
    #[error("not_linked: {0}")]
    NotLinked(String),
    #[error("not_on_whatsapp: the number has no WhatsApp account")]
    NotOnWhatsApp,
    #[error("text_too_long: {0}")]
    TextTooLong(String),
    #[error("outbox_full: {0}")]
    OutboxFull(String),
    #[error("disabled: {0}")]
    Disabled(String),
}

pub type CommandResult = Result<Value, CommandError>;

/// A command with the channel its answer goes back on.
#[derive(Debug)]
pub struct CommandRequest {
    pub command: Command,
    pub reply: oneshot::Sender<CommandResult>,
}

/// The sending side, cloned into every command source.
#[derive(Debug, Clone)]
pub struct Commands {
    tx: mpsc::Sender<CommandRequest>,
    /// Where `send` goes: the messaging module, once it runs. Weak: the
    /// module holds commands of its own.
    sends: Arc<OnceLock<Weak<crate::messages::Messages>>>,
}

impl Commands {
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<CommandRequest>) {
        let (tx, rx) = mpsc::channel(capacity);
        let sends = Arc::default();
        (Self { tx, sends }, rx)
    }

    /// `send` commands from every clone of these go to `messages`.
    pub fn route_sends_to(&self, messages: &Arc<crate::messages::Messages>) {
        let _ = self.sends.set(Arc::downgrade(messages));
    }

    /// Sends a command and waits for its answer (`send` goes to the
    /// messaging module, everything else to the supervisor).
    pub async fn send(&self, command: Command) -> CommandResult {
        if let Command::Send {
            to,
            text,
            client_id,
            quoted_id,
        } = command
        {
            let Some(messages) = self.sends.get().and_then(Weak::upgrade) else {
                return Err(CommandError::Disabled(
                    "messages are off (messages.enabled = false, or MQTT is off)".into(),
                ));
            };
            return crate::messages::outbox::accept(
                &messages,
                crate::messages::outbox::SendRequest {
                    to,
                    text,
                    client_id,
                    quoted_id,
                },
            )
            .await;
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(CommandRequest { command, reply })
            .await
            .map_err(|_| CommandError::ShuttingDown)?;
        answer.await.map_err(|_| CommandError::ShuttingDown)?
    }
}

/// Normalises a phone number written the way people write them to E.164
/// digits (no `+`): `0812-3456-7890` (Indonesian national format) →
/// `6281234567890`; `+62 812 3456 7890`, `62812…` and `(+62) 812…` too.
/// `default_country` is the calling code assumed for a leading `0`.
pub fn normalize_phone(input: &str, default_country: &str) -> Result<String, CommandError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(CommandError::InvalidFormat("empty number".into()));
    }
    if let Some(bad) = trimmed
        .chars()
        .find(|c| !(c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')')))
    {
        return Err(CommandError::InvalidFormat(format!(
            "unexpected character {bad:?}"
        )));
    }
    let plus = trimmed.trim_start_matches('(').starts_with('+');
    if trimmed.matches('+').count() > 1 || (trimmed.contains('+') && !plus) {
        return Err(CommandError::InvalidFormat("misplaced '+'".into()));
    }
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    let e164 = if plus {
        digits
    } else if let Some(national) = digits.strip_prefix("00") {
        national.to_string()
    } else if let Some(national) = digits.strip_prefix('0') {
        format!("{default_country}{national}")
    } else {
        digits
    };
    // E.164: at most 15 digits, no leading zero; real numbers have at least
    // 8 (country code + subscriber number).
    if e164.starts_with('0') || !(8..=15).contains(&e164.len()) {
        return Err(CommandError::InvalidFormat(format!(
            "{} digits is not a phone number",
            e164.len()
        )));
    }
    Ok(e164)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_formats_normalise_to_e164() {
        for input in [
            "081234567890",
            "0812-3456-7890",
            "6281234567890",
            "+62 812-3456-7890",
            "(+62) 812 3456 7890",
            "0062 812 3456 7890",
        ] {
            assert_eq!(
                normalize_phone(input, "62"),
                Ok("6281234567890".into()),
                "{input}"
            );
        }
    }

    #[test]
    fn impossible_numbers_are_invalid() {
        for input in [
            "",
            "abc",
            "12",
            "+62+812",
            "0",
            "1234567890123456",
            "62 812 x",
        ] {
            assert!(
                matches!(
                    normalize_phone(input, "62"),
                    Err(CommandError::InvalidFormat(_))
                ),
                "{input}"
            );
        }
    }

    #[test]
    fn commands_parse_from_json() {
        let c: Command =
            serde_json::from_str(r#"{"command":"check_number","phone":"0812"}"#).expect("parses");
        assert_eq!(
            c,
            Command::CheckNumber {
                phone: "0812".into()
            }
        );
        let c: Command = serde_json::from_str(r#"{"command":"logout"}"#).expect("parses");
        assert_eq!(c, Command::Logout { confirm: false });
        assert!(serde_json::from_str::<Command>(r#"{"command":"explode"}"#).is_err());
    }
}
