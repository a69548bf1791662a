//! One file per CLI command (as mini-redis's `cmd/`). Each returns the
//! process exit code documented in [`crate::cli`].

pub mod check_config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod fleet;
pub mod logout;
pub mod pair_code;
pub mod qr;
pub mod run;
pub mod status;
pub mod version;

use std::path::Path;

use crate::cli::{EXIT_CONFIG, EXIT_NOT_RUNNING, EXIT_REFUSED};
use crate::command::Command;
use crate::config::Config;

/// Loads the config or prints why not; `Err` is the exit code.
fn load_config(path: Option<&Path>) -> Result<Config, i32> {
    Config::load(path, std::env::vars())
        .map(|(config, _)| config)
        .map_err(|e| {
            eprintln!("outlet-agent: configuration error: {e}");
            EXIT_CONFIG
        })
}

/// Sends a command to the running agent; returns its `data` or the exit code.
async fn ask_agent(config_path: Option<&Path>, command: Command) -> Result<serde_json::Value, i32> {
    let config = load_config(config_path)?;
    let socket = config.control_socket();
    let reply = crate::control::request(&socket, &command)
        .await
        .map_err(|e| {
            eprintln!("outlet-agent: {e}");
            EXIT_NOT_RUNNING
        })?;
    if reply["status"] == "ok" {
        Ok(reply["data"].clone())
    } else {
        eprintln!(
            "outlet-agent: {} refused: {}",
            command.name(),
            reply["error"].as_str().unwrap_or("unknown error")
        );
        Err(EXIT_REFUSED)
    }
}
