//! `outlet-agent qr`: the QR code the agent is showing, drawn in the
//! terminal, for a technician whose panel is broken.

use std::path::Path;

use super::CmdResult;
use crate::cli::{EXIT_FAILURE, Failure, OrExit};
use crate::command::Command;

pub async fn run(config_path: Option<&Path>) -> CmdResult {
    let data = super::ask_agent(config_path, Command::Qr).await?;
    let code = data["qr"]
        .as_str()
        .ok_or_else(|| Failure::new(EXIT_FAILURE, "the agent sent no QR code"))?;
    let matrix =
        outlet_display::qr::QrMatrix::encode(code.as_bytes(), outlet_display::qr::Level::L)
            .or_exit_with(EXIT_FAILURE, "cannot draw the QR code")?;
    for line in outlet_display::driver::terminal::half_blocks(&matrix) {
        println!("{line}");
    }
    println!(
        "QR {} of {} — WhatsApp › Linked devices › Link a device (expires {})",
        data["index"],
        data["count"],
        data["expires_at"].as_str().unwrap_or("?")
    );
    Ok(())
}
