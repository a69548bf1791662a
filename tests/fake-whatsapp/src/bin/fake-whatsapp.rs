//! `fake-whatsapp`: a loopback WhatsApp Web server with a simulated phone,
//! driven through a line-based control port (see `fake_whatsapp::control`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use fake_whatsapp::{Account, FakeServer, ServerConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. Prints one JSON line with its URL and control address.
    Serve(ServeArgs),
    /// Send one command to a running server's control port and print the reply.
    Ctl {
        /// The control address printed by `serve`.
        #[arg(long, env = "FAKE_WHATSAPP_CONTROL")]
        control: SocketAddr,
        /// The command and its arguments, e.g. `scan-png /tmp/screen.png`.
        #[arg(required = true, trailing_var_arg = true)]
        command: Vec<String>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// WebSocket listen address (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Control listen address (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    control: SocketAddr,
    /// The account's phone number (digits, with country code).
    #[arg(long, default_value = "6281234567890")]
    phone: String,
    /// The account's LID user.
    #[arg(long, default_value = "100000000000001")]
    lid: String,
    /// Business name sent at pairing (the client's push name).
    #[arg(long, default_value = "Outlet Jakarta")]
    business_name: String,
    /// Refs per pairing (QR codes the client can show before it gives up).
    #[arg(long, default_value_t = 6)]
    refs: usize,
    /// Seconds the server honours the first ref.
    #[arg(long, default_value_t = 60)]
    first_ref_secs: u64,
    /// Seconds the server honours each later ref.
    #[arg(long, default_value_t = 20)]
    ref_secs: u64,
    /// Numbers a contact lookup reports as on WhatsApp (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "6281234567890")]
    registered: Vec<String>,
    /// Contacts who exchange encrypted messages with the account, as
    /// `NUMBER:NAME[:COMPANIONS]` (repeatable). Without any, two defaults.
    #[arg(long = "contact", value_parser = parse_contact)]
    contacts: Vec<fake_whatsapp::Contact>,
}

fn parse_contact(arg: &str) -> Result<fake_whatsapp::Contact, String> {
    let mut parts = arg.splitn(3, ':');
    let number: String = parts
        .next()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let name = parts.next().unwrap_or("").trim();
    if number.is_empty() || name.is_empty() {
        return Err("expected NUMBER:NAME[:COMPANIONS]".into());
    }
    let companions = match parts.next() {
        Some(n) => n
            .parse()
            .map_err(|_| format!("companions must be a number, got {n:?}"))?,
        None => 0,
    };
    Ok(fake_whatsapp::Contact::new(number, name).with_companions(companions))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Ctl { control, command } => ctl(control, &command.join(" ")).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if !args.control.ip().is_loopback() {
        anyhow::bail!(
            "the control port listens on loopback only, not {}",
            args.control
        );
    }
    let config = ServerConfig {
        bind: args.listen,
        account: Account {
            phone: args.phone,
            lid: args.lid,
            business_name: Some(args.business_name).filter(|n| !n.is_empty()),
            platform: "android".into(),
        },
        refs_per_pairing: args.refs,
        first_ref_lifetime: Duration::from_secs(args.first_ref_secs),
        ref_lifetime: Duration::from_secs(args.ref_secs),
        registered_numbers: args.registered.into_iter().collect(),
        contacts: if args.contacts.is_empty() {
            fake_whatsapp::config::default_contacts()
        } else {
            args.contacts
        },
        ..ServerConfig::default()
    };
    let server = Arc::new(
        FakeServer::start(config)
            .await
            .context("starting the server")?,
    );
    let control = tokio::net::TcpListener::bind(args.control)
        .await
        .with_context(|| format!("binding the control port {}", args.control))?;
    let control_addr = control.local_addr()?;
    println!(
        "{}",
        serde_json::json!({ "url": server.url(), "control": control_addr.to_string() })
    );
    tokio::select! {
        () = fake_whatsapp::control::serve_control(control, server.clone()) => {}
        signal = tokio::signal::ctrl_c() => signal.context("waiting for Ctrl-C")?,
    }
    Ok(())
}

async fn ctl(control: SocketAddr, line: &str) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(control)
        .await
        .with_context(|| format!("connecting to the control port {control}"))?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{line}\n").as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    while let Some(reply) = lines.next_line().await? {
        println!("{reply}");
        if line.trim() != "events" {
            let ok = serde_json::from_str::<serde_json::Value>(&reply)
                .map(|v| v["ok"] == true)
                .unwrap_or(false);
            if !ok {
                std::process::exit(1);
            }
            break;
        }
    }
    Ok(())
}
