//! The dashboard's answers, on hyper's types: the headers every response
//! carries, JSON and error bodies, a request body read with a bound and a
//! deadline, and the server-sent events' wire format.
//!
//! hyper parses requests (with its own limits on the head, set in
//! [`super::serve`]) and writes responses; nothing here touches a socket.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

/// A request's body beyond this is refused (413): logins and actions are
/// a few hundred bytes.
pub const MAX_BODY: usize = 16 * 1024;
/// A request's body must have arrived within this.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Every response's body: a whole buffer, or the live feed's stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Headers every response carries: nothing is cached or framed elsewhere,
/// and the page runs only its own script.
const COMMON: [(&str, &str); 5] = [
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    ),
];

/// A response with `status`, `content_type` and the common headers.
pub fn with_body(status: u16, content_type: &'static str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    for (name, value) in COMMON {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

pub fn page(content_type: &'static str, text: &'static str) -> Response<Body> {
    with_body(200, content_type, full(Bytes::from_static(text.as_bytes())))
}

pub fn json(status: u16, value: &serde_json::Value) -> Response<Body> {
    with_body(status, "application/json", full(value.to_string()))
}

/// `{"error": message}` with `status`.
pub fn error(status: u16, message: impl std::fmt::Display) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message.to_string() }))
}

/// Adds a header whose value is made at run time (a cookie); a value that
/// is not a valid header is left out, never sent broken.
pub fn add_header(response: &mut Response<Body>, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(name, value);
    }
}

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is over {MAX_BODY} bytes")]
    TooLarge,
    #[error("the body did not arrive within {} s", BODY_TIMEOUT.as_secs())]
    TimedOut,
    #[error("the body could not be read: {0}")]
    Broken(String),
}

impl BodyError {
    pub fn status(&self) -> u16 {
        match self {
            Self::TooLarge => 413,
            Self::TimedOut => 408,
            Self::Broken(_) => 400,
        }
    }
}

/// Reads a request's body: at most [`MAX_BODY`] bytes (a larger declared
/// length is refused before anything is read) within [`BODY_TIMEOUT`].
pub async fn read_body(body: Incoming) -> Result<Bytes, BodyError> {
    // A declared length over the bound is refused before reading any.
    if body.size_hint().lower() > MAX_BODY as u64 {
        return Err(BodyError::TooLarge);
    }
    let limited = Limited::new(body, MAX_BODY);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(BodyError::TimedOut),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(e)) => Err(BodyError::Broken(e.to_string())),
    }
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

    #[test]
    fn events_put_every_line_in_its_own_data_field() {
        assert_eq!(sse_event("x", "a\nb"), "event: x\ndata: a\ndata: b\n\n");
    }

    #[test]
    fn every_response_carries_the_common_headers() {
        let response = error(404, "no such page");
        assert_eq!(response.status(), 404);
        let headers = response.headers();
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["cache-control"], "no-store");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .is_ok_and(|v| v.contains("frame-ancestors 'none'"))
        );
    }
}
