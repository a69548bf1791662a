//! Linking by code ("Link with phone number instead"): the server's and the
//! phone's half of WhatsApp's alternative to the QR.
//!
//! The flow, as WhatsApp runs it and as whatsapp-rust's companion half
//! expects it:
//!
//! 1. `companion_hello` (companion → server): the companion picks an
//!    8-character code, wraps its ephemeral public key under a PBKDF2 key of
//!    that code, and names the account's phone number. The server answers
//!    with a pairing ref and keeps the request for that number (the newest
//!    request for a number wins).
//! 2. The user types the code into the phone ([`crate::Phone::enter_code`]).
//!    The phone unwraps the companion's ephemeral key with the code as typed,
//!    wraps its own ephemeral key the same way, and the server delivers both
//!    in a `primary_hello` notification.
//! 3. `companion_finish` (companion → server): a key bundle sealed with a key
//!    derived from the ephemeral exchange. The phone opens it — which only
//!    works if the typed code was right — derives the companion's new ADV
//!    secret and signs the companion exactly as after a QR scan
//!    (`pair-success`, then 515).
//!
//! A wrong code is not detected until step 3, as on a real phone: both sides
//! unwrap garbage keys, the bundle does not open, the phone reports a failed
//! link and the companion hears nothing.

use std::time::Instant;

use wacore::libsignal::protocol::{KeyPair, PublicKey};
use wacore::pair_code::PairCodeUtils;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use crate::observe::ConnectionId;
use crate::phone::PairingKeys;

/// A companion's `companion_hello`, kept until the phone enters its code.
#[derive(Debug, Clone)]
pub(crate) struct LinkCodeRequest {
    pub conn: ConnectionId,
    pub pairing_ref: Vec<u8>,
    /// salt ‖ iv ‖ AES-CTR(companion ephemeral public key), 80 bytes.
    pub wrapped_companion_ephemeral: Vec<u8>,
    pub issued_at: Instant,
}

/// What the phone keeps between `primary_hello` and `companion_finish`.
pub(crate) struct PrimaryHello {
    pub pairing_ref: Vec<u8>,
    pub primary_ephemeral: KeyPair,
    /// The companion's ephemeral key as the phone unwrapped it (garbage when
    /// the code was mistyped).
    pub companion_ephemeral: [u8; 32],
    pub device_id: u16,
    pub reply: tokio::sync::oneshot::Sender<Result<String, String>>,
}

/// The fields of a `companion_hello` request.
pub(crate) struct CompanionHello {
    pub phone: String,
    pub wrapped_companion_ephemeral: Vec<u8>,
}

/// Reads `<link_code_companion_reg stage="companion_hello">`.
pub(crate) fn parse_companion_hello(reg: &Node) -> Result<CompanionHello, String> {
    let jid = attr(reg, "jid").ok_or("companion_hello without jid")?;
    let phone = jid.split('@').next().unwrap_or_default().to_string();
    if phone.is_empty() || !phone.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("companion_hello for a malformed jid {jid:?}"));
    }
    let wrapped = child_bytes(reg, "link_code_pairing_wrapped_companion_ephemeral_pub")
        .filter(|b| b.len() == 80)
        .ok_or("companion_hello without an 80-byte wrapped ephemeral key")?;
    child_bytes(reg, "companion_server_auth_key_pub")
        .filter(|b| b.len() == 32)
        .ok_or("companion_hello without the companion's noise key")?;
    Ok(CompanionHello {
        phone,
        wrapped_companion_ephemeral: wrapped.to_vec(),
    })
}

/// The answer to `companion_hello`: the pairing ref.
pub(crate) fn companion_hello_result(iq_id: &str, pairing_ref: &[u8]) -> Node {
    NodeBuilder::new("iq")
        .attr("from", "s.whatsapp.net")
        .attr("type", "result")
        .attr("id", iq_id.to_string())
        .children([NodeBuilder::new("link_code_companion_reg")
            .children([NodeBuilder::new("link_code_pairing_ref")
                .bytes(pairing_ref.to_vec())
                .build()])
            .build()])
        .build()
}

/// Normalises a code as a phone's input field does: no spaces or dashes,
/// upper case.
pub(crate) fn normalise_code(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_uppercase)
        .collect()
}

/// The phone's side of step 2 for the code as typed: unwraps the
/// companion's key, makes its own ephemeral key and wraps it. Runs two
/// PBKDF2 derivations of 131 072 rounds: call it off the async threads.
pub(crate) fn phone_hello(
    wrapped_companion_ephemeral: &[u8],
    code: &str,
) -> Result<([u8; 32], KeyPair, [u8; 80]), String> {
    let companion_ephemeral =
        PairCodeUtils::decrypt_primary_ephemeral_pub(wrapped_companion_ephemeral, code)
            .map_err(|e| e.to_string())?;
    let primary_ephemeral = KeyPair::generate(&mut rand::rng());
    let primary_pub: [u8; 32] = primary_ephemeral
        .public_key
        .public_key_bytes()
        .try_into()
        .map_err(|_| "ephemeral public key is not 32 bytes".to_string())?;
    let wrapped = PairCodeUtils::encrypt_ephemeral_pub(&primary_pub, code);
    Ok((companion_ephemeral, primary_ephemeral, wrapped))
}

/// The `primary_hello` notification the server delivers to the companion.
pub(crate) fn primary_hello_node(
    pairing_ref: &[u8],
    wrapped_primary_ephemeral: &[u8; 80],
    primary_identity_pub: &[u8],
) -> Node {
    notification(
        NodeBuilder::new("link_code_companion_reg")
            .attr("stage", "primary_hello")
            .children([
                NodeBuilder::new("link_code_pairing_wrapped_primary_ephemeral_pub")
                    .bytes(wrapped_primary_ephemeral.to_vec())
                    .build(),
                NodeBuilder::new("primary_identity_pub")
                    .bytes(primary_identity_pub.to_vec())
                    .build(),
                NodeBuilder::new("link_code_pairing_ref")
                    .bytes(pairing_ref.to_vec())
                    .build(),
            ])
            .build(),
    )
}

/// A `link_code_companion_reg` notification from the server.
fn notification(reg: Node) -> Node {
    NodeBuilder::new("notification")
        .attr("from", "s.whatsapp.net")
        .attr("type", "link_code_companion_reg")
        .attr("id", format!("lc-{}", rand::random::<u32>()))
        .attr("t", crate::connection::unix_now().to_string())
        .children([reg])
        .build()
}

/// The server's `refresh_code` notification: the code on the device's
/// screen is withdrawn and it should ask for a new one.
pub(crate) fn refresh_code_node(pairing_ref: &[u8]) -> Node {
    notification(
        NodeBuilder::new("link_code_companion_reg")
            .attr("stage", "refresh_code")
            .attr("force_manual_refresh", "true")
            .children([NodeBuilder::new("link_code_pairing_ref")
                .bytes(pairing_ref.to_vec())
                .build()])
            .build(),
    )
}

/// The phone opens the companion's key bundle (step 3) and derives what it
/// needs to sign the companion: its identity key and its new ADV secret.
///
/// Bundle: salt(32) ‖ iv(12) ‖ AES-GCM(companion identity ‖ primary identity
/// ‖ random), keyed by HKDF(ephemeral agreement, salt). ADV secret:
/// HKDF(ephemeral agreement ‖ identity agreement ‖ random, "adv_secret").
pub(crate) fn open_key_bundle(
    hello: &PrimaryHello,
    phone_identity: &KeyPair,
    companion_finish: &Node,
) -> Result<PairingKeys, String> {
    let reg = companion_finish
        .get_optional_child("link_code_companion_reg")
        .ok_or("companion_finish without link_code_companion_reg")?;
    let pairing_ref = child_bytes(reg, "link_code_pairing_ref").unwrap_or_default();
    if pairing_ref != hello.pairing_ref.as_slice() {
        return Err("companion_finish for another pairing ref".into());
    }
    let wrapped = child_bytes(reg, "link_code_pairing_wrapped_key_bundle")
        .filter(|b| b.len() > 32 + 12 + 16)
        .ok_or("companion_finish without a key bundle")?;

    let companion_ephemeral = PublicKey::from_djb_public_key_bytes(&hello.companion_ephemeral)
        .map_err(|e| format!("companion ephemeral key: {e}"))?;
    let ephemeral_shared = hello
        .primary_ephemeral
        .private_key
        .calculate_agreement(&companion_ephemeral)
        .map_err(|e| format!("ephemeral agreement: {e}"))?;

    let (salt, rest) = wrapped.split_at(32);
    let (iv, sealed) = rest.split_at(12);
    let mut key = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(
        &ephemeral_shared,
        Some(salt),
        b"link_code_pairing_key_bundle_encryption_key",
        &mut key,
    )
    .map_err(|e| format!("bundle key: {e:?}"))?;
    let iv: [u8; 12] = iv.try_into().map_err(|_| "bundle iv is not 12 bytes")?;
    let mut bundle = Vec::with_capacity(96);
    wacore::libsignal::crypto::aes_256_gcm_decrypt(&key, &iv, b"", sealed, &mut bundle)
        .map_err(|_| "the key bundle does not open: the code was entered wrong".to_string())?;
    if bundle.len() != 96 {
        return Err(format!("key bundle of {} bytes, expected 96", bundle.len()));
    }

    let identity_pub: [u8; 32] = bundle[..32]
        .try_into()
        .map_err(|_| "companion identity is not 32 bytes")?;
    if bundle[32..64] != *phone_identity.public_key.public_key_bytes() {
        return Err("the bundle names another primary identity".into());
    }
    let companion_identity = PublicKey::from_djb_public_key_bytes(&identity_pub)
        .map_err(|e| format!("companion identity: {e}"))?;
    let identity_shared = phone_identity
        .private_key
        .calculate_agreement(&companion_identity)
        .map_err(|e| format!("identity agreement: {e}"))?;
    if child_bytes(reg, "companion_identity_public") != Some(identity_pub.as_slice()) {
        return Err("companion_identity_public does not match the bundle".into());
    }

    let mut secret_input = Vec::with_capacity(96);
    secret_input.extend_from_slice(&ephemeral_shared);
    secret_input.extend_from_slice(&identity_shared);
    secret_input.extend_from_slice(&bundle[64..96]);
    let mut adv_secret = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(&secret_input, None, b"adv_secret", &mut adv_secret)
        .map_err(|e| format!("adv secret: {e:?}"))?;
    Ok(PairingKeys {
        identity_pub,
        adv_secret,
    })
}

/// The empty `result` the server sends for `companion_finish`.
pub(crate) fn companion_finish_result(iq_id: &str) -> Node {
    NodeBuilder::new("iq")
        .attr("from", "s.whatsapp.net")
        .attr("type", "result")
        .attr("id", iq_id.to_string())
        .build()
}

fn attr(node: &Node, key: &str) -> Option<String> {
    crate::responder::attr(node, key)
}

fn child_bytes<'a>(node: &'a Node, tag: &str) -> Option<&'a [u8]> {
    match &node.get_optional_child(tag)?.content {
        Some(wacore_binary::NodeContent::Bytes(b)) => Some(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_like_a_phone_reads_them() {
        assert_eq!(normalise_code(" abcd-1234 "), "ABCD1234");
    }

    #[test]
    fn a_code_unwraps_what_it_wrapped_and_nothing_else() {
        let key = KeyPair::generate(&mut rand::rng());
        let public: [u8; 32] = key.public_key.public_key_bytes().try_into().expect("32");
        let wrapped = PairCodeUtils::encrypt_ephemeral_pub(&public, "ABCD1234");
        let (right, _, _) = phone_hello(&wrapped, "ABCD1234").expect("unwraps");
        assert_eq!(right, public);
        let (wrong, _, _) = phone_hello(&wrapped, "ABCD1235").expect("unwraps garbage");
        assert_ne!(wrong, public);
    }
}
