//! The schema, its version history and the forward migrations.
//!
//! The version lives in `PRAGMA user_version` (a header field, so reading it
//! needs no table). [`MIGRATIONS`] is the whole history: entry `n` turns a
//! version `n-1` database into version `n`, and runs in the same transaction as
//! the `user_version` bump, so a crash mid-migration leaves the old version.
//! A later schema change appends one entry; nothing else changes.
//!
//! Because every schema change goes through this list, the exact schema of any
//! version can be rebuilt in memory ([`schema_at`]), and the open path compares
//! a file's `sqlite_master` with it. That comparison is how a SQLite file that
//! belongs to another application (or was hand-edited) is told apart from ours.
//!
//! Table shapes, and why:
//! - Small rows keyed by text (identities, LID mappings, MACs, sender-key
//!   device flags, tc tokens, message secrets) are `WITHOUT ROWID`: one B-tree
//!   instead of table + unique index, so an upsert dirties fewer pages — fewer
//!   bytes written to the SD card.
//! - Large blobs keyed by text (sessions, sender keys, device lists, app-state
//!   versions) stay rowid tables with a `UNIQUE` key: updating the blob of an
//!   existing key rewrites the table leaf only, while a `WITHOUT ROWID` row
//!   over ~1 KB would spill into overflow pages on every write.
//! - Every table is `STRICT`, so a wrong type is an error instead of silently
//!   stored.

use rusqlite::{Connection, Transaction};

use crate::error::Result;

/// `PRAGMA application_id` of our databases ("OUTL"). Lets the open path tell
/// our file from another application's SQLite file even before looking at tables.
pub const APPLICATION_ID: i32 = 0x4F55_544C;

/// One forward migration.
pub struct Migration {
    /// The `user_version` after this migration.
    pub version: u32,
    /// What it does, for logs.
    pub description: &'static str,
    /// SQL run inside the migration's transaction.
    pub sql: &'static str,
}

/// The whole schema history, oldest first. Version 0 is the empty file.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "whatsapp-rust backend tables and agent tables",
        sql: V1,
    },
    Migration {
        version: 2,
        description: "message inbox, outbox and the broker publish queue",
        sql: V2,
    },
    Migration {
        version: 3,
        description: "fewer pages written per message (indexes, publish queue, pending inbound)",
        sql: V3,
    },
    Migration {
        version: 4,
        description: "the outlet's record sequence (seq never reused, epoch) and journal",
        sql: V4,
    },
    Migration {
        version: 5,
        description: "media download and publish jobs",
        sql: V5,
    },
];

/// The version this build writes and understands.
pub const CURRENT_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

const V1: &str = r#"
-- One device row: the serialized wacore Device (pairing credentials and keys).
-- pn/lid are copies for humans with a sqlite3 shell; `data` is the truth.
CREATE TABLE device (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    pn        TEXT,
    lid       TEXT,
    data      BLOB NOT NULL,
    saved_at  INTEGER NOT NULL
) STRICT;

-- Signal protocol ---------------------------------------------------------
CREATE TABLE identities (
    address   TEXT PRIMARY KEY,
    key       BLOB NOT NULL CHECK (length(key) = 32)
) STRICT, WITHOUT ROWID;

CREATE TABLE sessions (
    id        INTEGER PRIMARY KEY,
    address   TEXT NOT NULL UNIQUE,
    record    BLOB NOT NULL
) STRICT;

CREATE TABLE prekeys (
    id        INTEGER PRIMARY KEY,
    record    BLOB NOT NULL,
    uploaded  INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE signed_prekeys (
    id        INTEGER PRIMARY KEY,
    record    BLOB NOT NULL
) STRICT;

CREATE TABLE sender_keys (
    id        INTEGER PRIMARY KEY,
    address   TEXT NOT NULL UNIQUE,
    record    BLOB NOT NULL
) STRICT;

-- App state sync ----------------------------------------------------------
-- set_seq orders writes so "latest key" survives restarts.
CREATE TABLE app_state_sync_keys (
    key_id      BLOB PRIMARY KEY,
    key_data    BLOB NOT NULL,
    fingerprint BLOB NOT NULL,
    timestamp   INTEGER NOT NULL,
    set_seq     INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE app_state_versions (
    id        INTEGER PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE,
    state     BLOB NOT NULL
) STRICT;

CREATE TABLE app_state_mutation_macs (
    name      TEXT NOT NULL,
    index_mac BLOB NOT NULL,
    version   INTEGER NOT NULL,
    value_mac BLOB NOT NULL,
    PRIMARY KEY (name, index_mac)
) STRICT, WITHOUT ROWID;

-- Protocol alignment ------------------------------------------------------
CREATE TABLE sender_key_devices (
    group_jid  TEXT NOT NULL,
    device_jid TEXT NOT NULL,
    has_key    INTEGER NOT NULL,
    PRIMARY KEY (group_jid, device_jid)
) STRICT, WITHOUT ROWID;
CREATE INDEX sender_key_devices_by_device ON sender_key_devices (device_jid);

CREATE TABLE lid_pn_mappings (
    lid             TEXT PRIMARY KEY,
    phone_number    TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    learning_source TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- Reverse index phone -> LID with the reference backend's exact semantics
-- (the phone's most recently written LID; dropped when that LID moves away).
CREATE TABLE pn_lid_index (
    phone_number TEXT PRIMARY KEY,
    lid          TEXT NOT NULL REFERENCES lid_pn_mappings (lid) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
CREATE INDEX pn_lid_index_by_lid ON pn_lid_index (lid);

CREATE TABLE base_keys (
    address    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    base_key   BLOB NOT NULL,
    PRIMARY KEY (address, message_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE device_lists (
    id        INTEGER PRIMARY KEY,
    user      TEXT NOT NULL UNIQUE,
    record    BLOB NOT NULL
) STRICT;

CREATE TABLE group_metadata (
    id        INTEGER PRIMARY KEY,
    group_jid TEXT NOT NULL UNIQUE,
    blob      BLOB NOT NULL
) STRICT;

CREATE TABLE tc_tokens (
    jid              TEXT PRIMARY KEY,
    token            BLOB NOT NULL,
    token_timestamp  INTEGER NOT NULL,
    sender_timestamp INTEGER
) STRICT, WITHOUT ROWID;

CREATE TABLE sent_messages (
    id         INTEGER PRIMARY KEY,
    chat_jid   TEXT NOT NULL,
    message_id TEXT NOT NULL,
    payload    BLOB NOT NULL,
    sent_at    INTEGER NOT NULL,
    UNIQUE (chat_jid, message_id)
) STRICT;
CREATE INDEX sent_messages_by_time ON sent_messages (sent_at);

CREATE TABLE pending_inbound (
    id          INTEGER PRIMARY KEY,
    chat        TEXT NOT NULL,
    sender      TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    message     BLOB NOT NULL,
    inserted_at INTEGER NOT NULL,
    UNIQUE (chat, sender, message_id)
) STRICT;

-- Message secrets ---------------------------------------------------------
CREATE TABLE msg_secrets (
    chat       TEXT NOT NULL,
    sender     TEXT NOT NULL,
    msg_id     TEXT NOT NULL,
    secret     BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    message_ts INTEGER NOT NULL,
    PRIMARY KEY (chat, sender, msg_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX msg_secrets_by_expiry ON msg_secrets (expires_at) WHERE expires_at != 0;

-- The agent's own tables (survive a wipe of the WhatsApp keys) ------------
CREATE TABLE agent_identity (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    jid        TEXT NOT NULL,
    phone      TEXT,
    push_name  TEXT,
    lid        TEXT,
    paired_at  INTEGER,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE agent_state_history (
    seq        INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    reason     TEXT NOT NULL
) STRICT;
"#;

const V2: &str = r#"
-- Inbound messages already committed, by the key WhatsApp redelivers them
-- with: a redelivery of one of these is acked and not published again.
CREATE TABLE message_inbound_seen (
    chat        TEXT NOT NULL,
    sender      TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (chat, sender, message_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX message_inbound_seen_age ON message_inbound_seen (received_at);

-- What waits for the broker's PUBACK, in order: inbound messages
-- (kind 'in') and outbox statuses (kind 'status'). A row is deleted when
-- the broker has it. AUTOINCREMENT: a new row's seq is above every seq
-- ever used, even once the queue was emptied, so a publisher that goes
-- "after the last one I handed over" never skips it.
CREATE TABLE message_publish_queue (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    kind      TEXT NOT NULL CHECK (kind IN ('in', 'status')),
    queued_at INTEGER NOT NULL,
    payload   BLOB NOT NULL
) STRICT;
CREATE INDEX message_publish_queue_kind ON message_publish_queue (kind, seq);

-- HQ's messages to customers (sent in seq order; rows are only pruned
-- long after they are final). `text` is cleared once the server has the
-- message; the row stays (pruned by age) so a repeated client_id gets the
-- first answer and is never sent twice.
CREATE TABLE message_outbox (
    seq            INTEGER PRIMARY KEY,
    message_id     TEXT NOT NULL UNIQUE,
    client_id      TEXT UNIQUE,
    to_jid         TEXT NOT NULL,
    text           TEXT,
    quoted_id      TEXT,
    bytes          INTEGER NOT NULL,
    queued_at      INTEGER NOT NULL,
    status         TEXT NOT NULL,
    error          TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    transmitted_at INTEGER,
    sent_at        INTEGER,
    updated_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX message_outbox_pending ON message_outbox (seq) WHERE status = 'queued';
CREATE INDEX message_outbox_age ON message_outbox (updated_at);
"#;

// Fewer pages written per message, for the SD card (BENCHMARKS.md, "What
// the SD card pays per message"): every page a commit touches is a WAL
// frame.
// - The age indexes of the outbox and of the redelivery keys, and the
//   publish queue's (kind, seq) index, were rewritten by every status change
//   or message but only serve the hourly prune and the depth counts, which
//   scan these small tables instead.
// - The publish queue loses AUTOINCREMENT: it rewrote `sqlite_sequence` on
//   every insert. Its seqs still only grow within a run (the store hands
//   them out above the highest it has used, see `messages.rs`), which is all
//   the publisher, who starts from the first row after every connect, needs.
// - whatsapp-rust's sent-message store loses its time index, written with
//   every send; its expiry sweep (every ~5 minutes) and its eviction at the
//   cap scan the table instead, which holds at most 4096 rows.
// - whatsapp-rust's pending-inbound buffer (written and deleted around every
//   received message) becomes one b-tree keyed by its lookup key instead of
//   a table plus a unique index.
// HQ checks the records it gets for gaps by their `seq`, which must never be
// reused, even when the publish queue empties and the process restarts; and
// it tells a reset from a gap by the `epoch`, made once with the database.
// Every row the broker acked moves to the journal; `last_seq` is the highest
// seq a journal prune ever dropped, written by the (hourly) prune. A new
// record's seq is one above it and above every row queued or journaled.
// One row per received picture, voice note, document…: committed with the
// message itself, so a crash between the ack and the download cannot lose the
// file's reference (its key lives nowhere else). `state` is the job's step:
// `download` (due at `due_at`), `publish` (announce, then chunks; `part` is
// the next one the broker has not acknowledged, 0 being the announcement),
// `report` (announce `error` instead) and `done`. The download reference
// (path and key) is cleared once it is not needed any more.
const V5: &str = r#"
CREATE TABLE media_jobs (
    id          INTEGER PRIMARY KEY,
    message_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    mimetype    TEXT NOT NULL,
    file_name   TEXT,
    size        INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    direct_path TEXT NOT NULL,
    media_key   BLOB NOT NULL,
    enc_sha256  BLOB NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('download', 'publish', 'report', 'done')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    due_at      INTEGER NOT NULL,
    error       TEXT,
    part        INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL
) STRICT;
"#;

const V4: &str = r#"
CREATE TABLE message_sequence (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    epoch    TEXT NOT NULL,
    last_seq INTEGER NOT NULL
) STRICT;
-- What waits in the queue is numbered from 1 in the new epoch (nothing is
-- in flight while the store migrates), so the epoch starts without a gap.
CREATE TABLE message_publish_queue_v4 (
    seq       INTEGER PRIMARY KEY,
    kind      TEXT NOT NULL CHECK (kind IN ('in', 'status')),
    queued_at INTEGER NOT NULL,
    payload   BLOB NOT NULL
) STRICT;
INSERT INTO message_publish_queue_v4 (seq, kind, queued_at, payload)
    SELECT ROW_NUMBER() OVER (ORDER BY seq), kind, queued_at, payload
    FROM message_publish_queue;
DROP TABLE message_publish_queue;
ALTER TABLE message_publish_queue_v4 RENAME TO message_publish_queue;
INSERT INTO message_sequence (id, epoch, last_seq)
    VALUES (1, lower(hex(randomblob(8))), 0);

-- What the broker took, kept for HQ's `replay` (messages.journal_days, within
-- messages.journal_max_bytes): a row moves here from the queue in the same
-- deferred commit that deletes it there.
CREATE TABLE message_journal (
    seq          INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('in', 'status')),
    published_at INTEGER NOT NULL,
    payload      BLOB NOT NULL
) STRICT;
"#;

const V3: &str = r#"
DROP INDEX message_outbox_age;
DROP INDEX message_inbound_seen_age;
DROP INDEX message_publish_queue_kind;

CREATE TABLE message_publish_queue_v3 (
    seq       INTEGER PRIMARY KEY,
    kind      TEXT NOT NULL CHECK (kind IN ('in', 'status')),
    queued_at INTEGER NOT NULL,
    payload   BLOB NOT NULL
) STRICT;
INSERT INTO message_publish_queue_v3 (seq, kind, queued_at, payload)
    SELECT seq, kind, queued_at, payload FROM message_publish_queue;
DROP TABLE message_publish_queue;
ALTER TABLE message_publish_queue_v3 RENAME TO message_publish_queue;

CREATE TABLE pending_inbound_v3 (
    chat        TEXT NOT NULL,
    sender      TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    message     BLOB NOT NULL,
    inserted_at INTEGER NOT NULL,
    PRIMARY KEY (chat, sender, message_id)
) STRICT, WITHOUT ROWID;
INSERT INTO pending_inbound_v3 (chat, sender, message_id, message, inserted_at)
    SELECT chat, sender, message_id, message, inserted_at FROM pending_inbound;
DROP TABLE pending_inbound;
ALTER TABLE pending_inbound_v3 RENAME TO pending_inbound;

DROP INDEX sent_messages_by_time;
"#;

/// Tables holding WhatsApp key material and protocol state: everything that
/// [`crate::SqliteStore::wipe_whatsapp_keys`] deletes. A test checks this list
/// against the schema, so a table added later cannot be forgotten here.
pub const WHATSAPP_TABLES: &[&str] = &[
    "device",
    "identities",
    "sessions",
    "prekeys",
    "signed_prekeys",
    "sender_keys",
    "app_state_sync_keys",
    "app_state_versions",
    "app_state_mutation_macs",
    "sender_key_devices",
    "pn_lid_index",
    "lid_pn_mappings",
    "base_keys",
    "device_lists",
    "group_metadata",
    "tc_tokens",
    "sent_messages",
    "pending_inbound",
    "msg_secrets",
];

/// The agent's own tables, kept by a wipe.
pub const AGENT_TABLES: &[&str] = &[
    "agent_identity",
    "agent_state_history",
    "message_inbound_seen",
    "message_publish_queue",
    "message_sequence",
    "message_journal",
    "message_outbox",
    "media_jobs",
];

/// The page size of our databases: the unit of every WAL frame. A commit
/// appends each page it changed, whole, so on the SD card a small page is
/// what a message costs: a status change touches three or four pages, and
/// with 4 KiB pages each was a 4 KiB frame for a few dozen changed bytes.
/// 512 bytes (SQLite's smallest) keeps the rows that matter (statuses,
/// queue rows, sessions of a few hundred bytes) on a page or two; larger
/// records spill into overflow pages, which cost bytes only when written.
/// Measured: 1 KiB pages wrote ~47 KiB per send, 512 bytes ~36 KiB (before
/// the other savings). Set before a new file's first table; an older file
/// is converted once at open (`open::set_page_size`).
pub const PAGE_SIZE: u32 = 512;

/// Frames after which a commit checkpoints the WAL into the database
/// (SQLite's default is 1000). A checkpoint writes every page changed since
/// the last one to the main file and fsyncs both: the hot pages (the queue's
/// last leaf, the outbox's, a session) are copied once per checkpoint
/// however often they changed, so fewer checkpoints write less. 16 000
/// frames of 536 bytes are a WAL of ~8.6 MB at most (it was ~4 MB with
/// 1000 frames of 4 KiB); it is reused after each checkpoint, and truncated
/// to `journal_size_limit` if it ever grew past it.
pub const WAL_AUTOCHECKPOINT: u32 = 16000;

/// Connection settings applied at every open, before anything is read.
///
/// - `page_size` ([`PAGE_SIZE`]): takes effect only on a file that has no
///   tables yet; a no-op on an existing one.
/// - `locking_mode=EXCLUSIVE` before entering WAL: the WAL index then lives in
///   heap memory instead of a `-shm` file that would be memory-mapped on the SD
///   card and written back by the kernel. Only one connection ever opens the
///   file (the data directory lock guarantees one process, the writer thread
///   is the one connection), so shared-memory coordination buys nothing.
/// - `journal_mode=WAL`: a commit appends to one file; a crash or power cut
///   leaves either the old or the new transaction, never a torn one.
/// - `synchronous=NORMAL`: commits are not fsynced; the WAL is synced at each
///   checkpoint. A power cut can lose the last few commits but never corrupts.
///   Writes that must survive a power cut switch to FULL for their commit
///   (see `writer::Durability`).
/// - `foreign_keys=ON`, `busy_timeout`: as required; the timeout only matters
///   if an outside tool briefly holds the file.
/// - `wal_autocheckpoint` ([`WAL_AUTOCHECKPOINT`]).
/// - `secure_delete=FAST`: deleted key material is zeroed when that costs no
///   extra I/O (the page is being written anyway).
pub fn apply_pragmas(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(crate::error::StoreError::invalid(
            "journal mode",
            format!("SQLite refused WAL mode (got {mode})"),
        ));
    }
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA secure_delete = FAST;
         PRAGMA temp_store = MEMORY;
         PRAGMA journal_size_limit = 16777216;",
    )?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT)?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(())
}

/// `user_version` of an open database.
pub fn user_version(conn: &Connection) -> Result<u32> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    Ok(u32::try_from(v).unwrap_or(u32::MAX))
}

/// `application_id` of an open database.
pub fn application_id(conn: &Connection) -> Result<i32> {
    Ok(conn.query_row("PRAGMA application_id", [], |r| r.get(0))?)
}

/// One `sqlite_master` row (SQLite's internal objects excluded).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SchemaObject {
    pub kind: String,
    pub name: String,
    pub sql: Option<String>,
}

/// The user-visible schema objects of a database, sorted.
pub fn schema_objects(conn: &Connection) -> Result<Vec<SchemaObject>> {
    let mut stmt = conn.prepare(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
    )?;
    let mut out = stmt
        .query_map([], |r| {
            Ok(SchemaObject {
                kind: r.get(0)?,
                name: r.get(1)?,
                sql: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    out.sort();
    Ok(out)
}

/// The exact schema a database of `version` has, rebuilt by running the
/// migrations on an in-memory database.
pub fn schema_at(version: u32) -> Result<Vec<SchemaObject>> {
    let mut conn = Connection::open_in_memory()?;
    migrate(&mut conn, 0, version)?;
    schema_objects(&conn)
}

/// Run migrations `from+1 ..= to`, each in its own transaction together with
/// its `user_version` bump.
pub fn migrate(conn: &mut Connection, from: u32, to: u32) -> Result<()> {
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > from && m.version <= to)
    {
        tracing::info!(
            version = m.version,
            "migrating session store: {}",
            m.description
        );
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        apply_one(&tx, m)?;
        tx.commit()?;
    }
    Ok(())
}

fn apply_one(tx: &Transaction<'_>, m: &Migration) -> Result<()> {
    tx.execute_batch(m.sql)?;
    if m.version == 1 {
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    }
    tx.pragma_update(None, "user_version", m.version)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataDir, OpenOutcome, SqliteStore};
    use std::collections::BTreeSet;

    #[test]
    fn migration_versions_are_contiguous_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version as usize,
                i + 1,
                "migration {} out of order",
                m.description
            );
        }
    }

    #[test]
    fn table_lists_cover_the_schema() {
        let tables: BTreeSet<String> = schema_at(CURRENT_VERSION)
            .unwrap()
            .into_iter()
            .filter(|o| o.kind == "table")
            .map(|o| o.name)
            .collect();
        let listed: BTreeSet<String> = WHATSAPP_TABLES
            .iter()
            .chain(AGENT_TABLES)
            .map(|s| s.to_string())
            .collect();
        assert_eq!(tables, listed);
    }

    /// Build a database file at `version` the way an older build would have
    /// left it, with a little data in it.
    fn file_at_version(dir: &std::path::Path, version: u32) -> std::path::PathBuf {
        let path = dir.join(crate::lock::DB_FILE_NAME);
        let mut conn = Connection::open(&path).unwrap();
        // What builds before the small page size made.
        conn.pragma_update(None, "page_size", 4096).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        migrate(&mut conn, 0, version).unwrap();
        if version >= 1 {
            conn.execute(
                "INSERT INTO identities (address, key) VALUES ('a@s.whatsapp.net', ?1)",
                [[7u8; 32]],
            )
            .unwrap();
        }
        drop(conn);
        path
    }

    /// A database too large to rebuild in memory keeps its page size (and
    /// WAL mode); one within the bound is converted, data and all.
    #[test]
    fn only_a_database_within_the_bound_is_converted() {
        let tmp = tempfile::tempdir().unwrap();
        let path = file_at_version(tmp.path(), CURRENT_VERSION);
        let conn = Connection::open(&path).unwrap();
        let page_size = |conn: &Connection| -> u32 {
            conn.query_row("PRAGMA page_size", [], |r| r.get(0))
                .unwrap()
        };
        let mode = |conn: &Connection| -> String {
            conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap()
        };
        crate::open::set_page_size_within(&conn, 4096).unwrap();
        assert_eq!(page_size(&conn), 4096);
        assert_eq!(mode(&conn), "wal");
        crate::open::set_page_size_within(&conn, u64::MAX).unwrap();
        assert_eq!(page_size(&conn), PAGE_SIZE);
        assert_eq!(mode(&conn), "wal");
        let key: Vec<u8> = conn
            .query_row(
                "SELECT key FROM identities WHERE address = 'a@s.whatsapp.net'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(key, vec![7u8; 32]);
    }

    /// Every earlier version (0 = empty file) migrates to the current schema,
    /// keeps its data, and ends up identical to a freshly created database.
    #[tokio::test]
    async fn every_earlier_version_migrates_to_current() {
        let fresh = schema_at(CURRENT_VERSION).unwrap();
        for version in 0..CURRENT_VERSION {
            let tmp = tempfile::tempdir().unwrap();
            file_at_version(tmp.path(), version);
            let lock = DataDir::lock(tmp.path()).unwrap();
            let (store, outcome) = SqliteStore::open(&lock).await.unwrap();
            match (version, &outcome) {
                (0, OpenOutcome::Created { .. }) => {}
                (v, OpenOutcome::Opened { migrated_from }) if v > 0 => {
                    assert_eq!(*migrated_from, Some(v))
                }
                _ => panic!("version {version}: unexpected outcome {outcome:?}"),
            }
            if version >= 1 {
                use wacore::store::traits::SignalStore;
                assert_eq!(
                    store.load_identity("a@s.whatsapp.net").await.unwrap(),
                    Some([7u8; 32])
                );
            }
            store.close().await.unwrap();
            let conn = Connection::open(lock.db_path()).unwrap();
            assert_eq!(user_version(&conn).unwrap(), CURRENT_VERSION);
            // An older build's 4 KiB pages are converted once, at open.
            let page_size: u32 = conn
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .unwrap();
            assert_eq!(page_size, PAGE_SIZE, "from version {version}");
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal", "from version {version}");
            assert_eq!(
                schema_objects(&conn).unwrap(),
                fresh,
                "from version {version}"
            );
        }
    }

    #[tokio::test]
    async fn current_version_reopens_without_migration() {
        let tmp = tempfile::tempdir().unwrap();
        file_at_version(tmp.path(), CURRENT_VERSION);
        let lock = DataDir::lock(tmp.path()).unwrap();
        let (store, outcome) = SqliteStore::open(&lock).await.unwrap();
        assert_eq!(
            outcome,
            OpenOutcome::Opened {
                migrated_from: None
            }
        );
        {
            use wacore::store::traits::SignalStore;
            // Converted to the small page size, and the data kept.
            assert_eq!(
                store.load_identity("a@s.whatsapp.net").await.unwrap(),
                Some([7u8; 32])
            );
        }
        store.close().await.unwrap();
        let conn = Connection::open(lock.db_path()).unwrap();
        let page_size: u32 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(page_size, PAGE_SIZE);
    }
}
