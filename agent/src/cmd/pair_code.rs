//! `outlet-agent pair-code <phone>`: link by code instead of QR. The agent
//! asks WhatsApp for an 8-character code for the outlet's number, shows it
//! on the screen and prints it here; staff type it on the phone under
//! "Linked devices › Link a device › Link with phone number instead".

use std::path::Path;

use super::CmdResult;
use crate::cmd::{EXIT_FAILURE, Failure};
use crate::command::Command;

pub async fn run(config_path: Option<&Path>, phone: String) -> CmdResult {
    let data = super::ask_agent(config_path, Command::PairCode { phone }).await?;
    let code = data["code"]
        .as_str()
        .ok_or_else(|| Failure::new(EXIT_FAILURE, "the agent sent no link code"))?;
    println!("{}", outlet_display::content::format_code(code));
    println!(
        "On the phone of {}: WhatsApp › Linked devices › Link a device › \
         Link with phone number instead (expires {})",
        data["phone"].as_str().unwrap_or("?"),
        data["expires_at"].as_str().unwrap_or("?")
    );
    Ok(())
}
