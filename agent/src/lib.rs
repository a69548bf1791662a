//! outlet-agent: keeps one outlet's WhatsApp linked-device session alive,
//! shows its pairing QR on the outlet's screen, and tells the truth about
//! its health.
//!
//! # Layout
//!
//! Three layers; a module imports only from its own layer or below, with
//! no cycle (ARCHITECTURE.md, "Layers"; `tests/layers.rs` checks it).
//!
//! **Entry points**
//! - [`cli`] and [`cmd`]: the `outlet-agent` command line, one file per
//!   command (`run`, `check-config`, `status`, `qr`, `pair-code`, `send`,
//!   `logout`, `fleet`, `fleet audit`, `version`, and `demo` with the `demo`
//!   feature), and the exit codes.
//! - [`dashboard`]: `fleet --serve`, HQ's live web page of the fleet (the
//!   page embedded, fed from the broker over server-sent events).
//!
//! **Working parts**
//! - [`supervisor`]: the only owner of the WhatsApp connection — the state
//!   machine, reconnect timing, pairing rounds, one session at a time.
//! - [`messages`]: customers' chats to HQ and HQ's sends to customers,
//!   over MQTT, durable end to end: the inbox, the outbox, their publisher.
//! - [`mqtt`]: availability, state, events, telemetry and commands over
//!   MQTT, Home Assistant discovery.
//! - [`control`]: the local Unix control socket.
//! - [`screen`]: health → `outlet_display::Screen`, button → command.
//! - [`logging`]: journald-friendly or terminal logs, phone numbers masked.
//!
//! **Plain data and rules**
//! - [`config`]: TOML + environment overrides, with errors that name the
//!   file, line and key.
//! - [`health`]: the snapshot the supervisor publishes on a `watch` channel
//!   and everything else reads; state transitions.
//! - [`command`]: what the control socket, MQTT and the button can ask of
//!   the supervisor, and the channel it travels on.
//! - [`topics`]: the MQTT topic names. [`phone`]: phone numbers and JIDs.
//! - [`ledger`]: what a reader at HQ holds of an outlet's numbered records,
//!   and what it lacks (`fleet audit`, the dashboard's gap view).
//! - [`backoff`]: reconnect timing. [`clock`]: is the system clock
//!   trustworthy yet (`waiting_for_clock`). [`disk`]: free space on the data
//!   directory's filesystem. [`memory`]: allocator settings that keep the
//!   idle footprint small. [`notify`]: systemd `READY=1`, `STATUS=`,
//!   `WATCHDOG=1`. [`cert_check`]: detects a test build that skips
//!   WhatsApp's certificate check, so it can refuse real endpoints.
//!   [`pacing`]: turns paced by a token bucket: number lookups (a ban
//!   trigger unpaced) and the dashboard's wrong tokens per address.
//!
//! The session store (`outlet-store`) and the screens (`outlet-display`)
//! are crates of their own; ARCHITECTURE.md has the bird's-eye view.

// The demo links the fake server and skips WhatsApp's certificate check:
// an optimised build with it is a release build that must not exist.
#[cfg(all(feature = "demo", not(debug_assertions)))]
compile_error!(
    "the `demo` feature skips WhatsApp's certificate check and is for debug builds only; \
     build releases without it"
);

pub mod backoff;
pub mod cert_check;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod command;
pub mod config;
pub mod control;
#[cfg(feature = "hq")]
pub mod dashboard;
pub mod disk;
pub mod health;
#[cfg(feature = "hq")]
pub mod ledger;
pub mod logging;
pub mod memory;
pub mod messages;
pub mod mqtt;
pub mod notify;
pub mod pacing;
pub mod phone;
pub mod screen;
pub mod supervisor;
pub mod topics;
