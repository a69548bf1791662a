//! `outlet-agent run`: the daemon.
//!
//! Start-up order matters: the data directory lock comes before the store
//! (one process per outlet), the store before the supervisor, and systemd
//! hears `READY=1` only once the control socket answers and the supervisor
//! runs. Shutdown (SIGTERM/SIGINT) stops the session cleanly, flushes the
//! store and says `offline` where it reports.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::CmdResult;
use crate::cert_check;
use crate::cmd::{EXIT_FAILURE, EXIT_INSECURE_ENDPOINT, EXIT_LOCKED, Failure, OrExit};
use crate::control;
use crate::notify::Notifier;
use crate::supervisor::Supervisor;

pub async fn run(config_path: Option<&Path>) -> CmdResult {
    let config = Arc::new(super::load_config(config_path)?);
    crate::logging::init(&config.log);
    run_with(config).await
}

/// Runs the agent with a loaded config (also the demo's entry point).
pub async fn run_with(config: Arc<crate::config::Config>) -> CmdResult {
    if cert_check::skips_certificate_check() {
        tracing::warn!(
            "TEST BUILD: WhatsApp certificate-chain verification is skipped; \
             only loopback endpoints are allowed"
        );
        if !cert_check::is_loopback_endpoint(&config.whatsapp.endpoint) {
            return Err(Failure::new(
                EXIT_INSECURE_ENDPOINT,
                format!(
                    "this is a test build without certificate verification; \
                     refusing the non-loopback endpoint {}",
                    config.whatsapp.endpoint
                ),
            ));
        }
    }

    let lock = match outlet_store::DataDir::lock(&config.storage.data_dir) {
        Ok(lock) => lock,
        Err(e @ outlet_store::LockError::Held { .. }) => {
            return Err(Failure::new(
                EXIT_LOCKED,
                format!("{e}; only one agent may run per data directory"),
            ));
        }
        Err(e) => return Err(Failure::new(EXIT_FAILURE, e.to_string())),
    };

    let (store, outcome) = outlet_store::SqliteStore::open(&lock)
        .await
        .or_exit_with(EXIT_FAILURE, "cannot open the session store")?;
    let store = Arc::new(store);
    let store_report = match &outcome {
        outlet_store::OpenOutcome::Recovered { moved_to, reason } => {
            let message = format!(
                "session.db was unusable ({reason}); moved to {}; pairing starts fresh",
                moved_to.display()
            );
            tracing::error!("{message}");
            Some(message)
        }
        outlet_store::OpenOutcome::Created {
            notice: Some(notice),
        } => {
            tracing::warn!("{notice}");
            Some(notice.to_string())
        }
        _ => None,
    };

    let display = match outlet_display::spawn(&config.display) {
        Ok(display) => Some(display),
        Err(e) => {
            tracing::error!(error = %e, "display unavailable; running without a screen");
            None
        }
    };
    let notifier = Notifier::from_env();
    let (mut supervisor, link) = Supervisor::new(
        config.clone(),
        store.clone(),
        display.as_ref().map(|d| d.watch_status()),
        notifier.clone(),
    );
    if let Some(message) = store_report {
        supervisor.report_startup_problem(message);
    }
    // Messages: `send` from every command path goes to its outbox, and the
    // supervisor's sessions carry its inbox hook.
    let messages = crate::messages::Messages::start(
        config.clone(),
        store.clone(),
        link.health.clone(),
        link.commands.clone(),
        supervisor.lookups(),
    );
    if let Some((messages, _)) = &messages {
        link.commands.route_sends_to(messages.clone());
        supervisor.attach_messages(messages.clone());
    }
    // Before the supervisor runs, so MQTT sees its very first transitions.
    let mqtt = crate::mqtt::spawn(config.clone(), &link);
    if let Some(mqtt) = &mqtt {
        supervisor.watch_mqtt(mqtt.status());
    }

    let socket_path = config.control_socket();
    let listener = control::bind(&socket_path).or_exit(EXIT_FAILURE)?;
    let control_task = tokio::spawn(control::serve(listener, link.commands.clone()));
    let display_task = display.map(|display| {
        tokio::spawn(crate::screen::run(
            display,
            link.health.clone(),
            link.commands.clone(),
            config.outlet.name.clone(),
            config.display.strings(),
        ))
    });

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut supervisor_task = tokio::spawn(supervisor.run(shutdown_rx));
    notifier.ready();
    tracing::info!(
        outlet = %config.outlet.id,
        data_dir = %config.storage.data_dir.display(),
        "outlet-agent {} running",
        env!("CARGO_PKG_VERSION")
    );

    let exit = tokio::select! {
        reason = shutdown_signal() => {
            tracing::info!("{reason}: shutting down");
            notifier.stopping();
            let _ = shutdown_tx.send(true);
            match tokio::time::timeout(Duration::from_secs(15), &mut supervisor_task).await {
                Ok(_) => Ok(()),
                Err(_) => {
                    supervisor_task.abort();
                    Err(Failure::new(EXIT_FAILURE, "the supervisor did not stop within 15 s"))
                }
            }
        }
        result = &mut supervisor_task => {
            result.or_exit_with(EXIT_FAILURE, "the supervisor stopped unexpectedly")
        }
    };

    control_task.abort();
    if let Some((_, tasks)) = messages {
        tasks.shutdown(Duration::from_secs(3)).await;
    }
    // The final state, then `offline` (retained) and a clean DISCONNECT, so
    // the broker does not fire the last will for a deliberate stop.
    if let Some(mqtt) = mqtt {
        mqtt.shutdown(Duration::from_secs(3)).await;
    }
    drop(link);
    if let Some(task) = display_task {
        let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
    }
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "cannot flush the session store");
    }
    if let Err(e) = store.close().await {
        tracing::warn!(error = %e, "closing the session store");
    }
    let _ = std::fs::remove_file(&socket_path);
    drop(lock);
    exit
}

async fn shutdown_signal() -> &'static str {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
