//! The `spi` driver: an ST7789 / ILI9341 / ILI9342C / ST7796 panel through mipidsi.
//!
//! [`SpiPanel`] is generic over embedded-hal 1.0 [`SpiDevice`] and [`OutputPin`], so the same
//! code drives `linux-embedded-hal`'s `SpidevDevice` + `CdevPin` on a Pi and a recording fake
//! in tests ([`crate::testing`]). mipidsi does the controller init (MADCTL for rotation, colour
//! order, inversion) and address windows; the bus side is [`PanelInterface`], which owns its
//! transfer buffer (at most 4096 bytes: spidev's default `bufsiz`, beyond which the kernel
//! rejects a write) and sends every changed rectangle as one CASET/RASET/RAMWR window followed
//! by contiguous pixel data: never pixel by pixel.

use embedded_graphics::pixelcolor::Rgb565;
use embedded_graphics::primitives::Rectangle;
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use embedded_hal::spi::SpiDevice;
use mipidsi::interface::{Interface, InterfaceKind};
use mipidsi::models::{ILI9341Rgb565, ILI9342CRgb565, Model, ST7789, ST7796};
use mipidsi::options::{ColorInversion, ColorOrder, Orientation};

use super::{Driver, DriverError};
use crate::config::DisplayConfig;
use crate::panel::{PanelModel, Rotation};
use crate::render::Rendered;

/// Largest write spidev accepts with its default `bufsiz` module parameter.
pub const SPIDEV_MAX_TRANSFER: usize = 4096;

/// Panel settings the SPI driver needs (a subset of [`DisplayConfig`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpiOptions {
    /// Controller.
    pub model: PanelModel,
    /// Glass size in native orientation.
    pub native_size: (u16, u16),
    /// Picture rotation.
    pub rotation: Rotation,
    /// Glass offset in controller memory.
    pub offset: (u16, u16),
    /// INVON.
    pub invert: bool,
    /// BGR colour filter.
    pub bgr: bool,
    /// Bytes per SPI write (clamped to 16..=4096).
    pub buffer_bytes: usize,
    /// Backlight line polarity.
    pub backlight_active_low: bool,
}

impl SpiOptions {
    /// The SPI-relevant part of a display config.
    pub fn from_config(c: &DisplayConfig) -> Self {
        Self {
            model: c.model,
            native_size: c.native_size(),
            rotation: c.rotation,
            offset: (c.offset_x, c.offset_y),
            invert: c.invert(),
            bgr: c.bgr(),
            buffer_bytes: c.spi_buffer,
            backlight_active_low: c.backlight_active_low,
        }
    }

    /// Defaults of `model` at its usual size, for tests and benchmarks.
    pub fn for_model(model: PanelModel, rotation: Rotation) -> Self {
        Self {
            model,
            native_size: model.default_size(),
            rotation,
            offset: (0, 0),
            invert: model.default_invert(),
            bgr: model.default_bgr(),
            buffer_bytes: SPIDEV_MAX_TRANSFER,
            backlight_active_low: false,
        }
    }
}

/// Error of the bus side, carried as text: mipidsi only needs `Debug`, and the display task
/// only needs something to put in the status.
#[derive(Debug)]
pub enum BusError {
    /// The SPI transfer failed.
    Spi(String),
    /// The DC pin could not be switched.
    Dc(String),
}

impl std::fmt::Display for BusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusError::Spi(e) => write!(f, "spi: {e}"),
            BusError::Dc(e) => write!(f, "dc pin: {e}"),
        }
    }
}

/// MIPI DBI type C option 3 (4-wire SPI with a DC line) with an owned transfer buffer.
///
/// mipidsi's own `SpiInterface` borrows its buffer, which would make the long-lived driver a
/// self-referential struct; owning it here also lets the size come from config.
pub struct PanelInterface<SPI, DC> {
    spi: SPI,
    dc: DC,
    buffer: Vec<u8>,
}

impl<SPI: SpiDevice, DC: OutputPin> PanelInterface<SPI, DC> {
    /// Wraps a bus and DC pin with a `buffer_bytes` transfer buffer (clamped to 16..=4096).
    pub fn new(spi: SPI, dc: DC, buffer_bytes: usize) -> Self {
        Self {
            spi,
            dc,
            buffer: vec![0; buffer_bytes.clamp(16, SPIDEV_MAX_TRANSFER)],
        }
    }

    fn write(&mut self, n: usize) -> Result<(), BusError> {
        self.spi
            .write(&self.buffer[..n])
            .map_err(|e| BusError::Spi(format!("{e:?}")))
    }
}

impl<SPI: SpiDevice, DC: OutputPin> Interface for PanelInterface<SPI, DC> {
    type Word = u8;
    type Error = BusError;

    const KIND: InterfaceKind = InterfaceKind::Serial4Line;

    fn send_command(&mut self, command: u8, args: &[u8]) -> Result<(), BusError> {
        self.dc
            .set_low()
            .map_err(|e| BusError::Dc(format!("{e:?}")))?;
        self.spi
            .write(&[command])
            .map_err(|e| BusError::Spi(format!("{e:?}")))?;
        self.dc
            .set_high()
            .map_err(|e| BusError::Dc(format!("{e:?}")))?;
        if !args.is_empty() {
            self.spi
                .write(args)
                .map_err(|e| BusError::Spi(format!("{e:?}")))?;
        }
        Ok(())
    }

    fn send_pixels<const N: usize>(
        &mut self,
        pixels: impl IntoIterator<Item = [u8; N]>,
    ) -> Result<(), BusError> {
        // N is the bytes per pixel (2 for RGB565), far below the 16-byte minimum buffer.
        let cap = self.buffer.len() / N * N;
        let mut n = 0;
        for px in pixels {
            if n + N > cap {
                self.write(n)?;
                n = 0;
            }
            self.buffer[n..n + N].copy_from_slice(&px);
            n += N;
        }
        if n > 0 {
            self.write(n)?;
        }
        Ok(())
    }

    fn send_repeated_pixel<const N: usize>(
        &mut self,
        pixel: [u8; N],
        count: u32,
    ) -> Result<(), BusError> {
        self.send_pixels((0..count).map(|_| pixel))
    }
}

/// An output pin that may not be wired.
pub struct OptionalPin<P>(pub Option<P>);

impl<P: OutputPin> embedded_hal::digital::ErrorType for OptionalPin<P> {
    type Error = P::Error;
}

impl<P: OutputPin> OutputPin for OptionalPin<P> {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.0.as_mut().map_or(Ok(()), OutputPin::set_low)
    }

    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.0.as_mut().map_or(Ok(()), OutputPin::set_high)
    }
}

/// A panel on a SPI bus, ready to show frames.
pub struct SpiPanel<M, SPI, DC, RST, BL>
where
    M: Model<ColorFormat = Rgb565>,
    SPI: SpiDevice,
    DC: OutputPin,
    RST: OutputPin,
    BL: OutputPin,
{
    display: mipidsi::Display<PanelInterface<SPI, DC>, M, OptionalPin<RST>>,
    backlight: Option<BL>,
    backlight_active_low: bool,
    size: (u16, u16),
}

impl<M, SPI, DC, RST, BL> SpiPanel<M, SPI, DC, RST, BL>
where
    M: Model<ColorFormat = Rgb565>,
    SPI: SpiDevice,
    DC: OutputPin,
    RST: OutputPin,
    BL: OutputPin,
{
    /// Resets and initialises the controller. The backlight stays off until the display task
    /// switches it on after the first frame, so staff never see the power-on garbage.
    pub fn init(
        model: M,
        spi: SPI,
        dc: DC,
        reset: Option<RST>,
        backlight: Option<BL>,
        options: &SpiOptions,
        delay: &mut impl DelayNs,
    ) -> Result<Self, DriverError> {
        let mut backlight = backlight;
        if let Some(bl) = backlight.as_mut() {
            set_level(bl, false, options.backlight_active_low)?;
        }
        let mut di = PanelInterface::new(spi, dc, options.buffer_bytes);
        let has_reset = reset.is_some();
        if !has_reset {
            // mipidsi only sends SWRESET when it has no reset pin type at all.
            di.send_command(0x01, &[])
                .map_err(|e| DriverError::Bus(e.to_string()))?;
        }
        let (w, h) = options.native_size;
        let display = mipidsi::Builder::new(model, di)
            .display_size(w, h)
            .display_offset(options.offset.0, options.offset.1)
            .orientation(Orientation::new().rotate(options.rotation.into()))
            .color_order(if options.bgr {
                ColorOrder::Bgr
            } else {
                ColorOrder::Rgb
            })
            .invert_colors(if options.invert {
                ColorInversion::Inverted
            } else {
                ColorInversion::Normal
            })
            .reset_pin(OptionalPin(reset))
            .init(delay)
            .map_err(|e| match e {
                mipidsi::InitError::Interface(e) => DriverError::Bus(e.to_string()),
                mipidsi::InitError::ResetPin(e) => DriverError::Gpio(format!("reset pin: {e:?}")),
                mipidsi::InitError::InvalidConfiguration(e) => DriverError::Init(format!("{e:?}")),
            })?;
        Ok(Self {
            display,
            backlight,
            backlight_active_low: options.backlight_active_low,
            size: options.rotation.logical_size(options.native_size),
        })
    }
}

fn set_level<P: OutputPin>(pin: &mut P, on: bool, active_low: bool) -> Result<(), DriverError> {
    let r = if on != active_low {
        pin.set_high()
    } else {
        pin.set_low()
    };
    r.map_err(|e| DriverError::Gpio(format!("backlight: {e:?}")))
}

impl<M, SPI, DC, RST, BL> Driver for SpiPanel<M, SPI, DC, RST, BL>
where
    M: Model<ColorFormat = Rgb565> + Send,
    SPI: SpiDevice + Send,
    DC: OutputPin + Send,
    RST: OutputPin + Send,
    BL: OutputPin + Send,
{
    fn name(&self) -> &'static str {
        "spi"
    }

    fn present(&mut self, rendered: &Rendered, dirty: &[Rectangle]) -> Result<(), DriverError> {
        let frame = &rendered.frame;
        if (frame.width(), frame.height()) != (u32::from(self.size.0), u32::from(self.size.1)) {
            return Err(DriverError::Init(format!(
                "frame {}x{} does not match panel {}x{}",
                frame.width(),
                frame.height(),
                self.size.0,
                self.size.1
            )));
        }
        for rect in dirty {
            let r = rect.intersection(&frame.bounds());
            let Some(end) = r.bottom_right() else {
                continue;
            };
            let (x0, y0) = (r.top_left.x as u16, r.top_left.y as u16);
            self.display
                .set_pixels(x0, y0, end.x as u16, end.y as u16, frame.pixels_in(r))
                .map_err(|e| DriverError::Bus(e.to_string()))?;
        }
        Ok(())
    }

    fn set_backlight(&mut self, on: bool) -> Result<(), DriverError> {
        let active_low = self.backlight_active_low;
        match self.backlight.as_mut() {
            Some(bl) => set_level(bl, on, active_low),
            None => Ok(()),
        }
    }
}

/// Initialises the panel of `options.model` on the given bus and pins.
///
/// This is the seam between hardware and tests: the agent goes through [`open_linux`], tests
/// pass fakes from [`crate::testing`].
pub fn open_panel<SPI, DC, RST, BL>(
    options: &SpiOptions,
    spi: SPI,
    dc: DC,
    reset: Option<RST>,
    backlight: Option<BL>,
    delay: &mut impl DelayNs,
) -> Result<Box<dyn Driver>, DriverError>
where
    SPI: SpiDevice + Send + 'static,
    DC: OutputPin + Send + 'static,
    RST: OutputPin + Send + 'static,
    BL: OutputPin + Send + 'static,
{
    Ok(match options.model {
        PanelModel::St7789 => Box::new(SpiPanel::init(
            ST7789, spi, dc, reset, backlight, options, delay,
        )?),
        PanelModel::Ili9341 => Box::new(SpiPanel::init(
            ILI9341Rgb565,
            spi,
            dc,
            reset,
            backlight,
            options,
            delay,
        )?),
        PanelModel::Ili9342c => Box::new(SpiPanel::init(
            ILI9342CRgb565,
            spi,
            dc,
            reset,
            backlight,
            options,
            delay,
        )?),
        PanelModel::St7796 => Box::new(SpiPanel::init(
            ST7796, spi, dc, reset, backlight, options, delay,
        )?),
    })
}

/// Opens spidev and the GPIO lines named in `config` and initialises the panel.
pub fn open_linux(config: &DisplayConfig) -> Result<Box<dyn Driver>, DriverError> {
    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
    use linux_embedded_hal::spidev::{SpiModeFlags, SpidevOptions};
    use linux_embedded_hal::{CdevPin, Delay, SpidevDevice};

    let spidev = config.spidev.display().to_string();
    let open_err = |what: &str, e: &dyn std::fmt::Display| DriverError::Open {
        what: what.to_string(),
        reason: e.to_string(),
    };
    let mut spi = SpidevDevice::open(&config.spidev).map_err(|e| open_err(&spidev, &e))?;
    let mode = match config.spi_mode {
        0 => SpiModeFlags::SPI_MODE_0,
        1 => SpiModeFlags::SPI_MODE_1,
        2 => SpiModeFlags::SPI_MODE_2,
        _ => SpiModeFlags::SPI_MODE_3,
    };
    spi.configure(
        &SpidevOptions::new()
            .bits_per_word(8)
            .max_speed_hz(config.spi_hz)
            .mode(mode)
            .build(),
    )
    .map_err(|e| open_err(&spidev, &e))?;

    let chip_name = config.gpiochip.display().to_string();
    let mut chip = Chip::new(&config.gpiochip).map_err(|e| open_err(&chip_name, &e))?;
    let mut output = |line: u32, level: u8, label: &str| -> Result<CdevPin, DriverError> {
        let what = format!("{chip_name} line {line} ({label})");
        let handle = chip
            .get_line(line)
            .and_then(|l| l.request(LineRequestFlags::OUTPUT, level, "outlet-display"))
            .map_err(|e| open_err(&what, &e))?;
        CdevPin::new(handle).map_err(|e| open_err(&what, &e))
    };
    let dc = output(config.dc_line, 0, "dc")?;
    let reset = config
        .reset_line
        .map(|l| output(l, 1, "reset"))
        .transpose()?;
    let off = u8::from(config.backlight_active_low);
    let backlight = config
        .backlight_line
        .map(|l| output(l, off, "backlight"))
        .transpose()?;
    open_panel(
        &SpiOptions::from_config(config),
        spi,
        dc,
        reset,
        backlight,
        &mut Delay,
    )
}
