//! Who may use the dashboard.
//!
//! - Bound to loopback and started without `--token-file`, everyone on this
//!   machine may: the page, the live feed and the actions. The `Host`
//!   header must then name the loopback address, so a web page elsewhere
//!   cannot reach the dashboard through a DNS name it rebinds to 127.0.0.1.
//! - Bound to any other address, the dashboard does not start without a
//!   token. The page itself (HTML and script, no data) loads freely; the
//!   feed, the outlets and the actions need the token as a bearer header,
//!   or the session cookie the page's login sets (`HttpOnly`,
//!   `SameSite=Strict`, `Secure` under TLS; it expires: [`super::login`]).
//! - Actions need one more header the page sends (`X-Outlet-Dashboard`):
//!   a cross-site form cannot set it, and a cross-site script that tries is
//!   stopped by the browser's CORS preflight, which the dashboard never
//!   answers.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::login::Sessions;

/// The header every action must carry.
pub const ACTION_HEADER: &str = "x-outlet-dashboard";
/// The login cookie's name.
pub const COOKIE: &str = "outlet_dashboard";
/// Shorter tokens are refused: the token is the only lock on a LAN.
pub const TOKEN_MIN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(
        "--serve {0}: not a loopback address, so a token is required \
         (--token-file, at least {TOKEN_MIN_LEN} characters)"
    )]
    TokenRequired(SocketAddr),
    #[error("--token-file {path}: {message}")]
    TokenFile { path: String, message: String },
}

/// What a request must show.
#[derive(Debug, Clone)]
pub struct Access {
    token: Option<String>,
    /// The `Host` values accepted without a token (loopback only).
    loopback_hosts: Vec<String>,
    /// What the login cookie names.
    sessions: Arc<Sessions>,
}

/// Whether a request may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No token and no open session: 401, the page shows its login.
    NeedsToken,
    /// A bearer header with a wrong token: 401, and it counts as a try.
    WrongToken,
    /// A `Host` that is not this loopback dashboard: 421.
    WrongHost,
}

impl Access {
    /// The rules for a dashboard asked to listen on `addr`; decided (and
    /// the token read) before anything binds. With port 0, call
    /// [`Self::listening_on`] with the bound address.
    pub fn new(addr: SocketAddr, token_file: Option<&Path>) -> Result<Self, AccessError> {
        let token = match token_file {
            Some(path) => Some(read_token(path)?),
            None if addr.ip().is_loopback() => None,
            None => return Err(AccessError::TokenRequired(addr)),
        };
        Ok(Self {
            token,
            loopback_hosts: Vec::new(),
            sessions: Arc::default(),
        }
        .listening_on(addr))
    }

    /// The `Host` values a loopback listener on `bound` answers to.
    pub fn listening_on(mut self, bound: SocketAddr) -> Self {
        let port = bound.port();
        self.loopback_hosts = if bound.ip().is_loopback() {
            vec![
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("[::1]:{port}"),
                bound.to_string(),
            ]
        } else {
            Vec::new()
        };
        self
    }

    pub fn token_required(&self) -> bool {
        self.token.is_some()
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Checks a request's `Host`, `Authorization` and `Cookie` headers: the
    /// bearer header must carry the token, the cookie an open session.
    pub fn check(
        &self,
        host: Option<&str>,
        authorization: Option<&str>,
        cookie: Option<&str>,
    ) -> Verdict {
        match &self.token {
            None => {
                let host_ok = host.is_some_and(|h| {
                    self.loopback_hosts
                        .iter()
                        .any(|ok| ok.eq_ignore_ascii_case(h))
                });
                if host_ok {
                    Verdict::Allowed
                } else {
                    Verdict::WrongHost
                }
            }
            Some(token) => {
                let bearer = authorization
                    .and_then(|a| a.strip_prefix("Bearer "))
                    .map(str::trim);
                if bearer.is_some_and(|t| same(t, token)) {
                    return Verdict::Allowed;
                }
                let now = Instant::now();
                if session_of(cookie).is_some_and(|id| self.sessions.is_open(id, now)) {
                    return Verdict::Allowed;
                }
                if bearer.is_some() {
                    Verdict::WrongToken
                } else {
                    Verdict::NeedsToken
                }
            }
        }
    }

    /// Whether `candidate` is the token (for the login form).
    pub fn is_token(&self, candidate: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| same(candidate.trim(), t))
    }
}

/// The session id in a `Cookie` header.
pub fn session_of(cookie: Option<&str>) -> Option<&str> {
    cookie?.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE).then_some(value)
    })
}

/// Compares in time independent of where the strings differ, so the token
/// cannot be guessed byte by byte from response times.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

fn read_token(path: &Path) -> Result<String, AccessError> {
    let fail = |message: String| AccessError::TokenFile {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let token = text.trim();
    if token.len() < TOKEN_MIN_LEN {
        return Err(fail(format!(
            "the token must be at least {TOKEN_MIN_LEN} characters (it has {})",
            token.len()
        )));
    }
    if token
        .chars()
        .any(|c| c.is_whitespace() || c == ';' || c.is_control())
    {
        return Err(fail("the token must be one word, without ';'".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "the dashboard's token file is readable by other users; chmod 600 it"
            );
        }
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> SocketAddr {
        "127.0.0.1:8080".parse().expect("address")
    }

    #[test]
    fn loopback_needs_no_token_but_the_right_host() {
        let access = Access::new(loopback(), None).expect("loopback");
        assert!(!access.token_required());
        assert_eq!(
            access.check(Some("127.0.0.1:8080"), None, None),
            Verdict::Allowed
        );
        assert_eq!(
            access.check(Some("localhost:8080"), None, None),
            Verdict::Allowed
        );
        assert_eq!(
            access.check(Some("evil.example:8080"), None, None),
            Verdict::WrongHost
        );
        assert_eq!(access.check(None, None, None), Verdict::WrongHost);
    }

    #[test]
    fn any_other_address_refuses_to_start_without_a_token() {
        let lan: SocketAddr = "0.0.0.0:8080".parse().expect("address");
        let err = Access::new(lan, None).expect_err("no token");
        assert!(err.to_string().contains("--token-file"), "{err}");
    }

    #[test]
    fn a_token_opens_by_bearer_header_or_a_session_cookie_only() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret-token-of-hq\n").expect("write");
        let access =
            Access::new("0.0.0.0:8080".parse().expect("address"), Some(&path)).expect("token");
        assert!(access.token_required());
        assert_eq!(
            access.check(Some("hq:8080"), None, None),
            Verdict::NeedsToken
        );
        assert_eq!(
            access.check(None, Some("Bearer s3cret-token-of-hq"), None),
            Verdict::Allowed
        );
        // The cookie carries a session, never the token itself.
        assert_eq!(
            access.check(None, None, Some("a=b; outlet_dashboard=s3cret-token-of-hq")),
            Verdict::NeedsToken
        );
        let session = access.sessions().open(Instant::now());
        let cookie = format!("a=b; outlet_dashboard={session}");
        assert_eq!(access.check(None, None, Some(&cookie)), Verdict::Allowed);
        access.sessions().close(&session);
        assert_eq!(access.check(None, None, Some(&cookie)), Verdict::NeedsToken);
        assert_eq!(
            access.check(
                None,
                Some("Bearer s3cret-token-of-hQ"),
                Some("outlet_dashboard=x")
            ),
            Verdict::WrongToken
        );
        assert!(access.is_token(" s3cret-token-of-hq "));
        assert!(!access.is_token("s3cret"));
    }

    #[test]
    fn short_or_missing_token_files_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let short = dir.path().join("short");
        std::fs::write(&short, "abc").expect("write");
        let err = Access::new(loopback(), Some(&short)).expect_err("short");
        assert!(err.to_string().contains("at least 16"), "{err}");
        let missing = dir.path().join("missing");
        assert!(Access::new(loopback(), Some(&missing)).is_err());
    }

    #[test]
    fn comparison_is_exact() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "a"));
    }
}
