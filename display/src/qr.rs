//! QR encoding and the choice of error-correction level and module size.
//!
//! A phone camera reads a QR from a small panel best when each module is as many whole pixels
//! as possible: fractional modules smear edges, and bigger modules survive glare and distance.
//! So the level is chosen by module size first: level L (~7 % recovery) makes a smaller symbol
//! than M (~15 %) and sometimes buys one more pixel per module; when it does not, M wins for its
//! extra robustness. Only those two are considered: Q and H make a 260-byte WhatsApp payload too
//! dense for a 240-pixel panel.

use std::sync::Arc;

use qrcode::{Color, EcLevel, QrCode};

/// Modules of light margin required around a QR symbol (ISO/IEC 18004).
pub const QUIET_ZONE: u32 = 4;

/// Error-correction levels considered, in order of preference on a tie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// Medium, ~15 % of codewords recoverable. Preferred.
    M,
    /// Low, ~7 %. Used when it gives bigger modules.
    L,
}

/// An encoded QR symbol: a square of dark/light modules without the quiet zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrMatrix {
    width: u32,
    dark: Vec<bool>,
    level: Level,
    version: i16,
}

impl QrMatrix {
    /// Encodes `payload` at `level`.
    pub fn encode(payload: &[u8], level: Level) -> Result<Self, QrError> {
        let ec = match level {
            Level::M => EcLevel::M,
            Level::L => EcLevel::L,
        };
        let code = QrCode::with_error_correction_level(payload, ec)
            .map_err(|e| QrError(format!("{e:?}")))?;
        let version = match code.version() {
            qrcode::Version::Normal(v) | qrcode::Version::Micro(v) => v,
        };
        let width = code.width() as u32;
        let dark = code
            .to_colors()
            .into_iter()
            .map(|c| c == Color::Dark)
            .collect();
        Ok(Self {
            width,
            dark,
            level,
            version,
        })
    }

    /// Modules per side, without the quiet zone.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Modules per side including the quiet zone on both sides.
    pub fn width_with_quiet_zone(&self) -> u32 {
        self.width + 2 * QUIET_ZONE
    }

    /// Whether module (`x`, `y`) is dark; coordinates exclude the quiet zone.
    pub fn is_dark(&self, x: u32, y: u32) -> bool {
        x < self.width && y < self.width && self.dark[(y * self.width + x) as usize]
    }

    /// Error-correction level used.
    pub fn level(&self) -> Level {
        self.level
    }

    /// QR version (1–40).
    pub fn version(&self) -> i16 {
        self.version
    }

    /// Whole pixels per module when the symbol and its quiet zone must fit a `side`-pixel square.
    pub fn module_px(&self, side: u32) -> u32 {
        side / self.width_with_quiet_zone()
    }
}

/// The payload does not fit a QR code (longer than ~2.9 kB).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode QR: {0}")]
pub struct QrError(String);

/// Both candidate encodings of one payload, computed once per payload and shared between frames.
#[derive(Clone, Debug)]
pub struct QrPair {
    /// Level M encoding.
    pub m: Arc<QrMatrix>,
    /// Level L encoding.
    pub l: Arc<QrMatrix>,
}

impl QrPair {
    /// Encodes `payload` at M and L.
    pub fn encode(payload: &[u8]) -> Result<Self, QrError> {
        Ok(Self {
            m: Arc::new(QrMatrix::encode(payload, Level::M)?),
            l: Arc::new(QrMatrix::encode(payload, Level::L)?),
        })
    }

    /// The best encoding for a `side`-pixel square: the most pixels per module, M on a tie.
    /// Returns the matrix and its module size (0 when even 1 px does not fit).
    pub fn best_for(&self, side: u32) -> (&Arc<QrMatrix>, u32) {
        let (pm, pl) = (self.m.module_px(side), self.l.module_px(side));
        if pl > pm {
            (&self.l, pl)
        } else {
            (&self.m, pm)
        }
    }
}
