//! Opening the database file, and moving an unusable one aside.
//!
//! An SD card in a shop loses power without warning. SQLite's WAL makes that
//! safe for the database's *content*, but not for the card or the filesystem:
//! files come back truncated, zero-length (the classic ext4 delayed-allocation
//! outcome) or full of garbage. The agent must then start pairing again, *say
//! so*, and keep the broken file for a post-mortem. So at open, in this order:
//!
//! 1. **Without SQLite**, look at the file: missing, zero-length, a header that
//!    is not `SQLite format 3`, or shorter than the page count its header
//!    claims (checked only when there is no WAL that could still supply the
//!    missing pages).
//! 2. Open it with SQLite and run `PRAGMA quick_check` (cheap for a database of
//!    this size: it reads every page once, without the index cross-checks of
//!    `integrity_check`).
//! 3. Check it is *ours*: `application_id`, `user_version` not newer than this
//!    build knows, and `sqlite_master` exactly equal to the schema the
//!    migrations produce for that version. Then migrate forward.
//!
//! A failure in 1–3 caused by the file's *content* moves `session.db` (and its
//! `-wal`/`-shm`) to `session.db.corrupt-<UTC time>` (`-wal`, `-shm` keep their
//! suffix, so the copy opens with the `sqlite3` shell as it was) and creates a
//! fresh database; [`OpenOutcome::Recovered`] says where and why. A failure of
//! the *environment* (permission denied, I/O error, disk full) is returned as an
//! error and the file is left alone: moving a good database aside because the
//! disk is full would throw away a paired session. Nothing is ever deleted.
//!
//! **Zero-length files.** SQLite itself treats a 0-byte file as an empty
//! database, and a brand-new database really is 0 bytes until first written.
//! So a 0-byte `session.db` is "fresh" — *unless* we had created a database here
//! before. That is recorded in a marker file, `session.db.created`, written
//! (and fsynced) right after a new database's schema reached the disk. A
//! database that is missing, 0 bytes or schema-less while the marker exists has
//! lost its contents: that is reported ([`CorruptionReason::LostContents`], or
//! [`CreateNotice::PreviousDatabaseMissing`] when there is no file left to move)
//! instead of silently starting over. A 0-byte file without a marker is used as
//! the new database and reported as [`CreateNotice::ZeroLengthFile`].

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode};

use crate::error::{Result, StoreError};
use crate::lock::DB_FILE_NAME;
use crate::schema::{self, APPLICATION_ID, CURRENT_VERSION};
use crate::writer::checkpoint_truncate;

/// What [`crate::SqliteStore::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenOutcome {
    /// An existing database of ours was opened. `migrated_from` is the schema
    /// version it had when it was older than this build's.
    Opened { migrated_from: Option<u32> },
    /// There was no usable database (first start), so an empty one was
    /// created. Pairing starts fresh. `notice` tells about anything odd.
    Created { notice: Option<CreateNotice> },
    /// The database was unusable. It was moved to `moved_to` (its `-wal` and
    /// `-shm`, if any, to the same name with those suffixes) and an empty one
    /// was created. Pairing starts fresh; the agent should report this.
    /// (For [`CorruptionReason::OrphanedJournal`] only the suffixed files
    /// exist.)
    Recovered {
        moved_to: PathBuf,
        reason: CorruptionReason,
    },
}

impl OpenOutcome {
    /// True when the store holds no session: the agent must pair.
    pub fn is_fresh(&self) -> bool {
        !matches!(self, OpenOutcome::Opened { .. })
    }

    /// True when something happened that a person should hear about.
    pub fn should_report(&self) -> bool {
        matches!(
            self,
            OpenOutcome::Recovered { .. } | OpenOutcome::Created { notice: Some(_) }
        )
    }
}

/// Something odd, but harmless, seen while creating a fresh database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CreateNotice {
    /// `session.db` existed with 0 bytes and no database had been created here
    /// before (no marker); it was used as the new database.
    #[error("session.db was an empty (0-byte) file; it was initialised as a new database")]
    ZeroLengthFile,
    /// A database had been created here (marker from `created_at`) but
    /// `session.db` is gone. Someone deleted it, or the filesystem lost it.
    #[error("session.db created at {created_at} is missing; a new database was created")]
    PreviousDatabaseMissing { created_at: String },
}

/// Why the database was moved aside.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptionReason {
    /// The file is not a SQLite database at all (wrong header, garbage).
    #[error("not a SQLite database: {detail}")]
    NotADatabase { detail: String },
    /// The file is shorter than its own header says.
    #[error("truncated: {actual_bytes} bytes, expected at least {expected_bytes}")]
    Truncated {
        expected_bytes: u64,
        actual_bytes: u64,
    },
    /// The file is empty or has no schema, although a database was created
    /// here before (marker from `created_at`): its contents were lost.
    #[error("the database created at {created_at} lost its contents (empty file or no schema)")]
    LostContents { created_at: String },
    /// `PRAGMA quick_check` found damage.
    #[error("integrity check failed: {detail}")]
    IntegrityCheckFailed { detail: String },
    /// SQLite reported the file as corrupt (`SQLITE_CORRUPT`/`SQLITE_NOTADB`)
    /// while reading it.
    #[error("SQLite reports corruption: {detail}")]
    Corrupt { detail: String },
    /// Our database, from a newer build with a schema this build cannot read.
    #[error("schema version {found} is newer than this build supports ({supported})")]
    NewerSchema { found: u32, supported: u32 },
    /// A SQLite database, but not one of ours (or one edited by hand).
    #[error("not this agent's schema: {detail}")]
    ForeignSchema { detail: String },
    /// `session.db-wal`/`-shm` without a `session.db`: SQLite could replay a
    /// stranger's WAL into a new file, so they are moved aside too.
    #[error("WAL/shm files without a database")]
    OrphanedJournal,
}

/// The files of one database.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub dir: PathBuf,
    pub db: PathBuf,
    pub marker: PathBuf,
}

/// Sidecar files SQLite may keep next to the database.
const SIDECARS: &[&str] = &["-wal", "-shm", "-journal"];

impl Paths {
    pub fn new(dir: &Path) -> Self {
        Paths {
            dir: dir.to_path_buf(),
            db: dir.join(DB_FILE_NAME),
            marker: dir.join(format!("{DB_FILE_NAME}.created")),
        }
    }

    fn sidecar(&self, suffix: &str) -> PathBuf {
        with_suffix(&self.db, suffix)
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Open the database in `paths`, recovering as described in the module docs.
/// Runs on the writer thread.
pub(crate) fn open_or_recover(paths: &Paths) -> Result<(Connection, OpenOutcome)> {
    let marker = read_marker(paths)?;
    let (conn, outcome) = match inspect(paths)? {
        Inspect::Missing { orphans: true } => recover(paths, CorruptionReason::OrphanedJournal)?,
        Inspect::Missing { orphans: false } => {
            let notice = marker
                .clone()
                .map(|created_at| CreateNotice::PreviousDatabaseMissing { created_at });
            (create_fresh(paths)?, OpenOutcome::Created { notice })
        }
        Inspect::Bad(reason) => recover(paths, reason)?,
        // Our databases are checkpointed into the main file before the marker
        // is written, and never shrink: 0 bytes here means the content is gone.
        // Decided without SQLite, so the file and any WAL stay as found.
        Inspect::Plausible { zero_length: true } if marker.is_some() => recover(
            paths,
            CorruptionReason::LostContents {
                created_at: marker.clone().unwrap_or_default(),
            },
        )?,
        Inspect::Plausible { zero_length } => match open_existing(paths) {
            Ok(Existing::Ours {
                conn,
                migrated_from,
            }) => (conn, OpenOutcome::Opened { migrated_from }),
            Ok(Existing::Empty(conn)) => {
                drop(conn);
                match &marker {
                    Some(created_at) => recover(
                        paths,
                        CorruptionReason::LostContents {
                            created_at: created_at.clone(),
                        },
                    )?,
                    None => {
                        let notice = zero_length.then_some(CreateNotice::ZeroLengthFile);
                        (create_fresh(paths)?, OpenOutcome::Created { notice })
                    }
                }
            }
            Err(Failure::Content(reason)) => recover(paths, reason)?,
            Err(Failure::Environment(e)) => return Err(e),
        },
    };
    if marker.is_none() || outcome.is_fresh() {
        write_marker(paths)?;
    }
    restrict_permissions(paths)?;
    match &outcome {
        OpenOutcome::Recovered { moved_to, reason } => tracing::warn!(
            moved_to = %moved_to.display(), %reason,
            "session database was unusable; moved aside, pairing starts fresh"
        ),
        OpenOutcome::Created { notice: Some(n) } => {
            tracing::warn!(notice = %n, "new session database")
        }
        OpenOutcome::Created { notice: None } => tracing::info!("new session database"),
        OpenOutcome::Opened { migrated_from } => {
            tracing::debug!(?migrated_from, "session database opened")
        }
    }
    Ok((conn, outcome))
}

fn recover(paths: &Paths, reason: CorruptionReason) -> Result<(Connection, OpenOutcome)> {
    let moved_to = move_aside(paths)?;
    let conn = create_fresh(paths)?;
    Ok((conn, OpenOutcome::Recovered { moved_to, reason }))
}

enum Inspect {
    Missing { orphans: bool },
    Plausible { zero_length: bool },
    Bad(CorruptionReason),
}

const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Step 1: look at the file without SQLite.
fn inspect(paths: &Paths) -> Result<Inspect> {
    let meta = match std::fs::metadata(&paths.db) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let orphans = SIDECARS.iter().any(|s| paths.sidecar(s).exists());
            return Ok(Inspect::Missing { orphans });
        }
        Err(e) => return Err(StoreError::io("stat", &paths.db, e)),
    };
    if !meta.is_file() {
        return Ok(Inspect::Bad(CorruptionReason::NotADatabase {
            detail: "not a regular file".to_string(),
        }));
    }
    let len = meta.len();
    if len == 0 {
        return Ok(Inspect::Plausible { zero_length: true });
    }
    let mut header = Vec::with_capacity(100);
    std::fs::File::open(&paths.db)
        .and_then(|f| f.take(100).read_to_end(&mut header))
        .map_err(|e| StoreError::io("read header of", &paths.db, e))?;
    if header.len() < 100 {
        let n = header.len().min(MAGIC.len());
        return Ok(Inspect::Bad(if header[..n] == MAGIC[..n] {
            CorruptionReason::Truncated {
                expected_bytes: 512,
                actual_bytes: len,
            }
        } else {
            CorruptionReason::NotADatabase {
                detail: "no SQLite header".to_string(),
            }
        }));
    }
    if &header[..16] != MAGIC {
        return Ok(Inspect::Bad(CorruptionReason::NotADatabase {
            detail: "no SQLite header".to_string(),
        }));
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536u64,
        n if n >= 512 && n.is_power_of_two() => u64::from(n),
        n => {
            return Ok(Inspect::Bad(CorruptionReason::NotADatabase {
                detail: format!("impossible page size {n}"),
            }));
        }
    };
    // With a non-empty WAL the main file may legitimately be short (a
    // checkpoint interrupted before it extended the file); SQLite replays the
    // WAL and quick_check judges the result. The same holds for a hot
    // rollback journal, which only the one-time page-size conversion
    // (`VACUUM` outside WAL) can leave: a power cut may have written the new
    // header before the file grew, and SQLite rolls it back at open.
    let wal_len = std::fs::metadata(paths.sidecar("-wal")).map_or(0, |m| m.len());
    let journal_len = std::fs::metadata(paths.sidecar("-journal")).map_or(0, |m| m.len());
    if wal_len == 0 && journal_len == 0 {
        let be32 =
            |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let pages = u64::from(be32(28));
        let header_size_valid = pages > 0 && be32(24) == be32(92);
        let expected = if header_size_valid {
            pages * page_size
        } else {
            len.div_ceil(page_size) * page_size
        };
        if len < expected || len < page_size {
            return Ok(Inspect::Bad(CorruptionReason::Truncated {
                expected_bytes: expected.max(page_size),
                actual_bytes: len,
            }));
        }
    }
    Ok(Inspect::Plausible { zero_length: false })
}

enum Existing {
    Ours {
        conn: Connection,
        migrated_from: Option<u32>,
    },
    /// A database with no schema at all (what a 0-byte file opens as).
    Empty(Connection),
}

enum Failure {
    /// The file's content is bad: move it aside.
    Content(CorruptionReason),
    /// The environment failed: report, leave the file alone.
    Environment(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e.sqlite_code() {
            Some(ErrorCode::NotADatabase) => Failure::Content(CorruptionReason::NotADatabase {
                detail: error_chain(&e),
            }),
            Some(ErrorCode::DatabaseCorrupt) => Failure::Content(CorruptionReason::Corrupt {
                detail: error_chain(&e),
            }),
            _ => Failure::Environment(e),
        }
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::from(StoreError::from(e))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// Steps 2 and 3.
///
/// The file is only read until it is known to be ours: no journal-mode change,
/// and no checkpoint-on-close, so a file that is then moved aside keeps its
/// WAL exactly as it was found.
fn open_existing(paths: &Paths) -> std::result::Result<Existing, Failure> {
    let mut conn = Connection::open(&paths.db)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Before the first read, so a WAL index is never put in a -shm file.
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;

    let problems: Vec<String> = {
        let mut stmt = conn.prepare("PRAGMA quick_check(5)")?;
        stmt.query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    if problems != ["ok"] {
        return Err(Failure::Content(CorruptionReason::IntegrityCheckFailed {
            detail: problems.join("; "),
        }));
    }

    let version = schema::user_version(&conn)?;
    let app_id = schema::application_id(&conn)?;
    let objects = schema::schema_objects(&conn)?;
    if version == 0 {
        if objects.is_empty() && app_id == 0 {
            return Ok(Existing::Empty(conn));
        }
        return Err(Failure::Content(CorruptionReason::ForeignSchema {
            detail: format!(
                "{} schema objects (first: {:?}) but no schema version",
                objects.len(),
                objects.first().map(|o| o.name.as_str()).unwrap_or("-")
            ),
        }));
    }
    if app_id != APPLICATION_ID {
        return Err(Failure::Content(CorruptionReason::ForeignSchema {
            detail: format!("application_id {app_id:#x} is not this agent's"),
        }));
    }
    if version > CURRENT_VERSION {
        return Err(Failure::Content(CorruptionReason::NewerSchema {
            found: version,
            supported: CURRENT_VERSION,
        }));
    }
    let expected = schema::schema_at(version).map_err(Failure::Environment)?;
    if objects != expected {
        let unexpected = objects.iter().find(|o| !expected.contains(o));
        let missing = expected.iter().find(|o| !objects.contains(o));
        return Err(Failure::Content(CorruptionReason::ForeignSchema {
            detail: format!(
                "schema differs from version {version}: unexpected {:?}, missing {:?}",
                unexpected.map(|o| &o.name),
                missing.map(|o| &o.name)
            ),
        }));
    }
    schema::apply_pragmas(&conn)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false)?;
    let migrated_from = if version < CURRENT_VERSION {
        schema::migrate(&mut conn, version, CURRENT_VERSION).map_err(Failure::Environment)?;
        Some(version)
    } else {
        None
    };
    // After the migration, so the rebuild also compacts what it freed.
    set_page_size(&conn).map_err(Failure::Environment)?;
    Ok(Existing::Ours {
        conn,
        migrated_from,
    })
}

/// The largest database (in used bytes) whose page size is converted at
/// open; see [`set_page_size`].
pub(crate) const MAX_CONVERTED_BYTES: u64 = 32 * 1024 * 1024;

/// Converts a database made with another page size (an older build's 4 KiB)
/// to [`schema::PAGE_SIZE`], once. SQLite changes the page size of a WAL
/// database only by leaving WAL mode and rebuilding the file (`VACUUM`,
/// atomic under the rollback journal: a crash leaves the old file, and the
/// next open tries again). Best effort: a failed conversion (no room for
/// the copy, say) leaves the database as it was and costs only bytes; only
/// failing to return to WAL mode is an error.
///
/// `VACUUM` builds the new file in temporary storage, which is memory here
/// (`temp_store = MEMORY`): a database larger than
/// [`MAX_CONVERTED_BYTES`] (a full inbox after a long broker outage) keeps
/// its page size rather than risk the Pi's memory at every start. The
/// rebuild runs with `synchronous = FULL`, so a power cut in the middle
/// leaves the old file or the new one, pairing keys included.
pub(crate) fn set_page_size(conn: &Connection) -> Result<()> {
    set_page_size_within(conn, MAX_CONVERTED_BYTES)
}

/// [`set_page_size`] for a database of at most `max_bytes` used bytes.
pub(crate) fn set_page_size_within(conn: &Connection, max_bytes: u64) -> Result<()> {
    let current: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    if current == i64::from(schema::PAGE_SIZE) {
        return Ok(());
    }
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let bytes = u64::try_from((pages - free).max(0) * current).unwrap_or(u64::MAX);
    if bytes > max_bytes {
        tracing::info!(
            bytes,
            page_size = current,
            "the session store is too large to convert its page size now; it keeps the old one"
        );
        return Ok(());
    }
    let convert = || -> rusqlite::Result<()> {
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(rusqlite::Error::InvalidQuery);
        }
        conn.pragma_update(None, "page_size", schema::PAGE_SIZE)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let vacuum = conn.execute_batch("VACUUM");
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        vacuum
    };
    let outcome = convert();
    // Back to WAL whatever happened.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::invalid(
            "journal mode",
            format!("SQLite refused WAL mode after a page size change (got {mode})"),
        ));
    }
    // Reopens the WAL: in exclusive locking mode, a checkpoint right after
    // re-entering WAL mode, before any read, fails with SQLITE_LOCKED.
    conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })?;
    match outcome {
        Ok(()) => tracing::info!(
            from = current,
            to = schema::PAGE_SIZE,
            "session store converted to a smaller page size"
        ),
        Err(e) => tracing::warn!(
            from = current,
            error = %e,
            "could not convert the session store's page size; it keeps the old one"
        ),
    }
    Ok(())
}

/// Create the database file (0600) and its schema, and make sure the schema
/// is on disk (checkpointed and synced) before the marker says it exists.
fn create_fresh(paths: &Paths) -> Result<Connection> {
    // The marker described the database that is gone (moved aside or lost).
    // Forget it first: a crash before the new schema is durable must look
    // like a first start next time, not like lost contents.
    match std::fs::remove_file(&paths.marker) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io("remove", &paths.marker, e)),
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&paths.db)
        .map_err(|e| StoreError::io("create", &paths.db, e))?;
    std::fs::set_permissions(&paths.db, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| StoreError::io("restrict permissions (0600) of", &paths.db, e))?;
    let mut conn = Connection::open(&paths.db)?;
    schema::apply_pragmas(&conn)?;
    let version = schema::user_version(&conn)?;
    if version != 0 || !schema::schema_objects(&conn)?.is_empty() {
        return Err(StoreError::Unrecoverable {
            path: paths.db.clone(),
            detail: "a freshly created database is not empty".to_string(),
        });
    }
    // An empty file made elsewhere can already have a page size.
    set_page_size(&conn)?;
    schema::migrate(&mut conn, 0, CURRENT_VERSION)?;
    checkpoint_truncate(&conn)?;
    Ok(conn)
}

/// Rename the database and its sidecars to `session.db.corrupt-<time>[.n]`.
fn move_aside(paths: &Paths) -> Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let mut target = paths.dir.join(format!("{DB_FILE_NAME}.corrupt-{stamp}"));
    let mut n = 1;
    while target.exists() || SIDECARS.iter().any(|s| with_suffix(&target, s).exists()) {
        target = paths
            .dir
            .join(format!("{DB_FILE_NAME}.corrupt-{stamp}.{n}"));
        n += 1;
    }
    if paths.db.exists() {
        rename(&paths.db, &target)?;
    }
    for s in SIDECARS {
        let from = paths.sidecar(s);
        if from.exists() {
            rename(&from, &with_suffix(&target, s))?;
        }
    }
    sync_dir(&paths.dir)?;
    Ok(target)
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| StoreError::io("move aside", from, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("sync directory", dir, e))
}

fn read_marker(paths: &Paths) -> Result<Option<String>> {
    match std::fs::read_to_string(&paths.marker) {
        Ok(s) => Ok(Some(s.trim().to_string())
            .filter(|s| !s.is_empty())
            .or(Some("unknown time".into()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read", &paths.marker, e)),
    }
}

fn write_marker(paths: &Paths) -> Result<()> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&paths.marker)
        .map_err(|e| StoreError::io("create", &paths.marker, e))?;
    writeln!(f, "{now}")
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::io("write", &paths.marker, e))?;
    sync_dir(&paths.dir)
}

/// 0600 on the database and whatever sidecars exist now. SQLite creates later
/// sidecars with the database file's mode, so this sticks.
fn restrict_permissions(paths: &Paths) -> Result<()> {
    let files = std::iter::once(paths.db.clone()).chain(SIDECARS.iter().map(|s| paths.sidecar(s)));
    for f in files {
        match std::fs::metadata(&f) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| StoreError::io("restrict permissions (0600) of", &f, e))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("stat", &f, e)),
        }
    }
    Ok(())
}
