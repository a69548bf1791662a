//! Opening real files on disk: corrupt files are moved aside and reported,
//! nothing is deleted, permissions are tight, data survives close/reopen, and
//! the agent's own tables behave.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use outlet_store::schema::APPLICATION_ID;
use outlet_store::{
    CorruptionReason, CreateNotice, DataDir, HISTORY_LIMIT, Identity, OpenOutcome, SqliteStore,
    Transition,
};
use wacore::store::traits::{DeviceStore, SignalStore};

const ADDR: &str = "6281234567890:3@s.whatsapp.net";

fn db(dir: &Path) -> PathBuf {
    dir.join("session.db")
}

async fn open(dir: &Path) -> (SqliteStore, OpenOutcome, outlet_store::DataDirLock) {
    let lock = DataDir::lock(dir).unwrap();
    let (store, outcome) = SqliteStore::open(&lock).await.unwrap();
    (store, outcome, lock)
}

/// A closed, checkpointed database of ours with some sessions in it.
async fn make_db(dir: &Path, sessions: usize) {
    let (store, outcome, _lock) = open(dir).await;
    assert_eq!(outcome, OpenOutcome::Created { notice: None });
    for i in 0..sessions {
        store
            .put_session(&format!("{i}@s.whatsapp.net"), &[i as u8; 600])
            .await
            .unwrap();
    }
    store.put_identity(ADDR, [7; 32]).await.unwrap();
    store.close().await.unwrap();
}

/// Open the (broken) data dir, expect `Recovered`, and check that the moved
/// file is byte-for-byte what was there, and that the new store works.
async fn expect_recovered(dir: &Path, original: &[u8]) -> CorruptionReason {
    let (store, outcome, _lock) = open(dir).await;
    let OpenOutcome::Recovered { moved_to, reason } = outcome else {
        panic!("expected Recovered, got {outcome:?}");
    };
    assert!(
        moved_to
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("session.db.corrupt-")
    );
    assert_eq!(
        std::fs::read(&moved_to).unwrap(),
        original,
        "moved file altered"
    );
    assert!(outcome_is_fresh(&store).await);
    store.put_identity(ADDR, [1; 32]).await.unwrap();
    store.close().await.unwrap();
    reason
}

async fn outcome_is_fresh(store: &SqliteStore) -> bool {
    !store.exists().await.unwrap() && store.load_identity(ADDR).await.unwrap().is_none()
}

#[tokio::test]
async fn fresh_directory_creates_database_with_tight_permissions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (store, outcome, _lock) = open(&dir).await;
    assert_eq!(outcome, OpenOutcome::Created { notice: None });
    assert!(outcome.is_fresh() && !outcome.should_report());
    store.put_session(ADDR, b"s").await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&db(&dir)), 0o600);
    let wal = dir.join("session.db-wal");
    assert!(wal.exists(), "WAL mode");
    assert_eq!(mode(&wal), 0o600);
    assert!(
        !dir.join("session.db-shm").exists(),
        "exclusive locking keeps the WAL index in memory"
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn data_survives_close_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    make_db(tmp.path(), 3).await;
    let (store, outcome, _lock) = open(tmp.path()).await;
    assert_eq!(
        outcome,
        OpenOutcome::Opened {
            migrated_from: None
        }
    );
    assert_eq!(store.load_identity(ADDR).await.unwrap(), Some([7; 32]));
    assert_eq!(
        store
            .get_session("2@s.whatsapp.net")
            .await
            .unwrap()
            .unwrap(),
        vec![2u8; 600]
    );
    store.close().await.unwrap();
}

/// Dropping every handle without close() still closes cleanly.
#[tokio::test]
async fn data_survives_drop_without_close() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (store, _, _lock) = open(tmp.path()).await;
        store.put_identity(ADDR, [9; 32]).await.unwrap();
    }
    // The writer thread releases its lock clone when it has closed the file;
    // wait for that with a deadline instead of a fixed sleep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lock = loop {
        match DataDir::lock(tmp.path()) {
            Ok(l) => break l,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await
            }
            Err(e) => panic!("lock not released: {e}"),
        }
    };
    let (store, _) = SqliteStore::open(&lock).await.unwrap();
    assert_eq!(store.load_identity(ADDR).await.unwrap(), Some([9; 32]));
    store.close().await.unwrap();
}

#[tokio::test]
async fn close_then_calls_fail_and_lock_is_released_with_handle() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _, lock) = open(tmp.path()).await;
    store.close().await.unwrap();
    let err = store.load_identity(ADDR).await.unwrap_err();
    assert!(
        matches!(err, wacore::store::error::StoreError::Connection(_)),
        "{err:?}"
    );
    assert!(matches!(
        store.flush().await,
        Err(outlet_store::StoreError::Closed)
    ));
    assert!(
        DataDir::lock(tmp.path()).is_err(),
        "agent still holds its handle"
    );
    drop(lock);
    DataDir::lock(tmp.path()).expect("released once the agent's handle is dropped");
}

#[tokio::test]
async fn flush_empties_the_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _, _lock) = open(tmp.path()).await;
    for i in 0..50 {
        store
            .put_session(&format!("{i}@s.whatsapp.net"), &[1; 300])
            .await
            .unwrap();
    }
    let wal = tmp.path().join("session.db-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    store.flush().await.unwrap();
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
    store.close().await.unwrap();
}

// ---------------------------------------------------------------------------
// Corrupt files
// ---------------------------------------------------------------------------

#[tokio::test]
async fn garbage_file_is_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(db(tmp.path()), &garbage).unwrap();
    let reason = expect_recovered(tmp.path(), &garbage).await;
    assert!(
        matches!(reason, CorruptionReason::NotADatabase { .. }),
        "{reason:?}"
    );
}

#[tokio::test]
async fn truncated_file_is_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    make_db(tmp.path(), 40).await;
    let full = std::fs::read(db(tmp.path())).unwrap();
    assert!(full.len() > 8 * 4096, "test needs a multi-page database");
    for cut in [full.len() / 2, 4096 + 100, 60] {
        let truncated = full[..cut].to_vec();
        std::fs::write(db(tmp.path()), &truncated).unwrap();
        let reason = expect_recovered(tmp.path(), &truncated).await;
        assert!(
            matches!(reason, CorruptionReason::Truncated { actual_bytes, .. } if actual_bytes == cut as u64),
            "cut {cut}: {reason:?}"
        );
        // Put the full database back for the next cut.
        std::fs::remove_file(tmp.path().join("session.db-wal")).ok();
        std::fs::write(db(tmp.path()), &full).unwrap();
    }
}

#[tokio::test]
async fn zero_length_file_without_history_is_fresh_but_reported() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(db(tmp.path()), b"").unwrap();
    let (store, outcome, lock) = open(tmp.path()).await;
    assert_eq!(
        outcome,
        OpenOutcome::Created {
            notice: Some(CreateNotice::ZeroLengthFile)
        }
    );
    assert!(outcome.should_report());
    store.put_identity(ADDR, [1; 32]).await.unwrap();
    store.close().await.unwrap();
    drop(lock);
    let (store, outcome, _lock) = open(tmp.path()).await;
    assert_eq!(
        outcome,
        OpenOutcome::Opened {
            migrated_from: None
        }
    );
    assert_eq!(store.load_identity(ADDR).await.unwrap(), Some([1; 32]));
    store.close().await.unwrap();
}

/// A database was created here before (marker), and now the file is 0 bytes:
/// its contents were lost (e.g. ext4 after a power cut). Reported, moved aside.
#[tokio::test]
async fn zero_length_file_that_had_a_schema_is_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    make_db(tmp.path(), 1).await;
    std::fs::write(db(tmp.path()), b"").unwrap();
    let reason = expect_recovered(tmp.path(), b"").await;
    assert!(
        matches!(reason, CorruptionReason::LostContents { .. }),
        "{reason:?}"
    );
}

#[tokio::test]
async fn missing_database_that_existed_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    make_db(tmp.path(), 1).await;
    std::fs::remove_file(db(tmp.path())).unwrap();
    let (store, outcome, _lock) = open(tmp.path()).await;
    assert!(
        matches!(
            outcome,
            OpenOutcome::Created {
                notice: Some(CreateNotice::PreviousDatabaseMissing { .. })
            }
        ),
        "{outcome:?}"
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn orphaned_wal_is_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("session.db-wal"), b"stale wal").unwrap();
    let (store, outcome, _lock) = open(tmp.path()).await;
    let OpenOutcome::Recovered { moved_to, reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(reason, CorruptionReason::OrphanedJournal);
    let mut wal = moved_to.into_os_string();
    wal.push("-wal");
    assert_eq!(std::fs::read(wal).unwrap(), b"stale wal");
    store.close().await.unwrap();
}

/// Another application's SQLite file (tables, no user_version).
#[tokio::test]
async fn foreign_sqlite_file_is_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(db(tmp.path())).unwrap();
        conn.execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO customers (name) VALUES ('someone');",
        )
        .unwrap();
    }
    let original = std::fs::read(db(tmp.path())).unwrap();
    let reason = expect_recovered(tmp.path(), &original).await;
    assert!(
        matches!(reason, CorruptionReason::ForeignSchema { .. }),
        "{reason:?}"
    );
}

/// Another application's file with a user_version of its own.
#[tokio::test]
async fn foreign_file_with_newer_user_version_is_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(db(tmp.path())).unwrap();
        conn.execute_batch("CREATE TABLE t (x); PRAGMA user_version = 99;")
            .unwrap();
    }
    let original = std::fs::read(db(tmp.path())).unwrap();
    let reason = expect_recovered(tmp.path(), &original).await;
    assert!(
        matches!(reason, CorruptionReason::ForeignSchema { .. }),
        "{reason:?}"
    );
}

/// Our own database from a newer build (downgrade): not readable, moved aside.
#[tokio::test]
async fn newer_schema_of_ours_is_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    make_db(tmp.path(), 1).await;
    {
        let conn = rusqlite::Connection::open(db(tmp.path())).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        assert_eq!(
            conn.query_row("PRAGMA application_id", [], |r| r.get::<_, i32>(0))
                .unwrap(),
            APPLICATION_ID
        );
    }
    let original = std::fs::read(db(tmp.path())).unwrap();
    let reason = expect_recovered(tmp.path(), &original).await;
    assert_eq!(
        reason,
        CorruptionReason::NewerSchema {
            found: 999,
            supported: outlet_store::schema::CURRENT_VERSION
        }
    );
}

/// Our schema with an extra table someone added by hand.
#[tokio::test]
async fn tampered_schema_is_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    make_db(tmp.path(), 1).await;
    {
        let conn = rusqlite::Connection::open(db(tmp.path())).unwrap();
        conn.execute_batch("CREATE TABLE extra (x)").unwrap();
    }
    let original = std::fs::read(db(tmp.path())).unwrap();
    let reason = expect_recovered(tmp.path(), &original).await;
    assert!(
        matches!(&reason, CorruptionReason::ForeignSchema { detail } if detail.contains("extra")),
        "{reason:?}"
    );
}

/// Header and size intact, a B-tree page damaged: only the integrity check
/// (or SQLite's own corruption detection) can tell.
#[tokio::test]
async fn damaged_page_fails_integrity_check_and_is_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    make_db(tmp.path(), 60).await;
    let mut bytes = std::fs::read(db(tmp.path())).unwrap();
    // The page size from the header (512: the 600-byte records overflow, and
    // a leaf keeps only the start of each).
    let page = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
    let pages = bytes.len() / page;
    assert!(pages > 10);
    // Find the leaf pages of the sessions table (their cells hold the 600-byte
    // records) and break one's page header: page type 0x0D -> 0x00 is invalid.
    let target = (1..pages)
        .find(|p| {
            bytes[p * page] == 0x0D
                && bytes[p * page..(p + 1) * page]
                    .windows(16)
                    .any(|w| w.iter().all(|&b| b == 5))
        })
        .expect("a sessions leaf page");
    bytes[target * page] = 0x00;
    bytes[target * page + 3] = 0xFF; // absurd cell count
    std::fs::write(db(tmp.path()), &bytes).unwrap();
    let reason = expect_recovered(tmp.path(), &bytes).await;
    assert!(
        matches!(
            reason,
            CorruptionReason::IntegrityCheckFailed { .. } | CorruptionReason::Corrupt { .. }
        ),
        "{reason:?}"
    );
}

/// Two recoveries in the same second get distinct names; nothing is overwritten.
#[tokio::test]
async fn repeated_recoveries_keep_every_file() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..3u8 {
        let garbage = vec![i + 1; 5000];
        std::fs::write(db(tmp.path()), &garbage).unwrap();
        expect_recovered(tmp.path(), &garbage).await;
    }
    let moved = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("session.db.corrupt-") && !n.ends_with("-wal") && !n.ends_with("-shm")
        })
        .count();
    assert_eq!(moved, 3);
}

// ---------------------------------------------------------------------------
// Agent tables
// ---------------------------------------------------------------------------

#[tokio::test]
async fn identity_is_kept_and_cleared() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _, lock) = open(tmp.path()).await;
    assert_eq!(store.last_identity().await.unwrap(), None);
    let id = Identity {
        jid: "6281234567890:12@s.whatsapp.net".into(),
        phone: Some("+6281234567890".into()),
        push_name: Some("Outlet Jakarta".into()),
        lid: Some("100000012345678:12@lid".into()),
        paired_at: Some(Utc.timestamp_millis_opt(1_790_000_000_123).unwrap()),
    };
    store.set_last_identity(&id).await.unwrap();
    store.close().await.unwrap();
    drop(lock);
    let (store, _, _lock) = open(tmp.path()).await;
    assert_eq!(store.last_identity().await.unwrap(), Some(id.clone()));
    let renamed = Identity {
        push_name: None,
        paired_at: None,
        ..id
    };
    store.set_last_identity(&renamed).await.unwrap();
    assert_eq!(store.last_identity().await.unwrap(), Some(renamed));
    store.clear_last_identity().await.unwrap();
    assert_eq!(store.last_identity().await.unwrap(), None);
    store.close().await.unwrap();
}

#[tokio::test]
async fn transition_history_is_bounded_and_newest_first() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _, _lock) = open(tmp.path()).await;
    let total = HISTORY_LIMIT + 25;
    let t = |i: u32| Transition {
        at: Utc
            .timestamp_millis_opt(1_790_000_000_000 + i64::from(i))
            .unwrap(),
        from: format!("s{i}"),
        to: format!("s{}", i + 1),
        reason: format!("step {i}"),
    };
    for i in 0..total {
        store.record_transition(&t(i)).await.unwrap();
    }
    let all = store.recent_transitions(u32::MAX).await.unwrap();
    assert_eq!(all.len(), HISTORY_LIMIT as usize);
    assert_eq!(all[0], t(total - 1));
    assert_eq!(*all.last().unwrap(), t(total - HISTORY_LIMIT));
    assert_eq!(
        store.recent_transitions(3).await.unwrap(),
        all[..3].to_vec()
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn wipe_removes_whatsapp_state_and_keeps_agent_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _, _lock) = open(tmp.path()).await;
    store.create().await.unwrap();
    store.put_session(ADDR, b"session").await.unwrap();
    store.put_identity(ADDR, [3; 32]).await.unwrap();
    store.store_prekey(1, b"pk", true).await.unwrap();
    let id = Identity {
        jid: "1:2@s.whatsapp.net".into(),
        phone: None,
        push_name: None,
        lid: None,
        paired_at: None,
    };
    store.set_last_identity(&id).await.unwrap();
    let tr = Transition {
        at: Utc.timestamp_millis_opt(1).unwrap(),
        from: "connected".into(),
        to: "logged_out".into(),
        reason: "401".into(),
    };
    store.record_transition(&tr).await.unwrap();

    store.wipe_whatsapp_keys().await.unwrap();

    assert!(!store.exists().await.unwrap());
    assert_eq!(store.get_session(ADDR).await.unwrap(), None);
    assert_eq!(store.load_identity(ADDR).await.unwrap(), None);
    assert_eq!(store.load_prekey(1).await.unwrap(), None);
    assert_eq!(store.last_identity().await.unwrap(), Some(id));
    assert_eq!(store.recent_transitions(10).await.unwrap(), vec![tr]);
    assert_eq!(
        std::fs::metadata(tmp.path().join("session.db-wal"))
            .unwrap()
            .len(),
        0,
        "pre-wipe pages do not linger in the WAL"
    );
    store.close().await.unwrap();
}

/// A whatsapp-rust client can still save its state from detached tasks
/// after its session ended. Through its session handle such a late write
/// is refused, so it cannot undo a logout's wipe; a newer session's handle
/// fences every older one.
#[tokio::test]
async fn writes_of_an_ended_session_cannot_undo_a_wipe() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, _, _lock) = open(tmp.path()).await;
    let first = store.for_session(1);
    first.create().await.unwrap();
    first.put_session(ADDR, b"session").await.unwrap();

    store.end_sessions();
    store.wipe_whatsapp_keys().await.unwrap();
    let late = first.put_session(ADDR, b"session").await;
    assert!(late.is_err(), "a write after the session ended is refused");
    assert!(first.create().await.is_err());
    assert!(!store.exists().await.unwrap(), "the wipe stands");
    assert_eq!(first.get_session(ADDR).await.unwrap(), None, "reads work");

    let second = store.for_session(2);
    second.put_session(ADDR, b"new").await.unwrap();
    assert!(
        first.put_session(ADDR, b"old").await.is_err(),
        "a newer session fences the older one"
    );
    assert_eq!(
        store.get_session(ADDR).await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
    // The agent's own handle is never fenced.
    store.put_session(ADDR, b"agent").await.unwrap();
    store.close().await.unwrap();
}
