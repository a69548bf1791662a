//! `MsgSecretStore`: per-message secrets for decrypting replies to our own
//! messages (poll votes, reactions, edits).
//!
//! The merge rules on conflict are the library's own
//! (`merge_msg_secret_expiry`, `merge_msg_secret_message_ts`), written as SQL so
//! a batch is one pass of upserts: `expires_at` keeps the later deadline with
//! `0` meaning "never" and winning; `message_ts` keeps the larger value.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use wacore::store::error::Result as WaResult;
use wacore::store::traits::{MsgSecretEntry, MsgSecretStore};

use crate::store::{SqliteStore, count_u32, wa};

#[async_trait]
impl MsgSecretStore for SqliteStore {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> WaResult<usize> {
        let stored = entries.len();
        if entries.is_empty() {
            return Ok(0);
        }
        wa(self
            .write(move |c| {
                let mut stmt = c.prepare_cached(
                    "INSERT INTO msg_secrets (chat, sender, msg_id, secret, expires_at, message_ts)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (chat, sender, msg_id) DO UPDATE SET
                         secret = excluded.secret,
                         expires_at = CASE
                             WHEN msg_secrets.expires_at = 0 OR excluded.expires_at = 0 THEN 0
                             ELSE max(msg_secrets.expires_at, excluded.expires_at) END,
                         message_ts = max(msg_secrets.message_ts, excluded.message_ts)",
                )?;
                for e in &entries {
                    stmt.execute(params![
                        &*e.chat,
                        &*e.sender,
                        &*e.msg_id,
                        &e.secret[..],
                        e.expires_at,
                        e.message_ts
                    ])?;
                }
                Ok(stored)
            })
            .await)
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> WaResult<Option<Vec<u8>>> {
        Ok(self
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await?
            .map(|(secret, _)| secret))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> WaResult<Option<(Vec<u8>, i64)>> {
        let (chat, sender, msg_id) = (chat.to_owned(), sender.to_owned(), msg_id.to_owned());
        wa(self
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT secret, message_ts FROM msg_secrets
                     WHERE chat = ?1 AND sender = ?2 AND msg_id = ?3",
                )?
                .query_row(params![chat, sender, msg_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?)
            })
            .await)
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> WaResult<u32> {
        wa(self
            .write(move |c| {
                let n = c
                    .prepare_cached(
                        "DELETE FROM msg_secrets WHERE expires_at != 0 AND expires_at <= ?1",
                    )?
                    .execute([cutoff_timestamp])?;
                Ok(count_u32(n))
            })
            .await)
    }
}
