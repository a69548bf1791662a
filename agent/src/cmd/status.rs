//! `outlet-agent status`: the running agent's health snapshot as JSON.

use std::path::Path;

use super::CmdResult;
use crate::command::Command;

pub async fn run(config_path: Option<&Path>) -> CmdResult {
    let health = super::ask_agent(config_path, Command::Status).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&health).unwrap_or_else(|_| health.to_string())
    );
    Ok(())
}
