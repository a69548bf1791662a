//! MQTT test helpers: a subscriber that records what a dashboard would see,
//! a private Mosquitto on a free port (for restarts, TLS and passwords),
//! certificates and password files.
//!
//! Included by the MQTT test files as `#[path = "common/mqtt.rs"] mod mqtt;`
//! next to `mod common;`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use outlet_agent::config::{Brokers, MqttConfig};
use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeFilter};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The broker CI provides.
/// The broker most MQTT tests share: the Mosquitto `tests/run` starts, or
/// the one `OUTLET_TEST_BROKER` names (how the suite was run once against
/// NATS's MQTT listener; ARCHITECTURE.md, "Decisions").
pub fn shared_broker() -> String {
    std::env::var("OUTLET_TEST_BROKER").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
}
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A unique id for outlets, prefixes and client ids, so tests can share
/// the broker and run in parallel.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{tag}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub at: Instant,
    pub wall: chrono::DateTime<chrono::Utc>,
}

impl Msg {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

enum Seen {
    SubAck,
    Msg(Msg),
    Failed(String),
}

/// A client that subscribes to filters and records everything, like a
/// dashboard. It can also publish (requests).
pub struct Subscriber {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Seen>,
    /// Everything received so far, in order.
    pub seen: Vec<Msg>,
    task: tokio::task::JoinHandle<()>,
    /// The QoS it subscribes with: 1 unless made with
    /// [`Subscriber::connect_qos0`].
    qos: QoS,
}

impl Subscriber {
    /// A plain connection to `broker` (`mqtt://host:port`).
    pub async fn connect(broker: &str, filters: &[&str]) -> Subscriber {
        let config = MqttConfig {
            broker: Brokers::one(broker),
            ..MqttConfig::default()
        };
        Self::connect_with(&config, filters).await
    }

    /// Like [`Subscriber::connect`], subscribing at QoS 0, as HQ's health
    /// views do (ARCHITECTURE.md, "What differs on NATS").
    pub async fn connect_qos0(broker: &str, filters: &[&str]) -> Subscriber {
        let mut sub = Self::connect(broker, &[]).await;
        sub.qos = QoS::AtMostOnce;
        if !filters.is_empty() {
            sub.subscribe(filters).await;
        }
        sub
    }

    /// A connection as `config` describes it (TLS, login); waits for the
    /// SUBACK so nothing published afterwards is missed.
    pub async fn connect_with(config: &MqttConfig, filters: &[&str]) -> Subscriber {
        Self::connect_as(config, &unique("sub"), false, filters).await
    }

    /// HQ as it should run: a persistent session (`clean_session = false`)
    /// under a fixed client id, so the broker keeps QoS 1 messages for it
    /// while it is away, across broker restarts when the broker persists.
    pub async fn connect_persistent(broker: &str, client_id: &str, filters: &[&str]) -> Subscriber {
        let config = MqttConfig {
            broker: Brokers::one(broker),
            ..MqttConfig::default()
        };
        Self::connect_as(&config, client_id, true, filters).await
    }

    async fn connect_as(
        config: &MqttConfig,
        client_id: &str,
        persistent: bool,
        filters: &[&str],
    ) -> Subscriber {
        let mut options = outlet_agent::mqtt::options::client_options(
            config,
            config.broker.first(),
            client_id,
            None,
        )
        .expect("subscriber options");
        options.set_keep_alive(Duration::from_secs(5));
        options.set_clean_session(!persistent);
        // Received files' chunks are up to 256 KiB.
        options.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        // Nagle off, as on the agent's own sockets: otherwise a request
        // published right after a PUBACK waits for the broker's delayed ACK
        // (~40 ms), which a bench would charge to the agent.
        eventloop.set_network_options(outlet_agent::mqtt::options::network_options());
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if tx.send(Seen::SubAck).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let msg = Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            at: Instant::now(),
                            wall: chrono::Utc::now(),
                        };
                        if tx.send(Seen::Msg(msg)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if tx.send(Seen::Failed(e.to_string())).is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        let mut sub = Subscriber {
            client,
            rx,
            seen: Vec::new(),
            task,
            qos: QoS::AtLeastOnce,
        };
        if !filters.is_empty() {
            sub.subscribe(filters).await;
        }
        sub
    }

    pub async fn subscribe(&mut self, filters: &[&str]) {
        assert!(
            self.try_subscribe(filters, Duration::from_secs(20)).await,
            "no SUBACK from the broker"
        );
    }

    /// Like [`Subscriber::subscribe`], but false when no SUBACK comes
    /// within `deadline`.
    pub async fn try_subscribe(&mut self, filters: &[&str], deadline: Duration) -> bool {
        let filters: Vec<SubscribeFilter> = filters
            .iter()
            .map(|f| SubscribeFilter::new(f.to_string(), self.qos))
            .collect();
        self.client
            .subscribe_many(filters)
            .await
            .expect("subscribe");
        let deadline = Instant::now() + deadline;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(Seen::SubAck)) => return true,
                Ok(Some(Seen::Msg(m))) => self.seen.push(m),
                Ok(Some(Seen::Failed(_))) => {}
                Ok(None) | Err(_) => return false,
            }
        }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .expect("publish");
    }

    /// Waits for the next message (after those already seen) matching
    /// `pick`. Panics with everything seen at the deadline.
    pub async fn wait_for(
        &mut self,
        what: &str,
        deadline: Duration,
        pick: impl FnMut(&Msg) -> bool,
    ) -> Msg {
        match self.try_wait_for(deadline, pick).await {
            Some(m) => m,
            None => panic!(
                "timed out after {deadline:?} waiting for {what}; seen:\n{}",
                self.describe()
            ),
        }
    }

    /// Like [`Subscriber::wait_for`], but None at the deadline.
    pub async fn try_wait_for(
        &mut self,
        deadline: Duration,
        mut pick: impl FnMut(&Msg) -> bool,
    ) -> Option<Msg> {
        let until = Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(Seen::Msg(m))) => {
                    self.seen.push(m.clone());
                    if pick(&m) {
                        return Some(m);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Like [`Subscriber::wait_for`], but a match among the messages
    /// already seen counts too (order between topics is not guaranteed).
    pub async fn seen_or_wait(
        &mut self,
        what: &str,
        deadline: Duration,
        mut pick: impl FnMut(&Msg) -> bool,
    ) -> Msg {
        if let Some(m) = self.seen.iter().find(|m| pick(m)) {
            return m.clone();
        }
        self.wait_for(what, deadline, pick).await
    }

    /// Where "from now on" starts, for [`Subscriber::wait_after`].
    pub fn mark(&self) -> usize {
        self.seen.len()
    }

    /// The first message after `mark` (seen already or still to come)
    /// matching `pick`; moves `mark` past it.
    pub async fn wait_after(
        &mut self,
        mark: &mut usize,
        what: &str,
        deadline: Duration,
        mut pick: impl FnMut(&Msg) -> bool,
    ) -> Msg {
        let start = (*mark).min(self.seen.len());
        if let Some(i) = self.seen[start..].iter().position(&mut pick) {
            *mark = start + i + 1;
            return self.seen[start + i].clone();
        }
        let m = self.wait_for(what, deadline, pick).await;
        *mark = self.seen.len();
        m
    }

    /// Waits for a message on `topic` (exact) matching `pick`.
    pub async fn wait_topic(
        &mut self,
        topic: &str,
        deadline: Duration,
        mut pick: impl FnMut(&Msg) -> bool,
    ) -> Msg {
        self.wait_for(topic, deadline, |m| m.topic == topic && pick(m))
            .await
    }

    /// Whatever arrives within `window` (for "nothing else came" checks).
    pub async fn drain(&mut self, window: Duration) -> Vec<Msg> {
        let until = Instant::now() + window;
        let mut got = Vec::new();
        while let Ok(Some(seen)) = tokio::time::timeout(
            until.saturating_duration_since(Instant::now()),
            self.rx.recv(),
        )
        .await
        {
            if let Seen::Msg(m) = seen {
                self.seen.push(m.clone());
                got.push(m);
            }
        }
        got
    }

    /// Sends `<prefix>/request/<command>` with a fresh transaction and
    /// returns the matching response. The subscriber must be subscribed to
    /// `<prefix>/response/+`.
    pub async fn request(&mut self, prefix: &str, command: &str, mut payload: Value) -> Value {
        let transaction = unique("tx");
        payload["transaction"] = json!(transaction);
        self.publish(
            &format!("{prefix}/request/{command}"),
            payload.to_string(),
            false,
        )
        .await;
        let topic = format!("{prefix}/response/{command}");
        self.wait_for(
            &format!("response to {command}"),
            Duration::from_secs(60),
            |m| m.topic == topic && m.json()["transaction"] == json!(transaction),
        )
        .await
        .json()
    }

    pub fn describe(&self) -> String {
        self.seen
            .iter()
            .map(|m| {
                let mut text = m.text();
                text.truncate(300);
                format!(
                    "  {} {} {}",
                    m.topic,
                    if m.retain { "(r)" } else { "" },
                    text
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
        self.task.abort();
    }
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A Mosquitto of our own, for tests that stop it, or need TLS or logins.
pub struct Broker {
    pub port: u16,
    pub dir: PathBuf,
    conf: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Starts `mosquitto -c` with a listener on a free port plus `extra`
    /// lines (after the `listener` line: per-listener settings go there).
    pub async fn start(extra: &str) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        make_readable(&dir);
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        let text = format!(
            "per_listener_settings true\n\
             persistence false\n\
             log_dest stderr\n\
             log_type all\n\
             listener {port} 127.0.0.1\n\
             {extra}\n",
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        make_readable(&conf);
        let mut broker = Broker {
            port,
            dir,
            conf,
            child: None,
        };
        broker.spawn().await;
        broker
    }

    /// (Re)starts the process on the same port and config.
    pub async fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        // Its log goes to a file we open: the broker drops to its own user
        // and could not open one in our temp directory itself.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mosquitto.log"))
            .expect("broker log");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("mosquitto exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto does not listen on {}:\n{}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process (SIGKILL: no goodbye to the clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process the way an operator does (SIGTERM): a broker with
    /// persistence saves its sessions first.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// Asks the broker to reload its config and password file.
    pub fn reload(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    pub fn url(&self, tls: bool) -> String {
        if tls {
            format!("mqtts://localhost:{}", self.port)
        } else {
            format!("mqtt://127.0.0.1:{}", self.port)
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    /// The running process's id, for benches that read its CPU time.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Mosquitto's version line, for bench reports.
pub fn mosquitto_version() -> String {
    Command::new(MOSQUITTO)
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "mosquitto".into())
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Mosquitto started as root drops to its own user: the files it reads
/// must be readable by others in a test's private temp directory.
pub fn make_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// A CA, a server certificate for `localhost`/127.0.0.1 and a client
/// certificate, as PEM files in `dir`.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn generate(dir: &Path) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "outlet-agent test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");

        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &ca).expect("signed");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) =
            leaf(vec!["localhost".into(), "127.0.0.1".into()], "localhost");
        let (client_cert, client_key) = leaf(Vec::new(), "outlet-agent test client");

        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write pem");
            make_readable(&path);
            path
        };
        Pki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }
}

/// Writes a Mosquitto password file with these logins: with
/// `mosquitto_passwd -b` when it is installed, else PBKDF2-SHA512 hashes
/// (`$7$`, Mosquitto 2's format) computed here.
pub fn write_password_file(path: &Path, logins: &[(&str, &str)]) {
    let _ = std::fs::remove_file(path);
    let forced = std::env::var_os("MQTT_TEST_FORCE_PBKDF2").is_some();
    let mut tool = !forced;
    for (i, (user, password)) in logins.iter().enumerate() {
        if !tool {
            break;
        }
        let mut command = Command::new("mosquitto_passwd");
        if i == 0 {
            command.arg("-c");
        }
        tool = command
            .arg("-b")
            .arg(path)
            .arg(user)
            .arg(password)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    }
    if !tool {
        let text: String = logins
            .iter()
            .map(|(user, password)| format!("{user}:{}\n", pbkdf2_hash(password)))
            .collect();
        std::fs::write(path, text).expect("write password file");
    }
    make_readable(path);
}

/// `$7$101$<salt>$<hash>`: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte
/// salt, 64-byte hash, both base64 — what `mosquitto_passwd` writes.
pub fn pbkdf2_hash(password: &str) -> String {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let iterations = 101u32;
    let mut salt = [0u8; 12];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .expect("random salt");
    let mut hash = [0u8; 64];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        std::num::NonZeroU32::new(iterations).expect("non-zero"),
        &salt,
        password.as_bytes(),
        &mut hash,
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("$7${iterations}${}${}", b64.encode(salt), b64.encode(hash))
}

/// Resident memory of a process, from `/proc/<pid>/statm`.
pub fn rss_bytes(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).expect("statm");
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// Clears every retained message under `filters` (a test's own topics on
/// the shared broker), so runs do not pile up retained state.
pub async fn clear_retained(config: &MqttConfig, filters: &[&str]) {
    let mut sub = Subscriber::connect_with(config, filters).await;
    sub.drain(Duration::from_millis(300)).await;
    let retained: Vec<String> = sub
        .seen
        .clone()
        .into_iter()
        .filter(|m| m.retain && !m.payload.is_empty())
        .map(|m| m.topic)
        .collect();
    for topic in retained {
        sub.publish(&topic, Vec::new(), true).await;
    }
    // Let the client hand the empty messages over before it is dropped.
    sub.drain(Duration::from_millis(200)).await;
}

/// The MQTT settings a test subscriber uses for the shared broker.
pub fn shared() -> MqttConfig {
    MqttConfig {
        broker: Brokers::one(&shared_broker()),
        ..MqttConfig::default()
    }
}
