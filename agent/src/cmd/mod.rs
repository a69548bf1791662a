//! One file per CLI command (as mini-redis's `cmd/`). Each returns a
//! [`CmdResult`]: a failure carries its message and the exit code
//! documented in [`exit`]. The commands sit on top of the working parts
//! (supervisor, MQTT, messages, control socket, dashboard); only
//! the command line (`cli`) imports them.

#[cfg(feature = "hq")]
pub mod audit;
pub mod check_config;
#[cfg(feature = "demo")]
pub mod demo;
mod exit;
#[cfg(feature = "hq")]
pub mod fleet;
pub mod logout;
#[cfg(feature = "hq")]
pub mod media;
pub mod pair_code;
pub mod qr;
pub mod run;
pub mod send;
pub mod status;
pub mod version;

use std::path::Path;

use crate::command::Command;
use crate::config::Config;
pub use exit::{
    CmdResult, EXIT_CONFIG, EXIT_FAILURE, EXIT_INSECURE_ENDPOINT, EXIT_LOCKED, EXIT_NOT_RUNNING,
    EXIT_OK, EXIT_REFUSED, Failure, OrExit, exit_code,
};

/// SIGTERM and SIGINT, for HQ's long-running commands (`fleet audit`,
/// `fleet media`), which stop cleanly on either.
#[cfg(feature = "hq")]
fn stop_signals() -> Result<(tokio::signal::unix::Signal, tokio::signal::unix::Signal), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => Ok((term, int)),
        _ => Err(Failure::new(
            EXIT_FAILURE,
            "cannot listen for SIGTERM/SIGINT",
        )),
    }
}

/// Sleeps until `at`, or for ever when there is none: the reconnect wait
/// of HQ's long-running commands, as a `select!` arm.
#[cfg(feature = "hq")]
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Acknowledges handled publishes (HQ's commands take them with manual
/// acks) as far as the client's channel has room; the rest on the next
/// turn.
#[cfg(feature = "hq")]
fn ack_due(
    client: &rumqttc::AsyncClient,
    acks_due: &mut std::collections::VecDeque<rumqttc::Publish>,
) {
    while let Some(publish) = acks_due.front() {
        if client.try_ack(publish).is_err() {
            break;
        }
        acks_due.pop_front();
    }
}

/// Loads the config; a failure names the file, line and key.
fn load_config(path: Option<&Path>) -> Result<Config, Failure> {
    Config::load(path, std::env::vars())
        .map(|(config, _)| config)
        .or_exit_with(EXIT_CONFIG, "configuration error")
}

/// Sends a command to the running agent; returns its `data`.
async fn ask_agent(
    config_path: Option<&Path>,
    command: Command,
) -> Result<serde_json::Value, Failure> {
    let config = load_config(config_path)?;
    let socket = config.control_socket();
    let reply = crate::control::request(&socket, &command)
        .await
        .or_exit(EXIT_NOT_RUNNING)?;
    if reply["status"] == "ok" {
        Ok(reply["data"].clone())
    } else {
        Err(Failure::new(
            EXIT_REFUSED,
            format!(
                "{} refused: {}",
                command.name(),
                reply["error"].as_str().unwrap_or("unknown error")
            ),
        ))
    }
}
