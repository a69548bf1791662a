//! Received files (pictures, voice notes, documents, videos, stickers) from
//! WhatsApp's media servers to HQ, over the same MQTT as the messages.
//!
//! WhatsApp hands the outlet a reference, not the file: a path on its media
//! servers and the key that decrypts what is there. The key lives on the Pi
//! alone and the servers drop the file after a few weeks, so a file not
//! fetched on arrival is lost for good. Hence:
//!
//! 1. The inbox commits the message and its download job together
//!    (`outlet_store::MediaJob`), before WhatsApp is told it arrived; HQ
//!    gets `message/in` with the file's `media` metadata at once.
//! 2. [`download`] fetches the job's file (one at a time, streamed through
//!    decryption to disk in constant memory), checks it against the SHA-256
//!    the sender gave, and keeps it in the [`spool`] under its SHA-256 (one
//!    copy for repeats). A failed download is tried again with backoff; a
//!    file the server no longer has (404/410) is reported, not retried.
//! 3. The publisher (`publisher::media`) announces the file on
//!    `message/media` and sends it in chunks of at most [`CHUNK_BYTES`] on
//!    `media/<sha256>/<index>`, at QoS 1; the job remembers the first
//!    chunk the broker has not acknowledged, so a crash or a broker outage
//!    resumes there. `request/media` publishes a spooled file again.
//!
//! # Layout
//!
//! - this file: the job a reference becomes, and what HQ is told;
//! - [`spool`]: the files on disk, and their pruning;
//! - [`download`]: the download worker;
//! - [`http`]: the HTTPS client whatsapp-rust fetches media with.

pub mod download;
pub mod http;
pub mod spool;

use serde_json::{Value, json};

use super::inbound::MediaReference;

/// The largest chunk published (NATS' MQTT takes 1 MB by default,
/// Mosquitto's `max_packet_size` in docs/deploy.md is 600 000 bytes)…
pub const CHUNK_BYTES: usize = 256 * 1024;
/// …and room left in a packet beside it for the topic and MQTT's header.
const PACKET_HEADROOM: u64 = 2 * 1024;

/// The chunk size for a broker that takes packets of `max_packet_bytes`
/// (`mqtt.max_packet_bytes`): [`CHUNK_BYTES`], or less so that a chunk and
/// its topic fit in one packet, in whole KiB. `message/media` says which.
/// (A file being published when the setting changes is finished in the
/// new size; HQ's `fleet media` takes each chunk's offset from it.)
pub fn chunk_bytes(max_packet_bytes: u64) -> usize {
    let fits = max_packet_bytes.saturating_sub(PACKET_HEADROOM) / 1024 * 1024;
    usize::try_from(fits.max(1024))
        .unwrap_or(CHUNK_BYTES)
        .min(CHUNK_BYTES)
}

/// `message/media`'s `error` for a file above `messages.media_max_file_bytes`.
pub const TOO_LARGE: &str = "too_large";
/// For a file WhatsApp's servers no longer have (404/410).
pub const GONE: &str = "gone";
/// For a file whose content is not what the sender declared.
pub const HASH_MISMATCH: &str = "hash_mismatch";
/// For a download that failed every try.
pub const DOWNLOAD_FAILED: &str = "download_failed";
/// For a spooled file that went before it was published (deleted by hand).
pub const NOT_HELD: &str = "not_held";

/// The first 12 hex digits of a file's SHA-256: enough to find it in the
/// spool by, in a log line.
pub fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// The job the inbox commits for a received file, or `None` when files are
/// not fetched (`media_max_file_bytes = 0`). A file over the limit gets a
/// job that only reports `too_large`.
pub fn job_for(reference: &MediaReference, max_file_bytes: u64) -> Option<outlet_store::MediaJob> {
    if max_file_bytes == 0 {
        return None;
    }
    Some(outlet_store::MediaJob {
        kind: reference.kind.to_string(),
        mimetype: reference.mimetype.clone(),
        file_name: reference.file_name.clone(),
        size: reference.size,
        sha256: reference.sha256.clone(),
        media_type: reference.media_type.to_string(),
        direct_path: reference.direct_path.clone(),
        media_key: reference.media_key.clone(),
        enc_sha256: reference.enc_sha256.clone(),
        error: (reference.size > max_file_bytes).then(|| TOO_LARGE.to_string()),
    })
}

/// How many chunks a file of `size` bytes is published in (an empty file
/// is one empty chunk, so every file has a chunk 0).
pub fn chunk_count(size: u64, chunk: usize) -> u32 {
    let chunks = size.div_ceil(chunk.max(1) as u64).max(1);
    u32::try_from(chunks).unwrap_or(u32::MAX)
}

/// `message/media` for a spooled file of `size` bytes, in chunks of `chunk`.
pub fn announcement(row: &outlet_store::MediaJobRow, size: u64, chunk: usize) -> Value {
    let job = &row.job;
    let mut v = json!({
        "id": row.message_id,
        "sha256": job.sha256,
        "size": size,
        "mimetype": job.mimetype,
        "kind": job.kind,
        "chunks": chunk_count(size, chunk),
        "chunk_size": chunk,
    });
    if let (Some(name), Some(map)) = (&job.file_name, v.as_object_mut()) {
        map.insert("file_name".into(), name.clone().into());
    }
    v
}

/// `message/media` for a file that cannot be had.
pub fn failure(row: &outlet_store::MediaJobRow, error: &str) -> Value {
    json!({ "id": row.message_id, "sha256": row.job.sha256, "error": error })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(size: u64) -> MediaReference {
        MediaReference {
            kind: "image",
            media_type: "image",
            mimetype: "image/jpeg".into(),
            file_name: None,
            size,
            sha256: "ab".repeat(32),
            direct_path: "/v/t62/x".into(),
            media_key: vec![1; 32],
            enc_sha256: vec![2; 32],
        }
    }

    #[test]
    fn files_over_the_limit_are_reported_and_none_fetched_when_off() {
        let job = job_for(&reference(10), 10).expect("a job");
        assert_eq!(job.error, None);
        let job = job_for(&reference(11), 10).expect("a job");
        assert_eq!(job.error.as_deref(), Some(TOO_LARGE));
        assert_eq!(job_for(&reference(1), 0), None);
    }

    #[test]
    fn chunks_cover_the_file_and_an_empty_file_has_one() {
        let c = CHUNK_BYTES;
        assert_eq!(chunk_count(0, c), 1);
        assert_eq!(chunk_count(1, c), 1);
        assert_eq!(chunk_count(c as u64, c), 1);
        assert_eq!(chunk_count(c as u64 + 1, c), 2);
        assert_eq!(chunk_count(3_000_000, c), 12);
    }

    #[test]
    fn a_chunk_and_its_topic_fit_the_brokers_packets() {
        assert_eq!(chunk_bytes(1024 * 1024), CHUNK_BYTES);
        assert_eq!(chunk_bytes(600_000), CHUNK_BYTES);
        // The default 256 KiB packets: 254 KiB chunks.
        assert_eq!(chunk_bytes(256 * 1024), 254 * 1024);
        assert_eq!(chunk_bytes(16 * 1024), 14 * 1024);
        assert_eq!(chunk_bytes(0), 1024);
    }
}
