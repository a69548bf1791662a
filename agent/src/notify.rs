//! systemd's notify protocol: `READY=1`, `STATUS=…`, `WATCHDOG=1`.
//!
//! A datagram to `$NOTIFY_SOCKET` is all it takes, so no library. Outside
//! systemd (no `NOTIFY_SOCKET`) every call is a no-op.
//!
//! Plain rules (the bottom layer): it imports nothing of the agent.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    socket: UnixDatagram,
    target: Target,
    /// `WatchdogSec=` as systemd passed it; pings go out at half of it.
    watchdog: Option<Duration>,
    last_ping: Mutex<Option<Instant>>,
}

enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From the environment systemd sets for a `Type=notify` service.
    pub fn from_env() -> Self {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self::default();
        };
        let Ok(socket) = UnixDatagram::unbound() else {
            return Self::default();
        };
        let bytes = path.as_encoded_bytes();
        let target = match bytes.strip_prefix(b"@") {
            Some(name) => Target::Abstract(name.to_vec()),
            None => Target::Path(PathBuf::from(&path)),
        };
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|usec| *usec > 0)
            .map(Duration::from_micros);
        Self {
            inner: Some(Arc::new(Inner {
                socket,
                target,
                watchdog,
                last_ping: Mutex::new(None),
            })),
        }
    }

    fn send(&self, message: &str) {
        let Some(inner) = &self.inner else { return };
        let result = match &inner.target {
            Target::Path(path) => inner.socket.send_to(message.as_bytes(), path),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| inner.socket.send_to_addr(message.as_bytes(), &addr))
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    pub fn ready(&self) {
        self.send("READY=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    pub fn status(&self, status: &str) {
        let line: String = status.chars().filter(|c| *c != '\n').collect();
        self.send(&format!("STATUS={line}"));
    }

    /// Pings the watchdog, at most at half the configured interval.
    pub fn watchdog(&self) {
        let Some(inner) = &self.inner else { return };
        let Some(interval) = inner.watchdog else {
            return;
        };
        let now = Instant::now();
        {
            let mut last = inner.last_ping.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| now.duration_since(t) < interval / 2) {
                return;
            }
            *last = Some(now);
        }
        self.send("WATCHDOG=1");
    }
}
