//! `outlet-agent qr`: the QR code the agent is showing, drawn in the
//! terminal, for a technician whose panel is broken.

use std::path::Path;

use crate::cli::{EXIT_FAILURE, EXIT_OK};
use crate::command::Command;

pub async fn run(config_path: Option<&Path>) -> i32 {
    let data = match super::ask_agent(config_path, Command::Qr).await {
        Ok(data) => data,
        Err(code) => return code,
    };
    let Some(code) = data["qr"].as_str() else {
        eprintln!("outlet-agent: the agent sent no QR code");
        return EXIT_FAILURE;
    };
    match outlet_display::qr::QrMatrix::encode(code.as_bytes(), outlet_display::qr::Level::L) {
        Ok(matrix) => {
            for line in outlet_display::driver::terminal::half_blocks(&matrix) {
                println!("{line}");
            }
            println!(
                "QR {} of {} — WhatsApp › Linked devices › Link a device (expires {})",
                data["index"],
                data["count"],
                data["expires_at"].as_str().unwrap_or("?")
            );
            EXIT_OK
        }
        Err(e) => {
            eprintln!("outlet-agent: cannot draw the QR code: {e}");
            EXIT_FAILURE
        }
    }
}
