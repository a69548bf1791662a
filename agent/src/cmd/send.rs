//! `outlet-agent send <number> <text>`: a message to a customer from the
//! outlet's own terminal, through the same durable outbox HQ's `send`
//! requests use. Printed once it is queued (it survives a restart from
//! then on); the statuses that follow go to `message/status`.

use std::path::Path;

use super::CmdResult;
use crate::command::Command;

pub async fn run(
    config_path: Option<&Path>,
    to: String,
    text: String,
    client_id: Option<String>,
    quoted_id: Option<String>,
) -> CmdResult {
    let data = super::ask_agent(
        config_path,
        Command::Send {
            to,
            text,
            client_id,
            quoted_id,
        },
    )
    .await?;
    println!(
        "queued {} at {}{}",
        data["id"].as_str().unwrap_or("?"),
        data["queued_at"].as_str().unwrap_or("?"),
        if data["duplicate"] == true {
            " (this client id was queued before: nothing new sent)"
        } else {
            ""
        }
    );
    Ok(())
}
