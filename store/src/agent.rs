//! The agent's own tables in the same file: the last known identity of the
//! linked account, a bounded history of session state transitions, and the
//! "logged out" wipe.
//!
//! They live in the session database (not a second file) so that one
//! transaction can, for example, wipe the keys while keeping the history, and
//! so that a moved-aside corrupt database takes its matching history with it.
//! States and reasons are plain strings: the store does not know the agent's
//! state machine, and a history row written by an older agent must stay
//! readable by a newer one.

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{OptionalExtension, params};

use crate::error::{Result, StoreError};
use crate::schema::WHATSAPP_TABLES;
use crate::store::SqliteStore;

/// How many transitions are kept; older ones are deleted as new ones arrive.
pub const HISTORY_LIMIT: u32 = 1000;

/// Who this outlet is linked as, remembered across restarts and (on purpose)
/// across a logout wipe, so the dashboard can say which number was unlinked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The device JID from pair-success, e.g. `6281234567890:12@s.whatsapp.net`.
    pub jid: String,
    /// The phone number (digits, as the JID's user part or with `+`).
    pub phone: Option<String>,
    pub push_name: Option<String>,
    /// The account's LID JID, if known.
    pub lid: Option<String>,
    pub paired_at: Option<DateTime<Utc>>,
}

/// One session state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub at: DateTime<Utc>,
    pub from: String,
    pub to: String,
    pub reason: String,
}

fn to_millis(t: &DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::invalid("timestamp", format!("{ms} ms is out of range")))
}

impl SqliteStore {
    /// The last identity recorded with [`Self::set_last_identity`].
    pub async fn last_identity(&self) -> Result<Option<Identity>> {
        self.read(|c| {
            let row = c
                .prepare_cached(
                    "SELECT jid, phone, push_name, lid, paired_at FROM agent_identity WHERE id = 1",
                )?
                .query_row([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                    ))
                })
                .optional()?;
            row.map(|(jid, phone, push_name, lid, paired_at)| {
                Ok(Identity {
                    jid,
                    phone,
                    push_name,
                    lid,
                    paired_at: paired_at.map(from_millis).transpose()?,
                })
            })
            .transpose()
        })
        .await
    }

    /// Record who we are linked as. Synced to disk before returning: the JID
    /// from pair-success is persisted before anything else is done with it.
    pub async fn set_last_identity(&self, identity: &Identity) -> Result<()> {
        let id = identity.clone();
        self.write_synced(move |c| {
            c.prepare_cached(
                "INSERT INTO agent_identity (id, jid, phone, push_name, lid, paired_at, updated_at)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET jid = excluded.jid, phone = excluded.phone,
                     push_name = excluded.push_name, lid = excluded.lid,
                     paired_at = excluded.paired_at, updated_at = excluded.updated_at",
            )?
            .execute(params![
                id.jid,
                id.phone,
                id.push_name,
                id.lid,
                id.paired_at.as_ref().map(to_millis),
                Utc::now().timestamp_millis()
            ])?;
            Ok(())
        })
        .await
    }

    /// Forget the last identity (e.g. when the outlet is re-assigned).
    pub async fn clear_last_identity(&self) -> Result<()> {
        self.write(|c| {
            c.execute("DELETE FROM agent_identity", [])?;
            Ok(())
        })
        .await
    }

    /// Append a transition; keeps only the newest [`HISTORY_LIMIT`] rows.
    pub async fn record_transition(&self, t: &Transition) -> Result<()> {
        let t = t.clone();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO agent_state_history (at, from_state, to_state, reason)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![to_millis(&t.at), t.from, t.to, t.reason])?;
            // seq only grows, so "older than the newest N" is a range delete
            // on the primary key.
            c.prepare_cached(
                "DELETE FROM agent_state_history
                 WHERE seq <= (SELECT MAX(seq) FROM agent_state_history) - ?1",
            )?
            .execute([HISTORY_LIMIT])?;
            Ok(())
        })
        .await
    }

    /// The newest `limit` transitions, newest first.
    pub async fn recent_transitions(&self, limit: u32) -> Result<Vec<Transition>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT at, from_state, to_state, reason FROM agent_state_history
                 ORDER BY seq DESC LIMIT ?1",
            )?;
            let rows = stmt
                .query_map([limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(at, from, to, reason)| {
                    Ok(Transition {
                        at: from_millis(at)?,
                        from,
                        to,
                        reason,
                    })
                })
                .collect()
        })
        .await
    }

    /// Delete all WhatsApp key material and protocol state (device record,
    /// identities, sessions, pre-keys, sender keys, app-state keys, …) in one
    /// transaction, synced before returning; the agent's tables are kept.
    ///
    /// Used after "logged out": the next start finds no device and pairs
    /// again. Atomic: a crash leaves either everything or nothing wiped, never
    /// a device record without the keys it refers to. Call it while no
    /// whatsapp-rust client is using the store (a client still running would
    /// write its in-memory device back).
    pub async fn wipe_whatsapp_keys(&self) -> Result<()> {
        self.write_synced(|c| {
            for table in WHATSAPP_TABLES {
                c.execute(&format!("DELETE FROM {table}"), [])?;
            }
            Ok(())
        })
        .await?;
        // Fold the WAL (which still holds pre-wipe pages) into the main file
        // and truncate it, so the old keys do not linger in the WAL file.
        self.flush().await?;
        tracing::info!("WhatsApp key material wiped; pairing starts fresh");
        Ok(())
    }
}
