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
    "message_outbox",
];

/// Connection settings applied at every open, before anything is read.
///
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
/// - `secure_delete=FAST`: deleted key material is zeroed when that costs no
///   extra I/O (the page is being written anyway).
pub fn apply_pragmas(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
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
        store.close().await.unwrap();
    }
}
