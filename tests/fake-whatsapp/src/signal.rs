//! A simulated Signal party: one device (a contact's phone, a contact's
//! companion, or the account's own phone) with its identity, pre-keys,
//! sessions and sender keys, all in memory.
//!
//! Every cryptographic step is the `wacore-libsignal` code the client under
//! test uses itself (X3DH on `process_prekey_bundle`, the double ratchet in
//! `message_encrypt`/`message_decrypt`, sender keys in `group_*`). This module
//! only keeps the records those functions read and write; nothing here is
//! hand-written cryptography. A party that got the protocol wrong would be
//! refused by the client's own decryption, which is the point.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use wacore::libsignal::protocol::{
    CiphertextMessage, Direction, GenericSignedPreKey, IdentityChange, IdentityKey,
    IdentityKeyPair, IdentityKeyStore, KeyPair, PreKeyBundle, PreKeyId, PreKeyRecord,
    PreKeySignalMessage, PreKeyStore, ProtocolAddress, SenderKeyDistributionMessage, SenderKeyName,
    SenderKeyRecord, SenderKeyStore, SessionRecord, SessionStore, SignalMessage,
    SignalProtocolError, SignedPreKeyId, SignedPreKeyRecord, SignedPreKeyStore, Timestamp,
    UsePQRatchet,
};
use wacore_binary::Jid;

use crate::keys::KeyBundle;

type SignalResult<T> = Result<T, SignalProtocolError>;

/// How many one-time pre-keys a simulated device publishes (WhatsApp
/// clients upload 812; a handful is enough for a test run).
const ONE_TIME_PRE_KEYS: u32 = 50;

/// The signed pre-key's id; simulated devices never rotate it.
const SIGNED_PRE_KEY_ID: u32 = 1;

fn rng() -> rand::rngs::StdRng {
    rand::make_rng::<rand::rngs::StdRng>()
}

/// The Signal address of a device JID, named as whatsapp-rust names it, so
/// the records here line up with what the client calls the same device.
pub(crate) fn address(jid: &Jid) -> ProtocolAddress {
    use wacore::types::jid::JidExt as _;
    jid.to_protocol_address()
}

#[derive(Default)]
struct Sessions(HashMap<String, SessionRecord>);

#[async_trait]
impl SessionStore for Sessions {
    async fn load_session(&self, address: &ProtocolAddress) -> SignalResult<Option<SessionRecord>> {
        Ok(self.0.get(address.as_str()).cloned())
    }
    async fn has_session(&self, address: &ProtocolAddress) -> SignalResult<bool> {
        Ok(self.0.contains_key(address.as_str()))
    }
    async fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: SessionRecord,
    ) -> SignalResult<()> {
        self.0.insert(address.as_str().to_string(), record);
        Ok(())
    }
}

struct Identities {
    pair: IdentityKeyPair,
    registration_id: u32,
    known: HashMap<String, IdentityKey>,
}

#[async_trait]
impl IdentityKeyStore for Identities {
    async fn get_identity_key_pair(&self) -> SignalResult<IdentityKeyPair> {
        Ok(self.pair.clone())
    }
    async fn get_local_registration_id(&self) -> SignalResult<u32> {
        Ok(self.registration_id)
    }
    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> SignalResult<IdentityChange> {
        let previous = self.known.insert(address.as_str().to_string(), *identity);
        Ok(IdentityChange::from_changed(
            previous.is_some_and(|p| p != *identity),
        ))
    }
    /// Trust on first use, and trust a changed key too: a phone shows "your
    /// security code changed" and carries on, which is what a simulated
    /// party should do when the outlet re-pairs.
    async fn is_trusted_identity(
        &self,
        _address: &ProtocolAddress,
        _identity: &IdentityKey,
        _direction: Direction,
    ) -> SignalResult<bool> {
        Ok(true)
    }
    async fn get_identity(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        Ok(self.known.get(address.as_str()).copied())
    }
}

#[derive(Default)]
struct PreKeys(BTreeMap<u32, PreKeyRecord>);

#[async_trait]
impl PreKeyStore for PreKeys {
    async fn get_pre_key(&self, id: PreKeyId) -> SignalResult<PreKeyRecord> {
        self.0
            .get(&u32::from(id))
            .cloned()
            .ok_or(SignalProtocolError::InvalidPreKeyId)
    }
    async fn save_pre_key(&mut self, id: PreKeyId, record: &PreKeyRecord) -> SignalResult<()> {
        self.0.insert(u32::from(id), record.clone());
        Ok(())
    }
    async fn remove_pre_key(&mut self, id: PreKeyId) -> SignalResult<()> {
        self.0.remove(&u32::from(id));
        Ok(())
    }
}

#[derive(Default)]
struct SignedPreKeys(BTreeMap<u32, SignedPreKeyRecord>);

#[async_trait]
impl SignedPreKeyStore for SignedPreKeys {
    async fn get_signed_pre_key(&self, id: SignedPreKeyId) -> SignalResult<SignedPreKeyRecord> {
        self.0
            .get(&u32::from(id))
            .cloned()
            .ok_or(SignalProtocolError::InvalidSignedPreKeyId)
    }
    async fn save_signed_pre_key(
        &mut self,
        id: SignedPreKeyId,
        record: &SignedPreKeyRecord,
    ) -> SignalResult<()> {
        self.0.insert(u32::from(id), record.clone());
        Ok(())
    }
}

#[derive(Default)]
struct SenderKeys(HashMap<(String, String), SenderKeyRecord>);

#[async_trait]
impl SenderKeyStore for SenderKeys {
    async fn store_sender_key(
        &mut self,
        name: &SenderKeyName,
        record: SenderKeyRecord,
    ) -> SignalResult<()> {
        self.0.insert(
            (name.group_id().to_string(), name.sender_id().to_string()),
            record,
        );
        Ok(())
    }
    async fn load_sender_key(&self, name: &SenderKeyName) -> SignalResult<Option<SenderKeyRecord>> {
        Ok(self
            .0
            .get(&(name.group_id().to_string(), name.sender_id().to_string()))
            .cloned())
    }
}

/// One simulated device's Signal state.
pub(crate) struct SignalDevice {
    pub jid: Jid,
    sessions: Sessions,
    identities: Identities,
    pre_keys: PreKeys,
    signed_pre_keys: SignedPreKeys,
    sender_keys: SenderKeys,
}

/// The two kinds of pairwise ciphertext on the wire (`<enc type=…>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EncType {
    /// `pkmsg`: the first message of a session, carrying the X3DH setup.
    Pkmsg,
    /// `msg`: a message on an established session.
    Msg,
}

impl EncType {
    pub fn as_wire(self) -> &'static str {
        match self {
            EncType::Pkmsg => "pkmsg",
            EncType::Msg => "msg",
        }
    }
}

impl SignalDevice {
    /// A fresh device with a new identity. `identity` reuses an existing key
    /// pair (the account's phone signs companions with the same key it uses
    /// for Signal).
    pub(crate) fn new(jid: Jid, identity: Option<KeyPair>) -> Self {
        let mut rng = rng();
        let pair = match identity {
            Some(kp) => IdentityKeyPair::new(IdentityKey::new(kp.public_key), kp.private_key),
            None => IdentityKeyPair::generate(&mut rng),
        };
        let registration_id = rand::random::<u32>() % 16_380 + 1;
        let mut device = Self {
            jid,
            sessions: Sessions::default(),
            identities: Identities {
                pair,
                registration_id,
                known: HashMap::new(),
            },
            pre_keys: PreKeys::default(),
            signed_pre_keys: SignedPreKeys::default(),
            sender_keys: SenderKeys::default(),
        };
        device.generate_keys();
        device
    }

    /// New signed and one-time pre-keys (identity unchanged).
    fn generate_keys(&mut self) {
        let mut rng = rng();
        let signed = KeyPair::generate(&mut rng);
        let signature = self
            .identities
            .pair
            .private_key()
            .calculate_signature(&signed.public_key.serialize(), &mut rng)
            .map(|s| s.to_vec())
            .unwrap_or_default();
        let now = crate::connection::unix_now() * 1000;
        self.signed_pre_keys.0.insert(
            SIGNED_PRE_KEY_ID,
            SignedPreKeyRecord::new(
                SIGNED_PRE_KEY_ID.into(),
                Timestamp::from_epoch_millis(now),
                &signed,
                &signature,
            ),
        );
        self.pre_keys.0.clear();
        for id in 1..=ONE_TIME_PRE_KEYS {
            let pair = KeyPair::generate(&mut rng);
            self.pre_keys
                .0
                .insert(id, PreKeyRecord::new(id.into(), &pair));
        }
    }

    pub(crate) fn identity_public(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.identities.pair.public_key().public_key_bytes());
        out
    }

    pub(crate) fn identity_pair(&self) -> &IdentityKeyPair {
        &self.identities.pair
    }

    /// What this device would have uploaded to the server: identity, signed
    /// pre-key and the public halves of its unused one-time pre-keys.
    pub(crate) fn published_bundle(&self, device_identity: Option<Vec<u8>>) -> KeyBundle {
        let (skey_id, skey_pub, skey_sig) = self
            .signed_pre_keys
            .0
            .iter()
            .next()
            .and_then(|(id, rec)| {
                let public = rec.public_key().ok()?;
                let sig = rec.signature().ok()?;
                Some((*id, to32(public.public_key_bytes()), sig.to_vec()))
            })
            .unwrap_or((0, [0; 32], Vec::new()));
        KeyBundle {
            registration_id: self.identities.registration_id,
            identity: self.identity_public(),
            signed_pre_key: (skey_id, skey_pub, skey_sig),
            pre_keys: self
                .pre_keys
                .0
                .iter()
                .filter_map(|(id, rec)| {
                    Some((*id, to32(rec.public_key().ok()?.public_key_bytes())))
                })
                .collect(),
            device_identity,
        }
    }

    pub(crate) fn has_session(&self, peer: &Jid) -> bool {
        self.sessions.0.contains_key(address(peer).as_str())
    }

    /// Forgets every session (identities stay known).
    pub(crate) fn forget_all_sessions(&mut self) {
        self.sessions.0.clear();
    }

    /// Forgets the session with `peer` (the next message needs a new one).
    pub(crate) fn drop_session(&mut self, peer: &Jid) {
        self.sessions.0.remove(address(peer).as_str());
    }

    /// Builds a session to `peer` from a bundle the server handed out.
    pub(crate) async fn start_session(
        &mut self,
        peer: &Jid,
        bundle: &KeyBundle,
        one_time: Option<(u32, [u8; 32])>,
    ) -> Result<(), String> {
        let bundle = bundle.to_libsignal(peer.device, one_time)?;
        self.process_bundle(peer, &bundle).await
    }

    async fn process_bundle(&mut self, peer: &Jid, bundle: &PreKeyBundle) -> Result<(), String> {
        wacore::libsignal::protocol::process_prekey_bundle(
            &address(peer),
            &mut self.sessions,
            &mut self.identities,
            bundle,
            &mut rng(),
            UsePQRatchet::No,
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("session setup with {peer}: {e}"))
    }

    /// Encrypts `plaintext` (already padded) for `peer`; there must be a
    /// session.
    pub(crate) async fn encrypt(
        &mut self,
        peer: &Jid,
        plaintext: &[u8],
    ) -> Result<(EncType, Vec<u8>), String> {
        let message = wacore::libsignal::protocol::message_encrypt(
            plaintext,
            &address(peer),
            &mut self.sessions,
            &mut self.identities,
        )
        .await
        .map_err(|e| format!("encrypt for {peer}: {e}"))?;
        match message {
            CiphertextMessage::PreKeySignalMessage(m) => {
                Ok((EncType::Pkmsg, m.serialized().to_vec()))
            }
            CiphertextMessage::SignalMessage(m) => Ok((EncType::Msg, m.serialized().to_vec())),
            other => Err(format!(
                "unexpected ciphertext type {:?}",
                other.message_type()
            )),
        }
    }

    /// Decrypts a pairwise message from `peer`. Returns the padded
    /// plaintext.
    pub(crate) async fn decrypt(
        &mut self,
        peer: &Jid,
        kind: EncType,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, String> {
        let message = match kind {
            EncType::Pkmsg => CiphertextMessage::PreKeySignalMessage(
                PreKeySignalMessage::try_from(ciphertext).map_err(|e| format!("pkmsg: {e}"))?,
            ),
            EncType::Msg => CiphertextMessage::SignalMessage(
                SignalMessage::try_from(ciphertext).map_err(|e| format!("msg: {e}"))?,
            ),
        };
        let result = wacore::libsignal::protocol::message_decrypt(
            &message,
            &address(peer),
            &mut self.sessions,
            &mut self.identities,
            &mut self.pre_keys,
            &self.signed_pre_keys,
            &mut rng(),
            UsePQRatchet::No,
        )
        .await
        .map_err(|e| format!("decrypt from {peer}: {e}"))?;
        if let Some(id) = result.consumed_prekey_id {
            self.pre_keys.0.remove(&u32::from(id));
        }
        Ok(result.plaintext)
    }

    /// This device's sender-key distribution message for `group` (created
    /// on first use).
    pub(crate) async fn sender_key_distribution(&mut self, group: &str) -> Result<Vec<u8>, String> {
        let name = SenderKeyName::new(group.to_string(), address(&self.jid).as_str().to_string());
        let skdm = wacore::libsignal::protocol::create_sender_key_distribution_message(
            &name,
            &mut self.sender_keys,
            &mut rng(),
        )
        .await
        .map_err(|e| format!("sender key for {group}: {e}"))?;
        Ok(skdm.serialized().to_vec())
    }

    /// Encrypts a group message with this device's sender key (`skmsg`).
    pub(crate) async fn group_encrypt(
        &mut self,
        group: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, String> {
        let name = SenderKeyName::new(group.to_string(), address(&self.jid).as_str().to_string());
        let message = wacore::libsignal::protocol::group_encrypt(
            &mut self.sender_keys,
            &name,
            plaintext,
            &mut rng(),
        )
        .await
        .map_err(|e| format!("group encrypt for {group}: {e}"))?;
        Ok(message.serialized().to_vec())
    }

    /// Takes another member's sender key for `group`.
    pub(crate) async fn process_sender_key(
        &mut self,
        group: &str,
        sender: &Jid,
        skdm: &[u8],
    ) -> Result<(), String> {
        let name = SenderKeyName::new(group.to_string(), address(sender).as_str().to_string());
        let skdm =
            SenderKeyDistributionMessage::try_from(skdm).map_err(|e| format!("skdm: {e}"))?;
        wacore::libsignal::protocol::process_sender_key_distribution_message(
            &name,
            &skdm,
            &mut self.sender_keys,
        )
        .await
        .map_err(|e| format!("sender key from {sender}: {e}"))
    }

    /// Decrypts a group message (`skmsg`) from `sender`.
    pub(crate) async fn group_decrypt(
        &mut self,
        group: &str,
        sender: &Jid,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, String> {
        let name = SenderKeyName::new(group.to_string(), address(sender).as_str().to_string());
        wacore::libsignal::protocol::group_decrypt(ciphertext, &mut self.sender_keys, &name)
            .await
            .map_err(|e| format!("group decrypt from {sender}: {e}"))
    }
}

pub(crate) fn to32(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let n = bytes.len().min(32);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}
