//! `outlet-agent fleet audit`: HQ's proof that no outlet's record was lost.
//!
//! It follows every outlet's `message/in` and `message/status` on a
//! persistent session (QoS 1, so the broker keeps what comes while the
//! audit is away), counts each outlet's records by `seq` in a
//! [`Ledger`], and keeps the ledgers in a local file, so that a restart of
//! the audit itself loses nothing: what it had not written down it asks
//! for again. It asks an outlet for a `replay` when
//! - it sees a gap that stays open for [`GAP_GRACE`] (records of the two
//!   topics may pass each other; a replay may be in flight), and
//! - it (re)connects to the broker: everything after the last seq it had,
//!   for every outlet it knows, because a broker restarted without
//!   persistence loses what it held for the audit, and the tail of such a
//!   loss shows no gap until the next record.
//!
//! What an outlet's journal no longer holds is counted `lost`, never
//! dropped silently. It prints what it does on stderr and a report per
//! outlet (received, replayed, still missing, lost) on stdout: every
//! `--report-secs`, and when it stops (SIGINT, SIGTERM, or with
//! `--until-complete` once nothing is missing and every replay is
//! answered; exit 1 if that does not happen in time), and each outlet's
//! summary retained on `<outlet>/audit`, which the dashboard shows (the
//! documented ACL gives that topic to HQ alone: docs/deploy.md).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeFilter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::CmdResult;
use super::fleet::{fleet_config, printable};
use crate::cmd::{EXIT_CONFIG, EXIT_FAILURE, Failure, OrExit};
use crate::config::MqttConfig;
use crate::ledger::{Ledger, Taken};
use crate::mqtt::options::{self, Failover};
use crate::topics::PrefixPattern;

/// A gap is asked for once it stayed open this long (doubled each time the
/// same gap is asked for again, up to [`GAP_GRACE_MAX`]).
pub const GAP_GRACE: Duration = Duration::from_secs(2);
const GAP_GRACE_MAX: Duration = Duration::from_secs(300);
/// An unanswered replay request is asked again after this.
const ANSWER_WAIT: Duration = Duration::from_secs(15);
/// A refused replay request is asked again after this.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// The ledger file is written at most this often while records arrive.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Outlets followed at most: ids come from topic names anyone allowed to
/// publish under the prefix can invent.
const MAX_OUTLETS: usize = 10_000;
/// How often the loop looks at gaps, answers and the file.
const TICK: Duration = Duration::from_millis(250);
/// Replays asked, and summaries published, at most per tick.
const ASKS_PER_TICK: usize = 32;
/// An outlet that answers no replay is asked again at most this late.
const REASK_MAX: Duration = Duration::from_secs(1800);
/// Gaps listed in a report or summary, at most (their count is always
/// there): one outlet's holes must not make a packet the broker refuses.
const GAPS_SHOWN: usize = 20;

/// What the command line gave `fleet audit`.
#[derive(Debug, Clone)]
pub struct AuditArgs {
    /// The ledger file.
    pub state: PathBuf,
    /// The persistent session's client id.
    pub client_id: String,
    /// Stop once complete, or fail after this long.
    pub until_complete: Option<Duration>,
    /// Print the report this often while following (never when `None`).
    pub report_every: Option<Duration>,
    /// The report as JSON.
    pub json: bool,
}

/// The ledger file: every outlet's ledger, by id.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LedgerFile {
    outlets: BTreeMap<String, Ledger>,
}

/// A replay asked of one outlet and not yet fully answered.
#[derive(Debug, Clone)]
struct Asked {
    transaction: String,
    from: u64,
    to: Option<u64>,
    at: Instant,
}

/// One outlet as the loop follows it (not kept in the file).
#[derive(Debug, Default)]
struct Follow {
    asked: Option<Asked>,
    /// A replay to ask again (refused, or never answered): when, from, to.
    retry: Option<(Instant, u64, Option<u64>)>,
    /// Since when the ledger has had a gap, if it has one.
    gap_since: Option<Instant>,
    /// The gap asked for last (its first seq) and how often: a gap the
    /// outlet's replays do not close (records still on their way, or a
    /// journal that never had them) is asked again ever less often.
    last_gap: Option<(u64, u32)>,
    /// Replays in a row that got no answer: each is asked again later
    /// than the last (the broker keeps every request for an outlet that
    /// is away, and it would find them all on its return).
    unanswered: u32,
}

struct Audit {
    pattern: PrefixPattern,
    file: LedgerFile,
    follow: HashMap<String, Follow>,
    dirty: bool,
    last_saved: Instant,
    /// The summary last published per outlet (see `publish_summaries`).
    published: HashMap<String, Value>,
    /// Messages to acknowledge once the client's channel has room (a
    /// dropped acknowledgement would hold one of the broker's in-flight
    /// slots until the next connection). At most the broker's window.
    acks_due: std::collections::VecDeque<rumqttc::Publish>,
}

pub async fn run(
    config_path: Option<&Path>,
    broker: Option<String>,
    prefix: Option<String>,
    args: AuditArgs,
) -> CmdResult {
    let (config, pattern) = fleet_config(config_path, broker, prefix)?;
    // Logs (the MQTT options' own warnings among them) go to stderr, as
    // `fleet --serve`'s do; the audit's account of what it does, too.
    crate::logging::init(&config.log);
    let file = load(&args.state).or_exit(EXIT_CONFIG)?;
    let mut audit = Audit {
        pattern,
        file,
        follow: HashMap::new(),
        dirty: false,
        last_saved: Instant::now(),
        published: HashMap::new(),
        acks_due: std::collections::VecDeque::new(),
    };
    let mut failover = Failover::new(&config.mqtt, &args.client_id);
    let options = session_options(&config.mqtt, failover.url(), &args.client_id)
        .or_exit_with(EXIT_CONFIG, "MQTT")?;
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let (mut term, mut int) = super::stop_signals()?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    let mut backoff = crate::mqtt::driver::reconnect_backoff(&config.mqtt);
    let mut connected_at: Option<Instant> = None;
    // While set, the connection waits (backoff) instead of being polled.
    let mut reconnect_at: Option<tokio::time::Instant> = None;
    // The first connection's replays must be answered before "complete".
    let mut caught_up_once = false;
    let outcome = loop {
        tokio::select! {
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
            _ = tick.tick() => {
                audit.ack_due(&client);
                audit.ask_for_gaps(&client);
                audit.save_if_due(&args.state);
                if connected_at.is_some() {
                    audit.publish_summaries(&client);
                }
                if connected_at.is_some() && audit.nothing_pending() {
                    caught_up_once = true;
                }
                if let Some(limit) = args.until_complete {
                    if caught_up_once && audit.complete() {
                        break Ok(());
                    }
                    if started.elapsed() >= limit {
                        break Err(Failure::new(
                            EXIT_FAILURE,
                            format!("not complete after {} s", limit.as_secs()),
                        ));
                    }
                }
                if let Some(every) = args.report_every
                    && last_report.elapsed() >= every
                {
                    audit.print_report(args.json);
                    last_report = Instant::now();
                }
            }
            () = super::sleep_until(reconnect_at), if reconnect_at.is_some() => {
                reconnect_at = None;
                options::move_on_with(&mut eventloop, &mut failover, |url| {
                    session_options(&config.mqtt, url, &args.client_id)
                });
            }
            event = eventloop.poll(), if reconnect_at.is_none() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected_at = Some(Instant::now());
                    eprintln!("audit: connected to {}", failover.shown());
                    audit.published.clear();
                    // Not acknowledged on the connection that brought
                    // them: the broker delivers them again.
                    audit.acks_due.clear();
                    subscribe(&client, &audit.pattern);
                    audit.came_back();
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if audit.on_publish(&client, &p.topic, &p.payload) {
                        // The first record of an outlet: on disk before
                        // its ack, or a crash now would start the next
                        // run's count after it.
                        audit.save(&args.state);
                    }
                    audit.acks_due.push_back(p);
                    audit.ack_due(&client);
                }
                Ok(_) => {}
                Err(e) => {
                    if let Some(at) = connected_at.take() {
                        backoff.connection_ended(at.elapsed());
                    }
                    let delay = backoff.next_delay();
                    eprintln!("audit: MQTT {}: {e}; again in {delay:?}", failover.shown());
                    reconnect_at = Some(tokio::time::Instant::now() + delay);
                }
            },
        }
    };
    audit.save(&args.state);
    audit.publish_summaries(&client);
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await;
    audit.print_report(args.json);
    outcome
}

/// A persistent session: the broker keeps the records published while the
/// audit is away (until the broker itself restarts without persistence,
/// which the replays on every connect make up for).
fn session_options(
    mqtt: &MqttConfig,
    url: &str,
    client_id: &str,
) -> Result<rumqttc::MqttOptions, options::OptionsError> {
    let mut opts = options::client_options(mqtt, url, client_id, None)?;
    opts.set_clean_session(false);
    // Acked by the loop once taken (an outlet's first record once it is on
    // disk); the ledger file's `next` covers the rest after a crash.
    opts.set_manual_acks(true);
    Ok(opts)
}

fn subscribe(client: &AsyncClient, pattern: &PrefixPattern) {
    let filters = ["message/in", "message/status", "response/replay"]
        .map(|leaf| SubscribeFilter::new(pattern.filter(leaf), QoS::AtLeastOnce));
    if let Err(e) = client.try_subscribe_many(filters) {
        eprintln!("audit: cannot subscribe: {e}");
    }
}

/// The ledger file, or an empty one when there is none yet. A file that
/// is there but unreadable is an error: starting afresh over it would
/// forget what was missing.
fn load(path: &Path) -> Result<LedgerFile, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{}: not an audit ledger ({e}); move it aside to start afresh",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LedgerFile::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the file whole and renames it into place (fsynced): a crash
/// leaves the old file or the new one, never half of one.
fn store(path: &Path, file: &LedgerFile) -> std::io::Result<()> {
    use std::io::Write;
    let bytes = serde_json::to_vec(file).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn transaction() -> String {
    format!("audit-{:016x}", rand::random::<u64>())
}

impl Audit {
    /// Takes one message; true when it was an outlet's first record (the
    /// file must be written before it is acknowledged).
    fn on_publish(&mut self, client: &AsyncClient, topic: &str, payload: &[u8]) -> bool {
        let Some((id, leaf)) = self.pattern.split_leaves(topic) else {
            return false;
        };
        let id = id.to_string();
        match leaf {
            "message/in" | "message/status" => self.on_record(&id, payload),
            "response/replay" => {
                self.on_answer(client, &id, payload);
                false
            }
            _ => false,
        }
    }

    fn on_record(&mut self, id: &str, payload: &[u8]) -> bool {
        let record: Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("audit: {}: a record that is not JSON: {e}", printable(id));
                return false;
            }
        };
        let (Some(seq), Some(epoch)) = (record["seq"].as_u64(), record["epoch"].as_str()) else {
            eprintln!("audit: {}: a record without seq and epoch", printable(id));
            return false;
        };
        let replay = record["replay"].as_bool().unwrap_or(false);
        if !self.file.outlets.contains_key(id) && self.file.outlets.len() >= MAX_OUTLETS {
            eprintln!(
                "audit: {}: over {MAX_OUTLETS} outlets; ignored",
                printable(id)
            );
            return false;
        }
        let ledger = self.file.outlets.entry(id.to_string()).or_default();
        let mut first = false;
        match ledger.take(epoch, seq, replay) {
            Taken::Reset { from: None } => {
                eprintln!("audit: {}: following from seq {seq}", printable(id));
                first = true;
            }
            Taken::Reset { from: Some(old) } => eprintln!(
                "audit: {}: a new epoch {} (was {}): its data started anew; counting from 1",
                printable(id),
                printable(epoch),
                printable(&old)
            ),
            Taken::New | Taken::Duplicate | Taken::OtherEpoch => {}
        }
        let has_gap = ledger.missing() > 0;
        let follow = self.follow.entry(id.to_string()).or_default();
        follow.gap_since = match (has_gap, follow.gap_since) {
            (false, _) => None,
            (true, None) => Some(Instant::now()),
            (true, since) => since,
        };
        self.dirty = true;
        first
    }

    fn on_answer(&mut self, client: &AsyncClient, id: &str, payload: &[u8]) {
        let Ok(answer) = serde_json::from_slice::<Value>(payload) else {
            return;
        };
        let Some(follow) = self.follow.get_mut(id) else {
            return;
        };
        let Some(asked) = follow.asked.clone() else {
            return;
        };
        // Only our own answers, from the outlet we asked.
        if answer["transaction"].as_str() != Some(asked.transaction.as_str()) {
            return;
        }
        follow.asked = None;
        follow.unanswered = 0;
        if answer["status"] != "ok" {
            eprintln!(
                "audit: {}: replay refused: {}; asking again in {RETRY_AFTER:?}",
                printable(id),
                printable(answer["error"].as_str().unwrap_or("unknown error"))
            );
            // The outlet may be reconnecting.
            follow.retry = Some((Instant::now() + RETRY_AFTER, asked.from, asked.to));
            return;
        }
        let data = &answer["data"];
        let Some(ledger) = self.file.outlets.get_mut(id) else {
            return;
        };
        let same_epoch = data["epoch"].as_str() == ledger.epoch.as_deref();
        if let (true, Some(first_held)) = (same_epoch, data["first_held"].as_u64())
            && first_held > asked.from
        {
            let lost = ledger.lost_below(first_held);
            if lost > 0 {
                eprintln!(
                    "audit: {}: the outlet no longer holds seqs {}..{}: {lost} records lost",
                    printable(id),
                    asked.from,
                    first_held - 1
                );
                self.dirty = true;
            }
        }
        let replayed = data["replayed"].as_u64().unwrap_or(0);
        if replayed > 0 {
            eprintln!("audit: {}: {replayed} records replayed", printable(id));
        }
        if data["more"].as_bool() == Some(true)
            && let Some(last) = data["last_seq"].as_u64()
        {
            self.ask(client, id, last + 1, asked.to);
        }
    }

    /// Asks for what may have been lost while the audit was away: every
    /// known outlet's records from the first it lacks on.
    fn came_back(&mut self) {
        let known: Vec<(String, u64)> = self
            .file
            .outlets
            .iter()
            .filter(|(_, l)| l.next > 0)
            .map(|(id, l)| (id.clone(), l.next))
            .collect();
        // Asked from the next tick on, a bounded number at a time.
        let now = Instant::now();
        for (id, next) in known {
            let follow = self.follow.entry(id).or_default();
            follow.asked = None;
            follow.retry = Some((now, next, None));
            follow.unanswered = 0;
        }
    }

    /// Acknowledges what was taken (`cmd::ack_due`).
    fn ack_due(&mut self, client: &AsyncClient) {
        super::ack_due(client, &mut self.acks_due);
    }

    /// Gaps open for longer than the grace, and answers overdue.
    fn ask_for_gaps(&mut self, client: &AsyncClient) {
        let mut wanted = Vec::new();
        let now = Instant::now();
        for (id, follow) in &mut self.follow {
            if let Some(asked) = follow.asked.take_if(|a| a.at.elapsed() >= ANSWER_WAIT) {
                follow.unanswered = follow.unanswered.saturating_add(1);
                // At once the first time (the outlet may have been
                // reconnecting), then ever later.
                let later = match follow.unanswered {
                    0 | 1 => Duration::ZERO,
                    n => ANSWER_WAIT.saturating_mul(1 << (n - 2).min(8)),
                }
                .min(REASK_MAX);
                eprintln!(
                    "audit: {}: no answer to a replay; asking again in {later:?}",
                    printable(id)
                );
                follow.retry = Some((now + later, asked.from, asked.to));
            }
            if follow.asked.is_some() {
                continue;
            }
            if let Some((_, from, to)) = follow.retry.take_if(|(at, ..)| *at <= now) {
                wanted.push((id.clone(), from, to));
                continue;
            }
            if follow.retry.is_some() {
                continue;
            }
            let gap = self.file.outlets.get(id).and_then(Ledger::first_gap);
            let times_asked = match (gap, follow.last_gap) {
                (Some(gap), Some((from, n))) if from == gap.from => n,
                _ => 0,
            };
            let grace = GAP_GRACE
                .saturating_mul(1 << times_asked.min(8))
                .min(GAP_GRACE_MAX);
            let open_long = follow.gap_since.is_some_and(|s| s.elapsed() >= grace);
            if let (true, Some(gap)) = (open_long, gap) {
                follow.last_gap = Some((gap.from, times_asked + 1));
                follow.gap_since = Some(now);
                eprintln!(
                    "audit: {}: seqs {}..{} missing; asking for a replay",
                    printable(id),
                    gap.from,
                    gap.to
                );
                wanted.push((id.clone(), gap.from, Some(gap.to)));
            }
        }
        // A bounded number per tick: after a reconnect every outlet is
        // asked, and the client's channel must keep room for acks.
        for (n, (id, from, to)) in wanted.into_iter().enumerate() {
            if n >= ASKS_PER_TICK {
                // Left for the next tick.
                self.follow.entry(id).or_default().retry = Some((now, from, to));
                continue;
            }
            self.ask(client, &id, from, to);
        }
    }

    fn ask(&mut self, client: &AsyncClient, id: &str, from: u64, to: Option<u64>) {
        let transaction = transaction();
        let mut request = json!({ "from_seq": from, "transaction": transaction });
        if let Some(to) = to {
            request["to_seq"] = json!(to);
        }
        let topic = self.pattern.topic(id, "request/replay");
        let follow = self.follow.entry(id.to_string()).or_default();
        if let Err(e) = client.try_publish(
            topic,
            QoS::AtLeastOnce,
            false,
            request.to_string().into_bytes(),
        ) {
            eprintln!("audit: {}: cannot ask for a replay: {e}", printable(id));
            follow.retry = Some((Instant::now() + RETRY_AFTER, from, to));
            return;
        }
        follow.asked = Some(Asked {
            transaction,
            from,
            to,
            at: Instant::now(),
        });
    }

    /// No replay waits for its answer or to be asked again.
    fn nothing_pending(&self) -> bool {
        self.follow
            .values()
            .all(|f| f.asked.is_none() && f.retry.is_none())
    }

    /// Nothing missing anywhere and nothing asked.
    fn complete(&self) -> bool {
        self.nothing_pending() && self.file.outlets.values().all(|l| l.missing() == 0)
    }

    fn save_if_due(&mut self, path: &Path) {
        if self.dirty && self.last_saved.elapsed() >= SAVE_EVERY {
            self.save(path);
        }
    }

    fn save(&mut self, path: &Path) {
        match store(path, &self.file) {
            Ok(()) => self.dirty = false,
            Err(e) => eprintln!("audit: cannot write {}: {e}", path.display()),
        }
        self.last_saved = Instant::now();
    }

    /// Each outlet's summary, retained on `<outlet>/audit`, for the
    /// dashboard to show which outlets have gaps: published when it
    /// changed (QoS 1), and once at the start of every connection.
    fn publish_summaries(&mut self, client: &AsyncClient) {
        let mut sent = 0;
        for (id, ledger) in &self.file.outlets {
            if sent >= ASKS_PER_TICK {
                break;
            }
            let summary = report_json(ledger);
            if self.published.get(id) == Some(&summary) {
                continue;
            }
            sent += 1;
            let mut payload = summary.clone();
            payload["at"] = json!(chrono::Utc::now());
            let topic = self.pattern.topic(id, "audit");
            match client.try_publish(topic, QoS::AtLeastOnce, true, payload.to_string()) {
                Ok(()) => {
                    self.published.insert(id.clone(), summary);
                }
                // The client's queue is full: the next tick tries again.
                Err(_) => break,
            }
        }
    }

    fn print_report(&self, as_json: bool) {
        if as_json {
            let outlets: serde_json::Map<String, Value> = self
                .file
                .outlets
                .iter()
                .map(|(id, l)| (id.clone(), report_json(l)))
                .collect();
            println!("{}", json!({ "outlets": outlets }));
            return;
        }
        let width = self.file.outlets.keys().map(String::len).max().unwrap_or(6);
        println!(
            "{:<width$}  {:>8}  {:>8}  {:>8}  {:>7}  {:>5}  epoch",
            "outlet", "last_seq", "received", "replayed", "missing", "lost"
        );
        for (id, l) in &self.file.outlets {
            println!(
                "{}",
                printable(&format!(
                    "{id:<width$}  {:>8}  {:>8}  {:>8}  {:>7}  {:>5}  {}",
                    l.last_seq(),
                    l.received,
                    l.replayed,
                    l.missing(),
                    l.lost,
                    l.epoch.as_deref().unwrap_or("-")
                ))
            );
        }
    }
}

/// One outlet in the JSON report.
pub fn report_json(l: &Ledger) -> Value {
    json!({
        "epoch": l.epoch,
        "last_seq": l.last_seq(),
        "received": l.received,
        "replayed": l.replayed,
        "duplicates": l.duplicates,
        "missing": l.missing(),
        "gaps": l.gaps().into_iter().take(GAPS_SHOWN).collect::<Vec<_>>(),
        "gaps_total": l.gaps().len(),
        "lost": l.lost,
        "resets": l.resets,
    })
}
