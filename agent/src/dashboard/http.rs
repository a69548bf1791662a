//! Just enough HTTP/1.1 for the dashboard: one request per connection
//! (`Connection: close`), a bounded head and body, and the server-sent
//! events stream. `httparse` (already in the build, through the WebSocket
//! client) parses; nothing else is needed for a page, a JSON API of a few
//! routes and one long-lived event stream, and a full server framework
//! would add more to the Pi's binary than the whole dashboard.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A request head larger than this is refused (431).
pub const MAX_HEAD: usize = 16 * 1024;
/// A request body larger than this is refused (413): actions carry a few
/// fields at most.
pub const MAX_BODY: usize = 16 * 1024;
const MAX_HEADERS: usize = 48;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HttpError {
    #[error("connection closed before a whole request")]
    Closed,
    #[error("{0}")]
    Io(String),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request head over {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("request body over {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("chunked request bodies are not accepted; send Content-Length")]
    LengthRequired,
}

impl HttpError {
    /// The status to answer with, when there is still someone to answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Closed | Self::Io(_) => None,
            Self::Malformed(_) => Some(400),
            Self::HeadTooLarge => Some(431),
            Self::BodyTooLarge => Some(413),
            Self::LengthRequired => Some(411),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: String,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request.
pub async fn read_request(stream: &mut (impl AsyncRead + Unpin)) -> Result<Request, HttpError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        read_more(stream, &mut chunk, &mut buf).await?;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(HttpError::HeadTooLarge);
                }
            }
            Err(e) => return Err(HttpError::Malformed(e.to_string())),
            Ok(httparse::Status::Complete(head_len)) => {
                if head_len > MAX_HEAD {
                    return Err(HttpError::HeadTooLarge);
                }
                let method = parsed.method.unwrap_or_default().to_string();
                let target = parsed.path.unwrap_or("/");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).trim().to_string(),
                        )
                    })
                    .collect();
                let mut request = Request {
                    method,
                    path: path.to_string(),
                    query: query.to_string(),
                    headers,
                    body: Vec::new(),
                };
                if request.header("transfer-encoding").is_some() {
                    return Err(HttpError::LengthRequired);
                }
                let length = match request.header("content-length") {
                    None => 0,
                    Some(v) => v
                        .parse::<usize>()
                        .map_err(|_| HttpError::Malformed(format!("Content-Length {v:?}")))?,
                };
                if length > MAX_BODY {
                    return Err(HttpError::BodyTooLarge);
                }
                let mut body = buf.split_off(head_len);
                while body.len() < length {
                    read_more(stream, &mut chunk, &mut body).await?;
                }
                body.truncate(length);
                request.body = body;
                return Ok(request);
            }
        }
    }
}

/// Appends what the next read brings; a closed connection is an error,
/// since a whole request has not arrived yet.
async fn read_more(
    stream: &mut (impl AsyncRead + Unpin),
    chunk: &mut [u8],
    into: &mut Vec<u8>,
) -> Result<(), HttpError> {
    let n = stream
        .read(chunk)
        .await
        .map_err(|e| HttpError::Io(e.to_string()))?;
    if n == 0 {
        return Err(HttpError::Closed);
    }
    into.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// A whole response (everything but the event stream).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::new(status, "application/json", value.to_string())
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: impl std::fmt::Display) -> Self {
        Self::json(status, &serde_json::json!({ "error": message.to_string() }))
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Headers every response carries: nothing is cached or framed elsewhere,
/// and the page runs only its own script.
const COMMON: &str = "Cache-Control: no-store\r\n\
    X-Content-Type-Options: nosniff\r\n\
    X-Frame-Options: DENY\r\n\
    Referrer-Policy: no-referrer\r\n\
    Content-Security-Policy: default-src 'self'; img-src 'self' data:; frame-ancestors 'none'\r\n";

pub async fn write_response(
    stream: &mut (impl AsyncWrite + Unpin),
    response: &Response,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{COMMON}",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&response.body).await?;
    stream.flush().await
}

/// Starts a server-sent events stream; events follow with [`sse_event`].
pub async fn write_sse_head(stream: &mut (impl AsyncWrite + Unpin)) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n{COMMON}\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await
}

/// One event: `event: NAME` and its data, one `data:` line per line.
pub fn sse_event(name: &str, data: &str) -> String {
    let mut text = format!("event: {name}\n");
    for line in data.split('\n') {
        text.push_str("data: ");
        text.push_str(line);
        text.push('\n');
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> Result<Request, HttpError> {
        let mut reader = bytes;
        read_request(&mut reader).await
    }

    #[tokio::test]
    async fn reads_a_request_with_its_body_and_query() {
        let request = parse(
            b"POST /api/outlets/a/pause?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nX-Outlet-Dashboard: 1\r\n\r\n{}",
        )
        .await
        .expect("request");
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/api/outlets/a/pause");
        assert_eq!(request.query, "x=1");
        assert_eq!(request.header("x-outlet-dashboard"), Some("1"));
        assert_eq!(request.body, b"{}");
    }

    #[tokio::test]
    async fn refuses_what_it_will_not_read() {
        assert_eq!(parse(b"GET / HT").await, Err(HttpError::Closed));
        assert!(matches!(
            parse(b"\x01\x02 / HTTP/1.1\r\n\r\n").await,
            Err(HttpError::Malformed(_))
        ));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse(big.as_bytes()).await, Err(HttpError::HeadTooLarge));
        let body = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(parse(body.as_bytes()).await, Err(HttpError::BodyTooLarge));
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").await,
            Err(HttpError::LengthRequired)
        );
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n").await,
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn events_put_every_line_in_its_own_data_field() {
        assert_eq!(sse_event("outlet", "{}"), "event: outlet\ndata: {}\n\n");
        assert_eq!(sse_event("x", "a\nb"), "event: x\ndata: a\ndata: b\n\n");
    }

    #[tokio::test]
    async fn responses_say_how_long_they_are_and_close() {
        let mut out = Vec::new();
        write_response(&mut out, &Response::error(404, "no such outlet"))
            .await
            .expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("Content-Length: 26\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(text.ends_with("{\"error\":\"no such outlet\"}"), "{text}");
    }
}
