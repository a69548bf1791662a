//! `ProtocolStore`: sender-key distribution flags, LID↔phone mappings, base
//! keys, device lists, group metadata, trusted-contact tokens, the sent-message
//! retry buffer and the pending-inbound durability buffer.
//!
//! Semantics follow wacore's `InMemoryBackend` exactly (the contract tests
//! compare the two), including its less obvious corners:
//! - the phone→LID reverse index holds the phone's most recently written LID,
//!   and is dropped when *that LID entry* moves to another phone — even if an
//!   older LID still maps to the phone (`pn_lid_index` reproduces this);
//! - the sent-message buffer is capped at 4096 rows; at the cap the oldest are
//!   evicted down to 3072, like the reference;
//! - the read-modify-write tc-token methods are single upserts, so they are
//!   atomic with respect to `put_tc_token`.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use wacore::store::error::Result as WaResult;
use wacore::store::traits::{
    DeviceListRecord, LidPnMappingEntry, PendingInboundKey, PendingInboundRow, ProtocolStore,
    TcTokenEntry,
};

use crate::error::{Result, StoreError};
use crate::store::{SqliteStore, count_u32, wa};

/// Same cap and low-water mark as the reference backend.
const MAX_SENT_MESSAGES: i64 = 4096;
const SENT_MESSAGES_LOW_WATER: i64 = MAX_SENT_MESSAGES * 3 / 4;

fn lid_mapping_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LidPnMappingEntry> {
    Ok(LidPnMappingEntry {
        lid: r.get(0)?,
        phone_number: r.get(1)?,
        created_at: r.get(2)?,
        updated_at: r.get(3)?,
        learning_source: r.get(4)?,
    })
}

fn put_lid_mapping(conn: &Connection, e: &LidPnMappingEntry) -> Result<()> {
    let old_phone: Option<String> = conn
        .prepare_cached("SELECT phone_number FROM lid_pn_mappings WHERE lid = ?1")?
        .query_row([&e.lid], |r| r.get(0))
        .optional()?;
    if let Some(old) = old_phone.filter(|old| *old != e.phone_number) {
        conn.prepare_cached("DELETE FROM pn_lid_index WHERE phone_number = ?1")?
            .execute([old])?;
    }
    // ON CONFLICT DO UPDATE, not INSERT OR REPLACE: a replace would delete the
    // row first and cascade into pn_lid_index.
    conn.prepare_cached(
        "INSERT INTO lid_pn_mappings (lid, phone_number, created_at, updated_at, learning_source)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (lid) DO UPDATE SET
             phone_number = excluded.phone_number,
             created_at = excluded.created_at,
             updated_at = excluded.updated_at,
             learning_source = excluded.learning_source",
    )?
    .execute(params![
        e.lid,
        e.phone_number,
        e.created_at,
        e.updated_at,
        e.learning_source
    ])?;
    conn.prepare_cached(
        "INSERT INTO pn_lid_index (phone_number, lid) VALUES (?1, ?2)
         ON CONFLICT (phone_number) DO UPDATE SET lid = excluded.lid",
    )?
    .execute(params![e.phone_number, e.lid])?;
    Ok(())
}

fn update_device_list(conn: &Connection, record: &DeviceListRecord) -> Result<()> {
    let blob = serde_json::to_vec(record).map_err(|source| StoreError::Codec {
        what: "device list",
        source,
    })?;
    conn.prepare_cached(
        "INSERT INTO device_lists (user, record) VALUES (?1, ?2)
         ON CONFLICT (user) DO UPDATE SET record = excluded.record",
    )?
    .execute(params![record.user, blob])?;
    Ok(())
}

fn store_pending_inbound(
    conn: &Connection,
    chat: &str,
    sender: &str,
    id: &str,
    message: &[u8],
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO pending_inbound (chat, sender, message_id, message, inserted_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (chat, sender, message_id) DO UPDATE SET
             message = excluded.message, inserted_at = excluded.inserted_at",
    )?
    .execute(params![chat, sender, id, message, now])?;
    Ok(())
}

fn delete_pending_inbound(conn: &Connection, chat: &str, sender: &str, id: &str) -> Result<()> {
    conn.prepare_cached(
        "DELETE FROM pending_inbound WHERE chat = ?1 AND sender = ?2 AND message_id = ?3",
    )?
    .execute(params![chat, sender, id])?;
    Ok(())
}

#[async_trait]
impl ProtocolStore for SqliteStore {
    // --- Per-device sender key tracking ---

    async fn get_sender_key_devices(&self, group_jid: &str) -> WaResult<Vec<(String, bool)>> {
        let group = group_jid.to_owned();
        wa(self
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT device_jid, has_key FROM sender_key_devices WHERE group_jid = ?1
                     ORDER BY device_jid",
                )?;
                Ok(stmt
                    .query_map([&group], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?)
            })
            .await)
    }

    async fn set_sender_key_status(
        &self,
        group_jid: &str,
        entries: &[(&str, bool)],
    ) -> WaResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let group = group_jid.to_owned();
        let entries: Vec<(String, bool)> =
            entries.iter().map(|(d, k)| ((*d).to_owned(), *k)).collect();
        wa(self
            .write(move |c| {
                let mut stmt = c.prepare_cached(
                    "INSERT INTO sender_key_devices (group_jid, device_jid, has_key) VALUES (?1, ?2, ?3)
                     ON CONFLICT (group_jid, device_jid) DO UPDATE SET has_key = excluded.has_key",
                )?;
                for (device, has_key) in &entries {
                    stmt.execute(params![group, device, has_key])?;
                }
                Ok(())
            })
            .await)
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> WaResult<()> {
        let group = group_jid.to_owned();
        wa(self
            .write(move |c| {
                c.prepare_cached("DELETE FROM sender_key_devices WHERE group_jid = ?1")?
                    .execute([&group])?;
                Ok(())
            })
            .await)
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> WaResult<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        let devices: Vec<String> = device_jids.iter().map(|d| (*d).to_owned()).collect();
        wa(self
            .write(move |c| {
                let mut stmt =
                    c.prepare_cached("DELETE FROM sender_key_devices WHERE device_jid = ?1")?;
                for d in &devices {
                    stmt.execute([d])?;
                }
                Ok(())
            })
            .await)
    }

    async fn clear_all_sender_key_devices(&self) -> WaResult<()> {
        wa(self
            .write(|c| {
                c.prepare_cached("DELETE FROM sender_key_devices")?
                    .execute([])?;
                Ok(())
            })
            .await)
    }

    // --- LID-PN mapping ---

    async fn get_lid_mapping(&self, lid: &str) -> WaResult<Option<LidPnMappingEntry>> {
        let lid = lid.to_owned();
        wa(self
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT lid, phone_number, created_at, updated_at, learning_source
                     FROM lid_pn_mappings WHERE lid = ?1",
                )?
                .query_row([&lid], lid_mapping_from_row)
                .optional()?)
            })
            .await)
    }

    async fn get_pn_mapping(&self, phone: &str) -> WaResult<Option<LidPnMappingEntry>> {
        let phone = phone.to_owned();
        wa(self
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT m.lid, m.phone_number, m.created_at, m.updated_at, m.learning_source
                     FROM pn_lid_index i JOIN lid_pn_mappings m ON m.lid = i.lid
                     WHERE i.phone_number = ?1",
                )?
                .query_row([&phone], lid_mapping_from_row)
                .optional()?)
            })
            .await)
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> WaResult<()> {
        let entry = entry.clone();
        wa(self.write(move |c| put_lid_mapping(c, &entry)).await)
    }

    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> WaResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let entries = entries.to_vec();
        wa(self
            .write(move |c| {
                for e in &entries {
                    put_lid_mapping(c, e)?;
                }
                Ok(())
            })
            .await)
    }

    async fn get_all_lid_mappings(&self) -> WaResult<Vec<LidPnMappingEntry>> {
        wa(self
            .read(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT lid, phone_number, created_at, updated_at, learning_source
                     FROM lid_pn_mappings ORDER BY lid",
                )?;
                Ok(stmt
                    .query_map([], lid_mapping_from_row)?
                    .collect::<rusqlite::Result<_>>()?)
            })
            .await)
    }

    // --- Base key collision detection ---

    async fn save_base_key(
        &self,
        address: &str,
        message_id: &str,
        base_key: &[u8],
    ) -> WaResult<()> {
        let (address, message_id, base_key) =
            (address.to_owned(), message_id.to_owned(), base_key.to_vec());
        wa(self
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO base_keys (address, message_id, base_key) VALUES (?1, ?2, ?3)
                     ON CONFLICT (address, message_id) DO UPDATE SET base_key = excluded.base_key",
                )?
                .execute(params![address, message_id, base_key])?;
                Ok(())
            })
            .await)
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> WaResult<bool> {
        let (address, message_id, base_key) = (
            address.to_owned(),
            message_id.to_owned(),
            current_base_key.to_vec(),
        );
        wa(self
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM base_keys
                     WHERE address = ?1 AND message_id = ?2 AND base_key = ?3)",
                )?
                .query_row(params![address, message_id, base_key], |r| r.get(0))?)
            })
            .await)
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> WaResult<()> {
        let (address, message_id) = (address.to_owned(), message_id.to_owned());
        wa(self
            .write(move |c| {
                c.prepare_cached("DELETE FROM base_keys WHERE address = ?1 AND message_id = ?2")?
                    .execute(params![address, message_id])?;
                Ok(())
            })
            .await)
    }

    // --- Device registry ---

    async fn update_device_list(&self, record: DeviceListRecord) -> WaResult<()> {
        wa(self.write(move |c| update_device_list(c, &record)).await)
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> WaResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        wa(self
            .write(move |c| {
                for r in &records {
                    update_device_list(c, r)?;
                }
                Ok(())
            })
            .await)
    }

    async fn get_devices(&self, user: &str) -> WaResult<Option<DeviceListRecord>> {
        let user = user.to_owned();
        wa(self
            .read(move |c| {
                let blob: Option<Vec<u8>> = c
                    .prepare_cached("SELECT record FROM device_lists WHERE user = ?1")?
                    .query_row([&user], |r| r.get(0))
                    .optional()?;
                blob.map(|b| {
                    serde_json::from_slice(&b).map_err(|source| StoreError::Codec {
                        what: "device list",
                        source,
                    })
                })
                .transpose()
            })
            .await)
    }

    async fn delete_devices(&self, user: &str) -> WaResult<()> {
        let user = user.to_owned();
        wa(self
            .write(move |c| {
                c.prepare_cached("DELETE FROM device_lists WHERE user = ?1")?
                    .execute([&user])?;
                Ok(())
            })
            .await)
    }

    // --- Group metadata cache ---

    async fn get_group_metadata(&self, group_jid: &str) -> WaResult<Option<Vec<u8>>> {
        let group = group_jid.to_owned();
        wa(self
            .read(move |c| {
                Ok(
                    c.prepare_cached("SELECT blob FROM group_metadata WHERE group_jid = ?1")?
                        .query_row([&group], |r| r.get(0))
                        .optional()?,
                )
            })
            .await)
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> WaResult<()> {
        let (group, blob) = (group_jid.to_owned(), blob.to_vec());
        wa(self
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO group_metadata (group_jid, blob) VALUES (?1, ?2)
                     ON CONFLICT (group_jid) DO UPDATE SET blob = excluded.blob",
                )?
                .execute(params![group, blob])?;
                Ok(())
            })
            .await)
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> WaResult<()> {
        let group = group_jid.to_owned();
        wa(self
            .write(move |c| {
                c.prepare_cached("DELETE FROM group_metadata WHERE group_jid = ?1")?
                    .execute([&group])?;
                Ok(())
            })
            .await)
    }

    // --- Trusted-contact tokens ---

    async fn get_tc_token(&self, jid: &str) -> WaResult<Option<TcTokenEntry>> {
        let jid = jid.to_owned();
        wa(self
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT token, token_timestamp, sender_timestamp FROM tc_tokens WHERE jid = ?1",
                )?
                .query_row([&jid], |r| {
                    Ok(TcTokenEntry {
                        token: r.get(0)?,
                        token_timestamp: r.get(1)?,
                        sender_timestamp: r.get(2)?,
                    })
                })
                .optional()?)
            })
            .await)
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> WaResult<()> {
        let (jid, entry) = (jid.to_owned(), entry.clone());
        wa(self
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO tc_tokens (jid, token, token_timestamp, sender_timestamp)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (jid) DO UPDATE SET token = excluded.token,
                         token_timestamp = excluded.token_timestamp,
                         sender_timestamp = excluded.sender_timestamp",
                )?
                .execute(params![
                    jid,
                    entry.token,
                    entry.token_timestamp,
                    entry.sender_timestamp
                ])?;
                Ok(())
            })
            .await)
    }

    async fn delete_tc_token(&self, jid: &str) -> WaResult<()> {
        let jid = jid.to_owned();
        wa(self
            .write(move |c| {
                c.prepare_cached("DELETE FROM tc_tokens WHERE jid = ?1")?
                    .execute([&jid])?;
                Ok(())
            })
            .await)
    }

    async fn get_all_tc_token_jids(&self) -> WaResult<Vec<String>> {
        wa(self
            .read(|c| {
                let mut stmt = c.prepare_cached("SELECT jid FROM tc_tokens ORDER BY jid")?;
                Ok(stmt
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?)
            })
            .await)
    }

    async fn delete_expired_tc_tokens(
        &self,
        token_cutoff: i64,
        sender_cutoff: i64,
    ) -> WaResult<u32> {
        wa(self
            .write(move |c| {
                let n = c
                    .prepare_cached(
                        "DELETE FROM tc_tokens WHERE NOT (
                             (length(token) > 0 AND token_timestamp >= ?1)
                             OR (sender_timestamp IS NOT NULL AND sender_timestamp >= ?2))",
                    )?
                    .execute(params![token_cutoff, sender_cutoff])?;
                Ok(count_u32(n))
            })
            .await)
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> WaResult<()> {
        let jid = jid.to_owned();
        wa(self
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO tc_tokens (jid, token, token_timestamp, sender_timestamp)
                     VALUES (?1, x'', ?2, ?2)
                     ON CONFLICT (jid) DO UPDATE SET sender_timestamp =
                         CASE WHEN tc_tokens.sender_timestamp IS NULL THEN excluded.sender_timestamp
                              ELSE max(tc_tokens.sender_timestamp, excluded.sender_timestamp) END",
                )?
                .execute(params![jid, sender_timestamp])?;
                Ok(())
            })
            .await)
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> WaResult<()> {
        let (jid, token) = (jid.to_owned(), token.to_vec());
        wa(self
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO tc_tokens (jid, token, token_timestamp, sender_timestamp)
                     VALUES (?1, ?2, ?3, NULL)
                     ON CONFLICT (jid) DO UPDATE SET
                         token = excluded.token, token_timestamp = excluded.token_timestamp
                     WHERE length(tc_tokens.token) = 0
                        OR excluded.token_timestamp >= tc_tokens.token_timestamp",
                )?
                .execute(params![jid, token, token_timestamp])?;
                Ok(())
            })
            .await)
    }

    // --- Sent message store ---

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> WaResult<()> {
        let (chat, id, payload) = (chat_jid.to_owned(), message_id.to_owned(), payload.to_vec());
        let now = wacore::time::now_secs();
        wa(self
            .write(move |c| {
                let count: i64 = c
                    .prepare_cached("SELECT COUNT(*) FROM sent_messages")?
                    .query_row([], |r| r.get(0))?;
                if count >= MAX_SENT_MESSAGES {
                    c.prepare_cached(
                        "DELETE FROM sent_messages WHERE id IN
                         (SELECT id FROM sent_messages ORDER BY sent_at, id LIMIT ?1)",
                    )?
                    .execute([count - SENT_MESSAGES_LOW_WATER])?;
                }
                c.prepare_cached(
                    "INSERT INTO sent_messages (chat_jid, message_id, payload, sent_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (chat_jid, message_id) DO UPDATE SET
                         payload = excluded.payload, sent_at = excluded.sent_at",
                )?
                .execute(params![chat, id, payload, now])?;
                Ok(())
            })
            .await)
    }

    async fn take_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
    ) -> WaResult<Option<Vec<u8>>> {
        let (chat, id) = (chat_jid.to_owned(), message_id.to_owned());
        wa(self
            .write(move |c| {
                Ok(c.prepare_cached(
                    "DELETE FROM sent_messages WHERE chat_jid = ?1 AND message_id = ?2
                     RETURNING payload",
                )?
                .query_row(params![chat, id], |r| r.get(0))
                .optional()?)
            })
            .await)
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> WaResult<u32> {
        wa(self
            .write(move |c| {
                let n = c
                    .prepare_cached("DELETE FROM sent_messages WHERE sent_at < ?1")?
                    .execute([cutoff_timestamp])?;
                Ok(count_u32(n))
            })
            .await)
    }

    // --- Pending inbound buffer ---

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> WaResult<()> {
        let (chat, sender, id, message) = (
            chat.to_owned(),
            sender.to_owned(),
            id.to_owned(),
            message.to_vec(),
        );
        let now = wacore::time::now_secs();
        wa(self
            .write(move |c| store_pending_inbound(c, &chat, &sender, &id, &message, now))
            .await)
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> WaResult<Option<Vec<u8>>> {
        let (chat, sender, id) = (chat.to_owned(), sender.to_owned(), id.to_owned());
        wa(self
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT message FROM pending_inbound
                     WHERE chat = ?1 AND sender = ?2 AND message_id = ?3",
                )?
                .query_row(params![chat, sender, id], |r| r.get(0))
                .optional()?)
            })
            .await)
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> WaResult<()> {
        let (chat, sender, id) = (chat.to_owned(), sender.to_owned(), id.to_owned());
        wa(self
            .write(move |c| delete_pending_inbound(c, &chat, &sender, &id))
            .await)
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> WaResult<u32> {
        wa(self
            .write(move |c| {
                let n = c
                    .prepare_cached("DELETE FROM pending_inbound WHERE inserted_at < ?1")?
                    .execute([cutoff_timestamp])?;
                Ok(count_u32(n))
            })
            .await)
    }

    async fn store_pending_inbound_batch(&self, rows: &[PendingInboundRow<'_>]) -> WaResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows: Vec<(String, String, String, Vec<u8>)> = rows
            .iter()
            .map(|r| {
                (
                    r.chat.to_owned(),
                    r.sender.to_owned(),
                    r.id.to_owned(),
                    r.message.to_vec(),
                )
            })
            .collect();
        let now = wacore::time::now_secs();
        wa(self
            .write(move |c| {
                for (chat, sender, id, message) in &rows {
                    store_pending_inbound(c, chat, sender, id, message, now)?;
                }
                Ok(())
            })
            .await)
    }

    async fn delete_pending_inbound_batch(&self, keys: &[PendingInboundKey<'_>]) -> WaResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<(String, String, String)> = keys
            .iter()
            .map(|k| (k.chat.to_owned(), k.sender.to_owned(), k.id.to_owned()))
            .collect();
        wa(self
            .write(move |c| {
                for (chat, sender, id) in &keys {
                    delete_pending_inbound(c, chat, sender, id)?;
                }
                Ok(())
            })
            .await)
    }
}
