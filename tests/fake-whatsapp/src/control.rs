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
//! | `presence [number]` | the account's presence and each companion's last `<presence>` (`{"presence","devices"}`) |
//! | `contact-send <number> <text>` | the contact sends a text (`{"id"}`); a number is one word (`+62-811-…` is fine) |
//! | `contact-send-media <number> <kind> <caption>` | image, video, audio or document (metadata only) |
//! | `contact-send-file <number> <path> [caption]` | a real file, encrypted and on the media host; the kind follows the extension (`{"id","sha256","size"}`) |
//! | `media-fail 404\|410\|500\|truncate\|off` | the next download from the media host fails so |
//! | `media` | the media host's `hostname`, upload/download counts and certificate (`ca_pem`) |
//! | `contact-burst <number> <n> [prefix]` | n texts back to back (`{"ids":[…]}`) |
//! | `contact-reply <number> <quoted-id> <text>`, `contact-react <number> <id> <emoji>` | a quoting reply, a reaction |
//! | `contact-location <number> <lat> <lon> <name>` | a shared location |
//! | `contact-group <group-jid> <number> <text>` | the contact posts in a group (sender keys) |
//! | `lid <number>` | the LID of the account, a contact or any number (`{"lid"}`) |
//! | `contact-addressing <number> pn\|lid\|lid-hidden` | how the contact's messages are addressed: by number, by LID with the number in `sender_pn` (the default), by LID alone |
//! | `contact-inbox <number>` | what the contact decrypted, in order, with ids (`{"inbox":[…]}`); a file it got shows its kind, size and plaintext `sha256` (downloaded and decrypted) |
//! | `contact-receipts <number>` | the receipts it got (`{"receipts":[…]}`) |
//! | `contact-reinstall <number>` | new identity and keys on all its devices |
//! | `contact-whatsapp <number> on\|off` | whether the number is on WhatsApp |
//! | `offline-queue <jid>` | stanzas waiting for that companion's ack |
//! | `duplicate-next <n>`, `drop-after-next <n>`, `corrupt-next <n>` | message faults |
//! | `receipts withhold\|deliver\|delay <ms>` | what contacts do with receipts |
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

/// A phone number as typed (`+62 812-…`), digits only.
fn digits(arg: &str) -> String {
    arg.chars().filter(char::is_ascii_digit).collect()
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
        "presence" => {
            let account = (!arg.is_empty()).then_some(arg);
            let report = server.presence(account)?;
            serde_json::to_value(report).map_err(|e| e.to_string())
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
        "contact-send" => {
            let (who, text) = arg
                .split_once(' ')
                .ok_or("usage: contact-send <number> <text>")?;
            let id = server
                .contacts()
                .send_text(&digits(who), text.trim())
                .await
                .map_err(|e| e.to_string())?;
            Ok(json!({ "id": id }))
        }
        "contact-send-media" => {
            let mut parts = arg.splitn(3, ' ');
            let (Some(who), Some(kind)) = (parts.next(), parts.next()) else {
                return Err("usage: contact-send-media <number> <kind> <caption>".into());
            };
            let kind: crate::contacts::MediaKind = kind.parse()?;
            let caption = parts.next().unwrap_or("").trim();
            let id = server
                .contacts()
                .send_media(&digits(who), kind, caption)
                .await
                .map_err(|e| e.to_string())?;
            Ok(json!({ "id": id }))
        }
        "contact-send-file" => {
            let mut parts = arg.splitn(3, ' ');
            let (Some(who), Some(path)) = (parts.next(), parts.next()) else {
                return Err("usage: contact-send-file <number> <path> [caption]".into());
            };
            let caption = parts.next().unwrap_or("").trim();
            let data = tokio::fs::read(path)
                .await
                .map_err(|e| format!("{path}: {e}"))?;
            let name = Path::new(path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.to_string());
            let id = server
                .contacts()
                .send_file(&digits(who), &name, &data, caption)
                .await
                .map_err(|e| e.to_string())?;
            let sha256 = crate::media::hex(&<sha2::Sha256 as sha2::Digest>::digest(&data));
            Ok(json!({ "id": id, "sha256": sha256, "size": data.len() }))
        }
        "media-fail" => {
            let fault = match arg.trim() {
                "off" => None,
                other => Some(other.parse::<crate::media::MediaFault>()?),
            };
            server.media().fail_next(fault);
            Ok(json!({}))
        }
        "media" => {
            let media = server.media();
            Ok(json!({
                "hostname": media.hostname(),
                "stats": media.stats(),
                "ca_pem": media.ca_pem(),
            }))
        }
        "contact-burst" => {
            let mut parts = arg.splitn(3, ' ');
            let (Some(who), Some(n)) = (parts.next(), parts.next()) else {
                return Err("usage: contact-burst <number> <n> [prefix]".into());
            };
            let n: usize = number(n, "count")?;
            let prefix = parts.next().map(str::trim).filter(|p| !p.is_empty());
            let ids = server
                .contacts()
                .send_burst(&digits(who), n, prefix.unwrap_or("burst"))
                .await
                .map_err(|e| e.to_string())?;
            Ok(json!({ "ids": ids }))
        }
        "contact-reply" | "contact-react" => {
            let mut parts = arg.splitn(3, ' ');
            let (Some(who), Some(id), Some(text)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("usage: {command} <number> <id> <text>"));
            };
            let contacts = server.contacts();
            let sent = if command == "contact-reply" {
                contacts.send_reply(&digits(who), id, text.trim()).await
            } else {
                contacts.send_reaction(&digits(who), id, text.trim()).await
            };
            Ok(json!({ "id": sent.map_err(|e| e.to_string())? }))
        }
        "contact-location" => {
            let mut parts = arg.splitn(4, ' ');
            let usage = "usage: contact-location <number> <lat> <lon> <name>";
            let (Some(who), Some(lat), Some(lon)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(usage.into());
            };
            let id = server
                .contacts()
                .send_location(
                    &digits(who),
                    number(lat, "latitude")?,
                    number(lon, "longitude")?,
                    parts.next().unwrap_or("").trim(),
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(json!({ "id": id }))
        }
        "contact-group" => {
            let mut parts = arg.splitn(3, ' ');
            let (Some(group), Some(who), Some(text)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err("usage: contact-group <group-jid> <number> <text>".into());
            };
            let id = server
                .contacts()
                .send_group_text(group, &digits(who), text.trim())
                .await
                .map_err(|e| e.to_string())?;
            Ok(json!({ "id": id }))
        }
        "lid" => {
            let who = digits(arg);
            if who.is_empty() {
                return Err("usage: lid <number>".into());
            }
            Ok(json!({ "lid": server.contacts().lid(&who) }))
        }
        "contact-addressing" => {
            let (who, mode) = arg
                .split_once(' ')
                .ok_or("usage: contact-addressing <number> pn|lid|lid-hidden")?;
            let addressing: crate::config::Addressing = mode.trim().parse()?;
            server
                .contacts()
                .set_addressing(&digits(who), addressing)
                .map_err(|e| e.to_string())?;
            Ok(json!({}))
        }
        "contact-inbox" => {
            let inbox = server
                .contacts()
                .inbox(&digits(arg))
                .map_err(|e| e.to_string())?;
            Ok(json!({ "inbox": inbox }))
        }
        "contact-receipts" => {
            let receipts = server
                .contacts()
                .receipts(&digits(arg))
                .map_err(|e| e.to_string())?;
            Ok(json!({ "receipts": receipts }))
        }
        "contact-reinstall" => {
            server
                .contacts()
                .change_identity(&digits(arg))
                .await
                .map_err(|e| e.to_string())?;
            Ok(json!({}))
        }
        "contact-whatsapp" => {
            let (who, on) = arg
                .split_once(' ')
                .ok_or("usage: contact-whatsapp <number> on|off")?;
            server
                .contacts()
                .set_on_whatsapp(&digits(who), on_off(on.trim())?)
                .map_err(|e| e.to_string())?;
            Ok(json!({}))
        }
        "offline-queue" => {
            let queue = server
                .contacts()
                .offline_queue(arg)
                .ok_or_else(|| format!("no linked device {arg}"))?;
            Ok(json!({ "queue": queue }))
        }
        "duplicate-next" => {
            server.contacts().duplicate_next(number(arg, "count")?);
            Ok(json!({}))
        }
        "drop-after-next" => {
            server.contacts().drop_after_next(number(arg, "count")?);
            Ok(json!({}))
        }
        "corrupt-next" => {
            server.contacts().corrupt_next(number(arg, "count")?);
            Ok(json!({}))
        }
        "receipts" => {
            let contacts = server.contacts();
            match arg.split_once(' ').unwrap_or((arg, "")) {
                ("withhold", _) => contacts.withhold_receipts(true),
                ("deliver", _) => {
                    contacts.withhold_receipts(false);
                    contacts.delay_receipts(None);
                }
                ("delay", ms) => {
                    let ms: u64 = number(ms.trim(), "delay")?;
                    contacts.delay_receipts(Some(Duration::from_millis(ms)));
                }
                _ => return Err("usage: receipts withhold|deliver|delay <ms>".into()),
            }
            Ok(json!({}))
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

    /// The README lists every control command: the same table as above.
    #[test]
    fn the_readme_lists_every_control_command() {
        let readme = include_str!("../../../README.md");
        let rows: Vec<&str> = include_str!("control.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! | `"))
            .collect();
        assert!(rows.len() > 20, "{rows:?}");
        for row in rows {
            let line = format!("| `{row}");
            assert!(readme.contains(&line), "README.md lacks {line}");
        }
    }

    #[tokio::test]
    async fn contact_commands_check_their_arguments() {
        let server = FakeServer::start(ServerConfig::default())
            .await
            .expect("server starts");
        for line in [
            "contact-send 6281111111111",
            "contact-send 6299999999999 halo",
            "contact-send-media 6281111111111 hologram hi",
            "contact-send-file 6281111111111",
            "contact-send-file 6281111111111 /nonexistent/file.jpg",
            "media-fail 418",
            "contact-inbox 6299999999999",
            "offline-queue 6281234567890:9@s.whatsapp.net",
            "receipts sometimes",
            "lid",
            "contact-addressing 6281111111111",
            "contact-addressing 6281111111111 email",
            "contact-addressing 6299999999999 lid",
            "duplicate-next many",
            "contact-burst 6281111111111",
            "contact-burst 6281111111111 lots",
        ] {
            let reply = handle_line(&server, line).await;
            assert_eq!(reply["ok"], false, "{line:?} → {reply}");
        }
        // No device is linked yet: nothing to send to.
        let reply = handle_line(&server, "contact-send +62-811-1111-1111 halo").await;
        assert_eq!(reply["ok"], false, "{reply}");
        let reply = handle_line(&server, "contact-inbox 6281111111111").await;
        assert_eq!(reply["inbox"], json!([]));
        let reply = handle_line(&server, "contact-receipts 6281111111111").await;
        assert_eq!(reply["receipts"], json!([]));
        let reply = handle_line(&server, "lid +62 811-1111-1111").await;
        assert_eq!(reply["lid"], crate::config::lid_for("6281111111111"));
        let reply = handle_line(&server, "lid 6281234567890").await;
        assert_eq!(reply["lid"], crate::config::ACCOUNT_LID);
        let reply = handle_line(&server, "media-fail 410").await;
        assert_eq!(reply["ok"], true, "{reply}");
        let reply = handle_line(&server, "media-fail off").await;
        assert_eq!(reply["ok"], true, "{reply}");
        let reply = handle_line(&server, "media").await;
        assert!(
            reply["hostname"]
                .as_str()
                .is_some_and(|h| h.starts_with("127.0.0.1:")),
            "{reply}"
        );
        assert!(
            reply["ca_pem"]
                .as_str()
                .is_some_and(|p| p.contains("BEGIN CERTIFICATE")),
            "{reply}"
        );
        let reply = handle_line(&server, "contact-addressing 6281111111111 lid-hidden").await;
        assert_eq!(reply["ok"], true, "{reply}");
        let reply = handle_line(&server, "receipts delay 50").await;
        assert_eq!(reply["ok"], true);
    }
}
