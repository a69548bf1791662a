//! `outlet-agent version`: the version and what this build does, so an
//! insecure test build can never pass for a release.

use super::CmdResult;

pub fn run() -> CmdResult {
    println!("outlet-agent {}", env!("CARGO_PKG_VERSION"));
    println!("whatsapp-rust 0.7, TLS: rustls (ring)");
    if cfg!(feature = "hq") {
        println!("HQ tools (fleet, its dashboard and audit): built in");
    } else {
        println!("HQ tools (fleet, its dashboard and audit): not built (the outlet's package)");
    }
    if crate::cert_check::skips_certificate_check() {
        println!("certificate-chain verification: SKIPPED (test build; loopback endpoints only)");
    } else {
        println!("certificate-chain verification: enforced");
    }
    Ok(())
}
