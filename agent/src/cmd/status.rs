//! `outlet-agent status`: the running agent's health snapshot as JSON.

use std::path::Path;

use crate::cli::EXIT_OK;
use crate::command::Command;

pub async fn run(config_path: Option<&Path>) -> i32 {
    match super::ask_agent(config_path, Command::Status).await {
        Ok(health) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&health).unwrap_or_else(|_| health.to_string())
            );
            EXIT_OK
        }
        Err(code) => code,
    }
}
