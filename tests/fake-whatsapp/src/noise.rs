//! The server side of WhatsApp's Noise handshakes, and the encrypted frame
//! codec that follows them.
//!
//! The client (whatsapp-rust) speaks three patterns: `XX` on a cold start,
//! `IK` when it has cached the server's certificate chain from an earlier
//! `XX`, and `XXfallback` when the server cannot complete an `IK` (for
//! example because its static key changed). The responder here mirrors each
//! step of the initiator in wacore-noise, so a wrong byte on either side makes
//! the AEAD tag check fail exactly as it would against the real servers.

use buffa::Message as _;
use wacore::libsignal::protocol::KeyPair;
use wacore_binary::consts::{
    NOISE_PATTERN_IK, NOISE_PATTERN_XX, NOISE_PATTERN_XXFALLBACK, WA_CONN_HEADER,
};
use wacore_noise::NoiseCipher;
use wacore_noise::NoiseHandshake;
use wacore_noise::framing::FrameDecoder;
use waproto::whatsapp as wa;

/// Which handshake pattern a connection completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HandshakeKind {
    /// Full handshake: a fresh device, or one without a cached certificate.
    Xx,
    /// Resumed login with the server's static key cached by the client.
    Ik,
    /// The client tried `IK` but the server could not decrypt it.
    XxFallback,
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("malformed handshake message: {0}")]
    Malformed(String),
    #[error("noise: {0}")]
    Noise(String),
}

impl HandshakeError {
    fn noise(e: impl std::fmt::Display) -> Self {
        Self::Noise(e.to_string())
    }
}

/// The server's long-lived identity: its static Noise key and the certificate
/// chain that binds it. The chain has the structure the client checks
/// (intermediate issuer serial 0, leaf issuer serial = intermediate serial,
/// leaf key = this static key) but zero signatures, which is why the client
/// under test must be built with whatsapp-rust's certificate-chain skip.
pub struct ServerIdentity {
    pub(crate) static_kp: KeyPair,
    pub(crate) cert_chain: Vec<u8>,
}

impl ServerIdentity {
    pub fn generate() -> Self {
        let static_kp = KeyPair::generate(&mut rand::rng());
        let cert_chain = wacore_noise::test_util::build_cert_chain_bytes(&pub_bytes(&static_kp));
        Self {
            static_kp,
            cert_chain,
        }
    }

    fn static_pub(&self) -> [u8; 32] {
        pub_bytes(&self.static_kp)
    }
}

pub(crate) fn pub_bytes(kp: &KeyPair) -> [u8; 32] {
    let mut out = [0u8; 32];
    let bytes = kp.public_key.public_key_bytes();
    let n = bytes.len().min(32);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// What the responder needs to send next after reading the client's first
/// message.
pub(crate) enum HelloReply {
    /// `IK` succeeded in one round trip: send the ServerHello and the session
    /// is open.
    Done {
        server_hello: Vec<u8>,
        session: Box<Established>,
    },
    /// `XX` or `XXfallback`: send the ServerHello, then read the ClientFinish.
    AwaitFinish {
        server_hello: Vec<u8>,
        pending: Box<PendingXx>,
    },
}

/// A completed handshake: the transport ciphers, the client's static key and
/// its decrypted `ClientPayload`.
pub struct Established {
    pub kind: HandshakeKind,
    pub client_static: [u8; 32],
    pub payload: wa::ClientPayload,
    pub(crate) ciphers: Ciphers,
}

/// `XX` state between the ServerHello and the ClientFinish.
pub(crate) struct PendingXx {
    kind: HandshakeKind,
    noise: NoiseHandshake,
    server_eph: KeyPair,
}

/// Reads the client's first handshake message and answers it.
pub(crate) fn respond_to_hello(
    identity: &ServerIdentity,
    hello_frame: &[u8],
) -> Result<HelloReply, HandshakeError> {
    let hello = decode_handshake(hello_frame)?
        .client_hello
        .into_option()
        .ok_or_else(|| HandshakeError::Malformed("no client hello".into()))?;
    let client_eph: [u8; 32] = hello
        .ephemeral
        .as_deref()
        .and_then(|e| e.try_into().ok())
        .ok_or_else(|| HandshakeError::Malformed("client ephemeral missing".into()))?;

    match (hello.r#static.as_deref(), hello.payload.as_deref()) {
        (Some(enc_static), Some(enc_payload)) => {
            match try_ik(identity, &client_eph, enc_static, enc_payload)? {
                Some(reply) => Ok(reply),
                None => start_xx(identity, &client_eph, HandshakeKind::XxFallback),
            }
        }
        _ => start_xx(identity, &client_eph, HandshakeKind::Xx),
    }
}

fn decode_handshake(frame: &[u8]) -> Result<wa::HandshakeMessage, HandshakeError> {
    wa::HandshakeMessage::decode_from_slice(frame)
        .map_err(|e| HandshakeError::Malformed(e.to_string()))
}

/// `XX` (and `XXfallback`) message 2: `<- e, ee, s, es` plus the certificate.
fn start_xx(
    identity: &ServerIdentity,
    client_eph: &[u8; 32],
    kind: HandshakeKind,
) -> Result<HelloReply, HandshakeError> {
    let pattern = match kind {
        HandshakeKind::XxFallback => NOISE_PATTERN_XXFALLBACK,
        _ => NOISE_PATTERN_XX,
    };
    let mut noise = NoiseHandshake::new(pattern, &WA_CONN_HEADER).map_err(HandshakeError::noise)?;
    noise.authenticate(client_eph);
    let server_eph = KeyPair::generate(&mut rand::rng());
    let server_eph_pub = pub_bytes(&server_eph);
    noise.authenticate(&server_eph_pub);
    noise
        .mix_shared_secret(server_eph.private_key.serialize(), client_eph)
        .map_err(HandshakeError::noise)?;
    let enc_static = noise
        .encrypt(&identity.static_pub())
        .map_err(HandshakeError::noise)?;
    noise
        .mix_shared_secret(identity.static_kp.private_key.serialize(), client_eph)
        .map_err(HandshakeError::noise)?;
    let enc_cert = noise
        .encrypt(&identity.cert_chain)
        .map_err(HandshakeError::noise)?;
    Ok(HelloReply::AwaitFinish {
        server_hello: server_hello(server_eph_pub, Some(enc_static), enc_cert),
        pending: Box::new(PendingXx {
            kind,
            noise,
            server_eph,
        }),
    })
}

impl PendingXx {
    /// `XX` message 3: `-> s, se` plus the client's payload.
    pub(crate) fn finish(mut self, finish_frame: &[u8]) -> Result<Established, HandshakeError> {
        let finish = decode_handshake(finish_frame)?
            .client_finish
            .into_option()
            .ok_or_else(|| HandshakeError::Malformed("no client finish".into()))?;
        let enc_static = finish
            .r#static
            .ok_or_else(|| HandshakeError::Malformed("client static missing".into()))?;
        let enc_payload = finish
            .payload
            .ok_or_else(|| HandshakeError::Malformed("client payload missing".into()))?;
        let client_static: [u8; 32] = self
            .noise
            .decrypt(&enc_static)
            .map_err(HandshakeError::noise)?
            .try_into()
            .map_err(|_| HandshakeError::Malformed("client static is not 32 bytes".into()))?;
        self.noise
            .mix_shared_secret(self.server_eph.private_key.serialize(), &client_static)
            .map_err(HandshakeError::noise)?;
        let payload = self
            .noise
            .decrypt(&enc_payload)
            .map_err(HandshakeError::noise)?;
        let payload = wa::ClientPayload::decode_from_slice(&payload)
            .map_err(|e| HandshakeError::Malformed(format!("client payload: {e}")))?;
        let (read, write) = self.noise.finish().map_err(HandshakeError::noise)?;
        Ok(Established {
            kind: self.kind,
            client_static,
            payload,
            ciphers: Ciphers::new(read, write),
        })
    }
}

/// `IK`: `-> e, es, s, ss` with the payload, answered by `<- e, ee, se`.
/// Returns `None` when the client's static cannot be decrypted, i.e. it
/// encrypted to a static key this server does not hold: the caller falls back
/// to `XXfallback` as the real server does.
fn try_ik(
    identity: &ServerIdentity,
    client_eph: &[u8; 32],
    enc_static: &[u8],
    enc_payload: &[u8],
) -> Result<Option<HelloReply>, HandshakeError> {
    let mut noise =
        NoiseHandshake::new(NOISE_PATTERN_IK, &WA_CONN_HEADER).map_err(HandshakeError::noise)?;
    noise.authenticate(&identity.static_pub());
    noise.authenticate(client_eph);
    noise
        .mix_shared_secret(identity.static_kp.private_key.serialize(), client_eph)
        .map_err(HandshakeError::noise)?;
    let Ok(client_static) = noise.decrypt(enc_static) else {
        return Ok(None);
    };
    let client_static: [u8; 32] = client_static
        .try_into()
        .map_err(|_| HandshakeError::Malformed("client static is not 32 bytes".into()))?;
    noise
        .mix_shared_secret(identity.static_kp.private_key.serialize(), &client_static)
        .map_err(HandshakeError::noise)?;
    let Ok(payload) = noise.decrypt(enc_payload) else {
        return Ok(None);
    };
    let payload = wa::ClientPayload::decode_from_slice(&payload)
        .map_err(|e| HandshakeError::Malformed(format!("client payload: {e}")))?;

    let server_eph = KeyPair::generate(&mut rand::rng());
    let server_eph_pub = pub_bytes(&server_eph);
    noise.authenticate(&server_eph_pub);
    noise
        .mix_shared_secret(server_eph.private_key.serialize(), client_eph)
        .map_err(HandshakeError::noise)?;
    noise
        .mix_shared_secret(server_eph.private_key.serialize(), &client_static)
        .map_err(HandshakeError::noise)?;
    let enc_cert = noise
        .encrypt(&identity.cert_chain)
        .map_err(HandshakeError::noise)?;
    let (read, write) = noise.finish().map_err(HandshakeError::noise)?;
    Ok(Some(HelloReply::Done {
        server_hello: server_hello(server_eph_pub, None, enc_cert),
        session: Box::new(Established {
            kind: HandshakeKind::Ik,
            client_static,
            payload,
            ciphers: Ciphers::new(read, write),
        }),
    }))
}

fn server_hello(ephemeral: [u8; 32], enc_static: Option<Vec<u8>>, enc_cert: Vec<u8>) -> Vec<u8> {
    wa::HandshakeMessage {
        server_hello: buffa::MessageField::some(wa::handshake_message::ServerHello {
            ephemeral: Some(ephemeral.to_vec()),
            r#static: enc_static,
            payload: Some(enc_cert),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The transport ciphers of an open session. Each direction counts its own
/// frames from zero; the server reads with the first split key and writes
/// with the second (the mirror of the client).
pub(crate) struct Ciphers {
    read: NoiseCipher,
    write: NoiseCipher,
    read_counter: u32,
    write_counter: u32,
}

impl Ciphers {
    fn new(read: NoiseCipher, write: NoiseCipher) -> Self {
        Self {
            read,
            write,
            read_counter: 0,
            write_counter: 0,
        }
    }

    /// Encrypts one marshalled node and frames it (3-byte length prefix).
    pub(crate) fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        let ciphertext = self
            .write
            .encrypt_with_counter(self.write_counter, plaintext)
            .map_err(HandshakeError::noise)?;
        self.write_counter = self.write_counter.wrapping_add(1);
        frame(&ciphertext)
    }

    /// Decrypts one inbound frame body.
    pub(crate) fn open(&mut self, frame: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        let mut buf = frame.to_vec();
        self.read
            .decrypt_in_place_with_counter(self.read_counter, &mut buf)
            .map_err(HandshakeError::noise)?;
        self.read_counter = self.read_counter.wrapping_add(1);
        Ok(buf)
    }
}

/// Prefixes a payload with its 3-byte big-endian length.
pub(crate) fn frame(payload: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    wacore_noise::framing::encode_frame(payload, None).map_err(HandshakeError::noise)
}

/// Splits the client's byte stream into frames. The very first bytes a client
/// sends are the 4-byte connection header, which is not part of any frame.
pub(crate) struct InboundFrames {
    decoder: FrameDecoder,
    header_seen: bool,
}

impl InboundFrames {
    pub(crate) fn new() -> Self {
        Self {
            decoder: FrameDecoder::new(),
            header_seen: false,
        }
    }

    /// Feeds one WebSocket message; returns `Err` when the stream does not
    /// start with the WhatsApp connection header.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(), HandshakeError> {
        let data = if self.header_seen {
            data
        } else {
            self.header_seen = true;
            data.strip_prefix(&WA_CONN_HEADER[..]).ok_or_else(|| {
                HandshakeError::Malformed("stream does not start with the WA header".into())
            })?
        };
        self.decoder.feed(data);
        Ok(())
    }

    pub(crate) fn next_frame(&mut self) -> Option<Vec<u8>> {
        self.decoder.decode_frame().map(|b| b.to_vec())
    }
}
