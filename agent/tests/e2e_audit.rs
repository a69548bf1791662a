//! `outlet-agent fleet audit` end to end: the real agent and the real
//! audit (both the release-shaped binary), the fake server's Budi, and a
//! private Mosquitto per test (so the audit follows this test's outlet
//! only), observed the way HQ would.

mod common;
#[path = "common/hq.rs"]
mod hq;
#[path = "common/mqtt.rs"]
mod mqtt;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hq::*;
use mqtt::*;
use serde_json::Value;

const BUDI: &str = "6281111111111";

/// One run of the audit, its stderr collected as it comes.
struct AuditRun {
    child: Child,
    stderr: Arc<Mutex<String>>,
    /// Copies stderr; ends when the process has closed it.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl AuditRun {
    fn start(broker: &str, state: &Path, extra: &[&str]) -> AuditRun {
        let mut command = agent_command(&[]);
        command
            .args(["fleet", "--broker", broker, "--prefix", "outlet", "audit"])
            .arg("--state")
            .arg(state)
            .args(["--client-id", "hq-audit", "--report-secs", "0", "--json"])
            .args(extra)
            .env_remove("OUTLET_AGENT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the audit starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        AuditRun {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    /// Waits for the process to end by itself, and for the last of its
    /// stderr.
    async fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("the audit did not end in {within:?}:\n{}", self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the stderr reader");
        }
        status
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for its "connected" line: its subscription is then on its way,
    /// well ahead of a record that has to go through WhatsApp first.
    async fn connected(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.stderr().contains("audit: connected") {
            assert!(tokio::time::Instant::now() < deadline, "{}", self.stderr());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the audit to end by itself; its exit status and report.
    async fn finish(mut self, within: Duration) -> (std::process::ExitStatus, Value) {
        let status = self.exited(within).await;
        let mut out = String::new();
        std::io::Read::read_to_string(&mut self.child.stdout.take().expect("stdout"), &mut out)
            .expect("stdout");
        let report = out
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
            .unwrap_or_else(|| panic!("no JSON report in {out:?}:\n{}", self.stderr()));
        (status, report)
    }

    /// SIGTERM: it writes its file and reports.
    async fn stop(self) -> Value {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let (status, report) = self.finish(WAIT).await;
        assert!(status.success(), "{status}");
        report
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

/// The outlet's ledger in the audit's file, once `ready` holds for it.
async fn wait_ledger(state: &Path, outlet: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ledger = std::fs::read(state)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|v| v["outlets"][outlet].clone())
            .filter(|l| !l.is_null());
        if let Some(l) = ledger.filter(|l| ready(l)) {
            return l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the audit's file never showed the outlet as wanted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The seqs of `message/in` records HQ's observer has, waiting until it
/// has `n` distinct ones.
async fn wait_seqs(hq: &mut Subscriber, outlet: &Outlet, n: usize) -> BTreeSet<u64> {
    let topic = outlet.topic("message/in");
    let seqs = |hq: &Subscriber| -> BTreeSet<u64> {
        hq.seen
            .iter()
            .filter(|m| m.topic == topic)
            .filter_map(|m| m.json()["seq"].as_u64())
            .collect()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = seqs(hq);
        if got.len() >= n {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "HQ has {} of {n} records",
            got.len()
        );
        let _ = hq
            .try_wait_for(Duration::from_millis(500), |m| m.topic == topic)
            .await;
    }
}

/// Runs the audit with `--until-complete` and returns its report and its
/// stderr, once it says it completed.
async fn audit_until_complete(url: &str, state: &Path) -> (Value, String) {
    let audit = AuditRun::start(url, state, &["--until-complete", "120"]);
    let stderr = audit.stderr.clone();
    let (status, report) = audit.finish(Duration::from_secs(150)).await;
    let log = stderr.lock().unwrap().clone();
    assert!(status.success(), "{status}: {report}\n{log}");
    (report, log)
}

fn state_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let state = dir.path().join("audit.json");
    (dir, state)
}

/// HQ's audit was away while 50 messages came; the broker, restarted
/// without persistence, lost what it kept for the audit. The audit, back,
/// asks the outlet for everything after the last record it wrote down and
/// ends with all 50, each once, and nothing missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_gets_back_what_a_broker_restart_lost_while_it_was_away() {
    let server = server().await;
    let mut broker = Broker::start("allow_anonymous true\n").await;
    let url = broker.url(false);
    let outlet = Outlet::new("audit", &url);
    let (dir, state) = state_file();
    let (mut agent, mut hq) = linked(&server, &outlet, &[]).await;
    let contacts = server.contacts();

    let audit = AuditRun::start(&url, &state, &[]);
    // Connected before the first record: one it never saw, of an outlet it
    // does not know yet, it could not ask for.
    audit.connected().await;
    contacts.send_text(BUDI, "awal").await.expect("sent");
    let first = wait_inbound(&mut hq, &outlet, "awal").await;
    let first_seq = first["seq"].as_u64().expect("a seq");
    wait_ledger(&state, &outlet.id, |l| l["next"] == first_seq + 1).await;
    let report = audit.stop().await;
    assert_eq!(report["outlets"][&outlet.id]["received"], 1, "{report}");

    // Away: 50 records go to the broker, which keeps them for the audit's
    // session, then restarts and keeps nothing.
    contacts
        .send_burst(BUDI, 50, "hilang")
        .await
        .expect("Budi sends 50");
    let seqs = wait_seqs(&mut hq, &outlet, 51).await;
    assert_eq!(seqs.last().copied(), Some(first_seq + 50));
    drop(hq);
    broker.stop();
    broker.spawn().await;

    let (report, log) = audit_until_complete(&url, &state).await;
    let ledger = &report["outlets"][&outlet.id];
    // All 51, each once: what the broker lost came back by replay (a
    // record the agent had not yet seen acknowledged it publishes again
    // itself after the restart, and that one arrives live).
    let count = |key: &str| ledger[key].as_u64().unwrap_or_default();
    assert_eq!(count("received") + count("replayed"), 51, "{report}\n{log}");
    assert!(count("replayed") >= 1, "{report}\n{log}");
    assert_eq!(ledger["missing"], 0, "{report}");
    assert_eq!(ledger["lost"], 0, "{report}");
    assert_eq!(ledger["last_seq"], first_seq + 50, "{report}");
    assert_eq!(ledger["epoch"], first["epoch"], "{report}");
    // The summary the dashboard shows, retained on the broker.
    let mut viewer = Subscriber::connect(&url, &[&outlet.topic("audit")]).await;
    let summary = viewer
        .wait_for("the audit's summary", WAIT, |m| m.retain)
        .await
        .json();
    assert_eq!(summary["missing"], 0, "{summary}");
    assert_eq!(summary["last_seq"], first_seq + 50, "{summary}");
    assert_eq!(summary["replayed"], ledger["replayed"], "{summary}");
    agent.stop().await;
    drop(dir);
}

/// An audit SIGKILLed in the middle of a 200-message burst, right after it
/// wrote down its first record: restarted, it takes what the broker kept
/// for its session and asks for the rest, and ends with all 200, none
/// missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_killed_in_a_burst_fills_the_gap_after_its_restart() {
    let server = server().await;
    let broker = Broker::start("allow_anonymous true\n").await;
    let url = broker.url(false);
    let outlet = Outlet::new("audit-kill", &url);
    let (dir, state) = state_file();
    let (mut agent, mut hq) = linked(&server, &outlet, &[]).await;

    let audit = AuditRun::start(&url, &state, &[]);
    // Connected before the burst starts.
    audit.connected().await;
    let contacts = server.contacts();
    let burst = tokio::spawn(async move { contacts.send_burst(BUDI, 200, "ramai").await });
    wait_ledger(&state, &outlet.id, |l| l["next"].as_u64() >= Some(2)).await;
    audit.kill();
    burst.await.expect("joined").expect("Budi sends 200");
    let seqs = wait_seqs(&mut hq, &outlet, 200).await;

    let (report, log) = audit_until_complete(&url, &state).await;
    let ledger = &report["outlets"][&outlet.id];
    assert_eq!(ledger["missing"], 0, "{report}\n{log}");
    assert_eq!(ledger["lost"], 0, "{report}");
    assert_eq!(
        ledger["last_seq"],
        seqs.last().copied().unwrap(),
        "{report}"
    );
    let distinct = ledger["received"].as_u64().unwrap() + ledger["replayed"].as_u64().unwrap();
    assert_eq!(distinct, 200, "{report}\n{log}");
    agent.stop().await;
    drop(dir);
}

/// A ledger file that is not one is refused with its name, not overwritten
/// (starting afresh over it would forget what was missing).
#[tokio::test]
async fn a_damaged_ledger_file_is_refused_by_name() {
    let (dir, state) = state_file();
    std::fs::write(&state, b"{\"outlets\": [nope").expect("written");
    let mut audit = AuditRun::start("mqtt://127.0.0.1:1", &state, &["--until-complete", "5"]);
    let status = audit.exited(WAIT).await;
    assert_eq!(status.code(), Some(2), "{}", audit.stderr());
    let said = audit.stderr();
    assert!(
        said.contains("audit.json") && said.contains("not an audit ledger"),
        "{said}"
    );
    assert_eq!(
        std::fs::read(&state).expect("still there"),
        b"{\"outlets\": [nope"
    );
    drop(dir);
}
