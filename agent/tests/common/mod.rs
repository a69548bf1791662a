//! End-to-end harness: the real `outlet-agent` binary against the fake
//! WhatsApp server, observed through its control socket and its PNG screen.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use fake_whatsapp::{FakeServer, ServerConfig};
use serde_json::{Value, json};

/// Generous for a loaded 2-core machine; the first `Connected` after a fresh
/// pairing alone waits ~10 s for an app-state key share.
pub const DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(100);

/// The agent binary these tests run: the one cargo built beside them, or
/// the one `OUTLET_AGENT_TEST_BIN` names. The override is how
/// `packaging/check-pi.sh` runs the same end-to-end tests, on this host's
/// fake server and broker, against an ARM build of the agent under qemu.
pub fn agent_binary() -> PathBuf {
    std::env::var_os("OUTLET_AGENT_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_outlet-agent")))
}

/// A command that runs the agent binary: directly, or under the emulator
/// `OUTLET_TEST_RUNNER` names (`qemu-aarch64-static`), after `wrapper`
/// (a program and its arguments the agent runs under; empty for none).
pub fn agent_command(wrapper: &[String]) -> Command {
    let runner = std::env::var("OUTLET_TEST_RUNNER").unwrap_or_default();
    let mut argv: Vec<std::ffi::OsString> = wrapper.iter().map(Into::into).collect();
    argv.extend(runner.split_whitespace().map(Into::into));
    argv.push(agent_binary().into());
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    command
}

pub async fn server() -> FakeServer {
    server_with(ServerConfig::default()).await
}

pub async fn server_with(config: ServerConfig) -> FakeServer {
    FakeServer::start(config).await.expect("fake server starts")
}

/// A server that hands out one QR per pairing round: the client shows it
/// for its fixed 60 s, then the round's codes have run out.
pub async fn one_ref_server() -> FakeServer {
    server_with(ServerConfig {
        refs_per_pairing: 1,
        ..ServerConfig::default()
    })
    .await
}

/// Until the companion's pre-keys are up, no contact can write to it.
pub async fn reachable(server: &FakeServer) {
    let deadline = Instant::now() + DEADLINE;
    while !server.contacts().companions_reachable() {
        assert!(
            Instant::now() < deadline,
            "the companion never uploaded its keys"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Bytes that do not compress and differ per `seed`: a received file's
/// content.
pub fn file_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// Lower-case hex SHA-256, as `message/media` names files.
pub fn sha_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The fake media host's certificate in a file, for the agent's
/// `whatsapp.media_ca_file` (the file lasts as long as the directory).
pub fn media_ca(server: &FakeServer) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let ca = dir.path().join("media-ca.pem");
    std::fs::write(&ca, server.media().ca_pem()).expect("the CA file");
    let ca = ca.display().to_string();
    (dir, ca)
}

/// Registration connections (QR rounds) the server has seen: a paired
/// outlet that needs no new QR adds none.
pub fn registrations(server: &FakeServer) -> usize {
    server
        .stats()
        .attempts
        .iter()
        .filter(|a| a.purpose == Some(fake_whatsapp::Purpose::Registration))
        .count()
}

/// A running agent process with its own data directory.
pub struct Agent {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub env: Vec<(String, String)>,
    /// A command the agent runs under (`unshare …`), empty for none.
    pub wrapper: Vec<String>,
    log: PathBuf,
    runs: u32,
}

/// A command's reply is an error that mentions `needle`.
#[track_caller]
pub fn assert_error(reply: &Value, needle: &str) {
    assert!(
        reply["error"].as_str().is_some_and(|e| e.contains(needle)),
        "expected an error mentioning {needle:?}: {reply}"
    );
}

/// Writes a config for an agent talking to `server`, rooted in `dir`.
pub fn write_config(dir: &Path, endpoint: &str, extra: &str) -> PathBuf {
    let config = dir.join("agent.toml");
    let text = format!(
        r#"[outlet]
id = "e2e"
name = "E2E Outlet"

[storage]
data_dir = "{data}"

[whatsapp]
endpoint = "{endpoint}"

[clock]
check = "off"

[display]
driver = "png"
png_path = "{png}"
{extra}
"#,
        data = dir.join("data").display(),
        png = dir.join("screen.png").display(),
    );
    std::fs::write(&config, text).expect("write config");
    config
}

impl Agent {
    /// Starts an agent in a fresh directory. `env` overrides config keys
    /// (`OUTLET_AGENT__SECTION__KEY`).
    pub fn start(server: &FakeServer, env: &[(&str, &str)]) -> Agent {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let config = write_config(&dir, &server.url(), "");
        let mut agent = Agent {
            child: None,
            log: dir.join("agent.log"),
            dir,
            config,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            wrapper: Vec::new(),
            runs: 0,
        };
        agent.spawn();
        agent
    }

    /// Starts an agent whose data directory is a filesystem of its own,
    /// `size` bytes of tmpfs, mounted in a private mount namespace
    /// (`unshare`; as root, or an unprivileged user where user namespaces
    /// are allowed). The test reaches it at [`Self::data_dir`] (through
    /// `/proc/<pid>/root`) and can fill it up; the control socket stays
    /// outside it, in the test's directory.
    pub fn start_on_small_disk(server: &FakeServer, size: u64) -> Agent {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let config = write_config(&dir, &server.url(), "");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let script = format!(
            "mount -t tmpfs -o size={size},mode=0700 tmpfs '{}' && exec \"$@\"",
            data.display()
        );
        let mut agent = Agent {
            child: None,
            log: dir.join("agent.log"),
            env: vec![(
                "OUTLET_AGENT__CONTROL__SOCKET".into(),
                dir.join("control.sock").display().to_string(),
            )],
            dir,
            config,
            wrapper: [
                "unshare",
                "--mount",
                "--map-root-user",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
                "sh",
            ]
            .map(String::from)
            .to_vec(),
            runs: 0,
        };
        agent.spawn();
        agent
    }

    /// The data directory as the agent sees it (its own mount namespace,
    /// for an agent started with [`Self::start_on_small_disk`]).
    pub fn data_dir(&self) -> PathBuf {
        let data = self.dir.join("data");
        match (&self.child, self.wrapper.is_empty()) {
            (Some(child), false) => Path::new("/proc")
                .join(child.id().to_string())
                .join("root")
                .join(data.strip_prefix("/").unwrap_or(&data)),
            _ => data,
        }
    }

    /// Starts an agent in `dir`, which already holds its `agent.toml`.
    pub fn start_in(dir: PathBuf, _server: &FakeServer) -> Agent {
        let mut agent = Agent {
            child: None,
            log: dir.join("agent.log"),
            config: dir.join("agent.toml"),
            dir,
            env: Vec::new(),
            wrapper: Vec::new(),
            runs: 0,
        };
        agent.spawn();
        agent
    }

    /// Starts (again) the agent process on the same directory.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.runs += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        // Tests that are not about MQTT keep off the shared broker: they
        // would all be outlet `e2e` with one client id, taking the
        // connection from each other and leaving retained messages behind.
        let mqtt_test = self
            .env
            .iter()
            .any(|(k, _)| k.starts_with("OUTLET_AGENT__MQTT__"));
        let mut command = agent_command(&self.wrapper);
        if !mqtt_test {
            command.env("OUTLET_AGENT__MQTT__ENABLED", "false");
        }
        // Quick first retries, unless the test chose its own.
        command.env("OUTLET_AGENT__RECONNECT__FIRST_DELAY_MS", "200");
        let child = command
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info,outlet_agent=debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("agent starts");
        self.child = Some(child);
    }

    pub fn socket(&self) -> PathBuf {
        self.env
            .iter()
            .find(|(k, _)| k == "OUTLET_AGENT__CONTROL__SOCKET")
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| self.dir.join("data").join("control.sock"))
    }

    pub fn png(&self) -> PathBuf {
        self.dir.join("screen.png")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One control-socket request; `None` while the agent is not answering.
    pub async fn request(&self, command: Value) -> Option<Value> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let stream = tokio::net::UnixStream::connect(self.socket()).await.ok()?;
        let (read, mut write) = stream.into_split();
        write
            .write_all(format!("{command}\n").as_bytes())
            .await
            .ok()?;
        let line = BufReader::new(read).lines().next_line().await.ok()??;
        serde_json::from_str(&line).ok()
    }

    pub async fn status(&self) -> Option<Value> {
        let reply = self.request(json!({"command": "status"})).await?;
        (reply["status"] == "ok").then(|| reply["data"].clone())
    }

    /// The device record in `session.db` as whatsapp-rust saved it (JSON),
    /// read while the agent is stopped.
    pub fn stored_device(&self) -> Option<Value> {
        let db = self.dir.join("data").join("session.db");
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("open session.db");
        let data: Option<Vec<u8>> = conn
            .query_row("SELECT data FROM device WHERE id = 1", [], |row| row.get(0))
            .ok();
        data.map(|d| serde_json::from_slice(&d).expect("device record is JSON"))
    }

    /// Polls the health until `pick` accepts it.
    pub async fn wait_for(&mut self, what: &str, pick: impl FnMut(&Value) -> bool) -> Value {
        self.wait_for_within(what, DEADLINE, pick).await
    }

    /// [`Self::wait_for`] with a deadline of its own (a bench's 10 000
    /// messages take longer than any test waits).
    pub async fn wait_for_within(
        &mut self,
        what: &str,
        deadline: Duration,
        mut pick: impl FnMut(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        let mut last = Value::Null;
        loop {
            if let Some(status) = self.status().await {
                if pick(&status) {
                    return status;
                }
                last = status;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(exit)) = child.try_wait()
            {
                panic!(
                    "agent exited ({exit}) while waiting for {what}\n{}",
                    self.log()
                );
            }
            if start.elapsed() > deadline {
                panic!(
                    "timed out waiting for {what}; last health {last:#}\n--- agent log ---\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn wait_state(&mut self, state: &str) -> Value {
        self.wait_for(&format!("state {state}"), |h| h["state"] == state)
            .await
    }

    /// Reads the QR off the rendered screen, as a phone would: the code the
    /// agent currently offers (the screen is drawn on its own thread and
    /// can lag behind on a loaded machine, still showing an older code), and
    /// never `not`.
    pub async fn qr_from_screen(&mut self, not: Option<&str>) -> String {
        let start = Instant::now();
        loop {
            if let Ok(qr) = fake_whatsapp::phone::decode_qr_png(&self.png())
                && Some(qr.as_str()) != not
                && self.current_qr().await.as_deref() == Some(qr.as_str())
            {
                return qr;
            }
            if start.elapsed() > DEADLINE {
                panic!("no QR on the screen\n{}", self.log());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The QR the agent offers now (control socket), if any.
    pub async fn current_qr(&self) -> Option<String> {
        let reply = self.request(json!({"command": "qr"})).await?;
        reply["data"]["qr"].as_str().map(str::to_string)
    }

    /// Pairs through the screen and the phone; returns the health once
    /// connected.
    pub async fn pair(&mut self, server: &FakeServer) -> Value {
        self.wait_state("pairing").await;
        let qr = self.qr_from_screen(None).await;
        server
            .phone()
            .scan(&qr)
            .await
            .expect("the phone scans the screen");
        self.wait_state("connected").await
    }

    /// The phone types a link code the agent offers; returns the health
    /// once connected, which must carry the linked number.
    pub async fn link_by_code(&mut self, server: &FakeServer, code: &str) -> Value {
        server
            .phone()
            .enter_code(code)
            .await
            .expect("the phone takes the code");
        let connected = self.wait_state("connected").await;
        assert_eq!(connected["phone"], "+6281234567890", "{connected}");
        connected
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        let mut child = self.child.take().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("agent did not exit\n{}", self.log());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit().await
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the agent binary to completion with arguments; returns (code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = agent_command(&[])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("agent runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
