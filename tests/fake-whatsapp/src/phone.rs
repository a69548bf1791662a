//! The simulated phone: the primary device of the account, which links
//! companions by scanning their QR and can unlink them again.
//!
//! A scan does what the WhatsApp app does: it reads the QR, checks with the
//! server that the ref is current, and signs the companion's identity with
//! the account key (`ADVSignedDeviceIdentity`, HMAC'd with the companion's
//! ADV secret from the QR). The client verifies both, so a phone that got any
//! of it wrong would be refused by the real client code under test.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use buffa::Message as _;
use hmac::{KeyInit, Mac};
use tokio::sync::oneshot;
use wacore::pair::PairUtils;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use waproto::whatsapp as wa;

use crate::noise::pub_bytes;
use crate::observe::ServerEvent;
use crate::state::{ConnCommand, PairSuccessCommand, PrimaryHelloCommand, Shared, StreamErrorKind};

/// Why a phone refused a QR or the pairing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("not a WhatsApp linking code: {0}")]
    Malformed(String),
    #[error("this code was never issued by the server")]
    UnknownRef,
    #[error("this code has expired")]
    Expired,
    #[error("this code is no longer in use (the device reconnected or already linked)")]
    Superseded,
    #[error("the device did not complete linking: {0}")]
    Rejected(String),
}

/// A companion device the phone linked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PairedDevice {
    /// `PHONE:DEV@s.whatsapp.net`
    pub jid: String,
    pub device_id: u16,
}

/// Why unlinking failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnlinkError {
    #[error("no linked device {0}")]
    NoSuchDevice(String),
}

/// How long the phone waits for the companion to sign its identity.
const SIGN_DEADLINE: Duration = Duration::from_secs(15);
/// The same after a link code: the companion first runs a PBKDF2 of 131 072
/// rounds (seconds in a debug build on a busy machine).
const LINK_CODE_DEADLINE: Duration = Duration::from_secs(60);

/// Handle to the simulated phone of a running [`crate::FakeServer`].
#[derive(Clone)]
pub struct Phone {
    pub(crate) shared: Arc<Shared>,
}

/// Why entering a link code on the phone failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkCodeError {
    #[error("no device is waiting to link with this number by code")]
    NoRequest,
    #[error("this code has expired")]
    Expired,
    #[error("the device that asked for this code is gone or already linked")]
    Superseded,
    #[error("not a link code: {0}")]
    Malformed(String),
    #[error("the device did not complete linking: {0}")]
    Rejected(String),
}

/// What the phone needs of a companion to sign it: the companion's
/// identity key and the ADV secret its HMAC is keyed with (from the QR, or
/// derived in the link-code exchange).
pub(crate) struct PairingKeys {
    pub identity_pub: [u8; 32],
    pub adv_secret: [u8; 32],
}

/// The parts of a QR string a phone uses.
struct ScannedQr {
    pairing_ref: String,
    noise_pub: [u8; 32],
    keys: PairingKeys,
}

fn parse_qr(qr: &str) -> Result<ScannedQr, ScanError> {
    let (pairing_ref, noise_pub, identity_pub) =
        PairUtils::parse_qr_code(qr).map_err(|e| ScanError::Malformed(e.to_string()))?;
    // Current clients show `ref,noise,identity,adv,platform`; older ones
    // leave the platform out. Phones read both, and so does this one.
    let body = qr
        .strip_prefix(wacore::companion_reg::NATIVE_CAMERA_DEEP_LINK_PREFIX)
        .unwrap_or(qr);
    let fields: Vec<&str> = body.split(',').collect();
    if !(4..=5).contains(&fields.len()) {
        return Err(ScanError::Malformed(format!(
            "expected 4 or 5 comma-separated fields, got {}",
            fields.len()
        )));
    }
    let adv_secret: [u8; 32] = BASE64_STANDARD
        .decode(fields[3])
        .map_err(|e| ScanError::Malformed(format!("adv secret: {e}")))?
        .try_into()
        .map_err(|_| ScanError::Malformed("adv secret is not 32 bytes".into()))?;
    Ok(ScannedQr {
        pairing_ref,
        noise_pub,
        keys: PairingKeys {
            identity_pub,
            adv_secret,
        },
    })
}

impl Phone {
    /// Scans a QR string shown by a client and links that client as a new
    /// companion device. Returns once the client has signed its identity
    /// (the server then restarts its stream with 515).
    pub async fn scan(&self, qr: &str) -> Result<PairedDevice, ScanError> {
        let scanned = parse_qr(qr.trim())?;
        let shared = &self.shared;
        let (tx, device_id) = {
            let mut state = shared.state();
            let owner = *state
                .ref_owner
                .get(&scanned.pairing_ref)
                .ok_or(ScanError::UnknownRef)?;
            let live = state.connections.get(&owner).ok_or(ScanError::Superseded)?;
            if live.paired {
                return Err(ScanError::Superseded);
            }
            let refs = live.refs.as_ref().ok_or(ScanError::Superseded)?;
            let index = refs
                .refs
                .iter()
                .position(|r| r == &scanned.pairing_ref)
                .ok_or(ScanError::UnknownRef)?;
            let lifetime = shared.config.first_ref_lifetime
                + shared.config.ref_lifetime * u32::try_from(index).unwrap_or(u32::MAX);
            if Instant::now() > refs.issued_at + lifetime {
                return Err(ScanError::Expired);
            }
            if live.device.0 != scanned.noise_pub {
                return Err(ScanError::Malformed(
                    "the code's key does not belong to the device that showed it".into(),
                ));
            }
            let tx = live.tx.clone();
            let device_id = state.next_device_id;
            state.next_device_id = state.next_device_id.wrapping_add(1).max(1);
            (tx, device_id)
        };

        let (iq_id, node) =
            pair_success(shared, &scanned.keys, device_id).map_err(ScanError::Rejected)?;
        let (reply_tx, reply_rx) = oneshot::channel();
        tx.send(ConnCommand::PairSuccess(Box::new(PairSuccessCommand {
            iq_id,
            node,
            device_id,
            reply: reply_tx,
        })))
        .map_err(|_| ScanError::Superseded)?;

        await_signature(reply_rx, SIGN_DEADLINE, device_id)
            .await
            .map_err(ScanError::Rejected)
    }

    /// Types a link code into the phone ("Linked devices › Link a device ›
    /// Link with phone number instead"), for the newest device that asked
    /// to link with this account's number. Returns once the device signed its
    /// identity; a mistyped code fails only after the device answered, as on
    /// a real phone (see [`crate::link_code`]).
    pub async fn enter_code(&self, code: &str) -> Result<PairedDevice, LinkCodeError> {
        let code = crate::link_code::normalise_code(code);
        if !wacore::pair_code::PairCodeUtils::validate_code(&code) {
            return Err(LinkCodeError::Malformed(
                "a link code is 8 letters and digits".into(),
            ));
        }
        let shared = &self.shared;
        let request = {
            let state = shared.state();
            let request = state.link_code.clone().ok_or(LinkCodeError::NoRequest)?;
            if request.issued_at.elapsed() > shared.config.link_code_lifetime {
                return Err(LinkCodeError::Expired);
            }
            request
        };

        let wrapped = request.wrapped_companion_ephemeral.clone();
        let typed = code.clone();
        let (companion_ephemeral, primary_ephemeral, wrapped_primary) =
            tokio::task::spawn_blocking(move || crate::link_code::phone_hello(&wrapped, &typed))
                .await
                .map_err(|e| LinkCodeError::Rejected(e.to_string()))?
                .map_err(LinkCodeError::Rejected)?;

        let (tx, device_id) = {
            let mut state = shared.state();
            let live = state
                .connections
                .get(&request.conn)
                .ok_or(LinkCodeError::Superseded)?;
            if live.paired {
                return Err(LinkCodeError::Superseded);
            }
            let tx = live.tx.clone();
            let device_id = state.next_device_id;
            state.next_device_id = state.next_device_id.wrapping_add(1).max(1);
            (tx, device_id)
        };
        let node = crate::link_code::primary_hello_node(
            &request.pairing_ref,
            &wrapped_primary,
            &pub_bytes(&shared.phone_identity),
        );
        let (reply_tx, reply_rx) = oneshot::channel();
        tx.send(ConnCommand::PrimaryHello(Box::new(PrimaryHelloCommand {
            node,
            hello: crate::link_code::PrimaryHello {
                pairing_ref: request.pairing_ref.clone(),
                primary_ephemeral,
                companion_ephemeral,
                device_id,
                reply: reply_tx,
            },
        })))
        .map_err(|_| LinkCodeError::Superseded)?;

        await_signature(reply_rx, LINK_CODE_DEADLINE, device_id)
            .await
            .map_err(LinkCodeError::Rejected)
    }

    /// Removes a linked device, as "Linked devices › Log out" on the phone
    /// does: it can no longer log in, and a live session is ended with
    /// `<stream:error code="401"><conflict type="device_removed"/>`.
    pub fn unlink(&self, jid: &str) -> Result<(), UnlinkError> {
        let shared = &self.shared;
        let (removed, txs) = {
            let mut state = shared.state();
            let device_id = state
                .devices
                .keys()
                .copied()
                .find(|id| shared.device_jid(*id) == jid)
                .ok_or_else(|| UnlinkError::NoSuchDevice(jid.to_string()))?;
            let record = state.devices.remove(&device_id);
            let txs = state
                .connections
                .values()
                .filter(|c| record.as_ref().is_some_and(|r| r.noise_key == c.device))
                .map(|c| c.tx.clone())
                .collect::<Vec<_>>();
            (device_id, txs)
        };
        for tx in txs {
            let _ = tx.send(ConnCommand::StreamError(StreamErrorKind::DeviceRemoved));
        }
        shared.emit(ServerEvent::Unlinked {
            jid: jid.to_string(),
        });
        crate::messaging::notify_devices(shared, removed, false);
        Ok(())
    }

    /// The JIDs of all companions currently linked.
    pub fn linked_devices(&self) -> Vec<String> {
        let shared = &self.shared;
        let state = shared.state();
        state
            .devices
            .keys()
            .map(|id| shared.device_jid(*id))
            .collect()
    }
}

/// Waits for the connection's report that the companion signed its
/// identity (the device is registered) or why it did not.
async fn await_signature(
    reply: oneshot::Receiver<Result<String, String>>,
    deadline: Duration,
    device_id: u16,
) -> Result<PairedDevice, String> {
    match tokio::time::timeout(deadline, reply).await {
        Ok(Ok(Ok(jid))) => Ok(PairedDevice { jid, device_id }),
        Ok(Ok(Err(why))) => Err(why),
        Ok(Err(_)) => Err("connection closed".into()),
        Err(_) => Err("no answer from the device".into()),
    }
}

/// The `pair-success` IQ (id and node) the phone has the server deliver to a
/// companion it accepted: the signed identity plus the device's JID.
pub(crate) fn pair_success(
    shared: &Shared,
    keys: &PairingKeys,
    device_id: u16,
) -> Result<(String, Node), String> {
    let container = signed_identity(shared, keys, device_id)?;
    let iq_id = format!("pair-{device_id}-{}", rand::random::<u32>());
    let node = pair_success_node(shared, &iq_id, device_id, container);
    Ok((iq_id, node))
}

/// The `ADVSignedDeviceIdentityHMAC` container the phone sends.
fn signed_identity(shared: &Shared, keys: &PairingKeys, device_id: u16) -> Result<Vec<u8>, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let details = wa::ADVDeviceIdentity {
        raw_id: Some(shared.raw_id),
        timestamp: Some(now),
        key_index: Some(u32::from(device_id)),
        ..Default::default()
    }
    .encode_to_vec();

    // account signature: XEdDSA by the phone's identity key over
    // [6, 0] ‖ details ‖ companion identity public key.
    let mut message = vec![6u8, 0];
    message.extend_from_slice(&details);
    message.extend_from_slice(&keys.identity_pub);
    let signature = shared
        .phone_identity
        .private_key
        .calculate_signature(&message, &mut rand::rng())
        .map_err(|e| format!("signing failed: {e}"))?;

    let signed = wa::ADVSignedDeviceIdentity {
        details: Some(details),
        account_signature_key: Some(pub_bytes(&shared.phone_identity).to_vec()),
        account_signature: Some(signature.to_vec()),
        ..Default::default()
    }
    .encode_to_vec();

    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&keys.adv_secret)
        .map_err(|e| format!("hmac: {e}"))?;
    mac.update(&signed);
    let hmac = mac.finalize().into_bytes().to_vec();

    Ok(wa::ADVSignedDeviceIdentityHMAC {
        details: Some(signed),
        hmac: Some(hmac),
        ..Default::default()
    }
    .encode_to_vec())
}

fn pair_success_node(shared: &Shared, iq_id: &str, device_id: u16, container: Vec<u8>) -> Node {
    let account = &shared.config.account;
    let jid: wacore_binary::Jid = shared.device_jid(device_id).parse().unwrap_or_default();
    let lid: wacore_binary::Jid = shared.device_lid(device_id).parse().unwrap_or_default();
    let mut children = vec![
        NodeBuilder::new("device-identity").bytes(container).build(),
        NodeBuilder::new("device")
            .attr("jid", jid)
            .attr("lid", lid)
            .build(),
        NodeBuilder::new("platform")
            .attr("name", account.platform.clone())
            .build(),
    ];
    if let Some(name) = &account.business_name {
        children.push(NodeBuilder::new("biz").attr("name", name.clone()).build());
    }
    NodeBuilder::new("iq")
        .attr("from", "s.whatsapp.net")
        .attr("type", "set")
        .attr("id", iq_id.to_string())
        .children([NodeBuilder::new("pair-success").children(children).build()])
        .build()
}

/// Why a QR could not be read from an image.
#[derive(Debug, thiserror::Error)]
pub enum QrImageError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("not a PNG image: {0}")]
    Png(String),
    #[error("no readable QR code in the image")]
    NoCode,
}

/// Reads the QR code in a PNG image, as a phone's camera would read it off a
/// screen. Lets tests scan exactly the pixels the agent rendered.
pub fn decode_qr_png(path: &std::path::Path) -> Result<String, QrImageError> {
    let file = std::fs::File::open(path).map_err(|source| QrImageError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .map_err(|e| QrImageError::Png(e.to_string()))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| QrImageError::Png("image too large".into()))?;
    let mut pixels = vec![0u8; size];
    let info = reader
        .next_frame(&mut pixels)
        .map_err(|e| QrImageError::Png(e.to_string()))?;
    let channels = info.color_type.samples();
    let (width, height) = (info.width as usize, info.height as usize);
    let luma = |x: usize, y: usize| -> u8 {
        let i = y * info.line_size + x * channels;
        match channels {
            1 | 2 => pixels[i],
            _ => {
                let sum =
                    u16::from(pixels[i]) + u16::from(pixels[i + 1]) + u16::from(pixels[i + 2]);
                u8::try_from(sum / 3).unwrap_or(u8::MAX)
            }
        }
    };
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, luma);
    image
        .detect_grids()
        .iter()
        .find_map(|grid| grid.decode().ok().map(|(_, content)| content))
        .ok_or(QrImageError::NoCode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_codes_are_refused() {
        for qr in [
            "",
            "abc",
            "a,b,c,d,e",
            "ref,AAAA,AAAA,AAAA,1",
            "r,k,k,k,1,x",
        ] {
            assert!(matches!(parse_qr(qr), Err(ScanError::Malformed(_))), "{qr}");
        }
    }

    #[test]
    fn four_and_five_field_codes_are_read() {
        let key = BASE64_STANDARD.encode([7u8; 32]);
        let four = format!("2@ref,{key},{key},{key}");
        let five = format!("{four},1");
        for qr in [four, five] {
            let scanned = parse_qr(&qr).unwrap_or_else(|e| panic!("{qr}: {e}"));
            assert_eq!(scanned.pairing_ref, "2@ref");
            assert_eq!(scanned.keys.adv_secret, [7u8; 32]);
        }
    }
}
