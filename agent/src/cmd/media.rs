//! `outlet-agent fleet media --save DIR`: HQ's side of received files.
//!
//! Follows every outlet's `message/media` announcements and
//! `media/<sha256>/<index>` chunks on a persistent session (the broker keeps
//! what arrives while this is away), writes each chunk at its place in
//! `DIR/<outlet>/.<sha256>.part`, and once every chunk is there and the
//! SHA-256 matches, renames it to `DIR/<outlet>/<sha256>.<ext>` with
//! `<sha256>.json` beside it (message id, sender, chat, caption, kind). A
//! file that stops short is asked for again with `request/media`, ever less
//! often; one that is unfinished when this stops is asked for again at the
//! next start (its announcement is kept in `.<sha256>.wanted.json`). Each
//! publish is acknowledged to the broker only once handled, so one that a
//! crash interrupted is delivered again to the next run.
//!
//! Bounded: at most [`MAX_FILES`] files in progress and [`MAX_SENDERS`]
//! remembered message records (for the JSON beside each file); a chunk or
//! announcement that does not parse, names another path, or does not fit is
//! logged and dropped.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeFilter};
use serde_json::{Value, json};

use super::fleet::fleet_config;
use super::{CmdResult, EXIT_CONFIG, OrExit as _};
use crate::messages::media::spool::{is_sha256, sha256_of};
use crate::mqtt::options::{self, Failover};
use crate::topics::PrefixPattern;

/// Files being put together at once, at most.
pub const MAX_FILES: usize = 1000;
/// `message/in` records remembered for the JSON beside a file.
pub const MAX_SENDERS: usize = 10_000;
/// The largest file taken (the agents' own limit is far below).
const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// The largest packet taken: a chunk of up to 1 MiB and its topic.
const MAX_PACKET: usize = 1024 * 1024 + 4096;
/// A file with no new chunk for this long is asked for again…
const STALLED: Duration = Duration::from_secs(30);
/// …and again after twice as long each time, up to this.
const MAX_ASK_EVERY: Duration = Duration::from_secs(600);
const TICK: Duration = Duration::from_secs(2);

/// What `fleet media` was asked to do.
#[derive(Debug, Clone)]
pub struct MediaArgs {
    pub save: PathBuf,
    /// The persistent session's client id.
    pub client_id: String,
}

/// One file being put together.
#[derive(Debug)]
struct Assembly {
    outlet: String,
    sha256: String,
    announcement: Value,
    size: u64,
    chunk_size: u64,
    chunks: u32,
    have: BTreeSet<u32>,
    last_progress: Instant,
    ask_every: Duration,
}

struct Saver {
    dir: PathBuf,
    pattern: PrefixPattern,
    files: HashMap<(String, String), Assembly>,
    /// `(outlet, message id)` → `message/in`, oldest first out.
    senders: HashMap<(String, String), Value>,
    sender_order: VecDeque<(String, String)>,
}

pub async fn run(
    config_path: Option<&Path>,
    broker: Option<String>,
    prefix: Option<String>,
    args: MediaArgs,
) -> CmdResult {
    let (config, pattern) = fleet_config(config_path, broker, prefix)?;
    crate::logging::init(&config.log);
    std::fs::create_dir_all(&args.save)
        .or_exit_with(EXIT_CONFIG, &format!("--save {}", args.save.display()))?;
    let mut saver = Saver {
        dir: args.save.clone(),
        pattern,
        files: HashMap::new(),
        senders: HashMap::new(),
        sender_order: VecDeque::new(),
    };
    saver.resume();
    let mut failover = Failover::new(&config.mqtt, &args.client_id);
    let session = |url: &str| -> Result<rumqttc::MqttOptions, options::OptionsError> {
        let mut opts = options::client_options(&config.mqtt, url, &args.client_id, None)?;
        opts.set_clean_session(false);
        opts.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        // Each publish is acknowledged once handled (its chunk written, its
        // announcement noted on disk), not when read off the socket.
        opts.set_manual_acks(true);
        Ok(opts)
    };
    let opts = session(failover.url()).or_exit_with(EXIT_CONFIG, "MQTT")?;
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let (mut term, mut int) = super::stop_signals()?;
    let mut tick = tokio::time::interval(TICK);
    let mut backoff = crate::mqtt::driver::reconnect_backoff(&config.mqtt);
    let mut connected_at: Option<Instant> = None;
    let mut acks_due: VecDeque<rumqttc::Publish> = VecDeque::new();
    // While set, the connection waits (backoff) instead of being polled.
    let mut reconnect_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                super::ack_due(&client, &mut acks_due);
                if connected_at.is_some() {
                    saver.ask_for_stalled(&client);
                }
            }
            () = super::sleep_until(reconnect_at), if reconnect_at.is_some() => {
                reconnect_at = None;
                options::move_on_with(&mut eventloop, &mut failover, session);
            }
            event = eventloop.poll(), if reconnect_at.is_none() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected_at = Some(Instant::now());
                    // Not acknowledged on the connection that brought
                    // them: the broker delivers them again.
                    acks_due.clear();
                    eprintln!("media: connected to {}", failover.shown());
                    let filters = ["message/in", "message/media", "media/+/+", "response/media"]
                        .map(|leaf| SubscribeFilter::new(saver.pattern.filter(leaf), QoS::AtLeastOnce));
                    if let Err(e) = client.try_subscribe_many(filters) {
                        eprintln!("media: cannot subscribe: {e}");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    saver.on_publish(&client, &p.topic, &p.payload);
                    // Acknowledged once handled: a kill before that, and
                    // the broker delivers it again to the next run.
                    acks_due.push_back(p);
                    super::ack_due(&client, &mut acks_due);
                }
                Ok(_) => {}
                Err(e) => {
                    if let Some(at) = connected_at.take() {
                        backoff.connection_ended(at.elapsed());
                    }
                    let delay = backoff.next_delay();
                    eprintln!("media: MQTT {}: {e}; again in {delay:?}", failover.shown());
                    reconnect_at = Some(tokio::time::Instant::now() + delay);
                }
            },
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await;
    Ok(())
}

/// An outlet id usable as a directory name (the agents' ids are so).
fn outlet_dir_name(id: &str) -> Option<&str> {
    (!id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(id)
}

/// The file's extension: from its type, else its name, else `bin`.
pub fn extension(mimetype: &str, file_name: Option<&str>) -> String {
    let base = mimetype.split(';').next().unwrap_or_default().trim();
    let known = match base {
        "image/jpeg" => Some("jpg"),
        "image/png" => Some("png"),
        "image/webp" => Some("webp"),
        "image/gif" => Some("gif"),
        "video/mp4" => Some("mp4"),
        "video/3gpp" => Some("3gp"),
        "audio/ogg" => Some("ogg"),
        "audio/mpeg" => Some("mp3"),
        "audio/mp4" | "audio/aac" => Some("m4a"),
        "application/pdf" => Some("pdf"),
        _ => None,
    };
    if let Some(ext) = known {
        return ext.to_string();
    }
    file_name
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .filter(|ext| {
            !ext.is_empty() && ext.len() <= 8 && ext.bytes().all(|b| b.is_ascii_alphanumeric())
        })
        .unwrap_or_else(|| "bin".to_string())
}

impl Assembly {
    /// A file to put together, from its announcement: `None` when the
    /// announcement does not add up (sizes, counts) or is too large.
    fn announced(outlet: &str, sha256: &str, announcement: Value) -> Option<Assembly> {
        let size = announcement["size"].as_u64()?;
        let chunk_size = announcement["chunk_size"].as_u64().filter(|c| *c > 0)?;
        let chunks = announcement["chunks"]
            .as_u64()
            .and_then(|c| u32::try_from(c).ok())?;
        if size > MAX_FILE_BYTES || u64::from(chunks) != size.div_ceil(chunk_size).max(1) {
            return None;
        }
        Some(Assembly {
            outlet: outlet.to_string(),
            sha256: sha256.to_string(),
            announcement,
            size,
            chunk_size,
            chunks,
            have: BTreeSet::new(),
            last_progress: Instant::now(),
            ask_every: STALLED,
        })
    }
}

impl Saver {
    fn outlet_dir(&self, outlet: &str) -> PathBuf {
        self.dir.join(outlet)
    }

    fn part_path(&self, outlet: &str, sha: &str) -> PathBuf {
        self.outlet_dir(outlet).join(format!(".{sha}.part"))
    }

    fn wanted_path(&self, outlet: &str, sha: &str) -> PathBuf {
        self.outlet_dir(outlet).join(format!(".{sha}.wanted.json"))
    }

    fn on_publish(&mut self, client: &AsyncClient, topic: &str, payload: &[u8]) {
        let Some((outlet, leaf)) = self.pattern.split_leaves(topic) else {
            return;
        };
        let Some(outlet) = outlet_dir_name(outlet).map(str::to_string) else {
            eprintln!("media: an outlet id unfit for a directory name was ignored");
            return;
        };
        match leaf {
            "message/in" => self.remember(&outlet, payload),
            "message/media" => self.announced(&outlet, payload),
            "response/media" => {
                let v: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
                if v["status"] != "ok" {
                    eprintln!("media: {outlet}: request/media refused: {}", v["error"]);
                }
            }
            _ => {
                let mut parts = leaf.split('/');
                if let (Some("media"), Some(sha), Some(index), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                {
                    match index.parse::<u32>() {
                        Ok(index) if is_sha256(sha) => {
                            self.chunk(client, &outlet, sha, index, payload)
                        }
                        _ => eprintln!(
                            "media: {outlet}: a chunk topic that does not parse was dropped"
                        ),
                    }
                }
            }
        }
    }

    fn remember(&mut self, outlet: &str, payload: &[u8]) {
        let Ok(record) = serde_json::from_slice::<Value>(payload) else {
            return;
        };
        if record.get("media").is_none() {
            return;
        }
        let Some(id) = record["id"].as_str() else {
            return;
        };
        let key = (outlet.to_string(), id.to_string());
        if self.senders.insert(key.clone(), record).is_none() {
            self.sender_order.push_back(key);
        }
        while self.sender_order.len() > MAX_SENDERS {
            if let Some(old) = self.sender_order.pop_front() {
                self.senders.remove(&old);
            }
        }
    }

    fn announced(&mut self, outlet: &str, payload: &[u8]) {
        let Ok(announcement) = serde_json::from_slice::<Value>(payload) else {
            eprintln!("media: {outlet}: an announcement that is not JSON was dropped");
            return;
        };
        let Some(sha) = announcement["sha256"]
            .as_str()
            .filter(|s| is_sha256(s))
            .map(str::to_string)
        else {
            eprintln!("media: {outlet}: an announcement without a sha256 was dropped");
            return;
        };
        if let Some(error) = announcement["error"].as_str() {
            println!(
                "{outlet} {sha} not received: {error} (message {})",
                announcement["id"].as_str().unwrap_or("?")
            );
            let _ = self.write_json(outlet, &sha, &announcement, None);
            return;
        }
        let Some(file) = Assembly::announced(outlet, &sha, announcement) else {
            eprintln!("media: {outlet}: an announcement that does not add up was dropped");
            return;
        };
        if self.saved_path(outlet, &sha, &file.announcement).exists() {
            // Asked for again, or announced twice: saved already.
            let _ = self.write_json(outlet, &sha, &file.announcement, Some(file.size));
            return;
        }
        let key = (outlet.to_string(), sha.clone());
        if let Some(known) = self.files.get_mut(&key)
            && known.chunk_size == file.chunk_size
            && known.size == file.size
        {
            known.announcement = file.announcement;
            known.last_progress = Instant::now();
            return;
        }
        if self.files.len() >= MAX_FILES && !self.files.contains_key(&key) {
            eprintln!("media: {MAX_FILES} files in progress; {outlet} {sha} is left for later");
            return;
        }
        if let Err(e) = std::fs::create_dir_all(self.outlet_dir(outlet)) {
            eprintln!("media: {outlet}: {e}");
            return;
        }
        let _ = std::fs::remove_file(self.part_path(outlet, &sha));
        // On disk before the announcement is acknowledged: a crash after
        // that still asks for the file at the next start.
        if let Ok(bytes) = serde_json::to_vec(&file.announcement) {
            let written =
                std::fs::File::create(self.wanted_path(outlet, &sha)).and_then(|mut f| {
                    std::io::Write::write_all(&mut f, &bytes)?;
                    f.sync_all()
                });
            if let Err(e) = written {
                eprintln!("media: {outlet} {sha}: {e}");
            }
        }
        self.files.insert(key, file);
    }

    fn chunk(&mut self, client: &AsyncClient, outlet: &str, sha: &str, index: u32, payload: &[u8]) {
        let key = (outlet.to_string(), sha.to_string());
        let part = self.part_path(outlet, sha);
        let Some(file) = self.files.get_mut(&key) else {
            // Saved already, or its announcement was missed: asked for
            // again when it is announced.
            return;
        };
        // Any index a topic can carry: checked before any arithmetic on it.
        let expected = if index >= file.chunks {
            None
        } else if index == file.chunks - 1 {
            file.size.checked_sub(u64::from(index) * file.chunk_size)
        } else {
            Some(file.chunk_size)
        };
        if expected != Some(payload.len() as u64) {
            eprintln!(
                "media: {outlet} {sha}: chunk {index} does not fit the announcement; dropped"
            );
            return;
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&part)
            .and_then(|f| f.write_all_at(payload, u64::from(index) * file.chunk_size));
        if let Err(e) = written {
            eprintln!("media: {outlet} {sha}: {e}");
            return;
        }
        file.have.insert(index);
        file.last_progress = Instant::now();
        file.ask_every = STALLED;
        if file.have.len() as u32 == file.chunks {
            self.complete(client, key);
        }
    }

    fn complete(&mut self, client: &AsyncClient, key: (String, String)) {
        let Some(file) = self.files.remove(&key) else {
            return;
        };
        let (outlet, sha) = (&file.outlet, &file.sha256);
        let part = self.part_path(outlet, sha);
        match std::fs::File::open(&part).and_then(sha256_of) {
            Ok(got) if got == *sha => {}
            Ok(_) | Err(_) => {
                eprintln!("media: {outlet} {sha}: the chunks do not make the file; asking again");
                let _ = std::fs::remove_file(&part);
                self.ask(client, outlet, sha);
                let mut file = file;
                file.have.clear();
                file.last_progress = Instant::now();
                self.files.insert(key, file);
                return;
            }
        }
        let path = self.saved_path(outlet, sha, &file.announcement);
        if let Err(e) = std::fs::rename(&part, &path) {
            eprintln!("media: {outlet} {sha}: {e}");
            return;
        }
        let _ = std::fs::remove_file(self.wanted_path(outlet, sha));
        let _ = self.write_json(outlet, sha, &file.announcement, Some(file.size));
        println!(
            "{outlet} saved {} ({} bytes, sha256 {sha})",
            path.display(),
            file.size
        );
    }

    fn saved_path(&self, outlet: &str, sha: &str, announcement: &Value) -> PathBuf {
        let ext = extension(
            announcement["mimetype"].as_str().unwrap_or_default(),
            announcement["file_name"].as_str(),
        );
        self.outlet_dir(outlet).join(format!("{sha}.{ext}"))
    }

    /// `<sha256>.json`: what HQ knows of the file and of the message that
    /// carried it.
    fn write_json(
        &self,
        outlet: &str,
        sha: &str,
        announcement: &Value,
        size: Option<u64>,
    ) -> std::io::Result<()> {
        let id = announcement["id"].as_str().unwrap_or_default();
        let record = self
            .senders
            .get(&(outlet.to_string(), id.to_string()))
            .cloned()
            .unwrap_or(Value::Null);
        let mut about = json!({
            "outlet": outlet,
            "id": id,
            "sha256": sha,
            "mimetype": announcement["mimetype"],
            "kind": announcement["kind"],
            "file_name": announcement["file_name"],
            "size": size,
            "error": announcement["error"],
            "from": record["from"],
            "from_name": record["from_name"],
            "chat": record["chat"],
            "caption": record["caption"],
            "at": record["at"],
        });
        if let Some(map) = about.as_object_mut() {
            map.retain(|_, v| !v.is_null());
        }
        std::fs::create_dir_all(self.outlet_dir(outlet))?;
        let bytes = serde_json::to_vec_pretty(&about).map_err(std::io::Error::other)?;
        std::fs::write(self.outlet_dir(outlet).join(format!("{sha}.json")), bytes)
    }

    fn ask(&self, client: &AsyncClient, outlet: &str, sha: &str) {
        let topic = self.pattern.topic(outlet, "request/media");
        let body = json!({ "sha256": sha }).to_string();
        if client
            .try_publish(topic, QoS::AtLeastOnce, false, body)
            .is_err()
        {
            eprintln!("media: {outlet} {sha}: cannot ask for it now; later");
        }
    }

    /// Asks again for files that stopped short, ever less often.
    fn ask_for_stalled(&mut self, client: &AsyncClient) {
        let mut asks = Vec::new();
        for file in self.files.values_mut() {
            if file.last_progress.elapsed() >= file.ask_every {
                asks.push((
                    file.outlet.clone(),
                    file.sha256.clone(),
                    file.have.len(),
                    file.chunks,
                ));
                file.last_progress = Instant::now();
                file.ask_every = (file.ask_every * 2).min(MAX_ASK_EVERY);
            }
        }
        for (outlet, sha, have, chunks) in asks {
            eprintln!("media: {outlet} {sha}: {have} of {chunks} chunks; asking for it again");
            self.ask(client, &outlet, &sha);
        }
    }

    /// Files wanted when the last run stopped: asked for again at once.
    fn resume(&mut self) {
        let Ok(outlets) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for outlet in outlets.flatten() {
            let Some(outlet_name) = outlet
                .file_name()
                .to_str()
                .and_then(outlet_dir_name)
                .map(str::to_string)
            else {
                continue;
            };
            let Ok(entries) = std::fs::read_dir(outlet.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(sha) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix('.')?.strip_suffix(".wanted.json"))
                    .filter(|s| is_sha256(s))
                    .map(str::to_string)
                else {
                    continue;
                };
                let Ok(announcement) = std::fs::read(entry.path())
                    .map_err(|_| ())
                    .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|_| ()))
                else {
                    continue;
                };
                let Some(mut file) = Assembly::announced(&outlet_name, &sha, announcement) else {
                    continue;
                };
                if self.files.len() >= MAX_FILES {
                    return;
                }
                let _ = std::fs::remove_file(self.part_path(&outlet_name, &sha));
                // Asked for at the first tick once connected.
                file.last_progress = Instant::now()
                    .checked_sub(STALLED)
                    .unwrap_or_else(Instant::now);
                self.files.insert((outlet_name.clone(), sha), file);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_come_from_the_type_then_the_name() {
        assert_eq!(extension("image/jpeg", None), "jpg");
        assert_eq!(extension("audio/ogg; codecs=opus", None), "ogg");
        assert_eq!(
            extension("application/octet-stream", Some("Order.XLSX")),
            "xlsx"
        );
        assert_eq!(extension("application/x-what", Some("../../evil")), "bin");
        assert_eq!(extension("", Some("a.b/c")), "bin");
    }

    #[test]
    fn only_plain_outlet_ids_become_directories() {
        assert_eq!(outlet_dir_name("jkt-01"), Some("jkt-01"));
        assert_eq!(outlet_dir_name(".."), None);
        assert_eq!(outlet_dir_name("a/b"), None);
        assert_eq!(outlet_dir_name(""), None);
    }
}
