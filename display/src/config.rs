//! The `[display]` table of the agent's TOML config.
//!
//! Every key has a default that works on a developer's machine (`driver = "auto"` falls back to
//! the terminal or to nothing when no spidev exists), so an empty `[display]` table is valid.
//! Unknown keys are errors (`deny_unknown_fields`) because a typo in a GPIO line number on a
//! remote outlet otherwise shows up as "screen stays dark" with nothing in the logs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::panel::{PanelModel, Rotation};

/// Which sink shows the screens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverChoice {
    /// `spi` when the configured spidev exists, else `terminal` when stdout is a TTY, else `none`.
    #[default]
    Auto,
    /// An SPI panel through mipidsi.
    Spi,
    /// A PNG file rewritten (atomically) on every change.
    Png,
    /// Unicode half-block QR and status text on stdout.
    Terminal,
    /// Nothing.
    None,
}

/// The `[display]` config table.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DisplayConfig {
    /// `auto`, `spi`, `png`, `terminal` or `none`.
    pub driver: DriverChoice,
    /// Controller: `st7789`, `ili9341`, `ili9342c` or `st7796`.
    pub model: PanelModel,
    /// Glass width in the panel's native orientation; defaults to the model's usual size.
    pub width: Option<u16>,
    /// Glass height in the panel's native orientation; defaults to the model's usual size.
    pub height: Option<u16>,
    /// Clockwise rotation of the picture: 0, 90, 180 or 270.
    pub rotation: Rotation,
    /// Column offset of the glass in controller memory (some 135×240 / 240×280 modules).
    pub offset_x: u16,
    /// Row offset of the glass in controller memory.
    pub offset_y: u16,
    /// Colour inversion (INVON); defaults per model.
    pub invert: Option<bool>,
    /// BGR colour filter order; defaults per model.
    pub bgr: Option<bool>,
    /// The spidev device node.
    pub spidev: PathBuf,
    /// SPI clock in Hz. Pi SPI0 rounds down to core_clock / even divider.
    pub spi_hz: u32,
    /// SPI mode 0–3 (some ST7789 boards without CS need 3).
    pub spi_mode: u8,
    /// Bytes per SPI write. The kernel's spidev rejects more than its `bufsiz` (4096 by default).
    pub spi_buffer: usize,
    /// GPIO character device that carries the DC, reset, backlight and button lines.
    pub gpiochip: PathBuf,
    /// Line offset of the data/command pin.
    pub dc_line: u32,
    /// Line offset of the reset pin, if wired (otherwise a software reset is sent).
    pub reset_line: Option<u32>,
    /// Line offset of the backlight enable, if wired.
    pub backlight_line: Option<u32>,
    /// Whether the backlight is on when the line is low.
    pub backlight_active_low: bool,
    /// Seconds in `connected` without a state change or button press before the backlight
    /// goes off; 0 keeps it on.
    pub backlight_timeout_secs: u64,
    /// Line offset of the push button, if wired.
    pub button_line: Option<u32>,
    /// Whether the button pulls the line low when pressed (button to GND, pull-up enabled).
    pub button_active_low: bool,
    /// Where the `png` driver writes; relative paths are relative to the working directory
    /// unless the agent calls [`DisplayConfig::resolve_paths`].
    pub png_path: PathBuf,
    /// Offset of local time from UTC for times on screen, e.g. `"+07:00"`.
    pub utc_offset: UtcOffset,
    /// The language of the screens and staff-facing words: a file in
    /// `display/lang/` (`en`, `id`, …). Logs, MQTT and JSON stay English.
    pub language: String,
}

impl Default for DisplayConfig {
    fn default() -> Self {
        Self {
            driver: DriverChoice::Auto,
            model: PanelModel::St7789,
            width: None,
            height: None,
            rotation: Rotation::Deg0,
            offset_x: 0,
            offset_y: 0,
            invert: None,
            bgr: None,
            spidev: PathBuf::from("/dev/spidev0.0"),
            spi_hz: 32_000_000,
            spi_mode: 0,
            spi_buffer: 4096,
            gpiochip: PathBuf::from("/dev/gpiochip0"),
            dc_line: 25,
            reset_line: Some(27),
            backlight_line: Some(18),
            backlight_active_low: false,
            backlight_timeout_secs: 300,
            button_line: None,
            button_active_low: true,
            png_path: PathBuf::from("display.png"),
            utc_offset: UtcOffset::UTC,
            language: "en".into(),
        }
    }
}

/// A config value that is out of range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// SPI mode outside 0–3.
    #[error("display.spi_mode must be 0..=3, not {0}")]
    SpiMode(u8),
    /// Zero or absurd SPI clock.
    #[error("display.spi_hz must be between 100 kHz and 125 MHz, not {0}")]
    SpiHz(u32),
    /// Buffer larger than spidev accepts, or too small for a pixel.
    #[error("display.spi_buffer must be 64..=4096 bytes, not {0}")]
    SpiBuffer(usize),
    /// Glass bigger than the controller's memory.
    #[error("display size {w}x{h} (+{ox},{oy}) does not fit the {model} controller ({cw}x{ch})")]
    Size {
        /// Model name.
        model: &'static str,
        /// Configured width.
        w: u16,
        /// Configured height.
        h: u16,
        /// Configured column offset.
        ox: u16,
        /// Configured row offset.
        oy: u16,
        /// Controller width.
        cw: u16,
        /// Controller height.
        ch: u16,
    },
    /// A timeout beyond a day is a typo (0 already means "never").
    #[error("display.backlight_timeout_secs must be at most 86400 (0 = never), not {0}")]
    BacklightTimeout(u64),
    /// Screens smaller than this cannot show a WhatsApp QR with readable text.
    #[error("display size {0}x{1} is too small (minimum 200x200)")]
    TooSmall(u16, u16),
    /// No file in `display/lang/` for this code.
    #[error("display.language {0:?} is not available (available: {1})")]
    Language(String, String),
}

impl DisplayConfig {
    /// The words of [`Self::language`] (English when it is unknown; the
    /// config's validation refuses that before it gets here).
    pub fn strings(&self) -> &'static crate::lang::Strings {
        crate::lang::lookup(&self.language).unwrap_or_else(crate::lang::english)
    }

    /// Glass size in the native orientation (configured or the model's default).
    pub fn native_size(&self) -> (u16, u16) {
        let (dw, dh) = self.model.default_size();
        (self.width.unwrap_or(dw), self.height.unwrap_or(dh))
    }

    /// Size of the picture after rotation; this is what the renderer draws.
    pub fn logical_size(&self) -> (u16, u16) {
        self.rotation.logical_size(self.native_size())
    }

    /// Colour inversion, configured or the model's default.
    pub fn invert(&self) -> bool {
        self.invert.unwrap_or(self.model.default_invert())
    }

    /// BGR order, configured or the model's default.
    pub fn bgr(&self) -> bool {
        self.bgr.unwrap_or(self.model.default_bgr())
    }

    /// `backlight_timeout_secs` as a duration; `None` means "never".
    pub fn backlight_timeout(&self) -> Option<Duration> {
        (self.backlight_timeout_secs > 0).then(|| Duration::from_secs(self.backlight_timeout_secs))
    }

    /// Makes a relative `png_path` relative to `base` (the agent's data directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        if self.png_path.is_relative() {
            self.png_path = base.join(&self.png_path);
        }
    }

    /// Checks ranges that serde cannot express. The agent should call it in `check-config`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if crate::lang::lookup(&self.language).is_none() {
            return Err(ConfigError::Language(
                self.language.clone(),
                crate::lang::codes().join(", "),
            ));
        }
        if self.spi_mode > 3 {
            return Err(ConfigError::SpiMode(self.spi_mode));
        }
        if !(100_000..=125_000_000).contains(&self.spi_hz) {
            return Err(ConfigError::SpiHz(self.spi_hz));
        }
        if !(64..=4096).contains(&self.spi_buffer) {
            return Err(ConfigError::SpiBuffer(self.spi_buffer));
        }
        if self.backlight_timeout_secs > 86_400 {
            return Err(ConfigError::BacklightTimeout(self.backlight_timeout_secs));
        }
        let (w, h) = self.native_size();
        if w < 200 || h < 200 {
            return Err(ConfigError::TooSmall(w, h));
        }
        let (cw, ch) = self.model.controller_size();
        if u32::from(w) + u32::from(self.offset_x) > u32::from(cw)
            || u32::from(h) + u32::from(self.offset_y) > u32::from(ch)
        {
            return Err(ConfigError::Size {
                model: self.model.name(),
                w,
                h,
                ox: self.offset_x,
                oy: self.offset_y,
                cw,
                ch,
            });
        }
        Ok(())
    }
}

/// Offset of local time from UTC, written `"+07:00"`, `"-03:30"` or `"Z"`.
///
/// A fixed offset (not a zone name) keeps the crate free of a time-zone database; outlets in one
/// country rarely change offset, and the agent can override it from its own config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct UtcOffset {
    minutes: i32,
}

impl UtcOffset {
    /// UTC itself.
    pub const UTC: UtcOffset = UtcOffset { minutes: 0 };

    /// An offset of `minutes` east of UTC (clamped to ±18 h).
    pub fn from_minutes(minutes: i32) -> Self {
        Self {
            minutes: minutes.clamp(-18 * 60, 18 * 60),
        }
    }

    /// Minutes east of UTC.
    pub fn minutes(self) -> i32 {
        self.minutes
    }
}

impl From<UtcOffset> for String {
    fn from(offset: UtcOffset) -> String {
        let m = offset.minutes();
        let sign = if m < 0 { '-' } else { '+' };
        format!("{sign}{:02}:{:02}", m.abs() / 60, m.abs() % 60)
    }
}

impl TryFrom<String> for UtcOffset {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let bad = || format!("utc_offset must look like \"+07:00\" or \"Z\", not {value:?}");
        let v = value.trim();
        if v.eq_ignore_ascii_case("z") || v.eq_ignore_ascii_case("utc") {
            return Ok(Self::UTC);
        }
        let (sign, rest) = match v.as_bytes().first() {
            Some(b'+') => (1, &v[1..]),
            Some(b'-') => (-1, &v[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
        let h: i32 = h.parse().map_err(|_| bad())?;
        let m: i32 = m.parse().map_err(|_| bad())?;
        if !(0..=18).contains(&h) || !(0..60).contains(&m) {
            return Err(bad());
        }
        Ok(Self::from_minutes(sign * (h * 60 + m)))
    }
}
