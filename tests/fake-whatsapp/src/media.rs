//! The media host: WhatsApp's media servers (`mmg.whatsapp.net`) on a
//! loopback HTTPS port, holding encrypted blobs.
//!
//! What a client sees is what whatsapp-rust, whatsmeow and Baileys use:
//!
//! - the `w:m` IQ `<media_conn/>` answers an `auth` token, its TTLs and the
//!   host (`127.0.0.1:<port>` here; real hosts are names on 443);
//! - an upload is `POST /mms/<type>/<token>?auth=<auth>&token=<token>` with
//!   the ciphertext as the body, where `token` is the URL-safe base64 of the
//!   ciphertext's SHA-256; the host checks both and answers
//!   `{"url", "direct_path"}`; `&resume=1` asks whether it is there already;
//! - a download is `GET https://<host><direct_path>` with `token=` (or
//!   whatsmeow's `hash=`) naming the same hash, after a `?` or an `&`
//!   (direct paths carry their own query); unknown paths are 404.
//!
//! Faults for the next download (`media-fail`): 404 (never there) and 410
//! (expired, as WhatsApp drops files after some weeks) make the file asked
//! for gone for good, as on WhatsApp, where a client that refreshes its
//! `media_conn` and asks again gets the same answer; 500 and a body cut in
//! half are for that one request. The certificate is self-signed for 127.0.0.1; clients trust it
//! through [`MediaHost::ca_pem`] or [`LoopbackHttpClient`].

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The largest upload taken (WhatsApp's own limit for documents is 2 GB;
/// a test needs far less).
pub const MAX_UPLOAD: usize = 64 * 1024 * 1024;
/// Blobs kept at once, in bytes; the oldest go first.
pub const MAX_STORED: usize = 512 * 1024 * 1024;
/// How long a `media_conn` is valid (seconds), as WhatsApp answers.
pub const MEDIA_CONN_TTL: u64 = 300;

/// A fault for the next download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaFault {
    NotFound,
    Gone,
    ServerError,
    /// The body cut in half: the hash check must catch it.
    Truncate,
}

impl std::str::FromStr for MediaFault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "404" => Ok(Self::NotFound),
            "410" => Ok(Self::Gone),
            "500" => Ok(Self::ServerError),
            "truncate" => Ok(Self::Truncate),
            other => Err(format!(
                "unknown media fault {other:?} (404, 410, 500, truncate, off)"
            )),
        }
    }
}

/// Counters tests read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MediaStats {
    pub uploads: u64,
    pub downloads: u64,
    pub refused: u64,
    pub stored: usize,
}

#[derive(Default)]
struct Store {
    /// By direct path (without its query).
    blobs: HashMap<String, Blob>,
    /// Paths in the order stored, for eviction.
    order: VecDeque<String>,
    /// Direct path by the ciphertext's hash (for `resume=1`).
    by_hash: HashMap<String, String>,
    bytes: usize,
    next_fault: Option<MediaFault>,
    /// Paths answered 404 or 410 for good.
    gone: HashMap<String, u16>,
    stats: MediaStats,
}

struct Blob {
    data: Bytes,
    /// URL-safe base64 of the ciphertext's SHA-256.
    token: String,
}

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running host. Dropping it stops it.
pub struct MediaHost {
    addr: SocketAddr,
    auth: String,
    cert_pem: String,
    cert_der: rustls::pki_types::CertificateDer<'static>,
    store: Arc<Mutex<Store>>,
    task: JoinHandle<()>,
}

impl Drop for MediaHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MediaHost {
    /// Binds a free loopback port and serves HTTPS on it.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .map_err(std::io::Error::other)?;
        let cert_der = certified.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .map_err(std::io::Error::other)?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let auth = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>());
        let store = Arc::new(Mutex::new(Store::default()));
        let task = tokio::spawn(serve(
            listener,
            acceptor,
            Arc::clone(&store),
            auth.clone(),
            addr,
        ));
        tracing::info!(%addr, "fake WhatsApp media host listening");
        Ok(Self {
            addr,
            auth,
            cert_pem: certified.cert.pem(),
            cert_der,
            store,
            task,
        })
    }

    /// `127.0.0.1:<port>`: the `hostname` a `media_conn` names.
    pub fn hostname(&self) -> String {
        self.addr.to_string()
    }

    /// The `auth` a `media_conn` hands out; uploads must carry it.
    pub fn auth(&self) -> &str {
        &self.auth
    }

    /// The host's certificate (PEM), for a client to trust.
    pub fn ca_pem(&self) -> &str {
        &self.cert_pem
    }

    /// An HTTP client for whatsapp-rust that trusts this host only.
    pub fn client(&self) -> Result<LoopbackHttpClient, rustls::Error> {
        LoopbackHttpClient::trusting(self.cert_der.clone())
    }

    /// The next download (by anyone but the simulated contacts) fails so;
    /// `None` clears it.
    pub fn fail_next(&self, fault: Option<MediaFault>) {
        lock(&self.store).next_fault = fault;
    }

    pub fn stats(&self) -> MediaStats {
        let store = lock(&self.store);
        MediaStats {
            stored: store.blobs.len(),
            ..store.stats
        }
    }

    /// Stores a ciphertext as an upload would (a simulated contact's file);
    /// returns its `url` and `direct_path`.
    pub fn put(&self, ciphertext: Vec<u8>, mms_type: &str) -> (String, String) {
        let direct_path = store(&self.store, ciphertext, mms_type);
        (url(self.addr, &direct_path), direct_path)
    }

    /// The ciphertext at `direct_path` (its query ignored), for a simulated
    /// contact's own download; faults do not apply to contacts.
    pub fn get(&self, direct_path: &str) -> Option<Bytes> {
        let path = direct_path.split(['?', '&']).next().unwrap_or_default();
        lock(&self.store).blobs.get(path).map(|b| b.data.clone())
    }
}

fn url(addr: SocketAddr, direct_path: &str) -> String {
    format!("https://{addr}{direct_path}&mms3=true")
}

/// Stores `ciphertext` under a new direct path shaped like WhatsApp's.
fn store(store: &Mutex<Store>, ciphertext: Vec<u8>, mms_type: &str) -> String {
    let token = URL_SAFE_NO_PAD.encode(Sha256::digest(&ciphertext));
    let mut store = lock(store);
    if let Some(existing) = store.by_hash.get(&token) {
        return existing.clone();
    }
    let ids: [u32; 3] = rand::random();
    let category = match mms_type {
        "image" => "t62.7118-24",
        "video" => "t62.7161-24",
        "audio" => "t62.7114-24",
        _ => "t62.7119-24",
    };
    let path = format!(
        "/v/{category}/{}_{}_{}_n.enc",
        ids[0] % 100_000_000,
        ids[1] % 100_000_000,
        ids[2] % 100_000_000
    );
    let direct_path = format!(
        "{path}?ccb=11-4&oh=01_{:016x}&oe={:08X}&_nc_sid=5e03e0",
        rand::random::<u64>(),
        rand::random::<u32>()
    );
    store.bytes += ciphertext.len();
    while store.bytes > MAX_STORED {
        let Some(oldest) = store.order.pop_front() else {
            break;
        };
        if let Some(blob) = store.blobs.remove(&oldest) {
            store.bytes -= blob.data.len();
            store.by_hash.remove(&blob.token);
        }
    }
    store.order.push_back(path.clone());
    store.by_hash.insert(token.clone(), direct_path.clone());
    store.blobs.insert(
        path,
        Blob {
            data: Bytes::from(ciphertext),
            token,
        },
    );
    store.stats.uploads += 1;
    direct_path
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    store: Arc<Mutex<Store>>,
    auth: String,
    addr: SocketAddr,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, store, auth) = (acceptor.clone(), Arc::clone(&store), auth.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(move |request| {
                let (store, auth) = (Arc::clone(&store), auth.clone());
                async move { Ok::<_, Infallible>(answer(request, &store, &auth, addr).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn respond(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response
}

fn json(status: u16, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = respond(status, value.to_string());
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The query's parameters, whether they follow a `?` or an `&` (a direct
/// path carries its own query; clients append theirs either way).
fn params(path_and_query: &str) -> HashMap<String, String> {
    path_and_query
        .split(['?', '&'])
        .skip(1)
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn answer(
    request: Request<Incoming>,
    store: &Mutex<Store>,
    auth: &str,
    addr: SocketAddr,
) -> Response<Full<Bytes>> {
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let path = target
        .split(['?', '&'])
        .next()
        .unwrap_or_default()
        .to_string();
    let params = params(&target);
    match (request.method(), path.strip_prefix("/mms/")) {
        (&Method::POST, Some(rest)) => {
            let Some((mms_type, token)) = rest.split_once('/') else {
                return json(404, serde_json::json!({"error": "no such upload path"}));
            };
            if params.get("auth").map(String::as_str) != Some(auth) {
                lock(store).stats.refused += 1;
                return json(401, serde_json::json!({"error": "unauthorized"}));
            }
            if params.get("resume").is_some_and(|r| r == "1") {
                return match lock(store).by_hash.get(token) {
                    Some(direct_path) => json(
                        200,
                        serde_json::json!({
                            "resume": "complete",
                            "url": url(addr, direct_path),
                            "direct_path": direct_path,
                        }),
                    ),
                    None => json(404, serde_json::json!({"error": "not found"})),
                };
            }
            let body = match Limited::new(request.into_body(), MAX_UPLOAD)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes(),
                Err(_) => return json(413, serde_json::json!({"error": "too large"})),
            };
            if URL_SAFE_NO_PAD.encode(Sha256::digest(&body)) != token {
                lock(store).stats.refused += 1;
                return json(400, serde_json::json!({"error": "hash mismatch"}));
            }
            let mms_type = mms_type.to_string();
            let direct_path = self::store(store, body.to_vec(), &mms_type);
            json(
                200,
                serde_json::json!({"url": url(addr, &direct_path), "direct_path": direct_path}),
            )
        }
        (&Method::GET, _) => {
            let mut store = lock(store);
            if let Some(status) = store.gone.get(&path) {
                return respond(*status, "gone");
            }
            let Some(blob) = store.blobs.get(&path) else {
                return respond(404, "not found");
            };
            let token = params.get("token").or_else(|| params.get("hash"));
            if token.is_some_and(|t| *t != blob.token) {
                return respond(403, "wrong token");
            }
            let data = blob.data.clone();
            store.stats.downloads += 1;
            match store.next_fault.take() {
                None => respond(200, data),
                Some(MediaFault::NotFound) => {
                    store.gone.insert(path, 404);
                    respond(404, "not found")
                }
                Some(MediaFault::Gone) => {
                    store.gone.insert(path, 410);
                    respond(410, "gone")
                }
                Some(MediaFault::ServerError) => respond(500, "internal error"),
                Some(MediaFault::Truncate) => respond(200, data.slice(..data.len() / 2)),
            }
        }
        _ => respond(404, "not found"),
    }
}

/// A file a simulated contact received: downloaded from the host and
/// decrypted with the message's media key (both hashes checked).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReceivedFile {
    /// `image`, `video`, `audio`, `voice`, `document`, `sticker`.
    pub kind: String,
    pub mimetype: Option<String>,
    pub file_name: Option<String>,
    /// The plaintext's size and SHA-256 (hex), when it could be had.
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// Why it could not be had (not on the host, a hash or MAC mismatch).
    pub error: Option<String>,
}

/// What the media fields of a message say, whatever its kind.
struct MediaFields<'a> {
    kind: &'static str,
    media_type: wacore::download::MediaType,
    mimetype: Option<&'a String>,
    file_name: Option<&'a String>,
    direct_path: Option<&'a String>,
    media_key: Option<&'a Vec<u8>>,
    file_sha256: Option<&'a Vec<u8>>,
    file_enc_sha256: Option<&'a Vec<u8>>,
}

/// The same fields of every media message type (the protobuf types differ,
/// their field names do not).
macro_rules! fields_of {
    ($m:expr, $kind:expr, $media_type:expr, $file_name:expr) => {
        MediaFields {
            kind: $kind,
            media_type: $media_type,
            mimetype: $m.mimetype.as_ref(),
            file_name: $file_name,
            direct_path: $m.direct_path.as_ref(),
            media_key: $m.media_key.as_ref(),
            file_sha256: $m.file_sha256.as_ref(),
            file_enc_sha256: $m.file_enc_sha256.as_ref(),
        }
    };
}

fn media_fields(m: &waproto::whatsapp::Message) -> Option<MediaFields<'_>> {
    use wacore::download::MediaType;
    if let Some(i) = m.image_message.as_option() {
        return Some(fields_of!(i, "image", MediaType::Image, None));
    }
    if let Some(v) = m.video_message.as_option() {
        return Some(fields_of!(v, "video", MediaType::Video, None));
    }
    if let Some(a) = m.audio_message.as_option() {
        let kind = if a.ptt == Some(true) {
            "voice"
        } else {
            "audio"
        };
        return Some(fields_of!(a, kind, MediaType::Audio, None));
    }
    if let Some(d) = m.document_message.as_option() {
        return Some(fields_of!(
            d,
            "document",
            MediaType::Document,
            d.file_name.as_ref()
        ));
    }
    if let Some(s) = m.sticker_message.as_option() {
        return Some(fields_of!(s, "sticker", MediaType::Sticker, None));
    }
    None
}

/// Downloads and decrypts the file `message` carries, as a phone would.
pub(crate) fn received_file(
    host: &MediaHost,
    message: &waproto::whatsapp::Message,
) -> Option<ReceivedFile> {
    let message = wacore::messages::unwrap_device_sent(message.clone());
    let fields = media_fields(&message)?;
    let mut file = ReceivedFile {
        kind: fields.kind.to_string(),
        mimetype: fields.mimetype.cloned(),
        file_name: fields.file_name.cloned(),
        size: None,
        sha256: None,
        error: None,
    };
    let outcome = (|| {
        let path = fields.direct_path.ok_or("no direct_path")?;
        let key = fields.media_key.ok_or("no media_key")?;
        let ciphertext = host.get(path).ok_or("not on the media host")?;
        if let Some(enc) = fields.file_enc_sha256
            && Sha256::digest(&ciphertext).as_slice() != enc.as_slice()
        {
            return Err("file_enc_sha256 does not match the download");
        }
        let plain = wacore::download::DownloadUtils::verify_and_decrypt(
            &ciphertext,
            key,
            fields.media_type,
        )
        .map_err(|_| "the media MAC or padding is wrong")?;
        let sha = Sha256::digest(&plain);
        if fields
            .file_sha256
            .is_some_and(|s| s.as_slice() != sha.as_slice())
        {
            return Err("file_sha256 does not match the plaintext");
        }
        Ok((plain.len() as u64, hex(&sha)))
    })();
    match outcome {
        Ok((size, sha)) => {
            file.size = Some(size);
            file.sha256 = Some(sha);
        }
        Err(why) => file.error = Some(why.to_string()),
    }
    Some(file)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A message carrying `data` as a file named `file_name`: encrypted with a
/// fresh media key (wacore's media encryption, as every client does),
/// stored on `host`, and described with its url, direct path, key, both
/// hashes and length. The kind follows the extension: `.jpg`/`.png` an
/// image, `.mp4` a video, `.ogg`/`.opus` a voice note, `.mp3`/`.m4a` audio,
/// `.webp` a sticker, anything else a document.
pub(crate) fn file_message(
    host: &MediaHost,
    file_name: &str,
    data: &[u8],
    caption: &str,
) -> anyhow::Result<waproto::whatsapp::Message> {
    use wacore::download::MediaType;
    use waproto::whatsapp::{self as wa, message as m};
    let extension = file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let (media_type, mimetype) = match extension.as_str() {
        "jpg" | "jpeg" => (MediaType::Image, "image/jpeg"),
        "png" => (MediaType::Image, "image/png"),
        "mp4" => (MediaType::Video, "video/mp4"),
        "ogg" | "opus" => (MediaType::Audio, "audio/ogg; codecs=opus"),
        "mp3" => (MediaType::Audio, "audio/mpeg"),
        "m4a" => (MediaType::Audio, "audio/mp4"),
        "webp" => (MediaType::Sticker, "image/webp"),
        "pdf" => (MediaType::Document, "application/pdf"),
        _ => (MediaType::Document, "application/octet-stream"),
    };
    let enc = wacore::upload::encrypt_media(data, media_type)?;
    let (url, direct_path) = host.put(enc.data_to_upload, media_type.mms_type());
    let caption = Some(caption.to_string()).filter(|c| !c.is_empty());
    let (url, direct_path) = (Some(url), Some(direct_path));
    let (key, sha, enc_sha) = (
        Some(enc.media_key.to_vec()),
        Some(enc.file_sha256.to_vec()),
        Some(enc.file_enc_sha256.to_vec()),
    );
    let length = Some(data.len() as u64);
    let timestamp = Some(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    );
    let mimetype = Some(mimetype.to_string());
    // Every media message type has these fields under the same names.
    macro_rules! media {
        ($ty:ident { $($field:ident $(: $value:expr)?),* $(,)? }) => {
            buffa::MessageField::some(m::$ty {
                url,
                direct_path,
                mimetype,
                file_sha256: sha,
                file_enc_sha256: enc_sha,
                media_key: key,
                file_length: length,
                media_key_timestamp: timestamp,
                $($field $(: $value)?,)*
                ..Default::default()
            })
        };
    }
    let sidecar = enc.streaming_sidecar;
    let mut message = wa::Message::default();
    match media_type {
        MediaType::Image => message.image_message = media!(ImageMessage { caption }),
        MediaType::Video => {
            message.video_message = media!(VideoMessage {
                caption,
                streaming_sidecar: sidecar,
            });
        }
        MediaType::Audio => {
            let ptt = Some(extension == "ogg" || extension == "opus");
            message.audio_message = media!(AudioMessage {
                ptt,
                streaming_sidecar: sidecar,
            });
        }
        MediaType::Sticker => message.sticker_message = media!(StickerMessage {}),
        _ => {
            let name = Some(file_name.to_string());
            message.document_message = media!(DocumentMessage {
                caption,
                title: name.clone(),
                file_name: name,
            });
        }
    }
    Ok(message)
}

/// A `wacore::net::HttpClient` that speaks to the media host only: HTTPS
/// (hyper over rustls), trusting the host's own certificate. For clients
/// under test, which must not skip certificate checks to reach it.
#[derive(Clone)]
pub struct LoopbackHttpClient {
    connector: TlsConnector,
}

impl LoopbackHttpClient {
    pub fn trusting(
        cert: rustls::pki_types::CertificateDer<'static>,
    ) -> Result<Self, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert)?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }
}

#[async_trait::async_trait]
impl wacore::net::HttpClient for LoopbackHttpClient {
    async fn execute(
        &self,
        request: wacore::net::HttpRequest,
    ) -> anyhow::Result<wacore::net::HttpResponse> {
        let uri: hyper::Uri = request.url.parse()?;
        let host = uri.host().unwrap_or("127.0.0.1").to_string();
        let port = uri.port_u16().unwrap_or(443);
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())?;
        let tls = self.connector.connect(name, tcp).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut builder = Request::builder()
            .method(request.method.as_str())
            .uri(target)
            .header(hyper::header::HOST, format!("{host}:{port}"));
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let body = request.body.unwrap_or_default();
        let response = sender.send_request(builder.body(Full::new(body))?).await?;
        let status_code = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_UPLOAD)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the media host's answer: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(wacore::net::HttpResponse { status_code, body })
    }
}
