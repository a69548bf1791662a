//! `outlet-agent logout --yes`: unlink this outlet and wipe its keys. The
//! agent then shows a new QR.

use std::path::Path;

use super::CmdResult;
use crate::cmd::{EXIT_CONFIG, Failure};
use crate::command::Command;

pub async fn run(config_path: Option<&Path>, yes: bool) -> CmdResult {
    if !yes {
        return Err(Failure::new(
            EXIT_CONFIG,
            "logout unlinks this outlet's WhatsApp; staff must scan a new QR. \
             Run `outlet-agent logout --yes` to do it.",
        ));
    }
    super::ask_agent(config_path, Command::Logout { confirm: true }).await?;
    println!("unlinked; the agent shows a new QR code");
    Ok(())
}
