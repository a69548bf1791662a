//! The dashboard's routes.
//!
//! | route | what |
//! |---|---|
//! | `GET /`, `/dashboard.js`, `/dashboard.css` | the page, embedded in the binary |
//! | `GET /api/session` | whether a token is needed and whether this request has it |
//! | `POST /api/login` | `{"token"}` → a session cookie ([`super::login`]) |
//! | `POST /api/logout` | ends the session |
//! | `GET /api/outlets` | every outlet and the broker link, as one JSON document |
//! | `GET /events` | the live feed (server-sent events): `snapshot`, then `outlet`, `removed`, `broker` |
//! | `POST /api/outlets/<id>/<action>` | sends the MQTT request, answers with the agent's response |

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{AUTHORIZATION, COOKIE as COOKIE_HEADER, HOST, RETRY_AFTER, SET_COOKIE};
use hyper::{Method, Request, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::access::{ACTION_HEADER, Access, COOKIE, Verdict, session_of};
use super::http::{self, Body};
use super::hub::{ActionError, Hub};
use super::login::{SESSION_TTL, Tries};
use super::slots::SlotHandle;

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/dashboard.js");
const STYLE: &str = include_str!("page/dashboard.css");

/// How long an action waits for the agent's response.
pub const ACTION_WAIT: Duration = Duration::from_secs(20);
/// A comment on an idle feed, so proxies and the browser keep it open and
/// a page notices a dead dashboard.
const FEED_KEEPALIVE: Duration = Duration::from_secs(15);
/// A page that has not taken the next change for this long has stopped
/// reading: its feed is ended rather than buffered without end.
pub const SLOW_PAGE: Duration = Duration::from_secs(30);

pub struct Server {
    pub hub: Arc<Hub>,
    pub access: Access,
    pub tries: Tries,
    /// Whether pages come over HTTPS (the cookie is then `Secure`).
    pub tls: bool,
}

impl Server {
    /// Answers one request from `peer` on the connection `slot`.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: IpAddr,
        slot: SlotHandle,
    ) -> Response<Body> {
        let _busy = slot.busy();
        let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
        // An address out of tries is refused before its token is even
        // compared, or a right guess would still show as a 200.
        if self.access.token_required()
            && header(AUTHORIZATION).is_some()
            && let Err(wait) = self.tries.may_try(peer, Instant::now())
        {
            return too_many(wait);
        }
        let verdict = self
            .access
            .check(header(HOST), header(AUTHORIZATION), header(COOKIE_HEADER));
        match verdict {
            Verdict::WrongHost => {
                return http::error(421, "this dashboard answers only to its loopback address");
            }
            Verdict::WrongToken => {
                self.tries.failed(peer, Instant::now());
                return http::error(401, "wrong token");
            }
            Verdict::Allowed | Verdict::NeedsToken => {}
        }
        let allowed = verdict == Verdict::Allowed;
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        match (&method, path.as_str()) {
            (&Method::GET, "/") | (&Method::GET, "/index.html") => {
                http::page("text/html; charset=utf-8", PAGE)
            }
            (&Method::GET, "/dashboard.js") => http::page("text/javascript; charset=utf-8", SCRIPT),
            (&Method::GET, "/dashboard.css") => http::page("text/css; charset=utf-8", STYLE),
            (&Method::GET, "/api/session") => http::json(
                200,
                &json!({
                    "token_required": self.access.token_required(),
                    "authenticated": allowed,
                }),
            ),
            (&Method::POST, "/api/login") => self.login(request.into_body(), peer).await,
            (&Method::POST, "/api/logout") => {
                if let Some(session) = session_of(header(COOKIE_HEADER)) {
                    self.access.sessions().close(session);
                }
                let mut response = http::json(200, &json!({ "authenticated": false }));
                http::add_header(&mut response, SET_COOKIE, &self.cookie("", 0));
                response
            }
            (_, "/api/outlets") | (_, "/events") if !allowed => http::error(401, "token required"),
            (&Method::GET, "/events") => self.feed(&slot),
            (&Method::GET, "/api/outlets") => http::json(200, &self.hub.snapshot()),
            (&Method::POST, path) if path.starts_with("/api/outlets/") => {
                if !allowed {
                    return http::error(401, "token required");
                }
                if !request.headers().contains_key(ACTION_HEADER) {
                    return http::error(403, format!("actions need the {ACTION_HEADER} header"));
                }
                match http::read_body(request.into_body()).await {
                    Ok(body) => self.action(path, &body).await,
                    Err(e) => http::error(e.status(), e),
                }
            }
            (&Method::GET, _) => http::error(404, "no such page"),
            _ => http::error(405, "method not allowed"),
        }
    }

    /// The login cookie: `value` for `max_age` seconds (0 ends it).
    fn cookie(&self, value: &str, max_age: u64) -> String {
        let secure = if self.tls { "; Secure" } else { "" };
        format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}")
    }

    async fn login(&self, body: Incoming, peer: IpAddr) -> Response<Body> {
        let body = match http::read_body(body).await {
            Ok(body) => body,
            Err(e) => return http::error(e.status(), e),
        };
        if !self.access.token_required() {
            return http::json(200, &json!({ "authenticated": true }));
        }
        let now = Instant::now();
        if let Err(wait) = self.tries.may_try(peer, now) {
            return too_many(wait);
        }
        let token = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["token"].as_str().map(str::to_string))
            .unwrap_or_default();
        if !self.access.is_token(&token) {
            self.tries.failed(peer, now);
            return http::error(401, "wrong token");
        }
        let session = self.access.sessions().open(now);
        let mut response = http::json(200, &json!({ "authenticated": true }));
        http::add_header(
            &mut response,
            SET_COOKIE,
            &self.cookie(&session, SESSION_TTL.as_secs()),
        );
        response
    }

    /// `/api/outlets/<id>/<action>` with the action's arguments as JSON.
    async fn action(&self, path: &str, body: &[u8]) -> Response<Body> {
        let rest = path.trim_start_matches("/api/outlets/");
        let Some((id, command)) = rest.rsplit_once('/') else {
            return http::error(404, "want /api/outlets/<id>/<action>");
        };
        let id = percent_decode(id);
        let args = if body.is_empty() {
            serde_json::Map::new()
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => map,
                _ => return http::error(400, "the body must be a JSON object"),
            }
        };
        match self.hub.act(&id, command, args, ACTION_WAIT).await {
            Ok(response) => http::json(200, &response),
            Err(e @ ActionError::Unknown(_)) | Err(e @ ActionError::NoSuchOutlet(_)) => {
                http::error(404, e)
            }
            Err(e @ ActionError::BrokerDown) | Err(e @ ActionError::Queue(_)) => {
                http::error(503, e)
            }
            Err(e @ ActionError::Timeout { .. }) => http::error(504, e),
        }
    }

    /// The live feed: the whole fleet first, then every change. Changes
    /// are shared with every other page (one buffer each, not a copy per
    /// page). A page that falls behind the hub's buffer gets the whole
    /// fleet again rather than a gap. What waits for one page is bounded:
    /// the frame this task holds, one in the channel, and hyper's write
    /// buffer (flat, one frame over [`super::MAX_HEAD`] at most; see
    /// `super::connection`). A page that takes nothing for [`SLOW_PAGE`] has stopped
    /// reading: its feed is ended (a browser that comes back reconnects).
    fn feed(&self, slot: &SlotHandle) -> Response<Body> {
        let mut changes = self.hub.subscribe();
        let snapshot = self.hub.snapshot_event();
        let (frames, rx) = mpsc::channel::<Bytes>(1);
        let busy = slot.busy();
        let hub = Arc::clone(&self.hub);
        tokio::spawn(async move {
            let _busy = busy;
            if frames.send(snapshot).await.is_err() {
                return;
            }
            loop {
                let next = tokio::time::timeout(FEED_KEEPALIVE, changes.recv()).await;
                let frame = match next {
                    Ok(Ok(event)) => event,
                    Ok(Err(RecvError::Lagged(missed))) => {
                        tracing::debug!("dashboard: a page missed {missed} changes; sending all");
                        hub.snapshot_event()
                    }
                    Ok(Err(RecvError::Closed)) => return,
                    Err(_) => Bytes::from_static(b": keepalive\n\n"),
                };
                match tokio::time::timeout(SLOW_PAGE, frames.send(frame)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::info!("dashboard: a page stopped reading its feed; ended it");
                        return;
                    }
                }
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            let frame = rx.recv().await?;
            Some((Ok::<_, Infallible>(Frame::data(frame)), rx))
        });
        http::with_body(
            200,
            "text/event-stream",
            StreamBody::new(stream).boxed_unsync(),
        )
    }
}

/// 429 with when to try again.
fn too_many(wait: Duration) -> Response<Body> {
    let mut response = http::error(429, "too many wrong tokens from this address; wait");
    http::add_header(
        &mut response,
        RETRY_AFTER,
        &wait.as_secs().max(1).to_string(),
    );
    response
}

/// Outlet ids travel in the path; the page encodes them.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| char::from(b).to_digit(16);
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_percent_decoded() {
        assert_eq!(percent_decode("jkt-01"), "jkt-01");
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("é%41"), "éA");
    }
}
