//! The WebSocket to WhatsApp, with Nagle's algorithm off.
//!
//! whatsapp-rust's own transport factory connects with defaults, and Nagle
//! holds each small stanza written right after another one (the acks of a
//! receipt, then the next message) until the server's delayed ACK: about
//! 40 ms on Linux. The messages bench measured it: back-to-back sends took
//! 35 ms each and an unpaced broadcast topped out at 22 messages/s; with
//! `TCP_NODELAY` the same broadcast ran at 344 messages/s and a send reached
//! the customer in 2 ms. Everything else is the library's: its TLS connector
//! (rustls with ring, the web PKI roots), its `Origin`, its framing
//! (`from_websocket`).

use std::sync::Arc;

use async_trait::async_trait;
use whatsapp_rust::transport::{
    Transport, TransportEvent, TransportFactory, default_tls_connector, from_websocket,
};

/// Connects to `url` (`wss://…` or, for the fake server, `ws://…`).
pub struct NoDelayTransportFactory {
    url: String,
}

impl NoDelayTransportFactory {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into() }
    }
}

#[async_trait]
impl TransportFactory for NoDelayTransportFactory {
    async fn create_transport(
        &self,
    ) -> anyhow::Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>)> {
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|e| anyhow::anyhow!("bad WhatsApp endpoint {:?}: {e}", self.url))?;
        let tls = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            other => anyhow::bail!("unsupported WhatsApp endpoint scheme {other:?}"),
        };
        let host = uri
            .host()
            .ok_or_else(|| anyhow::anyhow!("the WhatsApp endpoint has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        let connector = if tls {
            default_tls_connector()
        } else {
            tokio_websockets::Connector::Plain
        };
        let stream = connector.wrap(&host, tcp).await?;
        let origin =
            http::HeaderValue::from_static(whatsapp_rust::wacore::net::WHATSAPP_WEB_ORIGIN);
        let (ws, _) = tokio_websockets::ClientBuilder::from_uri(uri)
            .add_header(http::header::ORIGIN, origin)?
            .connect_on(stream)
            .await?;
        Ok(from_websocket(ws))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// What the factory writes first on a connection to `scheme://`.
    async fn first_bytes(scheme: &str) -> Vec<u8> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let factory = NoDelayTransportFactory::new(format!("{scheme}://localhost:{port}/ws/chat"));
        let dial = tokio::spawn(async move { factory.create_transport().await.is_ok() });
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut first = vec![0u8; 16];
        socket.read_exact(&mut first).await.unwrap();
        drop(socket);
        assert!(!dial.await.unwrap(), "nothing answered, so no transport");
        first
    }

    #[tokio::test]
    async fn wss_speaks_tls_and_ws_speaks_plain_http() {
        // A TLS handshake record (0x16) for WhatsApp, the upgrade request in
        // the clear for the fake server.
        assert_eq!(first_bytes("wss").await[0], 0x16);
        assert!(first_bytes("ws").await.starts_with(b"GET /ws/chat"));
    }

    #[tokio::test]
    async fn other_schemes_are_refused() {
        let e = NoDelayTransportFactory::new("http://localhost/ws/chat")
            .create_transport()
            .await
            .err()
            .expect("refused");
        assert!(e.to_string().contains("scheme"), "{e}");
    }
}
