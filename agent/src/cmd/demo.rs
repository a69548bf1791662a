//! `outlet-agent demo`: see the whole product on a machine without
//! WhatsApp — QR on the terminal screen, a phone scans it, connected.
//!
//! Starts the fake WhatsApp server (tests/fake-whatsapp) on loopback, runs
//! the real agent against it with the terminal display and a fresh data
//! directory, and lets a simulated phone scan the QR a few seconds after it
//! appears — read through the agent's own control socket, as a technician's
//! `outlet-agent qr` would.

use std::sync::Arc;
use std::time::Duration;

use fake_whatsapp::{FakeServer, ServerConfig};

use super::CmdResult;
use crate::cli::{EXIT_FAILURE, OrExit};
use crate::command::Command;
use crate::config::{ClockCheck, Config};

/// How long the QR stays on screen before the phone scans it.
const SCAN_AFTER: Duration = Duration::from_secs(6);

pub async fn run() -> CmdResult {
    let server = FakeServer::start(ServerConfig::default())
        .await
        .or_exit_with(EXIT_FAILURE, "demo: cannot start the fake WhatsApp server")?;
    let data_dir = std::env::temp_dir().join(format!("outlet-agent-demo-{}", std::process::id()));
    let mut config = Config::default();
    config.outlet.id = "demo".into();
    config.outlet.name = "Demo Outlet".into();
    config.storage.data_dir = data_dir.clone();
    config.whatsapp.endpoint = server.url();
    config.clock.check = ClockCheck::Off;
    config.display.driver = outlet_display::DriverChoice::Terminal;
    // The terminal screen is the show; only errors may interrupt it.
    config.log.level = "error".into();
    crate::logging::init(&config.log);
    eprintln!(
        "outlet-agent demo: fake WhatsApp at {} (test build: certificate checks skipped, \
         loopback only). The phone scans the QR {}s after it appears. Ctrl-C to stop.",
        server.url(),
        SCAN_AFTER.as_secs()
    );
    let socket = config.control_socket();

    let phone = server.phone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let Ok(reply) = crate::control::request(&socket, &Command::Qr).await else {
                continue;
            };
            let Some(qr) = reply["data"]["qr"].as_str().map(str::to_string) else {
                continue;
            };
            tokio::time::sleep(SCAN_AFTER).await;
            match phone.scan(&qr).await {
                Ok(_) => return,
                Err(e) => tracing::warn!("demo phone: {e}; trying the next code"),
            }
        }
    });

    let result = super::run::run_with(Arc::new(config)).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}
