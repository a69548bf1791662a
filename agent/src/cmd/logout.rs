//! `outlet-agent logout --yes`: unlink this outlet and wipe its keys. The
//! agent then shows a new QR.

use std::path::Path;

use crate::cli::{EXIT_CONFIG, EXIT_OK};
use crate::command::Command;

pub async fn run(config_path: Option<&Path>, yes: bool) -> i32 {
    if !yes {
        eprintln!(
            "outlet-agent: logout unlinks this outlet's WhatsApp; staff must scan a new QR. \
             Run `outlet-agent logout --yes` to do it."
        );
        return EXIT_CONFIG;
    }
    match super::ask_agent(config_path, Command::Logout { confirm: true }).await {
        Ok(_) => {
            println!("unlinked; the agent shows a new QR code");
            EXIT_OK
        }
        Err(code) => code,
    }
}
