//! Detects a build that skips WhatsApp's certificate-chain check.
//!
//! Tests run the agent against the fake server, which cannot sign as
//! WhatsApp, so test builds link whatsapp-rust with
//! `danger-skip-cert-chain-verify`. Cargo's feature unification decides
//! that, not this crate, so the agent does not trust a flag of its own: it
//! asks the linked code directly whether it accepts an unsigned chain. Such
//! a build says so at start and in `version`, and refuses any WhatsApp
//! endpoint that is not on loopback.
//!
//! Plain rules (the bottom layer): it imports nothing of the agent, and nothing
//! above may be imported here.

use buffa::Message as _;
use waproto::whatsapp as wa;

/// True when the linked handshake code accepts a certificate chain without
/// valid signatures.
pub fn skips_certificate_check() -> bool {
    let server_static = [7u8; 32];
    let details = |serial: u32, issuer: u32, key: Vec<u8>| {
        wa::cert_chain::noise_certificate::Details {
            serial: Some(serial),
            issuer_serial: Some(issuer),
            key: Some(key),
            not_before: Some(1_700_000_000),
            not_after: Some(4_000_000_000),
        }
        .encode_to_vec()
    };
    let chain = wa::CertChain {
        intermediate: buffa::MessageField::some(wa::cert_chain::NoiseCertificate {
            details: Some(details(1, 0, vec![9u8; 32])),
            signature: Some(vec![0u8; 64]),
        }),
        leaf: buffa::MessageField::some(wa::cert_chain::NoiseCertificate {
            details: Some(details(2, 1, server_static.to_vec())),
            signature: Some(vec![0u8; 64]),
        }),
    }
    .encode_to_vec();
    wacore_noise::HandshakeUtils::verify_server_cert(&chain, &server_static).is_ok()
}

/// Whether `endpoint` (a ws/wss URL) points at this machine.
pub fn is_loopback_endpoint(endpoint: &str) -> bool {
    let rest = endpoint
        .strip_prefix("ws://")
        .or_else(|| endpoint.strip_prefix("wss://"))
        .unwrap_or("");
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_builds_of_the_agent_skip_the_check() {
        // Tests are built with the skip (see Cargo.toml); packaging/check.sh
        // checks that the packaged release binary reports it absent.
        assert!(skips_certificate_check());
    }

    #[test]
    fn loopback_endpoints_are_recognised() {
        assert!(is_loopback_endpoint("ws://127.0.0.1:4000/ws/chat"));
        assert!(is_loopback_endpoint("ws://localhost:1/ws/chat"));
        assert!(is_loopback_endpoint("ws://[::1]:80/ws/chat"));
        assert!(!is_loopback_endpoint("wss://web.whatsapp.com/ws/chat"));
        assert!(!is_loopback_endpoint("ws://10.0.0.1/ws/chat"));
        assert!(!is_loopback_endpoint("nonsense"));
    }
}
