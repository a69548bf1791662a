//! `SignalStore`: identities, sessions, pre-keys, signed pre-keys, sender keys.
//!
//! The hot path of the whole store: every message sent or received advances a
//! session (and group messages a sender key). Writes are plain upserts in the
//! writer's group commit; batch variants run as one job, so one savepoint and
//! at most one commit for the whole batch.
//!
//! Durability: pre-keys marked as uploaded and signed pre-keys are committed
//! with `synchronous=FULL`, because once the server hands them out, losing them
//! to a power cut means the next contact's first message cannot be decrypted.
//! Sessions and identities use NORMAL: they change on every message, and a
//! session lost to a power cut is re-established by the protocol's retry
//! receipts.
//!
//! An identity, session or sender key written with the bytes already stored
//! (the library re-saves what it loaded when its cache flushes) is not
//! rewritten: the upsert's `WHERE … IS NOT excluded…` leaves the page
//! untouched, so the commit appends no WAL frame for it.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use wacore::store::error::Result as WaResult;
use wacore::store::traits::SignalStore;

use crate::error::{Result, StoreError};
use crate::store::{SqliteStore, id_from_sql, wa};
use crate::writer::Durability;

fn identity_from_blob(blob: Vec<u8>) -> Result<[u8; 32]> {
    <[u8; 32]>::try_from(blob.as_slice())
        .map_err(|_| StoreError::invalid("identity key", format!("{} bytes, not 32", blob.len())))
}

fn put_identity(conn: &Connection, address: &str, key: &[u8; 32]) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO identities (address, key) VALUES (?1, ?2)
         ON CONFLICT (address) DO UPDATE SET key = excluded.key
         WHERE key IS NOT excluded.key",
    )?
    .execute(params![address, &key[..]])?;
    Ok(())
}

fn put_session(conn: &Connection, address: &str, record: &[u8]) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO sessions (address, record) VALUES (?1, ?2)
         ON CONFLICT (address) DO UPDATE SET record = excluded.record
         WHERE record IS NOT excluded.record",
    )?
    .execute(params![address, record])?;
    Ok(())
}

fn put_sender_key(conn: &Connection, address: &str, record: &[u8]) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO sender_keys (address, record) VALUES (?1, ?2)
         ON CONFLICT (address) DO UPDATE SET record = excluded.record
         WHERE record IS NOT excluded.record",
    )?
    .execute(params![address, record])?;
    Ok(())
}

fn store_prekey(conn: &Connection, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO prekeys (id, record, uploaded) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET record = excluded.record, uploaded = excluded.uploaded",
    )?
    .execute(params![id, record, uploaded])?;
    Ok(())
}

fn load_prekey(conn: &Connection, id: u32) -> Result<Option<Bytes>> {
    Ok(conn
        .prepare_cached("SELECT record FROM prekeys WHERE id = ?1")?
        .query_row([id], |r| r.get::<_, Vec<u8>>(0))
        .optional()?
        .map(Bytes::from))
}

fn prekey_durability(uploaded: bool) -> Durability {
    if uploaded {
        Durability::Full
    } else {
        Durability::Normal
    }
}

/// True if `table` has a row whose `address` is `user@…` or `user:…`. Two
/// index range scans instead of a LIKE (whose wildcards would need escaping):
/// every text starting with `user@` sorts in `[user@, userA)`, and `A` is the
/// byte after `@` (likewise `;` after `:`).
fn has_user_rows(conn: &Connection, table: &'static str, user: &str) -> Result<bool> {
    let sql = match table {
        "sessions" => {
            "SELECT EXISTS (SELECT 1 FROM sessions WHERE (address >= ?1 AND address < ?2)
                                                   OR (address >= ?3 AND address < ?4))"
        }
        _ => {
            "SELECT EXISTS (SELECT 1 FROM identities WHERE (address >= ?1 AND address < ?2)
                                                     OR (address >= ?3 AND address < ?4))"
        }
    };
    Ok(conn.prepare_cached(sql)?.query_row(
        params![
            format!("{user}@"),
            format!("{user}A"),
            format!("{user}:"),
            format!("{user};")
        ],
        |r| r.get(0),
    )?)
}

#[async_trait]
impl SignalStore for SqliteStore {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> WaResult<()> {
        let address = address.to_owned();
        wa(self.write(move |c| put_identity(c, &address, &key)).await)
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> WaResult<()> {
        if identities.is_empty() {
            return Ok(());
        }
        let identities = identities.to_vec();
        wa(self
            .write(move |c| {
                for (address, key) in &identities {
                    put_identity(c, address, key)?;
                }
                Ok(())
            })
            .await)
    }

    async fn load_identity(&self, address: &str) -> WaResult<Option<[u8; 32]>> {
        let address = address.to_owned();
        wa(self
            .read(move |c| {
                c.prepare_cached("SELECT key FROM identities WHERE address = ?1")?
                    .query_row([&address], |r| r.get::<_, Vec<u8>>(0))
                    .optional()?
                    .map(identity_from_blob)
                    .transpose()
            })
            .await)
    }

    async fn delete_identity(&self, address: &str) -> WaResult<()> {
        let address = address.to_owned();
        wa(self
            .write(move |c| {
                c.prepare_cached("DELETE FROM identities WHERE address = ?1")?
                    .execute([&address])?;
                Ok(())
            })
            .await)
    }

    async fn get_session(&self, address: &str) -> WaResult<Option<Bytes>> {
        let address = address.to_owned();
        wa(self
            .read(move |c| {
                Ok(
                    c.prepare_cached("SELECT record FROM sessions WHERE address = ?1")?
                        .query_row([&address], |r| r.get::<_, Vec<u8>>(0))
                        .optional()?
                        .map(Bytes::from),
                )
            })
            .await)
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> WaResult<()> {
        let address = address.to_owned();
        let session = session.to_vec();
        wa(self
            .write(move |c| put_session(c, &address, &session))
            .await)
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> WaResult<()> {
        if sessions.is_empty() {
            return Ok(());
        }
        let sessions = sessions.to_vec();
        wa(self
            .write(move |c| {
                for (address, record) in &sessions {
                    put_session(c, address, record)?;
                }
                Ok(())
            })
            .await)
    }

    async fn delete_session(&self, address: &str) -> WaResult<()> {
        let address = address.to_owned();
        wa(self
            .write(move |c| {
                c.prepare_cached("DELETE FROM sessions WHERE address = ?1")?
                    .execute([&address])?;
                Ok(())
            })
            .await)
    }

    async fn has_session(&self, address: &str) -> WaResult<bool> {
        let address = address.to_owned();
        wa(self
            .read(move |c| {
                Ok(
                    c.prepare_cached("SELECT EXISTS (SELECT 1 FROM sessions WHERE address = ?1)")?
                        .query_row([&address], |r| r.get(0))?,
                )
            })
            .await)
    }

    async fn has_signal_state_for_user(&self, user: &str) -> WaResult<bool> {
        let user = user.to_owned();
        wa(self
            .read(move |c| {
                Ok(has_user_rows(c, "sessions", &user)? || has_user_rows(c, "identities", &user)?)
            })
            .await)
    }

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> WaResult<()> {
        let record = record.to_vec();
        wa(self
            .write_with(prekey_durability(uploaded), move |c| {
                store_prekey(c, id, &record, uploaded)
            })
            .await)
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> WaResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys = keys.to_vec();
        wa(self
            .write_with(prekey_durability(uploaded), move |c| {
                for (id, record) in &keys {
                    store_prekey(c, *id, record, uploaded)?;
                }
                Ok(())
            })
            .await)
    }

    async fn load_prekey(&self, id: u32) -> WaResult<Option<Bytes>> {
        wa(self.read(move |c| load_prekey(c, id)).await)
    }

    async fn load_prekeys_batch(&self, ids: &[u32]) -> WaResult<Vec<(u32, Bytes)>> {
        let ids = ids.to_vec();
        wa(self
            .read(move |c| {
                // Same order (and duplicates) as asked, like the reference.
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(record) = load_prekey(c, id)? {
                        out.push((id, record));
                    }
                }
                Ok(out)
            })
            .await)
    }

    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> WaResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.to_vec();
        // UPDATE, never upsert: a key consumed since the upload stays deleted.
        wa(self
            .write_synced(move |c| {
                let mut stmt = c.prepare_cached("UPDATE prekeys SET uploaded = 1 WHERE id = ?1")?;
                for id in ids {
                    stmt.execute([id])?;
                }
                Ok(())
            })
            .await)
    }

    async fn remove_prekey(&self, id: u32) -> WaResult<()> {
        wa(self
            .write(move |c| {
                c.prepare_cached("DELETE FROM prekeys WHERE id = ?1")?
                    .execute([id])?;
                Ok(())
            })
            .await)
    }

    async fn get_max_prekey_id(&self) -> WaResult<u32> {
        wa(self
            .read(|c| {
                let max: i64 = c
                    .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM prekeys")?
                    .query_row([], |r| r.get(0))?;
                id_from_sql(max, "pre-key id")
            })
            .await)
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> WaResult<()> {
        let record = record.to_vec();
        wa(self
            .write_synced(move |c| {
                c.prepare_cached(
                    "INSERT INTO signed_prekeys (id, record) VALUES (?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                )?
                .execute(params![id, record])?;
                Ok(())
            })
            .await)
    }

    async fn load_signed_prekey(&self, id: u32) -> WaResult<Option<Vec<u8>>> {
        wa(self
            .read(move |c| {
                Ok(
                    c.prepare_cached("SELECT record FROM signed_prekeys WHERE id = ?1")?
                        .query_row([id], |r| r.get(0))
                        .optional()?,
                )
            })
            .await)
    }

    async fn load_all_signed_prekeys(&self) -> WaResult<Vec<(u32, Vec<u8>)>> {
        wa(self
            .read(|c| {
                let mut stmt =
                    c.prepare_cached("SELECT id, record FROM signed_prekeys ORDER BY id")?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rows.into_iter()
                    .map(|(id, rec)| Ok((id_from_sql(id, "signed pre-key id")?, rec)))
                    .collect()
            })
            .await)
    }

    async fn remove_signed_prekey(&self, id: u32) -> WaResult<()> {
        wa(self
            .write(move |c| {
                c.prepare_cached("DELETE FROM signed_prekeys WHERE id = ?1")?
                    .execute([id])?;
                Ok(())
            })
            .await)
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> WaResult<()> {
        let address = address.to_owned();
        let record = record.to_vec();
        wa(self
            .write(move |c| put_sender_key(c, &address, &record))
            .await)
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> WaResult<()> {
        if sender_keys.is_empty() {
            return Ok(());
        }
        let sender_keys = sender_keys.to_vec();
        wa(self
            .write(move |c| {
                for (address, record) in &sender_keys {
                    put_sender_key(c, address, record)?;
                }
                Ok(())
            })
            .await)
    }

    async fn get_sender_key(&self, address: &str) -> WaResult<Option<Vec<u8>>> {
        let address = address.to_owned();
        wa(self
            .read(move |c| {
                Ok(
                    c.prepare_cached("SELECT record FROM sender_keys WHERE address = ?1")?
                        .query_row([&address], |r| r.get(0))
                        .optional()?,
                )
            })
            .await)
    }

    async fn delete_sender_key(&self, address: &str) -> WaResult<()> {
        let address = address.to_owned();
        wa(self
            .write(move |c| {
                c.prepare_cached("DELETE FROM sender_keys WHERE address = ?1")?
                    .execute([&address])?;
                Ok(())
            })
            .await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataDir, SqliteStore};

    fn wal_len(store: &SqliteStore) -> u64 {
        let mut wal = store.db_path().as_os_str().to_os_string();
        wal.push("-wal");
        std::fs::metadata(wal).map_or(0, |m| m.len())
    }

    /// The library re-saves sessions, identities and sender keys it did not
    /// change; such a write must not append a WAL frame (a page on the SD
    /// card), while a real change still does.
    #[tokio::test]
    async fn unchanged_signal_records_are_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DataDir::lock(dir.path()).unwrap();
        let (store, _) = SqliteStore::open(&lock).await.unwrap();
        let address = "6281111111111@s.whatsapp.net.0";
        store.put_session(address, &[1u8; 400]).await.unwrap();
        store.put_identity(address, [2u8; 32]).await.unwrap();
        store.put_sender_key("group:1", &[3u8; 200]).await.unwrap();
        let written = wal_len(&store);
        assert!(written > 0);

        store.put_session(address, &[1u8; 400]).await.unwrap();
        store.put_identity(address, [2u8; 32]).await.unwrap();
        store.put_sender_key("group:1", &[3u8; 200]).await.unwrap();
        let batch: Vec<(Arc<str>, Bytes)> = vec![(Arc::from(address), Bytes::from(vec![1u8; 400]))];
        store.put_sessions_batch(&batch).await.unwrap();
        assert_eq!(
            wal_len(&store),
            written,
            "an unchanged record was rewritten"
        );

        store.put_session(address, &[9u8; 400]).await.unwrap();
        assert!(
            wal_len(&store) > written,
            "a changed session was not written"
        );
        assert_eq!(
            store.get_session(address).await.unwrap().as_deref(),
            Some(&[9u8; 400][..])
        );
        store.put_identity(address, [7u8; 32]).await.unwrap();
        assert_eq!(store.load_identity(address).await.unwrap(), Some([7u8; 32]));
        store.close().await.unwrap();
    }
}
