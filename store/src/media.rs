//! Media jobs: each received file's way from WhatsApp's media servers to
//! HQ (the agent's `messages::media` does the work; this is its memory).
//!
//! A job is inserted in the same commit as its message's inbox row
//! ([`crate::SqliteStore::commit_inbound`]), so the file's reference (its
//! path on WhatsApp's servers and its key, which exist nowhere else once the
//! message is acknowledged) cannot be lost to a crash. Its steps, in
//! [`MediaState`]: download (retried, with the next try at `due_at`), then
//! publish (the announcement, then the chunks; `part` is the first the broker
//! has not acknowledged, so a restart resumes there), or report an error
//! instead, then done. The reference is cleared once the file is fetched or
//! given up: a key kept longer than needed is only a risk.
//!
//! Step changes are plain commits (not fsynced): one lost to a power cut
//! repeats a download or a chunk, which HQ takes twice without harm.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Result, StoreError};
use crate::messages::{from_millis, millis};
use crate::store::SqliteStore;

/// A received file to fetch, as the inbox commits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaJob {
    /// `image`, `video`, `audio`, `document` or `sticker` (`message/in`'s kind).
    pub kind: String,
    pub mimetype: String,
    pub file_name: Option<String>,
    /// The plaintext's length, as the sender declared it.
    pub size: u64,
    /// The plaintext's SHA-256 as the sender declared it, lower-case hex.
    pub sha256: String,
    /// whatsapp-rust's media type name (`image`, `ptt`, `document`, …),
    /// which picks the key derivation.
    pub media_type: String,
    pub direct_path: String,
    pub media_key: Vec<u8>,
    pub enc_sha256: Vec<u8>,
    /// Set when the file is not to be fetched at all (`too_large`): the job
    /// starts by reporting it.
    pub error: Option<String>,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaState {
    /// To fetch, at `due_at` or later.
    Download,
    /// Fetched and spooled: announce it, then its chunks from `part`.
    Publish,
    /// Announce the job's `error` instead of the file.
    Report,
    /// HQ has it (or its error).
    Done,
}

impl MediaState {
    fn as_sql(self) -> &'static str {
        match self {
            MediaState::Download => "download",
            MediaState::Publish => "publish",
            MediaState::Report => "report",
            MediaState::Done => "done",
        }
    }

    fn from_sql(s: &str) -> Result<Self> {
        Ok(match s {
            "download" => MediaState::Download,
            "publish" => MediaState::Publish,
            "report" => MediaState::Report,
            "done" => MediaState::Done,
            other => return Err(StoreError::invalid("media job state", other.to_string())),
        })
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaJobRow {
    pub id: i64,
    pub message_id: String,
    pub job: MediaJob,
    pub state: MediaState,
    pub attempts: u32,
    pub due_at: DateTime<Utc>,
    /// The next part the broker has not acknowledged (0: the announcement,
    /// `i + 1`: chunk `i`).
    pub part: u32,
}

const COLUMNS: &str = "id, message_id, kind, mimetype, file_name, size, sha256, media_type, \
     direct_path, media_key, enc_sha256, error, state, attempts, due_at, part";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(MediaJobRow, String, i64)> {
    Ok((
        MediaJobRow {
            id: r.get(0)?,
            message_id: r.get(1)?,
            job: MediaJob {
                kind: r.get(2)?,
                mimetype: r.get(3)?,
                file_name: r.get(4)?,
                size: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
                sha256: r.get(6)?,
                media_type: r.get(7)?,
                direct_path: r.get(8)?,
                media_key: r.get(9)?,
                enc_sha256: r.get(10)?,
                error: r.get(11)?,
            },
            state: MediaState::Done,
            attempts: u32::try_from(r.get::<_, i64>(13)?).unwrap_or(u32::MAX),
            due_at: Utc::now(),
            part: u32::try_from(r.get::<_, i64>(15)?).unwrap_or(0),
        },
        r.get(12)?,
        r.get(14)?,
    ))
}

fn finish((mut job, state, due): (MediaJobRow, String, i64)) -> Result<MediaJobRow> {
    job.state = MediaState::from_sql(&state)?;
    job.due_at = from_millis(due)?;
    Ok(job)
}

fn one(
    conn: &Connection,
    clause: &str,
    args: impl rusqlite::Params,
) -> Result<Option<MediaJobRow>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM media_jobs WHERE {clause}"))?
        .query_row(args, row)
        .optional()?
        .map(finish)
        .transpose()
}

/// Inserts `job` for `message_id` (inside the inbox's commit).
pub(crate) fn insert_job(conn: &Connection, message_id: &str, job: &MediaJob) -> Result<()> {
    let state = if job.error.is_some() {
        MediaState::Report
    } else {
        MediaState::Download
    };
    let now = millis(&Utc::now());
    conn.prepare_cached(
        "INSERT INTO media_jobs (message_id, kind, mimetype, file_name, size, sha256, media_type,
             direct_path, media_key, enc_sha256, state, due_at, error, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?12)",
    )?
    .execute(params![
        message_id,
        job.kind,
        job.mimetype,
        job.file_name,
        i64::try_from(job.size).unwrap_or(i64::MAX),
        job.sha256,
        job.media_type,
        job.direct_path,
        job.media_key,
        job.enc_sha256,
        state.as_sql(),
        now,
        job.error,
    ])?;
    Ok(())
}

/// Leaves `state` with the download reference cleared.
const FORGET_REFERENCE: &str = "direct_path = '', media_key = X'', enc_sha256 = X''";

impl SqliteStore {
    /// The download due first (possibly not yet due: see its `due_at`).
    pub async fn next_media_download(&self) -> Result<Option<MediaJobRow>> {
        self.read(|c| one(c, "state = 'download' ORDER BY due_at, id LIMIT 1", []))
            .await
    }

    /// The file is spooled: publish it, from the announcement on.
    pub async fn media_fetched(&self, id: i64) -> Result<()> {
        let now = millis(&Utc::now());
        self.write(move |c| {
            c.prepare_cached(&format!(
                "UPDATE media_jobs SET state = 'publish', part = 0, error = NULL, \
                 {FORGET_REFERENCE}, updated_at = ?2 WHERE id = ?1"
            ))?
            .execute(params![id, now])?;
            Ok(())
        })
        .await
    }

    /// The download failed and is tried again at `due_at`.
    pub async fn media_retry(&self, id: i64, due_at: DateTime<Utc>, error: String) -> Result<()> {
        let now = millis(&Utc::now());
        let due = millis(&due_at);
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE media_jobs SET attempts = attempts + 1, due_at = ?2, error = ?3,
                 updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![id, due, error, now])?;
            Ok(())
        })
        .await
    }

    /// The file cannot be had: announce `error` instead, once.
    pub async fn media_give_up(&self, id: i64, error: String) -> Result<()> {
        let now = millis(&Utc::now());
        self.write(move |c| {
            c.prepare_cached(&format!(
                "UPDATE media_jobs SET state = 'report', part = 0, error = ?2, \
                 {FORGET_REFERENCE}, updated_at = ?3 WHERE id = ?1"
            ))?
            .execute(params![id, error, now])?;
            Ok(())
        })
        .await
    }

    /// The oldest job with something to publish (a file or an error).
    pub async fn next_media_publish(&self) -> Result<Option<MediaJobRow>> {
        self.read(|c| one(c, "state IN ('publish', 'report') ORDER BY id LIMIT 1", []))
            .await
    }

    /// The broker acknowledged every part of job `id` before `part`.
    pub async fn media_published_to(&self, id: i64, part: u32) -> Result<()> {
        let now = millis(&Utc::now());
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE media_jobs SET part = MAX(part, ?2), updated_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, i64::from(part), now])?;
            Ok(())
        })
        .await
    }

    /// HQ has all of job `id`.
    pub async fn media_done(&self, id: i64) -> Result<()> {
        let now = millis(&Utc::now());
        self.write(move |c| {
            c.prepare_cached(&format!(
                "UPDATE media_jobs SET state = 'done', {FORGET_REFERENCE}, updated_at = ?2 \
                 WHERE id = ?1"
            ))?
            .execute(params![id, now])?;
            Ok(())
        })
        .await
    }

    /// HQ asks for the file `sha256` again (`request/media`): the newest
    /// delivered job of it is published again. `false` when no delivered
    /// job has it (never received, not fetched yet, or it failed).
    pub async fn media_again(&self, sha256: String) -> Result<bool> {
        let now = millis(&Utc::now());
        self.write(move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE media_jobs SET state = 'publish', part = 0, updated_at = ?2
                     WHERE id = (SELECT MAX(id) FROM media_jobs
                                 WHERE sha256 = ?1 AND state = 'done' AND error IS NULL)",
                )?
                .execute(params![sha256, now])?;
            Ok(changed > 0)
        })
        .await
    }

    /// The files jobs still need (to download or publish): never pruned.
    pub async fn media_in_use(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT DISTINCT sha256 FROM media_jobs WHERE state IN ('download', 'publish')",
            )?;
            let shas = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(shas)
        })
        .await
    }

    /// Jobs (download, publish or report) not done yet.
    pub async fn media_pending(&self) -> Result<u64> {
        self.read(|c| {
            let n: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM media_jobs WHERE state != 'done'")?
                .query_row([], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    /// Forgets done jobs last changed before `cutoff`.
    pub async fn prune_media_jobs(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        let cutoff = millis(&cutoff);
        self.write(move |c| {
            let n = c
                .prepare_cached("DELETE FROM media_jobs WHERE state = 'done' AND updated_at < ?1")?
                .execute([cutoff])?;
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataDir, InboundRow, Limits};

    fn job(sha: &str) -> MediaJob {
        MediaJob {
            kind: "image".into(),
            mimetype: "image/jpeg".into(),
            file_name: None,
            size: 10,
            sha256: sha.into(),
            media_type: "image".into(),
            direct_path: "/v/t62/x".into(),
            media_key: vec![1; 32],
            enc_sha256: vec![2; 32],
            error: None,
        }
    }

    fn row_with(id: &str, media: MediaJob) -> InboundRow {
        InboundRow {
            chat: "1@s.whatsapp.net".into(),
            sender: "1@s.whatsapp.net".into(),
            message_id: id.into(),
            received_at: Utc::now(),
            payload: b"{}".to_vec(),
            media: Some(media),
        }
    }

    const LIMITS: Limits = Limits {
        max_messages: 100,
        max_bytes: 1 << 20,
    };

    #[tokio::test]
    async fn a_job_goes_from_download_to_done_and_forgets_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DataDir::lock(dir.path()).unwrap();
        let (store, _) = SqliteStore::open(&lock).await.unwrap();
        store
            .commit_inbound(vec![row_with("M1", job("aa"))], LIMITS)
            .await
            .unwrap();
        // A redelivery adds no second job.
        store
            .commit_inbound(vec![row_with("M1", job("aa"))], LIMITS)
            .await
            .unwrap();
        let next = store.next_media_download().await.unwrap().unwrap();
        assert_eq!(next.message_id, "M1");
        assert_eq!(next.job.media_key, vec![1; 32]);
        assert_eq!(store.media_pending().await.unwrap(), 1);

        let later = Utc::now() + chrono::Duration::seconds(30);
        store
            .media_retry(next.id, later, "timeout".into())
            .await
            .unwrap();
        let again = store.next_media_download().await.unwrap().unwrap();
        assert_eq!(
            (again.attempts, again.due_at.timestamp()),
            (1, later.timestamp())
        );

        store.media_fetched(next.id).await.unwrap();
        assert_eq!(store.next_media_download().await.unwrap(), None);
        let publish = store.next_media_publish().await.unwrap().unwrap();
        assert_eq!((publish.state, publish.part), (MediaState::Publish, 0));
        assert!(
            publish.job.media_key.is_empty(),
            "the key is forgotten once fetched"
        );
        assert_eq!(store.media_in_use().await.unwrap(), vec!["aa".to_string()]);

        store.media_published_to(next.id, 3).await.unwrap();
        store.media_published_to(next.id, 2).await.unwrap();
        assert_eq!(store.next_media_publish().await.unwrap().unwrap().part, 3);
        store.media_done(next.id).await.unwrap();
        assert_eq!(store.next_media_publish().await.unwrap(), None);
        assert_eq!(store.media_pending().await.unwrap(), 0);

        // HQ asks again: published again from the announcement.
        assert!(store.media_again("aa".into()).await.unwrap());
        assert!(!store.media_again("bb".into()).await.unwrap());
        let republish = store.next_media_publish().await.unwrap().unwrap();
        assert_eq!((republish.id, republish.part), (next.id, 0));
        store.media_done(next.id).await.unwrap();
        let pruned = store
            .prune_media_jobs(Utc::now() + chrono::Duration::seconds(1))
            .await
            .unwrap();
        assert_eq!(pruned, 1);
    }

    #[tokio::test]
    async fn a_file_not_to_fetch_is_reported_and_a_given_up_one_too() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DataDir::lock(dir.path()).unwrap();
        let (store, _) = SqliteStore::open(&lock).await.unwrap();
        let mut big = job("cc");
        big.error = Some("too_large".into());
        store
            .commit_inbound(vec![row_with("M1", big), row_with("M2", job("dd"))], LIMITS)
            .await
            .unwrap();
        let first = store.next_media_publish().await.unwrap().unwrap();
        assert_eq!(
            (first.state, first.job.error.as_deref()),
            (MediaState::Report, Some("too_large"))
        );
        let download = store.next_media_download().await.unwrap().unwrap();
        store
            .media_give_up(download.id, "gone".into())
            .await
            .unwrap();
        store.media_done(first.id).await.unwrap();
        let second = store.next_media_publish().await.unwrap().unwrap();
        assert_eq!(
            (
                second.message_id.as_str(),
                second.state,
                second.job.error.as_deref()
            ),
            ("M2", MediaState::Report, Some("gone"))
        );
        assert!(second.job.media_key.is_empty());
        // A failed file is not published again on request.
        store.media_done(second.id).await.unwrap();
        assert!(!store.media_again("dd".into()).await.unwrap());
    }
}
