//! `outlet-agent check-config`: the resolved configuration, secrets
//! redacted, or the error that would stop the agent.

use std::path::Path;

use super::CmdResult;
use crate::cmd::{EXIT_CONFIG, OrExit};
use crate::config::Config;

pub fn run(path: Option<&Path>) -> CmdResult {
    let (config, source) =
        Config::load(path, std::env::vars()).or_exit_with(EXIT_CONFIG, "configuration error")?;
    println!("# resolved from {source} and the environment");
    print!("{}", config.to_redacted_toml());
    Ok(())
}
