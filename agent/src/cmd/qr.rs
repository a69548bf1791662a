//! `outlet-agent qr`: the QR code the agent is showing, drawn in the
//! terminal, for a technician whose panel is broken.

use std::path::Path;

use super::CmdResult;
use crate::cmd::{EXIT_FAILURE, Failure, OrExit};
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
    // Staff read this: in the screen's language (`display.language`).
    let t = super::load_config(config_path)?.display.strings();
    let number = |key: &str| u32::try_from(data[key].as_u64().unwrap_or(0)).unwrap_or(0);
    println!(
        "{} — {} ({} {})",
        outlet_display::content::code_number(number("index"), number("count"), t),
        t.scan_hint.replace('\u{a0}', " "),
        t.expires_in,
        data["expires_at"].as_str().unwrap_or("?")
    );
    Ok(())
}
