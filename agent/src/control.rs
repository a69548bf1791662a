//! The local control socket: how `outlet-agent status`, `qr` and `logout`
//! talk to the running agent.
//!
//! A Unix socket (0600) in the data directory (0700), so only the service
//! user and root (the technician's `sudo`) can ask for the QR string. One
//! JSON command per line (`{"command":"status"}`, the same shape MQTT
//! requests use), one JSON reply per line:
//! `{"status":"ok","data":…}` or `{"status":"error","error":"…"}`.
//!
//! A working part: it owns the control socket. It may use the plain rules below
//! it (commands, health); it must not import the supervisor, the MQTT link or
//! any entry point.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::command::{Command, CommandResult, Commands};

/// The longest request line accepted; anything longer is refused.
/// A `send` line carries up to 65 536 characters of text.
const MAX_LINE: usize = crate::command::MAX_SEND_REQUEST_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot listen on {}: {source}", path.display())]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent is not running (no control socket at {}): {source}", path.display())]
    NotRunning {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("unreadable reply from the agent: {0}")]
    BadReply(String),
}

/// Binds the socket. A stale socket file from a crashed run is replaced:
/// the caller holds the data directory lock, so no live agent owns it.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let listen_error = |source| ControlError::Listen {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen_error(e)),
    }
    let listener = UnixListener::bind(path).map_err(listen_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(listen_error)?;
    Ok(listener)
}

/// Serves control connections until the task is dropped.
pub async fn serve(listener: UnixListener, commands: Commands) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, commands.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, commands: Commands) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_LINE as u64 + 1);
        match tokio::io::AsyncBufReadExt::read_line(&mut limited, &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let reply = if line.len() > MAX_LINE {
            error_reply("request too long")
        } else {
            match serde_json::from_str::<Command>(line.trim()) {
                Ok(command) => reply(commands.send(command).await),
                Err(e) => error_reply(&format!("bad request: {e}")),
            }
        };
        let mut text = reply.to_string();
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            return;
        }
        if line.len() > MAX_LINE {
            return;
        }
    }
}

use tokio::io::AsyncReadExt as _;

pub fn reply(result: CommandResult) -> Value {
    match result {
        Ok(data) => json!({ "status": "ok", "data": data }),
        Err(e) => error_reply(&e.to_string()),
    }
}

fn error_reply(error: &str) -> Value {
    json!({ "status": "error", "error": error })
}

/// Sends one command to a running agent and returns its reply.
pub async fn request(path: &Path, command: &Command) -> Result<Value, ControlError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::NotRunning {
            path: path.to_path_buf(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    let mut text =
        serde_json::to_string(command).map_err(|e| ControlError::BadReply(e.to_string()))?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    let line = lines
        .next_line()
        .await?
        .ok_or_else(|| ControlError::BadReply("connection closed".into()))?;
    serde_json::from_str(&line).map_err(|e| ControlError::BadReply(e.to_string()))
}
