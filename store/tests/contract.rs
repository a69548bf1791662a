//! Contract tests: [`SqliteStore`] must answer every storage-trait call exactly
//! like wacore's `InMemoryBackend`, the reference implementation.
//!
//! One harness drives both backends with the same operation list and compares
//! every answer. It runs
//! - hand-written scenarios for the edge cases (missing keys, overwrite,
//!   delete, batch variants, the less obvious merge rules), and
//! - random operation sequences from proptest over small key pools, so keys
//!   collide and every overwrite/delete path is hit.
//!
//! Answers whose order the traits leave unspecified (lists built from hash
//! maps) are sorted before comparing. `DeviceStore::create` returns a
//! per-instance counter in the reference and the fixed row id 1 here; its
//! return value is not compared (its effect, via `exists`/`load`, is).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use outlet_store::{DataDir, DataDirLock, SqliteStore};
use proptest::prelude::*;
use wacore::appstate::hash::HashState;
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::traits::*;
use wacore::store::{Device, InMemoryBackend};

// ---------------------------------------------------------------------------
// Key pools: small, so random sequences collide. They include the edges:
// user "10" vs "100" vs "1000" (prefix matching), device and LID forms,
// empty strings and empty blobs, extreme pre-key ids.
// ---------------------------------------------------------------------------

const ADDRS: &[&str] = &[
    "100@s.whatsapp.net",
    "100:1@s.whatsapp.net",
    "100:2@lid",
    "1000@s.whatsapp.net",
    "10@s.whatsapp.net",
    "200@lid",
];
const USERS: &[&str] = &["100", "10", "1000", "200", "", "100:1", "1"];
const PREKEY_IDS: &[u32] = &[1, 2, 3, 5, 16_777_215, u32::MAX];
const SYNC_KEY_IDS: &[&[u8]] = &[b"k1", b"k2", b"", &[0xff; 32]];
const COLLECTIONS: &[&str] = &["regular", "regular_low", "critical_block"];
const GROUPS: &[&str] = &["g1@g.us", "g2@g.us"];
const DEVICE_JIDS: &[&str] = &["100:1@s.whatsapp.net", "200:3@lid", "300@s.whatsapp.net"];
const LIDS: &[&str] = &["111", "222", "333"];
const PNS: &[&str] = &["555", "666", "777"];
const CHATS: &[&str] = &["100@s.whatsapp.net", "g1@g.us", ""];
const SENDERS: &[&str] = &["100@s.whatsapp.net", "200@lid"];
const MSG_IDS: &[&str] = &["M1", "M2", "3EB0AABB"];
const BLOB_LENS: &[usize] = &[0, 1, 33, 2000];

fn blob(seed: u8, len: usize) -> Vec<u8> {
    (0..BLOB_LENS[len])
        .map(|i| seed.wrapping_add(i as u8))
        .collect()
}

fn mac(seed: u8) -> [u8; 32] {
    [seed; 32]
}

fn hash_state(version: u64, seed: u8) -> HashState {
    let mut s = HashState {
        version,
        hash: [seed; 128],
        ..Default::default()
    };
    s.index_value_map
        .insert(format!("idx{seed}"), vec![seed, seed]);
    s.mac_mismatch_fatal = seed.is_multiple_of(2);
    s
}

fn device_list(user: usize, devices: &[u8], ts: i64) -> DeviceListRecord {
    DeviceListRecord {
        user: USERS[user].to_string(),
        devices: devices
            .iter()
            .map(|&d| {
                DeviceInfo::new(u32::from(d), (d % 2 == 0).then_some(u32::from(d) + 1))
                    .with_hosting(d == 3)
            })
            .collect(),
        timestamp: ts,
        phash: (ts % 2 == 0).then(|| format!("2:{ts}")),
        raw_id: (ts > 1).then_some(ts as u32),
    }
}

fn lid_entry(lid: usize, pn: usize, t: i64) -> LidPnMappingEntry {
    LidPnMappingEntry {
        lid: LIDS[lid].to_string(),
        phone_number: PNS[pn].to_string(),
        created_at: t,
        updated_at: t + 1,
        learning_source: if t % 2 == 0 {
            "usync"
        } else {
            "peer_pn_message"
        }
        .to_string(),
    }
}

/// Devices handed to `save`: the same values go to both backends.
static DEVICES: LazyLock<Vec<Device>> = LazyLock::new(|| {
    let unpaired = Device::new();
    let mut paired = Device::new();
    paired.pn = Some("6281234567890:12@s.whatsapp.net".parse().unwrap());
    paired.lid = Some("100000012345678:12@lid".parse().unwrap());
    paired.push_name = "Outlet Jakarta".to_string();
    paired.account = Some(Arc::new(waproto::whatsapp::ADVSignedDeviceIdentity {
        details: Some(vec![1, 2, 3]),
        account_signature_key: Some(vec![4; 32]),
        account_signature: Some(vec![5; 64]),
        device_signature: Some(vec![6; 64]),
    }));
    paired.next_pre_key_id = 812;
    paired.first_unupload_pre_key_id = 800;
    paired.server_has_prekeys = true;
    paired.login_counter = 3;
    paired.edge_routing_info = Some(vec![8, 0, 8]);
    paired.props_hash = Some("ph".to_string());
    paired.nct_salt = Some(vec![9; 16]);
    paired.lid_migrated = true;
    let mut renamed = paired.clone();
    renamed.push_name = "Outlet Jakarta 2".to_string();
    renamed.login_counter = 4;
    vec![unpaired, paired, renamed]
});

// ---------------------------------------------------------------------------
// Operations and their observable results
// ---------------------------------------------------------------------------

/// One trait call. Fields are indexes into the pools above (or small values).
#[derive(Debug, Clone)]
enum Op {
    // SignalStore
    PutIdentity(usize, u8),
    PutIdentities(Vec<(usize, u8)>),
    LoadIdentity(usize),
    DeleteIdentity(usize),
    GetSession(usize),
    PutSession(usize, u8, usize),
    PutSessions(Vec<(usize, u8, usize)>),
    DeleteSession(usize),
    HasSession(usize),
    HasUserState(usize),
    StorePrekey(usize, u8, bool),
    StorePrekeys(Vec<(usize, u8)>, bool),
    LoadPrekey(usize),
    LoadPrekeys(Vec<usize>),
    MarkUploaded(Vec<usize>),
    RemovePrekey(usize),
    MaxPrekey,
    StoreSigned(usize, u8),
    LoadSigned(usize),
    LoadAllSigned,
    RemoveSigned(usize),
    PutSenderKey(usize, u8, usize),
    PutSenderKeys(Vec<(usize, u8, usize)>),
    GetSenderKey(usize),
    DeleteSenderKey(usize),
    // AppSyncStore
    GetSyncKey(usize),
    SetSyncKey(usize, u8),
    GetVersion(usize),
    SetVersion(usize, u64, u8),
    PutMacs(usize, u64, Vec<(u8, u8)>),
    GetMac(usize, u8),
    GetMacs(usize, Vec<u8>),
    DeleteMacs(usize, Vec<u8>),
    ClearMacs(usize),
    LatestSyncKey,
    // ProtocolStore
    GetSkDevices(usize),
    SetSkStatus(usize, Vec<(usize, bool)>),
    ClearSkDevices(usize),
    DeleteSkRows(Vec<usize>),
    ClearAllSk,
    GetLid(usize),
    GetPn(usize),
    PutLid(usize, usize, i64),
    PutLids(Vec<(usize, usize, i64)>),
    AllLids,
    SaveBaseKey(usize, usize, u8),
    HasSameBaseKey(usize, usize, u8),
    DeleteBaseKey(usize, usize),
    UpdateDeviceList(usize, Vec<u8>, i64),
    UpdateDeviceLists(Vec<(usize, Vec<u8>, i64)>),
    GetDevices(usize),
    DeleteDevices(usize),
    GetGroupMeta(usize),
    PutGroupMeta(usize, u8, usize),
    DeleteGroupMeta(usize),
    GetTc(usize),
    PutTc(usize, u8, usize, i64, Option<i64>),
    DeleteTc(usize),
    AllTc,
    DeleteExpiredTc(i64, i64),
    TouchTc(usize, i64),
    StoreReceivedTc(usize, u8, usize, i64),
    StoreSent(usize, usize, u8),
    TakeSent(usize, usize),
    /// `true`: cutoff far in the future (deletes all); `false`: far past.
    DeleteExpiredSent(bool),
    StorePending(usize, usize, usize, u8),
    GetPending(usize, usize, usize),
    DeletePending(usize, usize, usize),
    DeleteExpiredPending(bool),
    StorePendingBatch(Vec<(usize, usize, usize, u8)>),
    DeletePendingBatch(Vec<(usize, usize, usize)>),
    GetGroupMetaDefaultOk,
    // MsgSecretStore
    PutMsgSecret(usize, usize, usize, u8),
    PutMsgSecrets(Vec<(usize, usize, usize, u8, i64, i64)>),
    GetMsgSecret(usize, usize, usize),
    GetMsgSecretWithTs(usize, usize, usize),
    DeleteExpiredMsgSecrets(i64),
    // DeviceStore
    SaveDevice(usize),
    LoadDevice,
    Exists,
    Create,
}

type LidRow = (String, String, i64, i64, String);

#[derive(Debug, PartialEq)]
enum Out {
    Unit,
    Bool(bool),
    U32(u32),
    Usize(usize),
    Bytes(Option<Vec<u8>>),
    Key(Option<[u8; 32]>),
    Pairs(Vec<(u32, Vec<u8>)>),
    Strings(Vec<String>),
    SkDevices(Vec<(String, bool)>),
    SyncKey(Option<(Vec<u8>, Vec<u8>, i64)>),
    Macs(BTreeMap<[u8; 32], Vec<u8>>),
    Lid(Option<LidRow>),
    Lids(Vec<LidRow>),
    Tc(Option<(Vec<u8>, i64, Option<i64>)>),
    SecretTs(Option<(Vec<u8>, i64)>),
    Json(Option<serde_json::Value>),
    /// A device record; compared with random key fields removed when the
    /// record came from `create()` (each backend generated its own keys).
    Device(Option<serde_json::Value>),
    Error(String),
}

fn lid_row(e: LidPnMappingEntry) -> LidRow {
    (
        e.lid,
        e.phone_number,
        e.created_at,
        e.updated_at,
        e.learning_source,
    )
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

async fn apply(b: &dyn Backend, op: &Op) -> Out {
    match run(b, op).await {
        Ok(out) => out,
        Err(e) => Out::Error(e.to_string()),
    }
}

async fn run(b: &dyn Backend, op: &Op) -> wacore::store::error::Result<Out> {
    use Op::*;
    let unit = |_: ()| Out::Unit;
    Ok(match op {
        PutIdentity(a, s) => b.put_identity(ADDRS[*a], mac(*s)).await.map(unit)?,
        PutIdentities(v) => {
            let v: Vec<(Arc<str>, [u8; 32])> = v
                .iter()
                .map(|(a, s)| (Arc::from(ADDRS[*a]), mac(*s)))
                .collect();
            b.put_identities_batch(&v).await.map(unit)?
        }
        LoadIdentity(a) => Out::Key(b.load_identity(ADDRS[*a]).await?),
        DeleteIdentity(a) => b.delete_identity(ADDRS[*a]).await.map(unit)?,
        GetSession(a) => Out::Bytes(b.get_session(ADDRS[*a]).await?.map(|x| x.to_vec())),
        PutSession(a, s, l) => b.put_session(ADDRS[*a], &blob(*s, *l)).await.map(unit)?,
        PutSessions(v) => {
            let v: Vec<(Arc<str>, Bytes)> = v
                .iter()
                .map(|(a, s, l)| (Arc::from(ADDRS[*a]), Bytes::from(blob(*s, *l))))
                .collect();
            b.put_sessions_batch(&v).await.map(unit)?
        }
        DeleteSession(a) => b.delete_session(ADDRS[*a]).await.map(unit)?,
        HasSession(a) => Out::Bool(b.has_session(ADDRS[*a]).await?),
        HasUserState(u) => Out::Bool(b.has_signal_state_for_user(USERS[*u]).await?),
        StorePrekey(i, s, up) => b
            .store_prekey(PREKEY_IDS[*i], &blob(*s, 2), *up)
            .await
            .map(unit)?,
        StorePrekeys(v, up) => {
            let v: Vec<(u32, Bytes)> = v
                .iter()
                .map(|(i, s)| (PREKEY_IDS[*i], Bytes::from(blob(*s, 2))))
                .collect();
            b.store_prekeys_batch(&v, *up).await.map(unit)?
        }
        LoadPrekey(i) => Out::Bytes(b.load_prekey(PREKEY_IDS[*i]).await?.map(|x| x.to_vec())),
        LoadPrekeys(v) => {
            let ids: Vec<u32> = v.iter().map(|i| PREKEY_IDS[*i]).collect();
            // Order and duplicates as asked: compared unsorted.
            Out::Pairs(
                b.load_prekeys_batch(&ids)
                    .await?
                    .into_iter()
                    .map(|(id, r)| (id, r.to_vec()))
                    .collect(),
            )
        }
        MarkUploaded(v) => {
            let ids: Vec<u32> = v.iter().map(|i| PREKEY_IDS[*i]).collect();
            b.mark_prekeys_uploaded(&ids).await.map(unit)?
        }
        RemovePrekey(i) => b.remove_prekey(PREKEY_IDS[*i]).await.map(unit)?,
        MaxPrekey => Out::U32(b.get_max_prekey_id().await?),
        StoreSigned(i, s) => b
            .store_signed_prekey(PREKEY_IDS[*i], &blob(*s, 2))
            .await
            .map(unit)?,
        LoadSigned(i) => Out::Bytes(b.load_signed_prekey(PREKEY_IDS[*i]).await?),
        LoadAllSigned => {
            let mut v = b.load_all_signed_prekeys().await?;
            v.sort();
            Out::Pairs(v)
        }
        RemoveSigned(i) => b.remove_signed_prekey(PREKEY_IDS[*i]).await.map(unit)?,
        PutSenderKey(a, s, l) => b.put_sender_key(ADDRS[*a], &blob(*s, *l)).await.map(unit)?,
        PutSenderKeys(v) => {
            let v: Vec<(Arc<str>, Bytes)> = v
                .iter()
                .map(|(a, s, l)| (Arc::from(ADDRS[*a]), Bytes::from(blob(*s, *l))))
                .collect();
            b.put_sender_keys_batch(&v).await.map(unit)?
        }
        GetSenderKey(a) => Out::Bytes(b.get_sender_key(ADDRS[*a]).await?),
        DeleteSenderKey(a) => b.delete_sender_key(ADDRS[*a]).await.map(unit)?,

        GetSyncKey(k) => Out::SyncKey(
            b.get_sync_key(SYNC_KEY_IDS[*k])
                .await?
                .map(|k| (k.key_data, k.fingerprint, k.timestamp)),
        ),
        SetSyncKey(k, s) => b
            .set_sync_key(
                SYNC_KEY_IDS[*k],
                AppStateSyncKey {
                    key_data: vec![*s; 32],
                    fingerprint: vec![s.wrapping_add(1); 3],
                    timestamp: i64::from(*s),
                },
            )
            .await
            .map(unit)?,
        GetVersion(n) => Out::Json(Some(json(&b.get_version(COLLECTIONS[*n]).await?))),
        SetVersion(n, v, s) => b
            .set_version(COLLECTIONS[*n], hash_state(*v, *s))
            .await
            .map(unit)?,
        PutMacs(n, v, m) => {
            let m: Vec<AppStateMutationMAC> = m
                .iter()
                .map(|(i, val)| AppStateMutationMAC {
                    index_mac: mac(*i).to_vec(),
                    value_mac: vec![*val; 32],
                })
                .collect();
            b.put_mutation_macs(COLLECTIONS[*n], *v, &m)
                .await
                .map(unit)?
        }
        GetMac(n, i) => Out::Bytes(b.get_mutation_mac(COLLECTIONS[*n], &mac(*i)).await?),
        GetMacs(n, v) => {
            let macs: Vec<[u8; 32]> = v.iter().map(|i| mac(*i)).collect();
            Out::Macs(
                b.get_mutation_macs(COLLECTIONS[*n], &macs)
                    .await?
                    .into_iter()
                    .collect(),
            )
        }
        DeleteMacs(n, v) => {
            let macs: Vec<Vec<u8>> = v.iter().map(|i| mac(*i).to_vec()).collect();
            b.delete_mutation_macs(COLLECTIONS[*n], &macs)
                .await
                .map(unit)?
        }
        ClearMacs(n) => b.clear_mutation_macs(COLLECTIONS[*n]).await.map(unit)?,
        LatestSyncKey => Out::Bytes(b.get_latest_sync_key_id().await?),

        GetSkDevices(g) => {
            let mut v = b.get_sender_key_devices(GROUPS[*g]).await?;
            v.sort();
            Out::SkDevices(v)
        }
        SetSkStatus(g, v) => {
            let v: Vec<(&str, bool)> = v.iter().map(|(d, k)| (DEVICE_JIDS[*d], *k)).collect();
            b.set_sender_key_status(GROUPS[*g], &v).await.map(unit)?
        }
        ClearSkDevices(g) => b.clear_sender_key_devices(GROUPS[*g]).await.map(unit)?,
        DeleteSkRows(v) => {
            let v: Vec<&str> = v.iter().map(|d| DEVICE_JIDS[*d]).collect();
            b.delete_sender_key_device_rows(&v).await.map(unit)?
        }
        ClearAllSk => b.clear_all_sender_key_devices().await.map(unit)?,
        GetLid(l) => Out::Lid(b.get_lid_mapping(LIDS[*l]).await?.map(lid_row)),
        GetPn(p) => Out::Lid(b.get_pn_mapping(PNS[*p]).await?.map(lid_row)),
        PutLid(l, p, t) => b.put_lid_mapping(&lid_entry(*l, *p, *t)).await.map(unit)?,
        PutLids(v) => {
            let v: Vec<_> = v.iter().map(|(l, p, t)| lid_entry(*l, *p, *t)).collect();
            b.put_lid_mappings(&v).await.map(unit)?
        }
        AllLids => {
            let mut v: Vec<LidRow> = b
                .get_all_lid_mappings()
                .await?
                .into_iter()
                .map(lid_row)
                .collect();
            v.sort();
            Out::Lids(v)
        }
        SaveBaseKey(a, m, s) => b
            .save_base_key(ADDRS[*a], MSG_IDS[*m], &[*s; 33])
            .await
            .map(unit)?,
        HasSameBaseKey(a, m, s) => Out::Bool(
            b.has_same_base_key(ADDRS[*a], MSG_IDS[*m], &[*s; 33])
                .await?,
        ),
        DeleteBaseKey(a, m) => b.delete_base_key(ADDRS[*a], MSG_IDS[*m]).await.map(unit)?,
        UpdateDeviceList(u, d, t) => b
            .update_device_list(device_list(*u, d, *t))
            .await
            .map(unit)?,
        UpdateDeviceLists(v) => b
            .update_device_lists(v.iter().map(|(u, d, t)| device_list(*u, d, *t)).collect())
            .await
            .map(unit)?,
        GetDevices(u) => Out::Json(b.get_devices(USERS[*u]).await?.map(|r| json(&r))),
        DeleteDevices(u) => b.delete_devices(USERS[*u]).await.map(unit)?,
        GetGroupMeta(g) => Out::Bytes(b.get_group_metadata(GROUPS[*g]).await?),
        PutGroupMeta(g, s, l) => b
            .put_group_metadata(GROUPS[*g], &blob(*s, *l))
            .await
            .map(unit)?,
        DeleteGroupMeta(g) => b.delete_group_metadata(GROUPS[*g]).await.map(unit)?,
        GetGroupMetaDefaultOk => Out::Bytes(b.get_group_metadata("unknown@g.us").await?),
        GetTc(j) => Out::Tc(
            b.get_tc_token(ADDRS[*j])
                .await?
                .map(|e| (e.token, e.token_timestamp, e.sender_timestamp)),
        ),
        PutTc(j, s, l, ts, sts) => b
            .put_tc_token(
                ADDRS[*j],
                &TcTokenEntry {
                    token: blob(*s, *l),
                    token_timestamp: *ts,
                    sender_timestamp: *sts,
                },
            )
            .await
            .map(unit)?,
        DeleteTc(j) => b.delete_tc_token(ADDRS[*j]).await.map(unit)?,
        AllTc => {
            let mut v = b.get_all_tc_token_jids().await?;
            v.sort();
            Out::Strings(v)
        }
        DeleteExpiredTc(t, s) => Out::U32(b.delete_expired_tc_tokens(*t, *s).await?),
        TouchTc(j, ts) => b
            .touch_tc_token_sender_timestamp(ADDRS[*j], *ts)
            .await
            .map(unit)?,
        StoreReceivedTc(j, s, l, ts) => b
            .store_received_tc_token(ADDRS[*j], &blob(*s, *l), *ts)
            .await
            .map(unit)?,
        StoreSent(c, m, s) => b
            .store_sent_message(CHATS[*c], MSG_IDS[*m], &blob(*s, 1))
            .await
            .map(unit)?,
        TakeSent(c, m) => Out::Bytes(b.take_sent_message(CHATS[*c], MSG_IDS[*m]).await?),
        DeleteExpiredSent(all) => Out::U32(b.delete_expired_sent_messages(cutoff(*all)).await?),
        StorePending(c, s, m, x) => b
            .store_pending_inbound(CHATS[*c], SENDERS[*s], MSG_IDS[*m], &blob(*x, 1))
            .await
            .map(unit)?,
        GetPending(c, s, m) => Out::Bytes(
            b.get_pending_inbound(CHATS[*c], SENDERS[*s], MSG_IDS[*m])
                .await?,
        ),
        DeletePending(c, s, m) => b
            .delete_pending_inbound(CHATS[*c], SENDERS[*s], MSG_IDS[*m])
            .await
            .map(unit)?,
        DeleteExpiredPending(all) => {
            Out::U32(b.delete_expired_pending_inbound(cutoff(*all)).await?)
        }
        StorePendingBatch(v) => {
            let msgs: Vec<Vec<u8>> = v.iter().map(|(_, _, _, x)| blob(*x, 1)).collect();
            let rows: Vec<PendingInboundRow<'_>> = v
                .iter()
                .zip(&msgs)
                .map(|((c, s, m, _), msg)| PendingInboundRow {
                    chat: CHATS[*c],
                    sender: SENDERS[*s],
                    id: MSG_IDS[*m],
                    message: msg,
                })
                .collect();
            b.store_pending_inbound_batch(&rows).await.map(unit)?
        }
        DeletePendingBatch(v) => {
            let keys: Vec<PendingInboundKey<'_>> = v
                .iter()
                .map(|(c, s, m)| PendingInboundKey {
                    chat: CHATS[*c],
                    sender: SENDERS[*s],
                    id: MSG_IDS[*m],
                })
                .collect();
            b.delete_pending_inbound_batch(&keys).await.map(unit)?
        }

        PutMsgSecret(c, s, m, x) => b
            .put_msg_secret(CHATS[*c], SENDERS[*s], MSG_IDS[*m], &[*x; 32])
            .await
            .map(unit)?,
        PutMsgSecrets(v) => Out::Usize(
            b.put_msg_secrets(
                v.iter()
                    .map(|(c, s, m, x, exp, ts)| MsgSecretEntry {
                        chat: Arc::from(CHATS[*c]),
                        sender: Arc::from(SENDERS[*s]),
                        msg_id: Arc::from(MSG_IDS[*m]),
                        secret: [*x; 32],
                        expires_at: *exp,
                        message_ts: *ts,
                    })
                    .collect(),
            )
            .await?,
        ),
        GetMsgSecret(c, s, m) => Out::Bytes(
            b.get_msg_secret(CHATS[*c], SENDERS[*s], MSG_IDS[*m])
                .await?,
        ),
        GetMsgSecretWithTs(c, s, m) => Out::SecretTs(
            b.get_msg_secret_with_ts(CHATS[*c], SENDERS[*s], MSG_IDS[*m])
                .await?,
        ),
        DeleteExpiredMsgSecrets(t) => Out::U32(b.delete_expired_msg_secrets(*t).await?),

        SaveDevice(d) => b.save(&DEVICES[*d]).await.map(unit)?,
        LoadDevice => Out::Device(b.load().await?.map(|d| json(&d))),
        Exists => Out::Bool(b.exists().await?),
        Create => b.create().await.map(|_| Out::Unit)?,
    })
}

fn cutoff(all: bool) -> i64 {
    let now = wacore::time::now_secs();
    if all { now + 100_000 } else { now - 100_000 }
}

const RANDOM_DEVICE_FIELDS: &[&str] = &[
    "noise_key",
    "identity_key",
    "signed_pre_key",
    "signed_pre_key_signature",
    "adv_secret_key",
    "registration_id",
    "last_signed_pre_key_rotation_ms",
];

fn strip_random(v: &mut Out) {
    if let Out::Device(Some(serde_json::Value::Object(map))) = v {
        for f in RANDOM_DEVICE_FIELDS {
            map.remove(*f);
        }
    }
}

// ---------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------

struct Harness {
    reference: InMemoryBackend,
    store: SqliteStore,
    _lock: DataDirLock,
    _dir: tempfile::TempDir,
    /// The current device record came from `create()` (random keys).
    created_device: bool,
}

impl Harness {
    async fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let lock = DataDir::lock(dir.path()).unwrap();
        let (store, _) = SqliteStore::open(&lock).await.unwrap();
        Harness {
            reference: InMemoryBackend::new(),
            store,
            _lock: lock,
            _dir: dir,
            created_device: false,
        }
    }

    /// Apply `ops` to both backends, comparing every answer.
    async fn run(&mut self, ops: &[Op]) -> Vec<Out> {
        let mut outs = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Create if !self.reference.exists().await.unwrap() => self.created_device = true,
                Op::SaveDevice(_) => self.created_device = false,
                _ => {}
            }
            let mut expected = apply(&self.reference, op).await;
            let mut got = apply(&self.store, op).await;
            if self.created_device {
                strip_random(&mut expected);
                strip_random(&mut got);
            }
            assert!(
                !matches!(got, Out::Error(_)),
                "op #{i} {op:?} failed on SqliteStore: {got:?}"
            );
            assert_eq!(
                got, expected,
                "op #{i} {op:?}: SqliteStore differs from InMemoryBackend\nsequence: {ops:#?}"
            );
            outs.push(got);
        }
        outs
    }

    async fn close(self) {
        self.store.close().await.unwrap();
    }
}

async fn check(ops: Vec<Op>) -> Vec<Out> {
    let mut h = Harness::new().await;
    let outs = h.run(&ops).await;
    h.close().await;
    outs
}

// ---------------------------------------------------------------------------
// Edge-case scenarios
// ---------------------------------------------------------------------------

/// Every getter on an empty store: None / false / 0 / empty / default.
#[tokio::test]
async fn empty_store_answers_like_reference() {
    use Op::*;
    let outs = check(vec![
        LoadIdentity(0),
        GetSession(0),
        HasSession(0),
        HasUserState(0),
        HasUserState(4),
        LoadPrekey(0),
        LoadPrekeys(vec![0, 1, 5]),
        MaxPrekey,
        LoadSigned(0),
        LoadAllSigned,
        GetSenderKey(0),
        GetSyncKey(0),
        GetVersion(0),
        GetMac(0, 1),
        GetMacs(0, vec![1, 2]),
        LatestSyncKey,
        GetSkDevices(0),
        GetLid(0),
        GetPn(0),
        AllLids,
        HasSameBaseKey(0, 0, 1),
        GetDevices(0),
        GetGroupMeta(0),
        GetGroupMetaDefaultOk,
        GetTc(0),
        AllTc,
        DeleteExpiredTc(i64::MAX, i64::MAX),
        TakeSent(0, 0),
        DeleteExpiredSent(true),
        GetPending(0, 0, 0),
        DeleteExpiredPending(true),
        GetMsgSecret(0, 0, 0),
        GetMsgSecretWithTs(0, 0, 0),
        DeleteExpiredMsgSecrets(i64::MAX),
        LoadDevice,
        Exists,
        // Deletes of missing keys are no-ops, not errors.
        DeleteIdentity(0),
        DeleteSession(0),
        RemovePrekey(0),
        RemoveSigned(0),
        DeleteSenderKey(0),
        DeleteMacs(0, vec![1]),
        ClearMacs(0),
        ClearSkDevices(0),
        DeleteSkRows(vec![0]),
        ClearAllSk,
        DeleteBaseKey(0, 0),
        DeleteDevices(0),
        DeleteGroupMeta(0),
        DeleteTc(0),
        DeletePending(0, 0, 0),
        MarkUploaded(vec![0, 1]),
        // Empty batches.
        PutIdentities(vec![]),
        PutSessions(vec![]),
        StorePrekeys(vec![], true),
        PutSenderKeys(vec![]),
        PutMacs(0, 1, vec![]),
        SetSkStatus(0, vec![]),
        PutLids(vec![]),
        UpdateDeviceLists(vec![]),
        StorePendingBatch(vec![]),
        DeletePendingBatch(vec![]),
        PutMsgSecrets(vec![]),
    ])
    .await;
    assert_eq!(outs[0], Out::Key(None));
    assert_eq!(outs[7], Out::U32(0));
}

/// Put, overwrite, read, delete, read again — for every keyed family.
#[tokio::test]
async fn overwrite_and_delete_like_reference() {
    use Op::*;
    let outs = check(vec![
        PutIdentity(0, 1),
        PutIdentity(0, 2),
        LoadIdentity(0),
        LoadIdentity(1),
        DeleteIdentity(0),
        LoadIdentity(0),
        PutSession(1, 1, 3),
        PutSession(1, 2, 2),
        GetSession(1),
        HasSession(1),
        DeleteSession(1),
        HasSession(1),
        PutSession(2, 0, 0), // empty record is a record, not "missing"
        GetSession(2),
        HasSession(2),
        StorePrekey(5, 1, false),
        StorePrekey(0, 2, true),
        StorePrekey(0, 3, false),
        LoadPrekey(0),
        MaxPrekey,
        RemovePrekey(5),
        MaxPrekey,
        StoreSigned(1, 1),
        StoreSigned(1, 2),
        StoreSigned(0, 3),
        LoadSigned(1),
        LoadAllSigned,
        RemoveSigned(1),
        LoadAllSigned,
        PutSenderKey(3, 1, 3),
        PutSenderKey(3, 2, 1),
        GetSenderKey(3),
        DeleteSenderKey(3),
        GetSenderKey(3),
        PutGroupMeta(0, 1, 2),
        PutGroupMeta(0, 2, 1),
        GetGroupMeta(0),
        DeleteGroupMeta(0),
        GetGroupMeta(0),
        SaveBaseKey(0, 0, 1),
        HasSameBaseKey(0, 0, 1),
        HasSameBaseKey(0, 0, 2),
        HasSameBaseKey(0, 1, 1),
        SaveBaseKey(0, 0, 2),
        HasSameBaseKey(0, 0, 2),
        DeleteBaseKey(0, 0),
        HasSameBaseKey(0, 0, 2),
        UpdateDeviceList(0, vec![0, 1, 3], 2),
        UpdateDeviceList(0, vec![0], 1),
        GetDevices(0),
        DeleteDevices(0),
        GetDevices(0),
    ])
    .await;
    assert_eq!(outs[2], Out::Key(Some([2; 32])));
    assert_eq!(outs[5], Out::Key(None));
    assert_eq!(outs[14], Out::Bool(true));
}

/// Batch variants, including duplicates inside one batch (last one wins).
#[tokio::test]
async fn batches_like_reference() {
    use Op::*;
    check(vec![
        PutIdentities(vec![(0, 1), (1, 2), (0, 3)]),
        LoadIdentity(0),
        LoadIdentity(1),
        PutSessions(vec![(0, 1, 1), (1, 2, 3), (0, 4, 2)]),
        GetSession(0),
        GetSession(1),
        StorePrekeys(vec![(0, 1), (1, 2), (0, 3)], false),
        LoadPrekeys(vec![1, 0, 4, 0, 1]), // order and duplicates kept, missing skipped
        MaxPrekey,
        PutSenderKeys(vec![(2, 1, 1), (2, 2, 3)]),
        GetSenderKey(2),
        PutMacs(0, 1, vec![(1, 10), (2, 20), (1, 11)]),
        PutMacs(1, 1, vec![(1, 99)]),
        GetMacs(0, vec![1, 2, 3, 1]),
        DeleteMacs(0, vec![1, 3]),
        GetMacs(0, vec![1, 2]),
        GetMac(1, 1),
        ClearMacs(0),
        GetMac(0, 2),
        GetMac(1, 1),
        SetSkStatus(0, vec![(0, true), (1, false), (0, false)]),
        SetSkStatus(1, vec![(0, true), (2, true)]),
        GetSkDevices(0),
        DeleteSkRows(vec![0]),
        GetSkDevices(0),
        GetSkDevices(1),
        ClearSkDevices(1),
        GetSkDevices(1),
        SetSkStatus(1, vec![(2, true)]),
        ClearAllSk,
        GetSkDevices(1),
        UpdateDeviceLists(vec![(0, vec![1], 1), (1, vec![2, 3], 2), (0, vec![4], 3)]),
        GetDevices(0),
        GetDevices(1),
        StorePendingBatch(vec![(0, 0, 0, 1), (1, 1, 1, 2), (0, 0, 0, 3)]),
        GetPending(0, 0, 0),
        GetPending(1, 1, 1),
        DeletePendingBatch(vec![(0, 0, 0), (2, 1, 2)]),
        GetPending(0, 0, 0),
        GetPending(1, 1, 1),
    ])
    .await;
}

/// `mark_prekeys_uploaded` is an UPDATE: it never resurrects a consumed key.
#[tokio::test]
async fn mark_uploaded_never_resurrects() {
    use Op::*;
    let outs = check(vec![
        StorePrekeys(vec![(0, 1), (1, 2)], false),
        RemovePrekey(0),
        MarkUploaded(vec![0, 1, 2]),
        LoadPrekey(0),
        LoadPrekey(1),
        LoadPrekey(2),
    ])
    .await;
    assert_eq!(outs[3], Out::Bytes(None));
    assert_eq!(outs[5], Out::Bytes(None));
}

/// `has_signal_state_for_user` matches `user@…` and `user:…` only — "10"
/// must not match "100@…".
#[tokio::test]
async fn user_state_prefix_edges() {
    use Op::*;
    let outs = check(vec![
        PutSession(1, 1, 1), // 100:1@s.whatsapp.net
        HasUserState(0),     // 100   -> true
        HasUserState(1),     // 10    -> false
        HasUserState(2),     // 1000  -> false
        HasUserState(5),     // 100:1 -> true ("100:1@…")
        HasUserState(6),     // 1     -> false
        HasUserState(4),     // ""    -> false
        DeleteSession(1),
        PutIdentity(4, 1), // 10@s.whatsapp.net
        HasUserState(0),
        HasUserState(1),
        PutIdentity(3, 1), // 1000@s.whatsapp.net
        HasUserState(2),
        HasUserState(0),
    ])
    .await;
    let expect = [true, false, false, true, false, false];
    for (o, e) in outs[1..7].iter().zip(expect) {
        assert_eq!(*o, Out::Bool(e));
    }
}

/// LID→phone mappings and the reverse index, including the reference's
/// corner: a LID moving to another phone drops that phone's reverse entry
/// even when it points at a different LID.
#[tokio::test]
async fn lid_mapping_reverse_index_like_reference() {
    use Op::*;
    let outs = check(vec![
        PutLid(0, 0, 1), // 111 -> 555
        PutLid(1, 0, 2), // 222 -> 555 (555's latest LID is 222)
        GetPn(0),
        PutLid(0, 1, 3), // 111 moves to 666: reverse entry of 555 dropped
        GetPn(0),        // reference: None, although 222 still maps to 555
        GetPn(1),
        GetLid(1),
        AllLids,
        PutLids(vec![(2, 2, 4), (2, 0, 5), (1, 2, 6)]),
        GetPn(0),
        GetPn(2),
        AllLids,
        PutLid(1, 2, 7), // same phone again: updates timestamps only
        GetPn(2),
        GetLid(1),
    ])
    .await;
    assert_eq!(outs[4], Out::Lid(None));
}

/// Trusted-contact tokens: newer-wins for received tokens, max for the
/// sender bucket, placeholders, and the two-window expiry rule.
#[tokio::test]
async fn tc_tokens_like_reference() {
    use Op::*;
    check(vec![
        TouchTc(0, 5), // placeholder: empty token, ts 5, sender 5
        GetTc(0),
        StoreReceivedTc(0, 1, 1, 3), // placeholder never blocks a real token
        GetTc(0),
        StoreReceivedTc(0, 2, 1, 2), // older: ignored
        GetTc(0),
        StoreReceivedTc(0, 3, 2, 3), // same age: wins
        GetTc(0),
        TouchTc(0, 4), // sender bucket never moves back
        GetTc(0),
        TouchTc(0, 9),
        GetTc(0),
        PutTc(1, 1, 1, 1, None),
        TouchTc(1, 2), // NULL bucket gets the value
        GetTc(1),
        PutTc(2, 0, 0, 7, None), // empty token, no sender: dead row
        PutTc(3, 1, 1, 1, Some(1)),
        PutTc(4, 1, 1, 6, None),
        AllTc,
        DeleteExpiredTc(5, 5),
        AllTc,
        DeleteExpiredTc(3, 3),
        AllTc,
        DeleteTc(0),
        GetTc(0),
        DeleteExpiredTc(i64::MAX, i64::MAX),
        AllTc,
    ])
    .await;
}

/// Message secrets: later deadline wins, 0 ("never") always wins, a zero
/// parent time never clobbers a known one; expiry is `0 < expires_at <= cutoff`.
#[tokio::test]
async fn msg_secrets_merge_like_reference() {
    use Op::*;
    let outs = check(vec![
        PutMsgSecrets(vec![
            (0, 0, 0, 1, 10, 100),
            (0, 0, 0, 2, 5, 0), // same key in one batch: merged
            (1, 1, 1, 3, 4, 0),
            (2, 0, 2, 4, 0, 50),
        ]),
        GetMsgSecretWithTs(0, 0, 0),
        PutMsgSecret(1, 1, 1, 5), // expires_at 0: now never expires
        DeleteExpiredMsgSecrets(10),
        GetMsgSecret(0, 0, 0),
        GetMsgSecret(1, 1, 1),
        GetMsgSecretWithTs(2, 0, 2),
        PutMsgSecrets(vec![(0, 1, 0, 6, 3, 7)]),
        DeleteExpiredMsgSecrets(2),
        GetMsgSecret(0, 1, 0),
        DeleteExpiredMsgSecrets(3),
        GetMsgSecret(0, 1, 0),
        GetMsgSecret(0, 0, 1),
    ])
    .await;
    assert_eq!(outs[0], Out::Usize(4));
}

/// Sync keys: the latest key is the one written last, even an overwrite of
/// an older key.
#[tokio::test]
async fn app_sync_like_reference() {
    use Op::*;
    check(vec![
        SetSyncKey(0, 1),
        SetSyncKey(1, 2),
        LatestSyncKey,
        SetSyncKey(0, 3),
        LatestSyncKey,
        GetSyncKey(0),
        SetSyncKey(2, 4), // empty key id
        LatestSyncKey,
        GetSyncKey(2),
        SetVersion(0, 7, 1),
        SetVersion(0, 8, 2),
        SetVersion(1, 1, 3),
        GetVersion(0),
        GetVersion(1),
        GetVersion(2),
    ])
    .await;
}

/// Sent messages and the pending-inbound buffer, including time-based expiry.
#[tokio::test]
async fn buffers_like_reference() {
    use Op::*;
    check(vec![
        StoreSent(0, 0, 1),
        StoreSent(0, 0, 2),
        StoreSent(1, 0, 3),
        TakeSent(0, 0),
        TakeSent(0, 0), // consumed
        DeleteExpiredSent(false),
        TakeSent(1, 0),
        StoreSent(2, 1, 4),
        DeleteExpiredSent(true),
        TakeSent(2, 1),
        StorePending(0, 0, 0, 1),
        StorePending(0, 1, 0, 2),
        GetPending(0, 0, 0),
        GetPending(0, 1, 0),
        DeletePending(0, 0, 0),
        GetPending(0, 0, 0),
        DeleteExpiredPending(false),
        GetPending(0, 1, 0),
        DeleteExpiredPending(true),
        GetPending(0, 1, 0),
    ])
    .await;
}

/// Device record: create materializes one (once), save/load round-trips
/// every persisted field (keys, JIDs, account signature, counters).
#[tokio::test]
async fn device_like_reference() {
    use Op::*;
    check(vec![
        Exists,
        LoadDevice,
        Create,
        Exists,
        LoadDevice,
        Create, // does not replace the existing record
        LoadDevice,
        SaveDevice(0),
        LoadDevice,
        SaveDevice(1),
        LoadDevice,
        SaveDevice(2),
        LoadDevice,
        Create,
        LoadDevice,
    ])
    .await;
}

/// The create() keys survive a reopen (the harness can only compare the
/// non-random fields across backends; this checks the keys themselves).
#[tokio::test]
async fn created_device_keys_are_stable_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let lock = DataDir::lock(dir.path()).unwrap();
    let (store, _) = SqliteStore::open(&lock).await.unwrap();
    assert_eq!(store.create().await.unwrap(), 1);
    let first = json(&store.load().await.unwrap().unwrap());
    store.close().await.unwrap();
    let (store, _) = SqliteStore::open(&lock).await.unwrap();
    assert_eq!(json(&store.load().await.unwrap().unwrap()), first);
    let loaded = store.load().await.unwrap().unwrap();
    assert_eq!(
        *loaded.device_props,
        wacore::store::device::DEVICE_PROPS.clone(),
        "runtime-only props are restored to the library defaults"
    );
    store.close().await.unwrap();
}

/// The sent-message buffer's cap: at 4096 rows the oldest are evicted down
/// to 3072, as in the reference (which rows go is only defined up to ties in
/// the timestamp, so the count is compared).
#[tokio::test]
async fn sent_message_cap_like_reference() {
    let h = Harness::new().await;
    let n = 4097;
    let ids: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    for b in [&h.reference as &dyn Backend, &h.store as &dyn Backend] {
        for id in &ids {
            b.store_sent_message("c@s.whatsapp.net", id, b"x")
                .await
                .unwrap();
        }
    }
    let mut counts = Vec::new();
    for b in [&h.reference as &dyn Backend, &h.store as &dyn Backend] {
        let mut kept = 0;
        for id in &ids {
            kept += usize::from(
                b.take_sent_message("c@s.whatsapp.net", id)
                    .await
                    .unwrap()
                    .is_some(),
            );
        }
        counts.push(kept);
    }
    assert_eq!(counts, vec![3073, 3073]);
    h.close().await;
}

// ---------------------------------------------------------------------------
// Random sequences
// ---------------------------------------------------------------------------

fn idx(n: usize) -> impl Strategy<Value = usize> {
    0..n
}

fn op_strategy() -> impl Strategy<Value = Op> {
    use Op::*;
    let a = || idx(ADDRS.len());
    let s = || 0u8..4;
    let l = || idx(BLOB_LENS.len());
    let p = || idx(PREKEY_IDS.len());
    let t = || 0i64..6;
    let signal = prop_oneof![
        (a(), s()).prop_map(|(a, s)| PutIdentity(a, s)),
        prop::collection::vec((a(), s()), 0..4).prop_map(PutIdentities),
        a().prop_map(LoadIdentity),
        a().prop_map(DeleteIdentity),
        a().prop_map(GetSession),
        (a(), s(), l()).prop_map(|(a, s, l)| PutSession(a, s, l)),
        prop::collection::vec((a(), s(), l()), 0..4).prop_map(PutSessions),
        a().prop_map(DeleteSession),
        a().prop_map(HasSession),
        idx(USERS.len()).prop_map(HasUserState),
        (p(), s(), any::<bool>()).prop_map(|(p, s, u)| StorePrekey(p, s, u)),
        (prop::collection::vec((p(), s()), 0..4), any::<bool>())
            .prop_map(|(v, u)| StorePrekeys(v, u)),
        p().prop_map(LoadPrekey),
        prop::collection::vec(p(), 0..5).prop_map(LoadPrekeys),
        prop::collection::vec(p(), 0..4).prop_map(MarkUploaded),
        p().prop_map(RemovePrekey),
        Just(MaxPrekey),
        (p(), s()).prop_map(|(p, s)| StoreSigned(p, s)),
        p().prop_map(LoadSigned),
        Just(LoadAllSigned),
        p().prop_map(RemoveSigned),
        (a(), s(), l()).prop_map(|(a, s, l)| PutSenderKey(a, s, l)),
        prop::collection::vec((a(), s(), l()), 0..4).prop_map(PutSenderKeys),
        a().prop_map(GetSenderKey),
        a().prop_map(DeleteSenderKey),
    ];
    let k = || idx(SYNC_KEY_IDS.len());
    let n = || idx(COLLECTIONS.len());
    let app_sync = prop_oneof![
        k().prop_map(GetSyncKey),
        (k(), s()).prop_map(|(k, s)| SetSyncKey(k, s)),
        n().prop_map(GetVersion),
        (n(), 0u64..5, s()).prop_map(|(n, v, s)| SetVersion(n, v, s)),
        (n(), 0u64..5, prop::collection::vec((s(), s()), 0..4))
            .prop_map(|(n, v, m)| PutMacs(n, v, m)),
        (n(), s()).prop_map(|(n, i)| GetMac(n, i)),
        (n(), prop::collection::vec(s(), 0..4)).prop_map(|(n, v)| GetMacs(n, v)),
        (n(), prop::collection::vec(s(), 0..3)).prop_map(|(n, v)| DeleteMacs(n, v)),
        n().prop_map(ClearMacs),
        Just(LatestSyncKey),
    ];
    let g = || idx(GROUPS.len());
    let d = || idx(DEVICE_JIDS.len());
    let u = || idx(USERS.len());
    let lid = || idx(LIDS.len());
    let pn = || idx(PNS.len());
    let m = || idx(MSG_IDS.len());
    let protocol = prop_oneof![
        g().prop_map(GetSkDevices),
        (g(), prop::collection::vec((d(), any::<bool>()), 0..4))
            .prop_map(|(g, v)| SetSkStatus(g, v)),
        g().prop_map(ClearSkDevices),
        prop::collection::vec(d(), 0..3).prop_map(DeleteSkRows),
        Just(ClearAllSk),
        lid().prop_map(GetLid),
        pn().prop_map(GetPn),
        (lid(), pn(), t()).prop_map(|(l, p, t)| PutLid(l, p, t)),
        prop::collection::vec((lid(), pn(), t()), 0..4).prop_map(PutLids),
        Just(AllLids),
        (a(), m(), s()).prop_map(|(a, m, s)| SaveBaseKey(a, m, s)),
        (a(), m(), s()).prop_map(|(a, m, s)| HasSameBaseKey(a, m, s)),
        (a(), m()).prop_map(|(a, m)| DeleteBaseKey(a, m)),
        (u(), prop::collection::vec(0u8..5, 0..3), t())
            .prop_map(|(u, d, t)| UpdateDeviceList(u, d, t)),
        prop::collection::vec((u(), prop::collection::vec(0u8..5, 0..3), t()), 0..3)
            .prop_map(UpdateDeviceLists),
        u().prop_map(GetDevices),
        u().prop_map(DeleteDevices),
        g().prop_map(GetGroupMeta),
        (g(), s(), l()).prop_map(|(g, s, l)| PutGroupMeta(g, s, l)),
        g().prop_map(DeleteGroupMeta),
    ];
    let c = || idx(CHATS.len());
    let snd = || idx(SENDERS.len());
    let tokens_and_buffers = prop_oneof![
        a().prop_map(GetTc),
        (a(), s(), l(), t(), prop::option::of(t()))
            .prop_map(|(j, s, l, ts, st)| PutTc(j, s, l, ts, st)),
        a().prop_map(DeleteTc),
        Just(AllTc),
        (t(), t()).prop_map(|(a, b)| DeleteExpiredTc(a, b)),
        (a(), t()).prop_map(|(j, ts)| TouchTc(j, ts)),
        (a(), s(), l(), t()).prop_map(|(j, s, l, ts)| StoreReceivedTc(j, s, l, ts)),
        (c(), m(), s()).prop_map(|(c, m, s)| StoreSent(c, m, s)),
        (c(), m()).prop_map(|(c, m)| TakeSent(c, m)),
        any::<bool>().prop_map(DeleteExpiredSent),
        (c(), snd(), m(), s()).prop_map(|(c, x, m, s)| StorePending(c, x, m, s)),
        (c(), snd(), m()).prop_map(|(c, x, m)| GetPending(c, x, m)),
        (c(), snd(), m()).prop_map(|(c, x, m)| DeletePending(c, x, m)),
        any::<bool>().prop_map(DeleteExpiredPending),
        prop::collection::vec((c(), snd(), m(), s()), 0..3).prop_map(StorePendingBatch),
        prop::collection::vec((c(), snd(), m()), 0..3).prop_map(DeletePendingBatch),
    ];
    let secrets_and_device = prop_oneof![
        (c(), snd(), m(), s()).prop_map(|(c, x, m, s)| PutMsgSecret(c, x, m, s)),
        prop::collection::vec((c(), snd(), m(), s(), t(), t()), 0..4).prop_map(PutMsgSecrets),
        (c(), snd(), m()).prop_map(|(c, x, m)| GetMsgSecret(c, x, m)),
        (c(), snd(), m()).prop_map(|(c, x, m)| GetMsgSecretWithTs(c, x, m)),
        t().prop_map(DeleteExpiredMsgSecrets),
        idx(3).prop_map(SaveDevice),
        Just(LoadDevice),
        Just(Exists),
        Just(Create),
    ];
    prop_oneof![
        4 => signal,
        2 => app_sync,
        3 => protocol,
        3 => tokens_and_buffers,
        2 => secrets_and_device,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random operation sequences give identical answers on both backends.
    #[test]
    fn random_sequences_match_reference(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(check(ops));
    }
}
