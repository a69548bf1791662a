//! The outlet agent's screens: what staff see on the small SPI panel next to the till.
//!
//! The agent maps its health to a [`Screen`] (one per session state of DESIGN.md) and hands it
//! to a display task running on its own thread. This crate knows nothing about WhatsApp: a
//! screen is plain data, the QR string is an opaque (secret) payload.
//!
//! # Layout
//!
//! The crate is organised around the path a screen takes to the glass:
//!
//! - [`screen`]: the model the agent fills in: [`Screen`], [`State`], [`Qr`], [`QrPayload`]
//!   (redacted in `Debug`), the [`Mark`]s for network and MQTT.
//! - [`content`]: a screen at an instant becomes words and numbers (title, body, countdown,
//!   icon, tone). The graphic layout and the terminal driver both draw from it, so wording
//!   lives in one place.
//! - [`qr`]: QR encoding at levels M and L and the choice of the one with bigger modules.
//! - [`layout`]: fonts per panel size, word wrap with ellipsis, and the choice of QR
//!   arrangement (portrait stack, square, landscape column) that gives the largest modules.
//! - [`render`]: draws content into a [`frame::Frame`] with embedded-graphics; records every
//!   text box so tests can prove nothing is clipped.
//! - [`frame`]: the in-memory RGB565 picture and the diff that turns two frames into a few
//!   changed rectangles.
//! - [`present`]: render, diff against what a driver shows, send only the difference.
//! - [`driver`]: the [`driver::Driver`] trait and its sinks: [`driver::spi`] (mipidsi over
//!   linux-embedded-hal, generic over embedded-hal `SpiDevice`/`OutputPin`), [`driver::png`]
//!   (atomic file writes), [`driver::terminal`] (Unicode half-block QR), [`driver::none`];
//!   [`driver::resolve`] implements `auto`.
//! - [`panel`]: supported controllers, native sizes and rotation.
//! - [`backlight`]: when the backlight may go dark (only in `connected`, after a timeout).
//! - [`button`]: the optional push button, polled and debounced.
//! - [`task`]: the display thread and the agent's [`DisplayHandle`]: latest-value screen
//!   mailbox, `ok`/`fault`/`none` status on a `tokio::sync::watch`, button events on a bounded
//!   `tokio::sync::mpsc`, fault reporting with exponential backoff.
//! - [`config`]: the `[display]` TOML table ([`DisplayConfig`]).
//! - [`testing`]: a fake SPI bus and pins feeding a DCS panel emulator, for tests and benches.
//!
//! # Use from the agent
//!
//! ```no_run
//! use outlet_display::{DisplayConfig, Screen, State, Mark};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = DisplayConfig::default(); // normally the agent's `[display]` table
//! let mut display = outlet_display::spawn(&config)?;
//! let mut buttons = display.take_button_events();
//! display.show(Screen::new(State::Connecting { attempt: 1 }).with_marks(Mark::Up, Mark::Unknown));
//! let health_field = display.status().to_string(); // "ok", "fault: …" or "none"
//! # let _ = (&mut buttons, health_field);
//! # Ok(()) }
//! ```
//!
//! `show` never blocks; the status can also be awaited with [`DisplayHandle::watch_status`].
//!
//! # Secrets
//!
//! The QR string carries the pairing secret. It is only ever logged as its length, at
//! `debug`; [`QrPayload`]'s `Debug` prints `<redacted>`.

pub mod backlight;
pub mod button;
pub mod config;
pub mod content;
pub mod driver;
pub mod frame;
pub mod lang;
pub mod layout;
pub mod panel;
pub mod present;
pub mod qr;
pub mod render;
pub mod screen;
pub mod task;
pub mod testing;

pub use button::ButtonEvent;
pub use config::{DisplayConfig, DriverChoice};
pub use panel::{PanelModel, Rotation};
pub use screen::{Mark, Qr, QrPayload, Screen, State};
pub use task::{DisplayHandle, DisplayStatus, spawn};
