//! Physical panels: controller models, native sizes and rotation.
//!
//! Kept apart from the SPI driver because the renderer, the PNG driver and the test emulator all
//! need the same answer to "how big is the picture for this panel and rotation".

use serde::{Deserialize, Serialize};

/// Display controllers the `spi` driver supports (through mipidsi).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PanelModel {
    /// Sitronix ST7789: 240×240 (1.3"/1.54") and 240×320 (2.0"/2.4"/2.8") IPS panels.
    #[default]
    St7789,
    /// Ilitek ILI9341: 240×320 TFT panels (2.4"/2.8"/3.2").
    Ili9341,
    /// Ilitek ILI9342C: the native-landscape 320×240 variant of the ILI9341.
    Ili9342c,
    /// Sitronix ST7796S: 320×480 (3.5"/4.0") panels, RGB565 over SPI.
    St7796,
}

impl PanelModel {
    /// Every supported model, for tests and docs.
    pub const ALL: [PanelModel; 4] = [
        PanelModel::St7789,
        PanelModel::Ili9341,
        PanelModel::Ili9342c,
        PanelModel::St7796,
    ];

    /// Config spelling of the model.
    pub fn name(self) -> &'static str {
        match self {
            PanelModel::St7789 => "st7789",
            PanelModel::Ili9341 => "ili9341",
            PanelModel::Ili9342c => "ili9342c",
            PanelModel::St7796 => "st7796",
        }
    }

    /// Size of the controller's frame memory in its native orientation (columns, rows).
    ///
    /// Smaller glass (an ST7789 240×240) sits in a corner of this memory; mipidsi adds the
    /// offset that rotation makes necessary.
    pub fn controller_size(self) -> (u16, u16) {
        match self {
            PanelModel::St7789 | PanelModel::Ili9341 => (240, 320),
            PanelModel::Ili9342c => (320, 240),
            PanelModel::St7796 => (320, 480),
        }
    }

    /// The usual glass size for this controller (width, height in native orientation).
    pub fn default_size(self) -> (u16, u16) {
        self.controller_size()
    }

    /// Whether the usual module of this model needs colour inversion (INVON).
    ///
    /// Most ST7789 IPS modules are wired "normally black" and show a negative without it.
    pub fn default_invert(self) -> bool {
        matches!(self, PanelModel::St7789 | PanelModel::Ili9342c)
    }

    /// Whether the usual module of this model has its colour filter in BGR order.
    pub fn default_bgr(self) -> bool {
        !matches!(self, PanelModel::St7789)
    }
}

/// Clockwise rotation of the picture relative to the panel's native orientation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "u16", into = "u16")]
pub enum Rotation {
    /// Native orientation.
    #[default]
    Deg0,
    /// 90° clockwise.
    Deg90,
    /// Upside down.
    Deg180,
    /// 270° clockwise.
    Deg270,
}

impl Rotation {
    /// All four rotations.
    pub const ALL: [Rotation; 4] = [
        Rotation::Deg0,
        Rotation::Deg90,
        Rotation::Deg180,
        Rotation::Deg270,
    ];

    /// The angle in degrees.
    pub fn degrees(self) -> u16 {
        match self {
            Rotation::Deg0 => 0,
            Rotation::Deg90 => 90,
            Rotation::Deg180 => 180,
            Rotation::Deg270 => 270,
        }
    }

    /// Whether width and height swap.
    pub fn is_quarter_turn(self) -> bool {
        matches!(self, Rotation::Deg90 | Rotation::Deg270)
    }

    /// The picture size for a panel of `native` size (width, height).
    pub fn logical_size(self, native: (u16, u16)) -> (u16, u16) {
        if self.is_quarter_turn() {
            (native.1, native.0)
        } else {
            native
        }
    }
}

impl TryFrom<u16> for Rotation {
    type Error = String;

    fn try_from(value: u16) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(Rotation::Deg0),
            90 => Ok(Rotation::Deg90),
            180 => Ok(Rotation::Deg180),
            270 => Ok(Rotation::Deg270),
            other => Err(format!("rotation must be 0, 90, 180 or 270, not {other}")),
        }
    }
}

impl From<Rotation> for mipidsi::options::Rotation {
    fn from(value: Rotation) -> Self {
        match value {
            Rotation::Deg0 => mipidsi::options::Rotation::Deg0,
            Rotation::Deg90 => mipidsi::options::Rotation::Deg90,
            Rotation::Deg180 => mipidsi::options::Rotation::Deg180,
            Rotation::Deg270 => mipidsi::options::Rotation::Deg270,
        }
    }
}

impl From<Rotation> for u16 {
    fn from(rotation: Rotation) -> u16 {
        rotation.degrees()
    }
}
