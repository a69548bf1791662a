//! Test doubles for the SPI path: a fake bus and pins that feed a panel emulator.
//!
//! Public (not `cfg(test)`) because the integration tests, the benchmark and the agent's own
//! end-to-end tests (a simulated phone "scanning" the panel) all need them. Nothing here
//! touches hardware.
//!
//! [`PanelEmulator`] models the parts of a MIPI DCS controller (ST7789, ILI9341, ILI9342C,
//! ST7796) that the `spi` driver relies on: SWRESET, SLPOUT, DISPON, INVON/INVOFF, COLMOD,
//! MADCTL (row/column exchange and mirroring), CASET/RASET address windows and RAMWR with
//! big-endian RGB565 pixels written left-to-right, top-to-bottom inside the window. It keeps
//! the controller's frame memory in physical (native) orientation, so a test can check that
//! the bytes on the bus put the picture on the glass the right way round.

use std::sync::{Arc, Mutex, MutexGuard};

use embedded_graphics::pixelcolor::Rgb565;
use embedded_graphics::pixelcolor::raw::RawU16;
use embedded_graphics::primitives::Rectangle;
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{self, OutputPin};
use embedded_hal::spi::{self, Operation, SpiDevice};

use crate::frame::Frame;
use crate::panel::{PanelModel, Rotation};

/// DCS command bytes the emulator understands.
pub mod dcs {
    /// Software reset.
    pub const SWRESET: u8 = 0x01;
    /// Sleep out.
    pub const SLPOUT: u8 = 0x11;
    /// Normal display mode on.
    pub const NORON: u8 = 0x13;
    /// Inversion off.
    pub const INVOFF: u8 = 0x20;
    /// Inversion on.
    pub const INVON: u8 = 0x21;
    /// Display on.
    pub const DISPON: u8 = 0x29;
    /// Column address set.
    pub const CASET: u8 = 0x2A;
    /// Row (page) address set.
    pub const RASET: u8 = 0x2B;
    /// Memory write.
    pub const RAMWR: u8 = 0x2C;
    /// Memory access control (rotation, colour order).
    pub const MADCTL: u8 = 0x36;
    /// Pixel format.
    pub const COLMOD: u8 = 0x3A;
}

/// A DCS panel controller fed with command and data bytes.
#[derive(Clone, Debug)]
pub struct PanelEmulator {
    mem_w: u32,
    mem_h: u32,
    memory: Vec<u16>,
    touched: Vec<bool>,
    cmd: Option<u8>,
    params: Vec<u8>,
    pixel_hi: Option<u8>,
    col: (u16, u16),
    row: (u16, u16),
    cursor: (u16, u16),
    /// Last MADCTL value.
    pub madctl: u8,
    /// Last COLMOD value (0x55 = 16 bit).
    pub colmod: Option<u8>,
    /// INVON was the last inversion command.
    pub inverted: bool,
    /// SLPOUT received since reset.
    pub awake: bool,
    /// DISPON received since reset.
    pub display_on: bool,
    /// Every command byte in order.
    pub commands: Vec<u8>,
    /// Pixels written while asleep, off, or not in 16-bit mode (must stay 0).
    pub premature_pixels: u64,
    /// Pixels whose address fell outside the frame memory (must stay 0).
    pub out_of_range: u64,
    /// Address windows opened by RAMWR, in bus coordinates (x0, y0, x1, y1).
    pub windows: Vec<(u16, u16, u16, u16)>,
}

impl PanelEmulator {
    /// An emulator with the frame memory of `model`.
    pub fn new(model: PanelModel) -> Self {
        let (w, h) = model.controller_size();
        let (w, h) = (u32::from(w), u32::from(h));
        Self {
            mem_w: w,
            mem_h: h,
            memory: vec![0; (w * h) as usize],
            touched: vec![false; (w * h) as usize],
            cmd: None,
            params: Vec::new(),
            pixel_hi: None,
            col: (0, 0),
            row: (0, 0),
            cursor: (0, 0),
            madctl: 0,
            colmod: None,
            inverted: false,
            awake: false,
            display_on: false,
            commands: Vec::new(),
            premature_pixels: 0,
            out_of_range: 0,
            windows: Vec::new(),
        }
    }

    /// A byte sent with DC low.
    pub fn command(&mut self, byte: u8) {
        self.commands.push(byte);
        self.cmd = Some(byte);
        self.params.clear();
        self.pixel_hi = None;
        match byte {
            dcs::SWRESET => {
                self.madctl = 0;
                self.colmod = None;
                self.inverted = false;
                self.awake = false;
                self.display_on = false;
            }
            dcs::SLPOUT => self.awake = true,
            dcs::DISPON => self.display_on = true,
            dcs::INVON => self.inverted = true,
            dcs::INVOFF => self.inverted = false,
            dcs::RAMWR => {
                self.cursor = (self.col.0, self.row.0);
                self.windows
                    .push((self.col.0, self.row.0, self.col.1, self.row.1));
            }
            _ => {}
        }
    }

    /// Bytes sent with DC high: parameters of the last command, or pixel data after RAMWR.
    pub fn data(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match self.cmd {
                Some(dcs::RAMWR) => match self.pixel_hi.take() {
                    None => self.pixel_hi = Some(b),
                    Some(hi) => self.pixel(u16::from_be_bytes([hi, b])),
                },
                Some(cmd) => {
                    self.params.push(b);
                    let p = &self.params;
                    match (cmd, p.len()) {
                        (dcs::MADCTL, 1) => self.madctl = p[0],
                        (dcs::COLMOD, 1) => self.colmod = Some(p[0]),
                        (dcs::CASET, 4) => {
                            self.col = (
                                u16::from_be_bytes([p[0], p[1]]),
                                u16::from_be_bytes([p[2], p[3]]),
                            )
                        }
                        (dcs::RASET, 4) => {
                            self.row = (
                                u16::from_be_bytes([p[0], p[1]]),
                                u16::from_be_bytes([p[2], p[3]]),
                            )
                        }
                        _ => {}
                    }
                }
                None => {}
            }
        }
    }

    fn pixel(&mut self, value: u16) {
        if !self.awake || !self.display_on || self.colmod != Some(0x55) {
            self.premature_pixels += 1;
        }
        let (x, y) = self.cursor;
        // MADCTL: MV (bit 5) exchanges the bus column/page with physical row/column, MX (bit
        // 6) mirrors physical columns, MY (bit 7) mirrors physical rows.
        let (mut c, mut r) = if self.madctl & 0x20 != 0 {
            (u32::from(y), u32::from(x))
        } else {
            (u32::from(x), u32::from(y))
        };
        if self.madctl & 0x40 != 0 {
            c = (self.mem_w - 1).wrapping_sub(c);
        }
        if self.madctl & 0x80 != 0 {
            r = (self.mem_h - 1).wrapping_sub(r);
        }
        if c < self.mem_w && r < self.mem_h {
            let i = (r * self.mem_w + c) as usize;
            self.memory[i] = value;
            self.touched[i] = true;
        } else {
            self.out_of_range += 1;
        }
        // Advance inside the window, wrapping to its start like the hardware.
        self.cursor = if x >= self.col.1 {
            if y >= self.row.1 {
                (self.col.0, self.row.0)
            } else {
                (self.col.0, y + 1)
            }
        } else {
            (x + 1, y)
        };
    }

    /// The glass: the `size` corner of frame memory at `offset`, in native orientation.
    pub fn glass(&self, size: (u16, u16), offset: (u16, u16)) -> Frame {
        let (w, h) = (u32::from(size.0), u32::from(size.1));
        let mut f = Frame::new(w, h, Rgb565::new(0, 0, 0));
        for y in 0..h {
            for x in 0..w {
                let (c, r) = (x + u32::from(offset.0), y + u32::from(offset.1));
                if c < self.mem_w && r < self.mem_h {
                    let v = self.memory[(r * self.mem_w + c) as usize];
                    f.set_pixel(x, y, Rgb565::from(RawU16::new(v)));
                }
            }
        }
        f
    }

    /// Forgets which pixels were written (before measuring an update).
    pub fn clear_touched(&mut self) {
        self.touched.fill(false);
        self.windows.clear();
    }

    /// Number of glass pixels inside `rect` (glass coordinates) written since
    /// [`Self::clear_touched`].
    pub fn touched_in(&self, rect: Rectangle, offset: (u16, u16)) -> usize {
        let mut n = 0;
        for p in rect.points() {
            let (c, r) = (
                p.x as u32 + u32::from(offset.0),
                p.y as u32 + u32::from(offset.1),
            );
            if c < self.mem_w && r < self.mem_h && self.touched[(r * self.mem_w + c) as usize] {
                n += 1;
            }
        }
        n
    }

    /// Number of pixels written since [`Self::clear_touched`].
    pub fn touched_count(&self) -> usize {
        self.touched.iter().filter(|t| **t).count()
    }
}

use embedded_graphics::prelude::PointsIter;

/// Where logical pixel (`x`, `y`) of a picture rotated by `rotation` appears on glass of
/// `native` size (both in pixels, glass in native orientation). Rotation is clockwise: at 90°
/// the top of the picture runs down the right edge of the glass.
pub fn logical_to_glass(rotation: Rotation, native: (u16, u16), x: u32, y: u32) -> (u32, u32) {
    let (w, h) = (u32::from(native.0), u32::from(native.1));
    match rotation {
        Rotation::Deg0 => (x, y),
        Rotation::Deg90 => (w - 1 - y, x),
        Rotation::Deg180 => (w - 1 - x, h - 1 - y),
        Rotation::Deg270 => (y, h - 1 - x),
    }
}

/// A logical rectangle mapped onto the glass.
pub fn rect_to_glass(rotation: Rotation, native: (u16, u16), r: Rectangle) -> Rectangle {
    let Some(br) = r.bottom_right() else {
        return r;
    };
    let a = logical_to_glass(rotation, native, r.top_left.x as u32, r.top_left.y as u32);
    let b = logical_to_glass(rotation, native, br.x as u32, br.y as u32);
    let (x0, x1) = (a.0.min(b.0), a.0.max(b.0));
    let (y0, y1) = (a.1.min(b.1), a.1.max(b.1));
    Rectangle::with_corners(
        embedded_graphics::prelude::Point::new(x0 as i32, y0 as i32),
        embedded_graphics::prelude::Point::new(x1 as i32, y1 as i32),
    )
}

/// Failure injection for [`FakeSpi`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Failure {
    /// Everything works.
    #[default]
    None,
    /// Every write fails.
    Always,
    /// Writes fail once this many more bytes went through (a panel unplugged mid-frame).
    AfterBytes(u64),
}

/// State shared by a [`FakeSpi`] and its [`FakePin`]s.
#[derive(Debug)]
pub struct Bus {
    /// The panel on the bus.
    pub panel: PanelEmulator,
    dc_high: bool,
    /// Bytes written over SPI in total.
    pub bytes: u64,
    /// SPI write operations.
    pub writes: u64,
    /// Largest single write.
    pub largest_write: usize,
    /// Bytes sent with DC low.
    pub command_bytes: u64,
    /// DC pin level changes.
    pub dc_toggles: u64,
    /// Backlight level (`None`: never set).
    pub backlight: Option<bool>,
    /// Reset pulses seen.
    pub resets: u64,
    /// Failure injection.
    pub failure: Failure,
    /// Failed writes.
    pub failed_writes: u64,
}

/// A shared handle on a fake bus.
#[derive(Clone, Debug)]
pub struct FakeBus(Arc<Mutex<Bus>>);

impl FakeBus {
    /// A bus with a `model` panel on it.
    pub fn new(model: PanelModel) -> Self {
        Self(Arc::new(Mutex::new(Bus {
            panel: PanelEmulator::new(model),
            dc_high: true,
            bytes: 0,
            writes: 0,
            largest_write: 0,
            command_bytes: 0,
            dc_toggles: 0,
            backlight: None,
            resets: 0,
            failure: Failure::None,
            failed_writes: 0,
        })))
    }

    /// Opens the `spi` driver on this bus with every pin wired (DC, reset,
    /// backlight) and no delays: how the tests and the emulator see a panel.
    pub fn open_panel(
        &self,
        options: &crate::driver::spi::SpiOptions,
    ) -> Result<Box<dyn crate::driver::Driver>, crate::driver::DriverError> {
        crate::driver::spi::open_panel(
            options,
            self.spi(),
            self.pin(PinRole::Dc),
            Some(self.pin(PinRole::Reset)),
            Some(self.pin(PinRole::Backlight)),
            &mut NoDelay::default(),
        )
    }

    /// Locks the bus state for inspection or to change the failure mode.
    pub fn lock(&self) -> MutexGuard<'_, Bus> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The SPI device on this bus.
    pub fn spi(&self) -> FakeSpi {
        FakeSpi(self.clone())
    }

    /// A pin on this bus.
    pub fn pin(&self, role: PinRole) -> FakePin {
        FakePin {
            bus: self.clone(),
            role,
            level: true,
        }
    }
}

/// The error of the fakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FakeError;

impl spi::Error for FakeError {
    fn kind(&self) -> spi::ErrorKind {
        spi::ErrorKind::Other
    }
}

impl digital::Error for FakeError {
    fn kind(&self) -> digital::ErrorKind {
        digital::ErrorKind::Other
    }
}

/// An [`SpiDevice`] that hands its bytes to the [`PanelEmulator`] according to the DC pin.
#[derive(Debug)]
pub struct FakeSpi(FakeBus);

impl spi::ErrorType for FakeSpi {
    type Error = FakeError;
}

impl SpiDevice for FakeSpi {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), FakeError> {
        let mut bus = self.0.lock();
        for op in operations {
            let Operation::Write(buf) = op else {
                continue;
            };
            match bus.failure {
                Failure::Always => {
                    bus.failed_writes += 1;
                    return Err(FakeError);
                }
                Failure::AfterBytes(n) if buf.len() as u64 > n => {
                    bus.failure = Failure::Always;
                    bus.failed_writes += 1;
                    return Err(FakeError);
                }
                Failure::AfterBytes(n) => bus.failure = Failure::AfterBytes(n - buf.len() as u64),
                Failure::None => {}
            }
            bus.bytes += buf.len() as u64;
            bus.writes += 1;
            bus.largest_write = bus.largest_write.max(buf.len());
            if bus.dc_high {
                bus.panel.data(buf);
            } else {
                bus.command_bytes += buf.len() as u64;
                for &b in buf.iter() {
                    bus.panel.command(b);
                }
            }
        }
        Ok(())
    }
}

/// What a [`FakePin`] is wired to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinRole {
    /// Data/command select.
    Dc,
    /// Reset, active low.
    Reset,
    /// Backlight enable, active high.
    Backlight,
}

/// An output pin on a [`FakeBus`].
#[derive(Debug)]
pub struct FakePin {
    bus: FakeBus,
    role: PinRole,
    level: bool,
}

impl digital::ErrorType for FakePin {
    type Error = FakeError;
}

impl FakePin {
    fn set(&mut self, high: bool) {
        let mut bus = self.bus.lock();
        match self.role {
            PinRole::Dc => {
                if bus.dc_high != high {
                    bus.dc_toggles += 1;
                }
                bus.dc_high = high;
            }
            PinRole::Reset => {
                if !self.level && high {
                    bus.resets += 1;
                    bus.panel.command(dcs::SWRESET);
                }
            }
            PinRole::Backlight => bus.backlight = Some(high),
        }
        self.level = high;
    }
}

impl OutputPin for FakePin {
    fn set_low(&mut self) -> Result<(), FakeError> {
        self.set(false);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), FakeError> {
        self.set(true);
        Ok(())
    }
}

/// A delay that returns at once and adds up what was asked for.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDelay {
    /// Total requested delay in nanoseconds.
    pub total_ns: u64,
}

impl DelayNs for NoDelay {
    fn delay_ns(&mut self, ns: u32) {
        self.total_ns += u64::from(ns);
    }
}
