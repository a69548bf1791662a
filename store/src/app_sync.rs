//! `AppSyncStore`: app-state sync keys, collection versions, mutation MACs.
//!
//! `HashState` is stored as its serde JSON: it is an opaque, evolving library
//! type (new fields arrive with `#[serde(default)]`), read and written once per
//! app-state patch, so following the library's own serialization is worth more
//! than a few bytes. "Latest sync key" is the key written last: `set_seq`
//! records the write order so it survives restarts.

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use wacore::appstate::hash::HashState;
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::error::Result as WaResult;
use wacore::store::traits::{AppStateSyncKey, AppSyncStore};

use crate::error::StoreError;
use crate::store::{SqliteStore, wa};

#[async_trait]
impl AppSyncStore for SqliteStore {
    async fn get_sync_key(&self, key_id: &[u8]) -> WaResult<Option<AppStateSyncKey>> {
        let key_id = key_id.to_vec();
        wa(self
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT key_data, fingerprint, timestamp FROM app_state_sync_keys WHERE key_id = ?1",
                )?
                .query_row([&key_id], |r| {
                    Ok(AppStateSyncKey {
                        key_data: r.get(0)?,
                        fingerprint: r.get(1)?,
                        timestamp: r.get(2)?,
                    })
                })
                .optional()?)
            })
            .await)
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> WaResult<()> {
        let key_id = key_id.to_vec();
        wa(self
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO app_state_sync_keys (key_id, key_data, fingerprint, timestamp, set_seq)
                     VALUES (?1, ?2, ?3, ?4, (SELECT COALESCE(MAX(set_seq), 0) + 1 FROM app_state_sync_keys))
                     ON CONFLICT (key_id) DO UPDATE SET
                         key_data = excluded.key_data,
                         fingerprint = excluded.fingerprint,
                         timestamp = excluded.timestamp,
                         set_seq = excluded.set_seq",
                )?
                .execute(params![key_id, key.key_data, key.fingerprint, key.timestamp])?;
                Ok(())
            })
            .await)
    }

    async fn get_version(&self, name: &str) -> WaResult<HashState> {
        let name = name.to_owned();
        wa(self
            .read(move |c| {
                let blob: Option<Vec<u8>> = c
                    .prepare_cached("SELECT state FROM app_state_versions WHERE name = ?1")?
                    .query_row([&name], |r| r.get(0))
                    .optional()?;
                match blob {
                    None => Ok(HashState::default()),
                    Some(b) => serde_json::from_slice(&b).map_err(|source| StoreError::Codec {
                        what: "app state version",
                        source,
                    }),
                }
            })
            .await)
    }

    async fn set_version(&self, name: &str, state: HashState) -> WaResult<()> {
        let name = name.to_owned();
        let blob = serde_json::to_vec(&state).map_err(|source| StoreError::Codec {
            what: "app state version",
            source,
        });
        wa(self
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO app_state_versions (name, state) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET state = excluded.state",
                )?
                .execute(params![name, blob?])?;
                Ok(())
            })
            .await)
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> WaResult<()> {
        if mutations.is_empty() {
            return Ok(());
        }
        let name = name.to_owned();
        let mutations = mutations.to_vec();
        // SQLite integers are i64; app-state versions are small counters.
        let version = i64::try_from(version).unwrap_or(i64::MAX);
        wa(self
            .write(move |c| {
                let mut stmt = c.prepare_cached(
                    "INSERT INTO app_state_mutation_macs (name, index_mac, version, value_mac)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (name, index_mac) DO UPDATE SET
                         version = excluded.version, value_mac = excluded.value_mac",
                )?;
                for m in &mutations {
                    stmt.execute(params![name, m.index_mac, version, m.value_mac])?;
                }
                Ok(())
            })
            .await)
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> WaResult<Option<Vec<u8>>> {
        let name = name.to_owned();
        let index_mac = index_mac.to_vec();
        wa(self
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT value_mac FROM app_state_mutation_macs WHERE name = ?1 AND index_mac = ?2",
                )?
                .query_row(params![name, index_mac], |r| r.get(0))
                .optional()?)
            })
            .await)
    }

    async fn get_mutation_macs(
        &self,
        name: &str,
        index_macs: &[[u8; 32]],
    ) -> WaResult<HashMap<[u8; 32], Vec<u8>>> {
        let name = name.to_owned();
        let index_macs = index_macs.to_vec();
        // One job, N primary-key lookups on the same cached statement: no IN
        // list to build, and no round trip per MAC.
        wa(self
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT value_mac FROM app_state_mutation_macs WHERE name = ?1 AND index_mac = ?2",
                )?;
                let mut out = HashMap::with_capacity(index_macs.len());
                for mac in index_macs {
                    if let Some(v) = stmt
                        .query_row(params![name, &mac[..]], |r| r.get::<_, Vec<u8>>(0))
                        .optional()?
                    {
                        out.insert(mac, v);
                    }
                }
                Ok(out)
            })
            .await)
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> WaResult<()> {
        if index_macs.is_empty() {
            return Ok(());
        }
        let name = name.to_owned();
        let index_macs = index_macs.to_vec();
        wa(self
            .write(move |c| {
                let mut stmt = c.prepare_cached(
                    "DELETE FROM app_state_mutation_macs WHERE name = ?1 AND index_mac = ?2",
                )?;
                for mac in &index_macs {
                    stmt.execute(params![name, mac])?;
                }
                Ok(())
            })
            .await)
    }

    async fn clear_mutation_macs(&self, name: &str) -> WaResult<()> {
        let name = name.to_owned();
        wa(self
            .write(move |c| {
                c.prepare_cached("DELETE FROM app_state_mutation_macs WHERE name = ?1")?
                    .execute([&name])?;
                Ok(())
            })
            .await)
    }

    async fn get_latest_sync_key_id(&self) -> WaResult<Option<Vec<u8>>> {
        wa(self
            .read(|c| {
                Ok(c.prepare_cached(
                    "SELECT key_id FROM app_state_sync_keys ORDER BY set_seq DESC LIMIT 1",
                )?
                .query_row([], |r| r.get(0))
                .optional()?)
            })
            .await)
    }
}
