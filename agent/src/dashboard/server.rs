//! The dashboard's routes.
//!
//! | route | what |
//! |---|---|
//! | `GET /`, `/dashboard.js`, `/dashboard.css` | the page, embedded in the binary |
//! | `GET /api/session` | whether a token is needed and whether this request has it |
//! | `POST /api/login` | `{"token"}` → the login cookie |
//! | `GET /api/outlets` | every outlet and the broker link, as one JSON document |
//! | `GET /events` | the live feed (server-sent events): `snapshot`, then `outlet`, `removed`, `broker` |
//! | `POST /api/outlets/<id>/<action>` | sends the MQTT request, answers with the agent's response |

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;

use super::access::{ACTION_HEADER, Access, COOKIE, Verdict};
use super::http::{self, Request, Response};
use super::hub::{ActionError, Hub};

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/dashboard.js");
const STYLE: &str = include_str!("page/dashboard.css");

/// A request's head and body must arrive within this.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an action waits for the agent's response.
pub const ACTION_WAIT: Duration = Duration::from_secs(20);
/// A comment on an idle feed, so proxies and the browser keep it open and
/// a page notices a dead dashboard.
const FEED_KEEPALIVE: Duration = Duration::from_secs(15);

pub struct Server {
    pub hub: Arc<Hub>,
    pub access: Access,
}

impl Server {
    /// Serves one connection: one request, or the feed until the page goes.
    pub async fn connection(self: Arc<Self>, mut stream: TcpStream) {
        let request = match tokio::time::timeout(READ_TIMEOUT, http::read_request(&mut stream))
            .await
        {
            Ok(Ok(request)) => request,
            Ok(Err(e)) => {
                if let Some(status) = e.status() {
                    tracing::debug!("dashboard: {e}");
                    let _ = http::write_response(&mut stream, &Response::error(status, &e)).await;
                    linger(&mut stream).await;
                }
                return;
            }
            Err(_) => return,
        };
        let verdict = self.access.check(
            request.header("host"),
            request.header("authorization"),
            request.header("cookie"),
        );
        if verdict == Verdict::WrongHost {
            let response =
                Response::error(421, "this dashboard answers only to its loopback address");
            let _ = http::write_response(&mut stream, &response).await;
            return;
        }
        if request.method == "GET" && request.path == "/events" {
            if verdict != Verdict::Allowed {
                let _ = http::write_response(&mut stream, &Response::error(401, "token required"))
                    .await;
                return;
            }
            self.feed(stream).await;
            return;
        }
        let response = self.route(&request, verdict).await;
        let _ = http::write_response(&mut stream, &response).await;
    }

    async fn route(&self, request: &Request, verdict: Verdict) -> Response {
        let allowed = verdict == Verdict::Allowed;
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/") | ("GET", "/index.html") => {
                Response::new(200, "text/html; charset=utf-8", PAGE)
            }
            ("GET", "/dashboard.js") => {
                Response::new(200, "text/javascript; charset=utf-8", SCRIPT)
            }
            ("GET", "/dashboard.css") => Response::new(200, "text/css; charset=utf-8", STYLE),
            ("GET", "/api/session") => Response::json(
                200,
                &json!({
                    "token_required": self.access.token_required(),
                    "authenticated": allowed,
                }),
            ),
            ("POST", "/api/login") => self.login(request),
            ("GET", "/api/outlets") if allowed => Response::json(200, &self.hub.snapshot()),
            ("POST", path) if path.starts_with("/api/outlets/") => {
                if !allowed {
                    return Response::error(401, "token required");
                }
                if request.header(ACTION_HEADER).is_none() {
                    return Response::error(
                        403,
                        format!("actions need the {ACTION_HEADER} header"),
                    );
                }
                self.action(path, &request.body).await
            }
            (_, "/api/outlets") | (_, "/events") if !allowed => {
                Response::error(401, "token required")
            }
            ("GET", _) => Response::error(404, "no such page"),
            _ => Response::error(405, "method not allowed"),
        }
    }

    fn login(&self, request: &Request) -> Response {
        let token = serde_json::from_slice::<Value>(&request.body)
            .ok()
            .and_then(|v| v["token"].as_str().map(str::to_string))
            .unwrap_or_default();
        if !self.access.token_required() {
            return Response::json(200, &json!({ "authenticated": true }));
        }
        if !self.access.is_token(&token) {
            tracing::warn!("dashboard: a login with a wrong token");
            return Response::error(401, "wrong token");
        }
        Response::json(200, &json!({ "authenticated": true })).with_header(
            "Set-Cookie",
            format!(
                "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
                token.trim()
            ),
        )
    }

    /// `/api/outlets/<id>/<action>` with the action's arguments as JSON.
    async fn action(&self, path: &str, body: &[u8]) -> Response {
        let rest = path.trim_start_matches("/api/outlets/");
        let Some((id, command)) = rest.rsplit_once('/') else {
            return Response::error(404, "want /api/outlets/<id>/<action>");
        };
        let id = percent_decode(id);
        let args = if body.is_empty() {
            serde_json::Map::new()
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => map,
                _ => return Response::error(400, "the body must be a JSON object"),
            }
        };
        match self.hub.act(&id, command, args, ACTION_WAIT).await {
            Ok(response) => Response::json(200, &response),
            Err(e @ ActionError::Unknown(_)) | Err(e @ ActionError::NoSuchOutlet(_)) => {
                Response::error(404, e)
            }
            Err(e @ ActionError::BrokerDown) | Err(e @ ActionError::Queue(_)) => {
                Response::error(503, e)
            }
            Err(e @ ActionError::Timeout { .. }) => Response::error(504, e),
        }
    }

    /// The live feed: the whole fleet first, then every change. A page that
    /// cannot keep up gets the whole fleet again rather than a gap.
    async fn feed(&self, mut stream: TcpStream) {
        let mut changes = self.hub.subscribe();
        if http::write_sse_head(&mut stream).await.is_err() {
            return;
        }
        let snapshot = |hub: &Hub| http::sse_event("snapshot", &hub.snapshot().to_string());
        if stream
            .write_all(snapshot(&self.hub).as_bytes())
            .await
            .is_err()
        {
            return;
        }
        loop {
            let next = tokio::time::timeout(FEED_KEEPALIVE, changes.recv()).await;
            let text: Arc<str> = match next {
                Ok(Ok(event)) => event,
                Ok(Err(RecvError::Lagged(missed))) => {
                    tracing::debug!("dashboard: a page missed {missed} changes; sending all");
                    Arc::from(snapshot(&self.hub))
                }
                Ok(Err(RecvError::Closed)) => return,
                Err(_) => Arc::from(": keepalive\n\n"),
            };
            if stream.write_all(text.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// Closes after an early answer (a body refused unread) without resetting
/// the connection: a close with unread bytes makes the kernel send a reset,
/// and the client would lose the answer. Reads what is left, a bounded
/// amount for a bounded time.
async fn linger(stream: &mut TcpStream) {
    use tokio::io::AsyncReadExt;
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let mut left: usize = 256 * 1024;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
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
