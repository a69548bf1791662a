//! The command line: arguments (clap) and the dispatch to [`crate::cmd`],
//! one file per command there. The exit codes and the failure type live in
//! [`crate::cmd`] beside the commands that return them; this module is the
//! top of the crate and nothing imports it but the binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cmd::{CmdResult, EXIT_FAILURE, OrExit, exit_code};

#[derive(Debug, Parser)]
#[command(
    name = "outlet-agent",
    version,
    about = "Keeps an outlet's WhatsApp linked device alive"
)]
pub struct Cli {
    /// Config file (default: /etc/outlet-agent/agent.toml if present, else built-in defaults).
    #[arg(long, global = true, env = "OUTLET_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<CliCommand>,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the agent (the default).
    Run,
    /// Print the resolved configuration (secrets redacted) and exit.
    CheckConfig,
    /// Print the running agent's health.
    Status,
    /// Print the current pairing QR code in the terminal.
    Qr,
    /// Link by code instead of QR: ask for an 8-character code for the
    /// outlet's WhatsApp number, shown on the screen and printed here.
    PairCode {
        /// The outlet's WhatsApp number (`0812…`, `+62 812…`, `62812…`).
        phone: String,
    },
    /// Send a customer a WhatsApp message through the outlet (queued
    /// durably, sent in order and paced; statuses go to MQTT).
    Send {
        /// The customer's number (`0812…`, `+62 812…`) or a JID (a group's
        /// `…@g.us`).
        to: String,
        /// The text (up to 65 536 characters).
        text: String,
        /// Your id for this message: the same id is never sent twice.
        #[arg(long)]
        client_id: Option<String>,
        /// Reply to (quote) the message with this WhatsApp id.
        #[arg(long)]
        reply_to: Option<String>,
    },
    /// Unlink this outlet's WhatsApp and wipe its keys.
    Logout {
        /// Required: logging out means a staff member must scan again.
        #[arg(long)]
        yes: bool,
    },
    /// Print the version and build features.
    Version,
    /// List every outlet's retained health from the MQTT broker and exit
    /// (or serve the dashboard, or audit the outlets' records). HQ's tool:
    /// built only with the `hq` feature (on by default; the outlet's
    /// package is built without it).
    #[cfg(feature = "hq")]
    Fleet {
        #[command(subcommand)]
        action: Option<FleetAction>,
        /// Broker URL (mqtt://host[:port] or mqtts://…). Default: mqtt.broker
        /// from the config; TLS files and login always come from there.
        #[arg(long, global = true)]
        broker: Option<String>,
        /// Where the outlets publish: the levels above the ids (`outlet` for
        /// `outlet/<id>/state`) or a template like the agent's
        /// `mqtt.topic_prefix` (`shops/{outlet_id}/wa`). Default:
        /// mqtt.topic_prefix from the config.
        #[arg(long, global = true)]
        prefix: Option<String>,
        /// Stop after no retained message arrived for this long.
        #[arg(long, default_value_t = 500)]
        quiet_ms: u64,
        /// Serve the live web dashboard instead of printing once, on ADDR
        /// (default 127.0.0.1:8080; port 0 picks a free one). An address
        /// other than loopback needs --token-file.
        #[arg(long, value_name = "ADDR", num_args = 0..=1,
              default_missing_value = "127.0.0.1:8080")]
        serve: Option<std::net::SocketAddr>,
        /// The dashboard's access token (one line, at least 16
        /// characters; keep the file 0600): required for the feed, the
        /// outlets and every action.
        #[arg(long, value_name = "PATH", requires = "serve")]
        token_file: Option<PathBuf>,
        /// Serve HTTPS with this certificate (PEM, the chain from the
        /// server's own certificate up); needs --tls-key. The login cookie
        /// is then `Secure`.
        #[arg(long, value_name = "PATH", requires_all = ["serve", "tls_key"])]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM; keep the file 0600).
        #[arg(long, value_name = "PATH", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Demo without WhatsApp: a fake server and phone on loopback, the real
    /// agent with the terminal screen. Built only with `--features demo`.
    #[cfg(feature = "demo")]
    Demo,
}

#[cfg(feature = "hq")]
#[derive(Debug, Subcommand)]
pub enum FleetAction {
    /// Follow every outlet's numbered records (`message/in`, `message/status`)
    /// on a persistent session, ask for replays of what is missing, and
    /// report per outlet: received, replayed, still missing, lost.
    Audit {
        /// Where the audit keeps what it has of each outlet (JSON), so a
        /// restart of the audit loses nothing.
        #[arg(long, value_name = "PATH", default_value = "outlet-audit.json")]
        state: PathBuf,
        /// The persistent session's MQTT client id (one per audit).
        #[arg(long, default_value = "outlet-audit")]
        client_id: String,
        /// Exit once nothing is missing and every replay is answered;
        /// exit 1 if that has not happened after SECS.
        #[arg(long, value_name = "SECS")]
        until_complete: Option<u64>,
        /// Print the report every SECS while following (0: only at the end).
        #[arg(long, value_name = "SECS", default_value_t = 300)]
        report_secs: u64,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Save every outlet's received files (pictures, voice notes,
    /// documents) as they arrive in chunks: `DIR/<outlet>/<sha256>.<ext>`
    /// with `<sha256>.json` beside it (message id, sender, caption). Asks
    /// the outlet again for a file that stopped short.
    Media {
        /// Where the files go.
        #[arg(long, value_name = "DIR")]
        save: PathBuf,
        /// The persistent session's MQTT client id (one per saver).
        #[arg(long, default_value = "outlet-media")]
        client_id: String,
    },
}

/// `fleet --serve` with a `fleet` action: refused, one at a time.
#[cfg(feature = "hq")]
fn not_with_serve(serve: Option<std::net::SocketAddr>, action: &str) -> CmdResult {
    match serve {
        Some(_) => Err(crate::cmd::Failure::new(
            crate::cmd::EXIT_CONFIG,
            format!("fleet --serve and fleet {action}: one at a time"),
        )),
        None => Ok(()),
    }
}

/// Parses the arguments and runs the command; returns the exit code.
pub fn main() -> i32 {
    crate::memory::tune_allocator();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(CliCommand::Run);
    let config_path = cli.config;
    exit_code(match command {
        CliCommand::Version => crate::cmd::version::run(),
        CliCommand::CheckConfig => crate::cmd::check_config::run(config_path.as_deref()),
        other => run_async(other, config_path),
    })
}

fn run_async(command: CliCommand, config_path: Option<PathBuf>) -> CmdResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_exit_with(EXIT_FAILURE, "cannot start the async runtime")?;
    let config_path = config_path.as_deref();
    runtime.block_on(async move {
        match command {
            CliCommand::Run => crate::cmd::run::run(config_path).await,
            CliCommand::Status => crate::cmd::status::run(config_path).await,
            CliCommand::Qr => crate::cmd::qr::run(config_path).await,
            CliCommand::PairCode { phone } => crate::cmd::pair_code::run(config_path, phone).await,
            CliCommand::Logout { yes } => crate::cmd::logout::run(config_path, yes).await,
            CliCommand::Send {
                to,
                text,
                client_id,
                reply_to,
            } => crate::cmd::send::run(config_path, to, text, client_id, reply_to).await,
            #[cfg(feature = "demo")]
            CliCommand::Demo => crate::cmd::demo::run().await,
            #[cfg(feature = "hq")]
            CliCommand::Fleet {
                action:
                    Some(FleetAction::Audit {
                        state,
                        client_id,
                        until_complete,
                        report_secs,
                        json,
                    }),
                broker,
                prefix,
                serve,
                ..
            } => {
                not_with_serve(serve, "audit")?;
                let args = crate::cmd::audit::AuditArgs {
                    state,
                    client_id,
                    until_complete: until_complete.map(std::time::Duration::from_secs),
                    report_every: (report_secs > 0)
                        .then(|| std::time::Duration::from_secs(report_secs)),
                    json,
                };
                crate::cmd::audit::run(config_path, broker, prefix, args).await
            }
            #[cfg(feature = "hq")]
            CliCommand::Fleet {
                action: Some(FleetAction::Media { save, client_id }),
                broker,
                prefix,
                serve,
                ..
            } => {
                not_with_serve(serve, "media")?;
                let args = crate::cmd::media::MediaArgs { save, client_id };
                crate::cmd::media::run(config_path, broker, prefix, args).await
            }
            #[cfg(feature = "hq")]
            CliCommand::Fleet {
                broker,
                prefix,
                quiet_ms,
                serve: None,
                ..
            } => crate::cmd::fleet::run(config_path, broker, prefix, quiet_ms).await,
            #[cfg(feature = "hq")]
            CliCommand::Fleet {
                broker,
                prefix,
                serve: Some(addr),
                token_file,
                tls_cert,
                tls_key,
                ..
            } => {
                let tls = tls_cert
                    .zip(tls_key)
                    .map(|(cert, key)| crate::dashboard::TlsFiles { cert, key });
                let token_file = token_file.as_deref();
                crate::cmd::fleet::serve(
                    config_path,
                    broker,
                    prefix,
                    addr,
                    token_file,
                    tls.as_ref(),
                )
                .await
            }
            CliCommand::Version => crate::cmd::version::run(),
            CliCommand::CheckConfig => crate::cmd::check_config::run(config_path),
        }
    })
}
