//! Sinks that show rendered frames: one trait, four implementations.
//!
//! The display task does not care where a frame goes; it hands each driver the frame plus the
//! rectangles that changed since that driver last succeeded, and a driver that cannot keep up or
//! lost its hardware returns an error instead of panicking, so the task can report it and retry.

use std::io::IsTerminal;
use std::path::Path;

use embedded_graphics::primitives::Rectangle;

use crate::config::{DisplayConfig, DriverChoice};
use crate::render::Rendered;

pub mod none;
pub mod png;
pub mod spi;
pub mod terminal;

/// Something that shows frames.
pub trait Driver: Send {
    /// Short name for logs and status (`spi`, `png`, `terminal`, `none`).
    fn name(&self) -> &'static str;

    /// Shows `rendered`. `dirty` lists the rectangles that differ from what this driver last
    /// showed successfully; it is the whole frame after (re)opening. Drivers that cannot do
    /// partial updates may redraw everything.
    fn present(&mut self, rendered: &Rendered, dirty: &[Rectangle]) -> Result<(), DriverError>;

    /// Switches the backlight, where the hardware has one.
    fn set_backlight(&mut self, on: bool) -> Result<(), DriverError> {
        let _ = on;
        Ok(())
    }
}

/// Why a driver could not open or show a frame. The text becomes `display: fault: <text>`.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A device node could not be opened or configured.
    #[error("cannot open {what}: {reason}")]
    Open {
        /// The device, e.g. `/dev/spidev0.0`.
        what: String,
        /// OS or library error text.
        reason: String,
    },
    /// The SPI bus or DC pin failed during a transfer.
    #[error("SPI write failed: {0}")]
    Bus(String),
    /// A GPIO line (backlight, reset, button) failed.
    #[error("GPIO failed: {0}")]
    Gpio(String),
    /// The controller rejected its configuration.
    #[error("panel init failed: {0}")]
    Init(String),
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding a PNG failed.
    #[error("PNG encoding failed: {0}")]
    Png(String),
}

/// The concrete driver `choice` resolves to on this machine.
///
/// `auto` is decided once, at start: `spi` when the configured spidev node exists (a Pi with
/// the overlay enabled), else `terminal` when stdout is a TTY (a developer), else `none`
/// (a service without a panel). A panel that exists but fails later is a fault, not a reason
/// to switch drivers.
pub fn resolve(config: &DisplayConfig) -> DriverChoice {
    resolve_with(
        config.driver,
        &config.spidev,
        std::io::stdout().is_terminal(),
    )
}

/// [`resolve`] with the environment passed in, for tests.
pub fn resolve_with(choice: DriverChoice, spidev: &Path, stdout_is_tty: bool) -> DriverChoice {
    match choice {
        DriverChoice::Auto if spidev.exists() => DriverChoice::Spi,
        DriverChoice::Auto if stdout_is_tty => DriverChoice::Terminal,
        DriverChoice::Auto => DriverChoice::None,
        other => other,
    }
}

/// Opens the driver for a resolved `choice` (not `Auto`).
pub fn open(choice: DriverChoice, config: &DisplayConfig) -> Result<Box<dyn Driver>, DriverError> {
    match choice {
        DriverChoice::Spi => spi::open_linux(config),
        DriverChoice::Png => Ok(Box::new(png::PngDriver::new(config.png_path.clone()))),
        DriverChoice::Terminal => Ok(Box::new(terminal::TerminalDriver::stdout())),
        DriverChoice::None | DriverChoice::Auto => Ok(Box::new(none::NoneDriver)),
    }
}
