//! Commands to the supervisor, from the control socket, MQTT or the button.
//!
//! Every source turns its input into a [`Command`] and gets back a
//! [`CommandResult`]; the supervisor is the only one that acts on them, so a
//! command can never race the session it changes.
//!
//! Plain data (the bottom layer): it owns what can be asked and how it is
//! answered, and the channel it travels on. It may use `phone` only; it must
//! not import the supervisor, the messages or anything above (the messages
//! answer `send` through [`SendTarget`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::{Arc, OnceLock, Weak};

use tokio::sync::{mpsc, oneshot};

/// Requests larger than this get an error response (DESIGN: 4 KiB); the
/// MQTT client accepts larger packets so it can say so.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024;
/// A `send` carries up to 65 536 characters of text: up to four bytes
/// each in UTF-8, more where JSON escapes them.
pub const MAX_SEND_REQUEST_BYTES: usize = 512 * 1024;

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
    /// Publish journaled records again (`replay: true`), from `from_seq` to
    /// `to_seq` (or the newest). Over MQTT only: the messages' connection
    /// runs it.
    Replay {
        from_seq: i64,
        #[serde(default)]
        to_seq: Option<i64>,
    },
    /// Publish a received file again (`message/media` and its chunks), by
    /// its SHA-256, while the media spool holds it. Over MQTT only: the
    /// messages' connection runs it.
    Media {
        sha256: String,
    },
    /// HQ read these customer messages: the customer gets read receipts
    /// (blue ticks). The agent never sends them by itself, so the outlet's
    /// phone keeps its unread badges for the staff.
    Read {
        /// The chat as `message/in` named it (a number, a LID or a group).
        chat: String,
        ids: Vec<String>,
        /// In a group: who wrote them (`message/in`'s `from`).
        #[serde(default)]
        sender: Option<String>,
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
            Command::Read { .. } => "read",
            Command::Replay { .. } => "replay",
            Command::Media { .. } => "media",
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
    /// Number lookups are paced (`whatsapp.lookups_per_minute`).
    #[error("rate_limited: number lookups are paced; ask again in {0} s")]
    RateLimited(u64),
}

impl From<crate::phone::InvalidPhone> for CommandError {
    fn from(e: crate::phone::InvalidPhone) -> Self {
        CommandError::InvalidFormat(e.0)
    }
}

pub type CommandResult = Result<Value, CommandError>;

/// A command with the channel its answer goes back on.
#[derive(Debug)]
pub struct CommandRequest {
    pub command: Command,
    pub reply: oneshot::Sender<CommandResult>,
}

/// A `send` as it arrived (MQTT `request/send`, the control socket).
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub to: String,
    pub text: String,
    pub client_id: Option<String>,
    pub quoted_id: Option<String>,
}

/// Where `send` commands go. The messaging module answers them, not the
/// supervisor; a trait, so this module stays below the one that
/// implements it.
#[async_trait::async_trait]
pub trait SendTarget: Send + Sync {
    /// Checks the request and puts it in the durable outbox; answers once
    /// it is there (or why it was refused).
    async fn accept(&self, request: SendRequest) -> CommandResult;

    /// Sends read receipts for customer messages HQ has read.
    async fn read(&self, chat: String, ids: Vec<String>, sender: Option<String>) -> CommandResult;

    /// Runs a `send` or a `read`; any other command is not the messaging
    /// module's.
    async fn run(&self, command: Command) -> CommandResult {
        match command {
            Command::Send {
                to,
                text,
                client_id,
                quoted_id,
            } => {
                self.accept(SendRequest {
                    to,
                    text,
                    client_id,
                    quoted_id,
                })
                .await
            }
            Command::Read { chat, ids, sender } => self.read(chat, ids, sender).await,
            other => Err(CommandError::Refused(format!(
                "{} is not a messages command",
                other.name()
            ))),
        }
    }
}

/// The sending side, cloned into every command source.
#[derive(Debug, Clone)]
pub struct Commands {
    tx: mpsc::Sender<CommandRequest>,
    /// Where `send` goes: the messaging module, once it runs. Weak: the
    /// module holds commands of its own.
    sends: Arc<OnceLock<Weak<dyn SendTarget>>>,
}

impl Commands {
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<CommandRequest>) {
        let (tx, rx) = mpsc::channel(capacity);
        let sends = Arc::default();
        (Self { tx, sends }, rx)
    }

    /// `send` commands from every clone of these go to `target` (the
    /// messaging module).
    pub fn route_sends_to(&self, target: Arc<dyn SendTarget>) {
        let _ = self.sends.set(Arc::downgrade(&target));
    }

    /// Sends a command and waits for its answer (`send` and `read` go to
    /// the messaging module, everything else to the supervisor).
    pub async fn send(&self, command: Command) -> CommandResult {
        match command {
            command @ (Command::Send { .. } | Command::Read { .. }) => {
                self.messages()?.run(command).await
            }
            command => self.to_supervisor(command).await,
        }
    }

    /// The messaging module, while it runs.
    fn messages(&self) -> Result<Arc<dyn SendTarget>, CommandError> {
        self.sends.get().and_then(Weak::upgrade).ok_or_else(|| {
            CommandError::Disabled(
                "messages are off (messages.enabled = false, or MQTT is off)".into(),
            )
        })
    }

    async fn to_supervisor(&self, command: Command) -> CommandResult {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(CommandRequest { command, reply })
            .await
            .map_err(|_| CommandError::ShuttingDown)?;
        answer.await.map_err(|_| CommandError::ShuttingDown)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
