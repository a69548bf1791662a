//! Real Home Assistant for the discovery test: one instance per test, on a
//! free loopback port, with its MQTT integration on the test's broker.
//!
//! `tests/home-assistant/install VERSION` puts HA where
//! `tests/home-assistant/hass` runs it (`tests/home-assistant/run` does
//! both and then runs this test). HA is driven the way its own frontend
//! drives it: onboarding and the MQTT config flow over its REST API, the
//! entity registry over its WebSocket API.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, Limits, Message};

use super::mqtt::free_port;

/// Home Assistant's first start (its database, its frontend's files)
/// takes seconds on an idle machine; a loaded one gets minutes.
const START: Duration = Duration::from_secs(240);

/// What HA logs when it refuses a discovery config or a state: a schema
/// error, an entity it could not add (2024.3 checks some rules only then),
/// a payload that is not JSON, a state outside an enum's options, a
/// timestamp or number it cannot read, an attribute template that gives no
/// dictionary, a binary sensor's value that is neither ON nor OFF.
pub const REFUSALS: [&str; 9] = [
    "when processing MQTT discovery message",
    "Error adding entity",
    "Unable to parse JSON",
    "Ignoring invalid option received",
    "Invalid state message",
    "non-numeric value",
    "Erroneous JSON",
    "JSON result was not a dictionary",
    "No matching payload found",
];

pub struct HomeAssistant {
    pub version: String,
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
    token: String,
}

/// The launcher beside the install script, in the workspace's tests/.
fn launcher() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/home-assistant/hass")
}

impl HomeAssistant {
    /// Starts HA `version` (2024.3 or 2025.4), onboards its owner and sets
    /// up its MQTT integration on `127.0.0.1:<broker_port>`, discovery on.
    pub async fn start(version: &str, broker_port: u16) -> HomeAssistant {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let port = free_port();
        std::fs::write(
            dir.join("configuration.yaml"),
            format!(
                "# No default_config: nothing HA would have to fetch.\n\
                 homeassistant:\n  name: Test\n  latitude: 0\n  longitude: 0\n  elevation: 0\n  \
                 unit_system: metric\n  time_zone: UTC\n  currency: EUR\n  country: ID\n\
                 http:\n  server_host: 127.0.0.1\n  server_port: {port}\n\
                 api:\n\
                 logger:\n  default: info\n"
            ),
        )
        .expect("write configuration.yaml");
        let mut ha = HomeAssistant {
            version: version.to_string(),
            port,
            child: spawn(version, &dir),
            dir,
            token: String::new(),
        };
        ha.wait_for_api().await;
        ha.onboard().await;
        ha.set_up_mqtt(broker_port).await;
        ha
    }

    /// Stops HA (SIGKILL, as a power cut would) and starts it again on the
    /// same configuration: the owner, the token and the MQTT entry persist.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.version, &self.dir);
        self.wait_for_api().await;
        self.wait_for_mqtt().await;
    }

    /// SIGKILL to the launcher, which is hass itself (2024.3) or an
    /// `unshare --kill-child` whose child, hass, dies with it (2025.4).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn wait_for_api(&mut self) {
        let deadline = Instant::now() + START;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "Home Assistant {} exited ({status}); tests/home-assistant/run installs it\n{}",
                    self.version,
                    self.logs()
                );
            }
            // 401: the API is up and wants a token.
            if let Ok((401, _)) = self.try_request("GET", "/api/", "", "", "").await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Home Assistant {}'s API did not answer within {START:?}\n{}",
                self.version,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Onboarding's owner step, then its authorization code for a token.
    /// The later steps (location, analytics) are the frontend's business.
    async fn onboard(&mut self) {
        let client_id = self.base();
        let user = self
            .request(
                "POST",
                "/api/onboarding/users",
                &json!({
                    "client_id": client_id, "name": "HQ", "username": "hq",
                    "password": "outlet-agent-test", "language": "en",
                }),
            )
            .await;
        let code = user["auth_code"]
            .as_str()
            .expect("an auth code")
            .to_string();
        let form = format!(
            "grant_type=authorization_code&code={}&client_id={}",
            percent(&code),
            percent(&client_id)
        );
        let (status, tokens) = self
            .try_request(
                "POST",
                "/auth/token",
                "",
                "application/x-www-form-urlencoded",
                &form,
            )
            .await
            .expect("HA answers /auth/token");
        assert_eq!(status, 200, "/auth/token: {tokens}");
        self.token = tokens["access_token"]
            .as_str()
            .expect("an access token")
            .to_string();
    }

    /// The MQTT integration's config flow, as a person adds it in the UI.
    async fn set_up_mqtt(&self, broker_port: u16) {
        let flow = self
            .request(
                "POST",
                "/api/config/config_entries/flow",
                &json!({"handler": "mqtt", "show_advanced_options": false}),
            )
            .await;
        assert_eq!(flow["step_id"], "broker", "the MQTT flow: {flow}");
        let flow_id = flow["flow_id"].as_str().expect("a flow id");
        let done = self
            .request(
                "POST",
                &format!("/api/config/config_entries/flow/{flow_id}"),
                &json!({"broker": "127.0.0.1", "port": broker_port}),
            )
            .await;
        assert_eq!(done["type"], "create_entry", "the MQTT flow: {done}");
        self.wait_for_mqtt().await;
    }

    /// Until the MQTT entry is loaded: connected to the broker.
    async fn wait_for_mqtt(&self) {
        let deadline = Instant::now() + START;
        loop {
            let entries = self.get("/api/config/config_entries/entry").await;
            let state = entries
                .as_array()
                .and_then(|all| all.iter().find(|e| e["domain"] == "mqtt"))
                .map(|e| e["state"].clone());
            if state == Some(json!("loaded")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the MQTT entry is {state:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        self.request("GET", path, &Value::Null).await
    }

    /// A REST call with the owner's token; panics unless it succeeds.
    pub async fn request(&self, method: &str, path: &str, body: &Value) -> Value {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (status, answer) = self
            .try_request(method, path, &self.token, "application/json", &body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}\n{}",
            self.log()
        );
        answer
    }

    async fn try_request(
        &self,
        method: &str,
        path: &str,
        token: &str,
        content_type: &str,
        body: &str,
    ) -> std::io::Result<(u16, Value)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
            self.port
        );
        if !token.is_empty() {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if !content_type.is_empty() {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut raw))
            .await
            .map_err(|_| std::io::Error::other("no answer within 60 s"))??;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(raw.len());
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let body = raw.get(split + 4..).unwrap_or_default();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            String::from_utf8_lossy(&unchunk(body)).into_owned()
        } else {
            String::from_utf8_lossy(body).into_owned()
        };
        let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        Ok((status, value))
    }

    /// One command on HA's WebSocket API; its `result`.
    pub async fn ws(&self, command: Value) -> Value {
        let uri: http::Uri = format!("ws://127.0.0.1:{}/api/websocket", self.port)
            .parse()
            .expect("a ws:// address");
        let tcp = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("HA's port");
        let (mut ws, _) = ClientBuilder::from_uri(uri)
            .limits(Limits::unlimited())
            .connect_on(tcp)
            .await
            .expect("HA's WebSocket");
        let mut command = command;
        command["id"] = json!(1);
        let mut sent = false;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(60), ws.next())
                .await
                .expect("HA answers on its WebSocket")
                .expect("the WebSocket is open")
                .expect("a frame");
            let Some(text) = message.as_text() else {
                continue;
            };
            let value: Value = serde_json::from_str(text).expect("JSON");
            match value["type"].as_str() {
                Some("auth_required") => {
                    ws.send(Message::text(
                        json!({"type": "auth", "access_token": self.token}).to_string(),
                    ))
                    .await
                    .expect("send auth");
                }
                Some("auth_ok") if !sent => {
                    ws.send(Message::text(command.to_string()))
                        .await
                        .expect("send the command");
                    sent = true;
                }
                Some("auth_invalid") => panic!("HA refused the token: {value}"),
                Some("result") if value["id"] == 1 => {
                    assert_eq!(value["success"], true, "{command}: {value}");
                    let _ = ws.close().await;
                    return value["result"].clone();
                }
                _ => {}
            }
        }
    }

    /// HA's log (home-assistant.log), which names every refused config.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("home-assistant.log")).unwrap_or_default()
    }

    fn logs(&self) -> String {
        let stdout = std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default();
        let tail = |text: &str| -> String {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(60)..].join("\n")
        };
        format!(
            "--- launcher\n{}\n--- home-assistant.log\n{}",
            tail(&stdout),
            tail(&self.log())
        )
    }

    /// The lines of HA's log that refuse a config or a state. This HA
    /// serves one test's broker, so each is the agent's.
    pub fn refusals(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                REFUSALS.iter().any(|r| l.contains(r))
                    || (l.contains(" ERROR ") && l.contains("[homeassistant.components.mqtt"))
            })
            .map(str::to_string)
            .collect()
    }
}

/// The launcher on `dir`, in the test's process group, so whatever stops
/// the test (nextest's timeout too) stops HA.
fn spawn(version: &str, dir: &Path) -> Child {
    let stdout = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stdout.log"))
        .expect("stdout log");
    Command::new(launcher())
        .arg(version)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().expect("log"))
        .stderr(stdout)
        .spawn()
        .expect("tests/home-assistant/hass starts")
}

impl Drop for HomeAssistant {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A chunked body's data (chunk extensions and trailers skipped).
fn unchunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&rest[..end]);
        let size = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            break;
        };
        let data = &rest[end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        rest = data[size..].strip_prefix(b"\r\n").unwrap_or(&data[size..]);
    }
    out
}
