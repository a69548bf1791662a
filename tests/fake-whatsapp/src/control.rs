//! The control interface of the `fake-whatsapp` binary: one command per line
//! over TCP on loopback, one JSON object per reply line.
//!
//! Line-based rather than HTTP because every caller (the demo, benchmarks, a
//! developer with `fake-whatsapp ctl`) sends a handful of short commands, and
//! a line protocol needs no extra dependency on either side.
//!
//! | command | effect |
//! |---|---|
//! | `scan <qr-text>` | the phone scans a QR string |
//! | `scan-png <path>` | the phone scans the QR in a PNG image |
//! | `enter-code <code>` | the phone takes a link code ("link with phone number") |
//! | `refresh-code` | the server withdraws the outstanding link code |
//! | `unlink <jid>` | the phone removes a linked device |
//! | `devices` | the linked devices |
//! | `drop` | close every live connection (a network drop) |
//! | `stream-error restart\|device_removed\|replaced\|unavailable` | send it to every live session |
//! | `refuse on\|off`, `blackhole on\|off` | treatment of new connections |
//! | `delay <ms>\|off`, `close-after <frames>\|off` | per-connection faults |
//! | `ban <code> <seconds>`, `outdated`, `login-ok` | the verdict on logins |
//! | `registered <number>[,<number>…]` | numbers a contact lookup finds |
//! | `stats` | attempts and per-device concurrency |
//! | `events` | stream every server event as JSON lines until disconnect |
//!
//! Replies are `{"ok":true,…}` or `{"ok":false,"error":"…"}`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::phone::decode_qr_png;
use crate::server::FakeServer;
use crate::state::{LoginFailure, StreamErrorKind};

/// Accepts control connections until the listener fails.
pub async fn serve_control(listener: TcpListener, server: Arc<FakeServer>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(control_connection(stream, server.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "control accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn control_connection(stream: TcpStream, server: Arc<FakeServer>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "events" {
            let mut events = server.subscribe();
            while let Ok(event) = events.recv().await {
                let Ok(mut text) = serde_json::to_string(&event) else {
                    continue;
                };
                text.push('\n');
                if write.write_all(text.as_bytes()).await.is_err() {
                    return;
                }
            }
            return;
        }
        let reply = handle_line(&server, &line).await;
        let mut text = reply.to_string();
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Runs one control command and returns its JSON reply.
pub async fn handle_line(server: &FakeServer, line: &str) -> Value {
    match run(server, line.trim()).await {
        Ok(mut reply) => {
            if let Some(obj) = reply.as_object_mut() {
                obj.insert("ok".into(), Value::Bool(true));
            }
            reply
        }
        Err(error) => json!({ "ok": false, "error": error }),
    }
}

fn on_off(arg: &str) -> Result<bool, String> {
    match arg {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("expected on or off, got {other:?}")),
    }
}

fn number<T: std::str::FromStr>(arg: &str, what: &str) -> Result<T, String> {
    arg.parse()
        .map_err(|_| format!("{what} must be a number, got {arg:?}"))
}

async fn run(server: &FakeServer, line: &str) -> Result<Value, String> {
    let (command, arg) = line.split_once(' ').unwrap_or((line, ""));
    let arg = arg.trim();
    match command {
        "scan" => {
            let device = server.phone().scan(arg).await.map_err(|e| e.to_string())?;
            Ok(json!({ "paired": device }))
        }
        "scan-png" => {
            let qr = decode_qr_png(Path::new(arg)).map_err(|e| e.to_string())?;
            let device = server.phone().scan(&qr).await.map_err(|e| e.to_string())?;
            Ok(json!({ "paired": device }))
        }
        "enter-code" => {
            let device = server
                .phone()
                .enter_code(arg)
                .await
                .map_err(|e| e.to_string())?;
            Ok(json!({ "paired": device }))
        }
        "refresh-code" => Ok(json!({ "refreshed": server.refresh_link_code() })),
        "unlink" => {
            server.phone().unlink(arg).map_err(|e| e.to_string())?;
            Ok(json!({}))
        }
        "devices" => Ok(json!({ "devices": server.phone().linked_devices() })),
        "drop" => Ok(json!({ "closed": server.drop_connections() })),
        "stream-error" => {
            let kind: StreamErrorKind = serde_json::from_value(Value::String(arg.into()))
                .map_err(|_| format!("unknown stream error {arg:?}"))?;
            Ok(json!({ "sent": server.send_stream_error(kind) }))
        }
        "refuse" => {
            server.set_refuse(on_off(arg)?);
            Ok(json!({}))
        }
        "blackhole" => {
            server.set_blackhole(on_off(arg)?);
            Ok(json!({}))
        }
        "delay" => {
            let delay = match arg {
                "off" => None,
                ms => Some(Duration::from_millis(number(ms, "delay")?)),
            };
            server.set_delay(delay);
            Ok(json!({}))
        }
        "close-after" => {
            let frames = match arg {
                "off" => None,
                n => Some(number(n, "frames")?),
            };
            server.set_close_after_frames(frames);
            Ok(json!({}))
        }
        "ban" => {
            let (code, secs) = arg.split_once(' ').ok_or("usage: ban <code> <seconds>")?;
            let code: u32 = number(code, "code")?;
            let secs: u64 = number(secs.trim(), "seconds")?;
            let until_unix = crate::connection::unix_now() + secs;
            server.set_login_failure(Some(LoginFailure::TemporaryBan { code, until_unix }));
            Ok(json!({ "until_unix": until_unix }))
        }
        "outdated" => {
            server.set_login_failure(Some(LoginFailure::ClientOutdated));
            Ok(json!({}))
        }
        "login-ok" => {
            server.set_login_failure(None);
            Ok(json!({}))
        }
        "registered" => {
            let numbers: Vec<String> = arg
                .split(',')
                .map(|n| n.chars().filter(char::is_ascii_digit).collect::<String>())
                .filter(|n| !n.is_empty())
                .collect();
            server.set_registered_numbers(numbers.clone());
            Ok(json!({ "registered": numbers }))
        }
        "stats" => serde_json::to_value(server.stats())
            .map_err(|e| e.to_string())
            .map(|stats| json!({ "stats": stats })),
        "" => Err("empty command".into()),
        other => Err(format!("unknown command {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServerConfig;

    #[tokio::test]
    async fn bad_commands_get_error_replies() {
        let server = FakeServer::start(ServerConfig::default())
            .await
            .expect("server starts");
        for line in [
            "",
            "nonsense",
            "refuse maybe",
            "delay soon",
            "ban 101",
            "stream-error 999",
        ] {
            let reply = handle_line(&server, line).await;
            assert_eq!(reply["ok"], false, "{line:?} → {reply}");
        }
        let reply = handle_line(&server, "refuse on").await;
        assert_eq!(reply["ok"], true);
        let reply = handle_line(&server, "registered +62 812-0000-1111, 6281200002222").await;
        assert_eq!(
            reply["registered"],
            json!(["6281200001111", "6281200002222"])
        );
        let reply = handle_line(&server, "stats").await;
        assert_eq!(reply["stats"]["live_connections"], 0);
    }
}
