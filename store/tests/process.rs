//! Real second processes (this test binary re-executed with a role in the
//! environment): a second agent on the same data directory is refused with
//! the holder's PID, and a SIGKILL never loses an acknowledged write.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use outlet_store::{DataDir, LockError, SqliteStore};
use wacore::store::traits::SignalStore;

const ROLE: &str = "OUTLET_STORE_TEST_ROLE";
const DIR: &str = "OUTLET_STORE_TEST_DIR";
const ROUND: &str = "OUTLET_STORE_TEST_ROUND";
const DEADLINE: Duration = Duration::from_secs(60);

/// Entry point of the child processes. In a normal test run (no role in the
/// environment) it does nothing.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    match role.as_str() {
        "probe" => match DataDir::lock(&dir) {
            Ok(_) => say("acquired"),
            Err(LockError::Held { pid, .. }) => say(&format!(
                "held {}",
                pid.map_or_else(|| "unknown".to_string(), |p| p.to_string())
            )),
            Err(e) => say(&format!("error {e}")),
        },
        "holder" => {
            let _lock = DataDir::lock(&dir).unwrap();
            say("locked");
            // Hold until the parent closes our stdin.
            let mut buf = String::new();
            while std::io::stdin()
                .read_line(&mut buf)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        }
        "writer" => {
            let round: u32 = std::env::var(ROUND).unwrap().parse().unwrap();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap();
            rt.block_on(async {
                let lock = DataDir::lock(&dir).unwrap();
                let (store, _) = SqliteStore::open(&lock).await.unwrap();
                for i in 0.. {
                    store
                        .put_session(&address(round, i), &record(round, i))
                        .await
                        .unwrap();
                    say(&format!("ack {i}"));
                }
            });
        }
        other => panic!("unknown role {other}"),
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "CHILD:{line}");
    let _ = out.flush();
}

fn address(round: u32, i: u32) -> String {
    format!("{round}{i:06}:1@s.whatsapp.net")
}

/// A record whose every byte depends on (round, i), big enough to span pages.
fn record(round: u32, i: u32) -> Vec<u8> {
    (0..1500u32)
        .map(|k| (k.wrapping_mul(31) ^ i ^ (round << 3)) as u8)
        .collect()
}

struct ChildProc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

/// This test binary again, as a child. Under `OUTLET_TEST_RUNNER` (the
/// emulator `packaging/check-pi.sh` runs ARM builds with, where the kernel
/// cannot exec them itself) through that runner.
fn spawn(role: &str, dir: &Path, extra: &[(&str, String)]) -> ChildProc {
    let me = std::env::current_exe().unwrap();
    let runner = std::env::var("OUTLET_TEST_RUNNER").unwrap_or_default();
    let mut cmd = match runner.split_whitespace().collect::<Vec<_>>().split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(&me);
            cmd
        }
        None => Command::new(&me),
    };
    cmd.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DIR, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print "test child_entry ... " on the same line.
            if let Some(at) = line.find("CHILD:")
                && tx.send(line[at + "CHILD:".len()..].to_string()).is_err()
            {
                break;
            }
        }
    });
    ChildProc { child, lines }
}

impl ChildProc {
    fn next_line(&self, deadline: Instant) -> String {
        let left = deadline.saturating_duration_since(Instant::now());
        self.lines
            .recv_timeout(left)
            .expect("child did not answer in time")
    }
}

#[test]
fn second_process_is_refused_and_told_our_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let _lock = DataDir::lock(tmp.path()).unwrap();
    let mut probe = spawn("probe", tmp.path(), &[]);
    let answer = probe.next_line(Instant::now() + DEADLINE);
    assert_eq!(answer, format!("held {}", std::process::id()));
    assert!(probe.child.wait().unwrap().success());
}

#[test]
fn lock_held_by_another_process_names_it_and_frees_on_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut holder = spawn("holder", tmp.path(), &[]);
    assert_eq!(holder.next_line(deadline), "locked");
    match DataDir::lock(tmp.path()) {
        Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(holder.child.id())),
        other => panic!("expected Held, got {other:?}"),
    }
    drop(holder.child.stdin.take()); // EOF: the holder exits
    assert!(holder.child.wait().unwrap().success());
    // The kernel released the flock with the process.
    DataDir::lock(tmp.path()).expect("free after the holder exited");

    // A probe now gets it too (the lock file still holds the old PID: the
    // PID is informational, the flock is the truth).
    let mut probe = spawn("probe", tmp.path(), &[]);
    assert_eq!(probe.next_line(deadline), "acquired");
    probe.child.wait().unwrap();
}

/// Kill a writer with SIGKILL at arbitrary moments: everything it had been
/// told was stored is there after reopening, and nothing is half-written.
/// (A small version of the ≥200-kill crash test that comes with the fake
/// server; rounds are sequential on one database. `STORE_KILL_ROUNDS=200`
/// runs it at that scale.)
#[test]
fn sigkill_never_loses_acknowledged_writes() {
    let rounds: u32 = std::env::var("STORE_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for round in 1..=rounds {
        let deadline = Instant::now() + DEADLINE;
        let mut writer = spawn("writer", tmp.path(), &[(ROUND, round.to_string())]);
        let target = 20 + (round * 7) % 97;
        let mut acked = None;
        while acked.is_none_or(|a| a < target) {
            let line = writer.next_line(deadline);
            acked = Some(line.strip_prefix("ack ").unwrap().parse::<u32>().unwrap());
        }
        writer.child.kill().unwrap(); // SIGKILL
        writer.child.wait().unwrap();
        // Acks printed before the kill but not read yet count too.
        while let Ok(line) = writer.lines.try_recv() {
            acked = line
                .strip_prefix("ack ")
                .and_then(|n| n.parse().ok())
                .or(acked);
        }
        let acked = acked.unwrap();

        rt.block_on(async {
            let lock = DataDir::lock(tmp.path()).unwrap();
            let (store, outcome) = SqliteStore::open(&lock).await.unwrap();
            assert!(!outcome.is_fresh(), "round {round}: {outcome:?}");
            for i in 0..=acked {
                let got = store.get_session(&address(round, i)).await.unwrap();
                assert_eq!(
                    got.as_deref(),
                    Some(&record(round, i)[..]),
                    "round {round}: acknowledged write {i} lost or torn"
                );
            }
            // Unacknowledged writes may or may not be there, but never torn.
            for i in acked + 1..acked + 50 {
                if let Some(got) = store.get_session(&address(round, i)).await.unwrap() {
                    assert_eq!(&got[..], &record(round, i)[..]);
                }
            }
            store.close().await.unwrap();
        });
    }
}
