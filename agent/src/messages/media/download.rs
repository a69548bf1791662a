//! The download worker: fetches each job's file, one at a time, into the
//! spool, while the session is connected (whatsapp-rust asks the server
//! for the media hosts and their token over it).
//!
//! One at a time because a Pi's uplink is the outlet's too, and a file is
//! streamed to disk in constant memory either way. A failed try waits
//! [`FIRST_RETRY`], doubling up to [`MAX_RETRY`], for at most [`MAX_TRIES`]
//! tries; a file the servers no longer have (404/410) or whose content is
//! not what the sender declared is reported to HQ at once, never retried.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use whatsapp_rust::download::{DownloadParams, MediaType};
use whatsapp_rust::http::HttpStatusError;

use super::spool;
use super::{DOWNLOAD_FAILED, GONE, HASH_MISMATCH, short};
use crate::messages::Messages;

/// The first retry's wait; each further one doubles it…
pub const FIRST_RETRY: Duration = Duration::from_secs(30);
/// …up to this.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);
/// Tries before a file is reported as `download_failed` (about 14 hours).
pub const MAX_TRIES: u32 = 20;
/// The worker looks at the jobs at least this often.
const IDLE: Duration = Duration::from_secs(60);

/// What one try came to.
enum Outcome {
    Spooled,
    Retry(String),
    GiveUp(&'static str),
}

/// Runs until the agent stops.
pub async fn run(messages: Arc<Messages>) {
    let mut connected = messages.client.subscribe();
    loop {
        let client = connected.borrow_and_update().clone();
        let Some(client) = client else {
            // Fetching needs the session; wait for it.
            let _ = connected.changed().await;
            continue;
        };
        let job = match messages.store.next_media_download().await {
            Ok(job) => job,
            Err(e) => {
                tracing::warn!(error = %e, "media: cannot read the download jobs");
                None
            }
        };
        let wait = match &job {
            None => IDLE,
            Some(job) => (job.due_at - Utc::now()).to_std().unwrap_or_default(),
        };
        if let Some(job) = job.filter(|_| wait.is_zero()) {
            let outcome = fetch(&messages, &client, &job).await;
            settle(&messages, &job, outcome).await;
            continue;
        }
        tokio::select! {
            () = messages.media_wake.notified() => {}
            _ = connected.changed() => {}
            () = tokio::time::sleep(wait.min(IDLE)) => {}
        }
    }
}

/// One try at `job`'s file.
async fn fetch(
    messages: &Arc<Messages>,
    client: &Arc<whatsapp_rust::client::Client>,
    row: &outlet_store::MediaJobRow,
) -> Outcome {
    let (job, spool) = (&row.job, &messages.spool);
    // Forwarded or sent again: the spool has it already.
    if spool.len_of(&job.sha256) == Some(job.size) {
        return Outcome::Spooled;
    }
    let Some(params) = params(job) else {
        return Outcome::GiveUp(DOWNLOAD_FAILED);
    };
    // Room first: the oldest delivered files go.
    let in_use: HashSet<String> = match messages.store.media_in_use().await {
        Ok(shas) => shas.into_iter().collect(),
        Err(e) => return Outcome::Retry(format!("reading the jobs: {e}")),
    };
    let cfg = &messages.config.messages;
    let keep = Duration::from_secs(u64::from(cfg.media_keep_days) * 86_400);
    let (max, size) = (cfg.media_spool_max_bytes, job.size);
    let pruning = spool.clone();
    match crate::messages::blocking_io(move || pruning.prune(&in_use, keep, max, size)).await {
        Ok(held) if held.saturating_add(size) > max => {
            return Outcome::Retry(format!(
                "the media spool is full ({held} bytes held for undelivered files)"
            ));
        }
        Ok(_) => {}
        Err(e) => return Outcome::Retry(format!("the media spool: {e}")),
    }
    let (part, file) = match spool.start(&job.sha256) {
        Ok(started) => started,
        Err(e) => return Outcome::Retry(format!("the media spool: {e}")),
    };
    let file = match client.download_to_writer(&params, file).await {
        Ok(file) => file,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            let status = e.chain().find_map(|c| c.downcast_ref::<HttpStatusError>());
            if let Some(HttpStatusError { status: 404 | 410 }) = status {
                return Outcome::GiveUp(GONE);
            }
            return Outcome::Retry(format!("{e:#}"));
        }
    };
    let (finishing, sha) = (spool.clone(), job.sha256.clone());
    match crate::messages::blocking_io(move || finishing.finish(&sha, &part, file)).await {
        Ok(true) => Outcome::Spooled,
        Ok(false) => Outcome::GiveUp(HASH_MISMATCH),
        Err(e) => Outcome::Retry(format!("the media spool: {e}")),
    }
}

/// Records what a try came to, and wakes the publisher for what it has.
async fn settle(messages: &Messages, row: &outlet_store::MediaJobRow, outcome: Outcome) {
    let sha = short(&row.job.sha256);
    let result = match outcome {
        Outcome::Spooled => {
            tracing::info!(sha256 = %sha, bytes = row.job.size, kind = %row.job.kind, "media: file fetched");
            messages.store.media_fetched(row.id).await
        }
        Outcome::GiveUp(error) => {
            tracing::warn!(sha256 = %sha, error, "media: the file cannot be had; HQ is told");
            messages
                .store
                .media_give_up(row.id, error.to_string())
                .await
        }
        Outcome::Retry(error) if row.attempts + 1 >= MAX_TRIES => {
            tracing::warn!(sha256 = %sha, %error, tries = row.attempts + 1, "media: giving up on the file; HQ is told");
            messages
                .store
                .media_give_up(row.id, DOWNLOAD_FAILED.to_string())
                .await
        }
        Outcome::Retry(error) => {
            let wait = retry_after(row.attempts);
            tracing::warn!(sha256 = %sha, %error, retry_in_s = wait.as_secs(), "media: download failed; trying again");
            let due = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
            messages.store.media_retry(row.id, due, error).await
        }
    };
    match result {
        Ok(()) => {
            messages.publish_wake.notify_one();
            messages.depth_wake.notify_one();
        }
        Err(e) => tracing::warn!(error = %e, "media: cannot record a download's outcome"),
    }
}

/// The wait after `attempts` failed tries: [`FIRST_RETRY`] doubling to
/// [`MAX_RETRY`], with a little jitter so outlets do not retry in step.
pub fn retry_after(attempts: u32) -> Duration {
    let base = FIRST_RETRY
        .saturating_mul(1u32 << attempts.min(16))
        .min(MAX_RETRY);
    let jitter = rand::random_range(0.9..1.1);
    base.mul_f64(jitter)
}

/// whatsapp-rust's download parameters for a job; `None` when its stored
/// reference is unusable (never written so).
fn params(job: &outlet_store::MediaJob) -> Option<DownloadParams> {
    let media_type = match job.media_type.as_str() {
        "image" => MediaType::Image,
        "video" => MediaType::Video,
        "audio" => MediaType::Audio,
        "document" => MediaType::Document,
        "sticker" => MediaType::Sticker,
        _ => return None,
    };
    // A declared hash that is not a SHA-256 could never be checked.
    if !spool::is_sha256(&job.sha256) {
        return None;
    }
    let sha = unhex(&job.sha256)?;
    if job.media_key.is_empty() || job.direct_path.is_empty() {
        return None;
    }
    Some(DownloadParams::encrypted(
        job.direct_path.clone(),
        &job.media_key,
        &sha,
        &job.enc_sha256,
        job.size,
        media_type,
    ))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_an_hour() {
        let secs = |n| retry_after(n).as_secs_f64();
        assert!((27.0..=33.0).contains(&secs(0)));
        assert!((54.0..=66.0).contains(&secs(1)));
        assert!((3240.0..=3960.0).contains(&secs(10)));
        assert!((3240.0..=3960.0).contains(&secs(40)));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
