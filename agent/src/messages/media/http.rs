//! The HTTPS client whatsapp-rust fetches media with: its own ureq client
//! (blocking reads streamed through decryption to disk, so a 50 MB video
//! costs kilobytes of memory) on a ureq agent set up here:
//!
//! - rustls on ring, the one crypto provider of the agent;
//! - Mozilla's roots, or only `whatsapp.media_ca_file` when it is set;
//! - a read or write that stalls for [`STALL`] ends the request (the
//!   download is then tried again), so a dead connection cannot hold the
//!   download worker forever; connecting may take [`CONNECT`].

use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig};
use whatsapp_rust::wacore::net as wacore_net;
use whatsapp_rust_ureq_http_client::UreqHttpClient;

use crate::mqtt::options::{OptionsError, read_certs};

/// The longest a read or write may stall.
pub const STALL: Duration = Duration::from_secs(60);
/// The longest a connection may take to open.
pub const CONNECT: Duration = Duration::from_secs(20);

/// The client for a session. `media_ca_file`: trust only the certificates
/// in that PEM file (read as the MQTT link's CA files are; an error names
/// the key and the file).
pub fn client(media_ca_file: Option<&std::path::Path>) -> Result<UreqHttpClient, OptionsError> {
    let roots = match media_ca_file {
        None => RootCerts::WebPki,
        Some(path) => {
            let certs = read_certs("whatsapp.media_ca_file", path)?
                .iter()
                .map(|der| Certificate::from_der(der.as_ref()).to_owned())
                .collect();
            RootCerts::Specific(Arc::new(certs))
        }
    };
    let tls = TlsConfig::builder()
        .root_certs(roots)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    let agent: ureq::Agent = ureq::config::Config::builder()
        .tls_config(tls)
        .input_buffer_size(16 * 1024)
        .output_buffer_size(16 * 1024)
        .max_idle_connections(2)
        .max_idle_connections_per_host(1)
        .timeout_connect(Some(CONNECT))
        .timeout_per_read(Some(STALL))
        .timeout_per_write(Some(STALL))
        .build()
        .into();
    Ok(UreqHttpClient::with_agent(agent))
}

/// What a session fetches media with: the client above, or none (messages
/// off, or a `media_ca_file` that cannot be read: downloads then fail and
/// are tried again, and the session itself is not touched).
pub struct MediaHttp(Option<UreqHttpClient>);

impl MediaHttp {
    /// `enabled`: messages are on. A bad CA file is logged here.
    pub fn for_session(enabled: bool, media_ca_file: Option<&std::path::Path>) -> Self {
        if !enabled {
            return Self(None);
        }
        match client(media_ca_file) {
            Ok(client) => Self(Some(client)),
            Err(e) => {
                tracing::error!(error = %e, "media: no HTTPS client; received files cannot be fetched");
                Self(None)
            }
        }
    }

    fn inner(&self) -> anyhow::Result<&UreqHttpClient> {
        self.0
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("media downloads are off (see the log)"))
    }
}

#[async_trait::async_trait]
impl wacore_net::HttpClient for MediaHttp {
    async fn execute(
        &self,
        request: wacore_net::HttpRequest,
    ) -> anyhow::Result<wacore_net::HttpResponse> {
        self.inner()?.execute(request).await
    }

    fn supports_streaming(&self) -> bool {
        self.0.as_ref().is_some_and(|c| c.supports_streaming())
    }

    fn execute_streaming(
        &self,
        request: wacore_net::HttpRequest,
    ) -> anyhow::Result<wacore_net::StreamingHttpResponse> {
        self.inner()?.execute_streaming(request)
    }

    fn supports_upload_streaming(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|c| c.supports_upload_streaming())
    }

    fn execute_upload(
        &self,
        request: wacore_net::HttpRequest,
        body: wacore_net::UploadBody,
        content_length: u64,
    ) -> anyhow::Result<wacore_net::HttpResponse> {
        self.inner()?.execute_upload(request, body, content_length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusable_ca_file_is_an_error_naming_the_key() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let missing = dir.path().join("missing.pem");
        let Err(e) = client(Some(&missing)) else {
            panic!("a missing file is an error");
        };
        let e = e.to_string();
        assert!(e.contains("whatsapp.media_ca_file"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("written");
        let Err(e) = client(Some(&empty)) else {
            panic!("a file without a certificate is an error");
        };
        let e = e.to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        assert!(client(None).is_ok());
    }
}
