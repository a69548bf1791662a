//! `outlet-agent demo`: see the whole product on a machine without
//! WhatsApp — QR on the terminal screen, a phone scans it, connected, and
//! then the main job: a customer writes, HQ reads it on MQTT and replies,
//! the reply reaches the customer's phone.
//!
//! Starts the fake WhatsApp server (tests/fake-whatsapp) on loopback, runs
//! the real agent against it with the terminal display and a fresh data
//! directory, and lets a simulated phone scan the QR a few seconds after it
//! appears — read through the agent's own control socket, as a technician's
//! `outlet-agent qr` would.
//!
//! Messages need a broker. The demo uses one listening on 127.0.0.1:1883,
//! else starts a private Mosquitto on a free loopback port (killed when the
//! demo ends), else says so and shows the pairing alone. Once the agent is
//! connected, the fake customer Budi writes; the demo plays HQ with its own
//! MQTT client, as HQ would: it prints the `message/in` it receives, sends
//! the reply through `request/send`, prints the response and the statuses,
//! and what Budi's phone decrypted. Then Budi sends a photo of his transfer
//! receipt: HQ puts it together from its chunks (`message/media`,
//! `media/<sha256>/<index>`), checks it and saves it, printing where.
//!
//! # The screen
//!
//! The terminal display owns stdout and the top of the terminal: it clears
//! the whole terminal whenever its number of lines changes (the `Connected`
//! screen grows a "last message" line when Budi's message arrives) and
//! otherwise rewrites its changed lines in place. Lines simply printed
//! under it would be wiped a moment later. So on a terminal the demo keeps
//! its log in a panel from row [`PANEL_ROW`] down, repainted at each new
//! line and every second while the agent is `connected` (other screens,
//! the QR above all, reach further down), cut to the newest lines that fit
//! the terminal so it never scrolls the screen away. When stderr is not a
//! terminal (a pipe, a file) the lines are printed plainly as they come.

use std::io::{IsTerminal as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use fake_whatsapp::{Contacts, FakeServer, ServerConfig};
use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeFilter};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

mod receipt;

use super::CmdResult;
use crate::cmd::{EXIT_FAILURE, OrExit};
use crate::command::Command;
use crate::config::{ClockCheck, Config, MqttConfig};

/// How long the QR stays on screen before the phone scans it.
const SCAN_AFTER: Duration = Duration::from_secs(6);
/// The port a developer's (or `tests/run`'s) broker listens on.
const STANDARD_BROKER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 1883);
/// Each step of the conversation gets this long; a step that takes longer
/// is reported and the message part ends, the agent keeps running.
const STEP: Duration = Duration::from_secs(30);
/// The customer: a contact of the fake server, a real Signal party.
const BUDI: &str = "6281111111111";
const HELLO: &str = "Halo, apakah pesanan saya sudah siap?";
const REPLY: &str = "Halo Budi, pesanan Anda sudah siap. Silakan diambil di toko.";
const NO_BROKER: &str =
    "messages need an MQTT broker: apt-get install mosquitto, then run the demo again";
/// The terminal row (1-based) where the demo's panel starts: below the
/// `Connected` screen (six lines, the cursor parked on the seventh), with
/// room for a line or two more.
const PANEL_ROW: usize = 10;
/// A full redraw of the screen wipes the panel for at most this long.
const REPAINT: Duration = Duration::from_secs(1);

pub async fn run() -> CmdResult {
    let server = FakeServer::start(ServerConfig::default())
        .await
        .or_exit_with(EXIT_FAILURE, "demo: cannot start the fake WhatsApp server")?;
    let data_dir = std::env::temp_dir().join(format!("outlet-agent-demo-{}", std::process::id()));
    let mut config = Config::default();
    config.outlet.id = "demo".into();
    config.outlet.name = "Demo Outlet".into();
    config.storage.data_dir = data_dir.clone();
    config.whatsapp.endpoint = server.url();
    // The fake's media host has a certificate of its own: trusted for media
    // as a proxy's would be.
    let media_ca = std::env::temp_dir().join(format!(
        "outlet-agent-demo-{}-media-ca.pem",
        std::process::id()
    ));
    std::fs::write(&media_ca, server.media().ca_pem()).or_exit_with(
        EXIT_FAILURE,
        "demo: cannot write the media host's certificate",
    )?;
    config.whatsapp.media_ca_file = Some(media_ca.clone());
    config.clock.check = ClockCheck::Off;
    config.display.driver = outlet_display::DriverChoice::Terminal;
    // A developer's Home Assistant on the same broker must not grow a
    // "Demo Outlet" device.
    config.mqtt.discovery = false;
    // The terminal screen is the show; only errors may interrupt it.
    config.log.level = "error".into();
    crate::logging::init(&config.log);
    let socket = config.control_socket();
    let log = Log::new(&socket);

    // Held until the agent has stopped: dropping it stops a private broker.
    let broker = match find_broker().await {
        Ok(broker) => {
            config.mqtt.broker = crate::config::Brokers::one(&broker.url);
            Some(broker)
        }
        Err(why) => {
            // Without this the agent would retry a missing broker forever.
            config.mqtt.enabled = false;
            eprintln!("outlet-agent demo: {why}");
            // The line above is gone once the screen is drawn.
            log.panel_only(format!("demo: {why}"));
            None
        }
    };
    let messages = match &broker {
        Some(b) if b.private.is_some() => format!(
            "then a customer writes and HQ (this demo, on MQTT at {}, a private Mosquitto) \
             replies",
            b.url
        ),
        Some(b) => format!(
            "then a customer writes and HQ (this demo, on MQTT at {}) replies",
            b.url
        ),
        None => "messages are off (no MQTT broker)".into(),
    };
    eprintln!(
        "outlet-agent demo: fake WhatsApp at {} (test build: certificate checks skipped, \
         loopback only). The phone scans the QR {}s after it appears; {messages}. \
         Ctrl-C to stop.",
        server.url(),
        SCAN_AFTER.as_secs()
    );

    let phone = server.phone();
    let scan_socket = socket.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let Ok(reply) = crate::control::request(&scan_socket, &Command::Qr).await else {
                continue;
            };
            let Some(qr) = reply["data"]["qr"].as_str().map(str::to_string) else {
                continue;
            };
            tokio::time::sleep(SCAN_AFTER).await;
            match phone.scan(&qr).await {
                Ok(_) => return,
                Err(e) => tracing::warn!("demo phone: {e}; trying the next code"),
            }
        }
    });

    if config.messages_enabled() {
        let prefix = match crate::topics::Topics::new(&config.mqtt.topic_prefix, &config.outlet.id)
        {
            Ok(topics) => topics.prefix().to_string(),
            Err(_) => format!("outlet/{}", config.outlet.id),
        };
        let hq = Hq::connect(&config.mqtt, &prefix, log.clone());
        let contacts = server.contacts();
        let (socket, log) = (socket.clone(), log.clone());
        tokio::spawn(async move {
            let result = match hq {
                Ok(hq) => conversation(hq, &socket, &contacts, &log).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                log.say(format!(
                    "demo: the message part stopped: {e:#}. The agent keeps running."
                ));
            }
        });
    }

    let result = super::run::run_with(Arc::new(config)).await;
    log.finish();
    drop(broker);
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_file(&media_ca);
    result
}

/// The demo's own lines (see "The screen" above): a panel under the
/// agent's screen on a terminal, plain lines elsewhere.
#[derive(Clone)]
struct Log {
    panel: Option<Arc<Panel>>,
}

struct Panel {
    lines: Mutex<Vec<String>>,
    changed: Notify,
    /// Painted at least once: worth leaving on the terminal at the end.
    painted: std::sync::atomic::AtomicBool,
}

impl Log {
    /// A panel, and its painter, when stderr is a terminal.
    fn new(socket: &Path) -> Log {
        if !std::io::stderr().is_terminal() {
            return Log { panel: None };
        }
        let panel = Arc::new(Panel {
            lines: Mutex::new(Vec::new()),
            changed: Notify::new(),
            painted: false.into(),
        });
        tokio::spawn(paint(panel.clone(), socket.to_path_buf()));
        Log { panel: Some(panel) }
    }

    fn say(&self, line: String) {
        match &self.panel {
            Some(panel) => panel.push(line),
            None => eprintln!("{line}"),
        }
    }

    /// A line that plain output has already printed.
    fn panel_only(&self, line: String) {
        if let Some(panel) = &self.panel {
            panel.push(line);
        }
    }

    /// The agent stopped: the panel once more, the cursor under it, so the
    /// log stays above the shell's prompt.
    fn finish(&self) {
        if let Some(panel) = &self.panel
            && panel.painted.load(std::sync::atomic::Ordering::Relaxed)
        {
            let _ = write_panel(&panel.snapshot(), false);
        }
    }
}

impl Panel {
    fn push(&self, line: String) {
        self.lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(line);
        self.changed.notify_one();
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Repaints the panel at each new line and every [`REPAINT`], while the
/// agent is connected.
async fn paint(panel: Arc<Panel>, socket: PathBuf) {
    loop {
        tokio::select! {
            _ = panel.changed.notified() => {}
            _ = tokio::time::sleep(REPAINT) => {}
        }
        let lines = panel.snapshot();
        if lines.is_empty() || !is_connected(&socket).await {
            continue;
        }
        if write_panel(&lines, true).is_ok() {
            panel
                .painted
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Writes the newest `lines` that fit from [`PANEL_ROW`] to the bottom of
/// the terminal, in one write. `restore` puts the cursor back where the
/// screen left it; otherwise it stays under the panel.
fn write_panel(lines: &[String], restore: bool) -> std::io::Result<()> {
    let (rows, cols) = terminal_size().unwrap_or((24, 80));
    // The last row stays free: a line ending there would scroll the
    // terminal, and the screen with it.
    let mut room = rows.saturating_sub(PANEL_ROW);
    let mut shown = Vec::new();
    for line in lines.iter().rev() {
        let height = line.chars().count().div_ceil(cols).max(1);
        if height > room {
            break;
        }
        room -= height;
        shown.push(line.as_str());
    }
    shown.reverse();
    let mut text = String::from(if restore { "\x1b7" } else { "" });
    text.push_str(&format!("\x1b[{PANEL_ROW};1H\x1b[J"));
    text.push_str(&shown.join("\r\n"));
    text.push_str(if restore { "\x1b8" } else { "\r\n" });
    let mut err = std::io::stderr().lock();
    err.write_all(text.as_bytes())?;
    err.flush()
}

/// Rows and columns of the terminal on stderr.
fn terminal_size() -> Option<(usize, usize)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which
    // points at a live, properly aligned one.
    let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_row > 0 && size.ws_col > 0)
        .then(|| (usize::from(size.ws_row), usize::from(size.ws_col)))
}

/// The broker the demo's agent and its HQ use.
struct Broker {
    url: String,
    /// Ours, when nothing listened on the standard port.
    private: Option<PrivateBroker>,
}

/// A Mosquitto the demo started; stopped (and its directory removed) when
/// dropped, so it never outlives a demo that ends normally.
struct PrivateBroker {
    child: Child,
    dir: PathBuf,
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A broker on 127.0.0.1:1883, else a private Mosquitto, else why not.
async fn find_broker() -> Result<Broker, String> {
    if listens(STANDARD_BROKER).await {
        return Ok(Broker {
            url: format!("mqtt://{STANDARD_BROKER}"),
            private: None,
        });
    }
    let Some(mosquitto) = find_mosquitto() else {
        return Err(NO_BROKER.into());
    };
    match start_mosquitto(&mosquitto).await {
        Ok((private, address)) => Ok(Broker {
            url: format!("mqtt://{address}"),
            private: Some(private),
        }),
        Err(e) => Err(format!(
            "cannot start {}: {e:#}; messages are off",
            mosquitto.display()
        )),
    }
}

async fn listens(address: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(address)
        )
        .await,
        Ok(Ok(_))
    )
}

/// `/usr/sbin/mosquitto` (Debian's place, often not on a user's PATH), or
/// `mosquitto` on PATH.
fn find_mosquitto() -> Option<PathBuf> {
    let sbin = PathBuf::from("/usr/sbin/mosquitto");
    if sbin.is_file() {
        return Some(sbin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("mosquitto"))
        .find(|p| p.is_file())
}

/// Mosquitto on a free loopback port, anonymous, in a temp directory; ready
/// when it accepts a connection.
async fn start_mosquitto(mosquitto: &Path) -> anyhow::Result<(PrivateBroker, SocketAddr)> {
    let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .context("no free loopback port")?
        .port();
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let dir = std::env::temp_dir().join(format!(
        "outlet-agent-demo-{}-mosquitto",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let conf = dir.join("mosquitto.conf");
    let text = format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n");
    if let Err(e) = std::fs::write(&conf, text) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e).with_context(|| format!("writing {}", conf.display()));
    }
    let mut command = std::process::Command::new(mosquitto);
    command
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Its own process group: Ctrl-C reaches the agent, which then says
    // goodbye to a broker still there; the guard stops the broker after.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e).context("spawn");
        }
    };
    let mut broker = PrivateBroker { child, dir };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if listens(address).await {
            return Ok((broker, address));
        }
        if let Ok(Some(status)) = broker.child.try_wait() {
            bail!("it exited ({status}) before listening on {address}");
        }
        if Instant::now() > deadline {
            bail!("it did not listen on {address} within 5 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the agent's control socket says `connected` now.
async fn is_connected(socket: &Path) -> bool {
    matches!(
        crate::control::request(socket, &Command::Status).await,
        Ok(reply) if reply["data"]["state"] == "connected"
    )
}

/// Until the agent says `connected`.
async fn wait_connected(socket: &Path) {
    while !is_connected(socket).await {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// What HQ's client hears.
enum Heard {
    Subscribed,
    Message {
        topic: String,
        payload: Value,
    },
    /// A chunk of a received file (`media/<sha256>/<index>`), as it came.
    Chunk {
        topic: String,
        payload: Vec<u8>,
    },
}

/// HQ's side: an MQTT client of its own, subscribed to the outlet's
/// messages and send responses, exactly as HQ's would be.
struct Hq {
    client: AsyncClient,
    heard: mpsc::UnboundedReceiver<Heard>,
    prefix: String,
}

impl Hq {
    /// Connects (in the background, retrying) and subscribes on every
    /// connection: the session is clean, so a reconnect forgets them.
    fn connect(mqtt: &MqttConfig, prefix: &str, log: Log) -> anyhow::Result<Hq> {
        let client_id = format!("outlet-demo-hq-{}", std::process::id());
        let mut options =
            crate::mqtt::options::client_options(mqtt, mqtt.broker.first(), &client_id, None)?;
        // The photo's chunks are up to 256 KiB.
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let (tx, heard) = mpsc::unbounded_channel();
        let filters = [
            format!("{prefix}/message/#"),
            format!("{prefix}/response/send"),
            format!("{prefix}/media/#"),
        ];
        let subscriber = client.clone();
        let chunk_prefix = format!("{prefix}/media/");
        tokio::spawn(async move {
            let mut complained = false;
            while !tx.is_closed() {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let filters = filters
                            .iter()
                            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                        if let Err(e) = subscriber.try_subscribe_many(filters) {
                            log.say(format!("demo: HQ cannot subscribe: {e}"));
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = tx.send(Heard::Subscribed);
                    }
                    Ok(Event::Incoming(Packet::Publish(p)))
                        if p.topic.starts_with(&chunk_prefix) =>
                    {
                        let _ = tx.send(Heard::Chunk {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                        });
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let payload = serde_json::from_slice(&p.payload).unwrap_or_else(|_| {
                            Value::String(String::from_utf8_lossy(&p.payload).into())
                        });
                        let _ = tx.send(Heard::Message {
                            topic: p.topic,
                            payload,
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if tx.is_closed() {
                            break;
                        }
                        if !complained {
                            log.say(format!("demo: HQ's MQTT connection: {e}; retrying"));
                            complained = true;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Hq {
            client,
            heard,
            prefix: prefix.to_string(),
        })
    }

    fn topic(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.prefix)
    }

    /// The next thing heard before `deadline`.
    async fn next(&mut self, deadline: tokio::time::Instant, what: &str) -> anyhow::Result<Heard> {
        match tokio::time::timeout_at(deadline, self.heard.recv()).await {
            Ok(Some(heard)) => Ok(heard),
            Ok(None) => bail!("HQ's MQTT client stopped while waiting for {what}"),
            Err(_) => bail!("no {what} within {} s", STEP.as_secs()),
        }
    }

    /// The first message on `topic` that `wanted` accepts.
    async fn wait_for(
        &mut self,
        topic: &str,
        what: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            if let Heard::Message { topic: t, payload } = self.next(deadline, what).await?
                && t == topic
                && wanted(&payload)
            {
                return Ok(payload);
            }
        }
    }
}

impl Drop for Hq {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
    }
}

/// Budi writes, HQ reads and answers, Budi's phone shows the answer —
/// printed as it happens. Matches only this run's ids, so a shared broker's
/// other traffic is not shown.
async fn conversation(
    mut hq: Hq,
    socket: &Path,
    contacts: &Contacts,
    log: &Log,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STEP;
    while !matches!(
        hq.next(deadline, "HQ's subscription").await?,
        Heard::Subscribed
    ) {}
    wait_connected(socket).await;
    // A contact cannot write to the new companion before its keys are up.
    let deadline = Instant::now() + STEP;
    while !contacts.companions_reachable() {
        if Instant::now() > deadline {
            bail!(
                "the agent did not upload its keys within {} s",
                STEP.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    log.say("── messages: what HQ sees on MQTT ──".into());
    // As most customers now: WhatsApp addresses Budi by his LID and names
    // his number beside it, which he shares.
    contacts
        .set_addressing(BUDI, fake_whatsapp::Addressing::Lid)
        .context("Budi is not a contact")?;
    let lid = contacts.lid(BUDI);
    let id = contacts
        .send_text(BUDI, HELLO)
        .await
        .context("Budi cannot write")?;
    log.say(format!(
        "Budi writes to the outlet from his LID {lid}@lid (his number shared beside it): {HELLO:?}"
    ));

    let in_topic = hq.topic("message/in");
    let message = hq
        .wait_for(&in_topic, "message/in for Budi's message", |m| {
            m["id"] == json!(id)
        })
        .await?;
    log.say(format!("HQ  ← {in_topic} {message}"));
    log.say(format!(
        "HQ knows Budi by his number: from {} (from_lid {})",
        message["from"], message["from_lid"]
    ));

    let client_id = format!("demo-reply-{}", std::process::id());
    let transaction = format!("demo-{}", std::process::id());
    let request = json!({
        "to": message["chat"],
        "text": REPLY,
        "client_id": client_id,
        "quoted_id": id,
        "transaction": transaction,
    });
    let request_topic = hq.topic("request/send");
    hq.client
        .publish(&request_topic, QoS::AtLeastOnce, false, request.to_string())
        .await
        .map_err(|e| anyhow!("publishing {request_topic}: {e}"))?;
    log.say(format!("HQ  → {request_topic} {request}"));

    // The response and the statuses come on different connections of the
    // agent, in either order: print each as it arrives, until the reply
    // was read (or failed).
    let response_topic = hq.topic("response/send");
    let status_topic = hq.topic("message/status");
    let mut sent_id = None;
    let mut last_status = String::new();
    let deadline = tokio::time::Instant::now() + STEP;
    while !(sent_id.is_some() && matches!(last_status.as_str(), "read" | "failed")) {
        let Heard::Message { topic, payload } = hq
            .next(deadline, "response and statuses of the reply")
            .await?
        else {
            continue;
        };
        if topic == response_topic && payload["transaction"] == json!(transaction) {
            log.say(format!("HQ  ← {topic} {payload}"));
            if payload["status"] != "ok" {
                bail!("the agent refused the send: {}", payload["error"]);
            }
            let id = payload["data"]["id"].as_str();
            sent_id = Some(id.context("the response has no id")?.to_string());
        } else if topic == status_topic && payload["client_id"] == json!(client_id) {
            log.say(format!("HQ  ← {topic} {payload}"));
            last_status = payload["status"].as_str().unwrap_or_default().to_string();
        }
    }
    if last_status == "failed" {
        bail!("the reply failed");
    }

    let sent_id = sent_id.unwrap_or_default();
    let deadline = Instant::now() + STEP;
    let entry = loop {
        let inbox = contacts.inbox(BUDI).context("Budi's inbox")?;
        if let Some(entry) = inbox.into_iter().find(|e| e.device == 0 && e.id == sent_id) {
            break entry;
        }
        if Instant::now() > deadline {
            bail!(
                "Budi's phone did not decrypt the reply within {} s",
                STEP.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    log.say(format!(
        "Budi's phone decrypted {} from {}: {:?}{}",
        entry.id,
        entry.from,
        entry.text.as_deref().unwrap_or(&entry.kind),
        match &entry.quoted_id {
            Some(quoted) => format!(" (quoting {quoted})"),
            None => String::new(),
        }
    ));
    receipt::receipt_photo(&mut hq, contacts, log).await?;
    log.say("── done; the agent keeps running, Ctrl-C to stop ──".into());
    Ok(())
}
