//! A real browser for the dashboard's tests: Debian's headless Chromium,
//! driven over the DevTools protocol (a WebSocket, with the WebSocket
//! client the agent already uses). `tests/run` installs `chromium`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, Limits, Message, WebSocketStream};

/// Debian's Chromium, or `OUTLET_TEST_CHROMIUM`.
pub fn chromium() -> PathBuf {
    std::env::var_os("OUTLET_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

pub struct Browser {
    child: Child,
    ws: WebSocketStream<TcpStream>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium and opens `url` in a tab of `width`×`height`.
    pub async fn open(url: &str, width: u32, height: u32) -> Browser {
        let bin = chromium();
        assert!(
            bin.exists(),
            "{} is missing: tests/run installs Debian's chromium (apt-get install chromium)",
            bin.display()
        );
        let profile = tempfile::tempdir().expect("a browser profile");
        let mut child = Command::new(&bin)
            .args([
                "--headless=new",
                // Root in a container: Chromium's sandbox needs user
                // namespaces it may not have; the page is our own.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
                // Timers at full rate: a tab the DevTools opened counts as
                // hidden, and hidden tabs' timers are slowed.
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        // Reads Chromium's stderr to the end, so it never blocks on a full
        // pipe; the DevTools line goes to the test.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("DevTools listening on ") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(90)))
            .await
            .expect("join")
            .expect("Chromium printed no DevTools address within 90 s");
        let ws_url = line
            .split("DevTools listening on ")
            .nth(1)
            .expect("an address")
            .trim()
            .to_string();
        let uri: http::Uri = ws_url.parse().expect("a ws:// address");
        let tcp =
            TcpStream::connect((uri.host().expect("a host"), uri.port_u16().expect("a port")))
                .await
                .expect("the DevTools port");
        let (ws, _) = ClientBuilder::from_uri(uri)
            .limits(Limits::unlimited())
            .connect_on(tcp)
            .await
            .expect("the DevTools WebSocket");
        let mut browser = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 1,
            _profile: profile,
        };
        let target = browser
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let target_id = target["targetId"].as_str().expect("a target").to_string();
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session")
            .to_string();
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await;
        browser.call("Page.enable", json!({})).await;
        browser.navigate(url).await;
        browser
    }

    /// Sends one DevTools command (to the tab once attached) and returns
    /// its result; events in between are dropped.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .expect("send to DevTools");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("DevTools did not answer {method} within 60 s"));
            let Some(Ok(frame)) = next else {
                panic!("DevTools closed while waiting for {method}");
            };
            let Some(text) = frame.as_text() else {
                continue;
            };
            let reply: Value = serde_json::from_str(text).expect("DevTools JSON");
            if reply["id"] == id {
                if let Some(error) = reply.get("error") {
                    panic!("{method}: {error}");
                }
                return reply["result"].clone();
            }
        }
    }

    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
        self.wait_until("the page to load", "document.readyState === 'complete'")
            .await;
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy; returns its value. Panics with
    /// the page's text at the deadline.
    pub async fn wait_until(&mut self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let value = self.eval(expression).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() >= deadline {
                let text = self
                    .eval("document.body ? document.body.innerText : ''")
                    .await;
                panic!(
                    "timed out waiting for {what} ({expression}); the page shows:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the tab.
    pub async fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("PNG data"))
            .expect("base64");
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
