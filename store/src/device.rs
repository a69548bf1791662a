//! `DeviceStore`: the one device record — this linked device's own keys and,
//! once paired, its JID and the account signature. Losing it means a new QR.
//!
//! The record is wacore's `Device` serialized with its own serde
//! implementation (JSON), so fields the library adds later (all
//! `#[serde(default)]`) are carried without a schema change. The runtime-only
//! fields it skips (`device_props`, `client_profile`) are restored to the
//! library defaults on load, exactly as whatsapp-rust's own SQLite store does;
//! the bot builder applies its overrides after loading.
//!
//! Durability: a save of a *paired* device (`pn` set) is committed with
//! `synchronous=FULL` — the WAL is fsynced before `save` returns — because the
//! phone already shows this device as linked: losing the record to a power cut
//! would strand the outlet on a QR screen while the phone lists a ghost device.
//! Saves before pairing (fresh keys, nothing shared yet) use NORMAL.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use wacore::store::Device;
use wacore::store::device::DEVICE_PROPS;
use wacore::store::error::Result as WaResult;
use wacore::store::traits::DeviceStore;

use crate::error::{Result, StoreError};
use crate::store::{SqliteStore, wa};
use crate::writer::Durability;

/// The device row's id. The store holds exactly one device.
const DEVICE_ROW_ID: i32 = 1;

fn encode(device: &Device) -> Result<Vec<u8>> {
    serde_json::to_vec(device).map_err(|source| StoreError::Codec {
        what: "device record",
        source,
    })
}

fn decode(blob: &[u8]) -> Result<Device> {
    let mut device: Device = serde_json::from_slice(blob).map_err(|source| StoreError::Codec {
        what: "device record",
        source,
    })?;
    device.device_props = Arc::new(DEVICE_PROPS.clone());
    device.client_profile = Default::default();
    Ok(device)
}

fn save(conn: &Connection, device: &Device, blob: &[u8]) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO device (id, pn, lid, data, saved_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET pn = excluded.pn, lid = excluded.lid,
             data = excluded.data, saved_at = excluded.saved_at",
    )?
    .execute(params![
        DEVICE_ROW_ID,
        device.pn.as_ref().map(|j| j.to_string()),
        device.lid.as_ref().map(|j| j.to_string()),
        blob,
        wacore::time::now_millis()
    ])?;
    Ok(())
}

pub(crate) fn load(conn: &Connection) -> Result<Option<Device>> {
    conn.prepare_cached("SELECT data FROM device WHERE id = ?1")?
        .query_row([DEVICE_ROW_ID], |r| r.get::<_, Vec<u8>>(0))
        .optional()?
        .map(|b| decode(&b))
        .transpose()
}

#[async_trait]
impl DeviceStore for SqliteStore {
    async fn save(&self, device: &Device) -> WaResult<()> {
        // Serialize on the caller's side: `Device` is not ours to move, and
        // encoding is CPU work, not blocking I/O.
        let blob = encode(device)?;
        let durability = if device.pn.is_some() {
            Durability::Full
        } else {
            Durability::Normal
        };
        let device = device.clone();
        wa(self
            .write_with(durability, move |c| save(c, &device, &blob))
            .await)
    }

    async fn load(&self) -> WaResult<Option<Device>> {
        wa(self.read(load).await)
    }

    async fn exists(&self) -> WaResult<bool> {
        wa(self
            .read(|c| {
                Ok(
                    c.prepare_cached("SELECT EXISTS (SELECT 1 FROM device WHERE id = ?1)")?
                        .query_row([DEVICE_ROW_ID], |r| r.get(0))?,
                )
            })
            .await)
    }

    /// Materializes a fresh device (new keys) if none exists, like the
    /// reference backend, so `exists()` is true afterwards. Always returns
    /// the single device row's id (1); the reference returns a per-instance
    /// counter, which is meaningless for a one-device store.
    async fn create(&self) -> WaResult<i32> {
        wa(self
            .write(|c| {
                let exists: bool = c
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM device WHERE id = ?1)")?
                    .query_row([DEVICE_ROW_ID], |r| r.get(0))?;
                if !exists {
                    let device = Device::new();
                    let blob = encode(&device)?;
                    save(c, &device, &blob)?;
                }
                Ok(DEVICE_ROW_ID)
            })
            .await)
    }
}
