//! `outlet-agent check-config`: the resolved configuration, secrets
//! redacted, or the error that would stop the agent.

use std::path::Path;

use crate::cli::{EXIT_CONFIG, EXIT_OK};
use crate::config::Config;

pub fn run(path: Option<&Path>) -> i32 {
    match Config::load(path, std::env::vars()) {
        Ok((config, source)) => {
            println!("# resolved from {source} and the environment");
            print!("{}", config.to_redacted_toml());
            EXIT_OK
        }
        Err(e) => {
            eprintln!("outlet-agent: configuration error: {e}");
            EXIT_CONFIG
        }
    }
}
