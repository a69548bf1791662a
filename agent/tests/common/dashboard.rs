//! A running `outlet-agent fleet --serve`, for the dashboard's tests and
//! bench: where it listens, raw HTTP to it, its log.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{DEADLINE, agent_command};

pub struct Dashboard {
    child: Child,
    /// `http://127.0.0.1:<port>/`, whatever address it was bound to.
    pub url: String,
    pub port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dashboard {
    /// `fleet --serve ARGS…` against `broker`; returns once it printed
    /// where it listens.
    pub fn start(broker: &str, args: &[&str]) -> Dashboard {
        let dir = tempfile::tempdir().expect("a dir");
        let log = dir.path().join("dashboard.log");
        let mut command = agent_command(&[]);
        command
            .arg("fleet")
            .arg("--serve")
            .args(args)
            .env("OUTLET_AGENT__MQTT__BROKER", broker)
            .env("OUTLET_AGENT__LOG__FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("a log file"));
        let mut child = command.spawn().expect("the dashboard starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no \"dashboard on\" line: {}", read(&log)));
        let addr = line
            .strip_prefix("dashboard on http://")
            .or_else(|| line.strip_prefix("dashboard on https://"))
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let port: u16 = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port");
        Dashboard {
            child,
            url: format!("http://127.0.0.1:{port}/"),
            port,
            log,
            _dir: dir,
        }
    }

    /// What the dashboard logged so far.
    pub fn log_text(&self) -> String {
        read(&self.log)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One raw HTTP request; the status, the head and the body.
    pub async fn http(&self, request: &str) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to the dashboard");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = Vec::new();
        tokio::time::timeout(DEADLINE, stream.read_to_end(&mut response))
            .await
            .expect("an answer in time")
            .unwrap_or_else(|e| {
                let shown: String = request.chars().take(200).collect();
                panic!("reading the answer to {shown:?}: {e}")
            });
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        (status, head.to_string(), body.to_string())
    }

    pub fn get(&self, path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{extra}Connection: close\r\n\r\n",
            self.port
        )
    }

    pub fn post(&self, path: &str, extra: &str, body: &str) -> String {
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{extra}Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        )
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
