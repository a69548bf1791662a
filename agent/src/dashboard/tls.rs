//! HTTPS for the dashboard when it is given a certificate (`--tls-cert`,
//! `--tls-key`, PEM): the token, the session cookie and the fleet's state
//! then cross HQ's network encrypted, and the cookie is marked `Secure`.
//! The same rustls (ring) as the MQTT client; TLS 1.2 and 1.3.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::mqtt::options::{OptionsError, read_certs, read_key};

/// The certificate (chain) and its key, as given on the command line.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file that cannot be read or holds no usable PEM (the same reading
    /// as the MQTT client's certificate files).
    #[error(transparent)]
    File(#[from] OptionsError),
    #[error("--tls-cert and --tls-key do not make a usable server certificate: {0}")]
    Config(String),
}

/// An acceptor for `files`; every problem names the file it is in.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let certs = read_certs("--tls-cert", &files.cert)?;
    let key = read_key("--tls-key", &files.key)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_files_are_named() {
        let dir = tempfile::tempdir().expect("dir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let files = TlsFiles {
            cert: empty.clone(),
            key: dir.path().join("missing.pem"),
        };
        let err = acceptor(&files).err().expect("no certificate").to_string();
        assert!(
            err.contains("--tls-cert") && err.contains("empty.pem"),
            "{err}"
        );
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let cert_path = dir.path().join("cert.pem");
        std::fs::write(&cert_path, cert.cert.pem()).expect("write");
        let files = TlsFiles {
            cert: cert_path,
            key: dir.path().join("missing.pem"),
        };
        let err = acceptor(&files).err().expect("no key").to_string();
        assert!(
            err.contains("--tls-key") && err.contains("missing.pem"),
            "{err}"
        );
    }
}
