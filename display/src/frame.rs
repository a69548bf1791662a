//! An in-memory RGB565 picture and the "what changed" computation.
//!
//! Every screen is first drawn here, never straight onto the bus: drawing text and shapes is
//! pixel-by-pixel work that is cheap in RAM and ruinous over SPI. Comparing the new frame with
//! the one the panel already shows then gives a few rectangles to send, so a countdown tick
//! moves a bar and two digits, not the QR.

use std::convert::Infallible;

use embedded_graphics::Pixel;
use embedded_graphics::pixelcolor::{Rgb565, RgbColor};
use embedded_graphics::prelude::{DrawTarget, IntoStorage, OriginDimensions, Point, Size};
use embedded_graphics::primitives::Rectangle;

/// A width×height RGB565 picture in logical (already rotated) coordinates.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    width: u32,
    height: u32,
    pixels: Vec<Rgb565>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({}x{})", self.width, self.height)
    }
}

impl Frame {
    /// A frame filled with `color`.
    pub fn new(width: u32, height: u32, color: Rgb565) -> Self {
        Self {
            width,
            height,
            pixels: vec![color; width as usize * height as usize],
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The whole frame as a rectangle.
    pub fn bounds(&self) -> Rectangle {
        Rectangle::new(Point::zero(), Size::new(self.width, self.height))
    }

    /// The pixel at (`x`, `y`); black outside the frame.
    pub fn pixel(&self, x: u32, y: u32) -> Rgb565 {
        if x < self.width && y < self.height {
            self.pixels[(y * self.width + x) as usize]
        } else {
            Rgb565::BLACK
        }
    }

    /// One row of pixels (empty below the frame).
    pub fn row(&self, y: u32) -> &[Rgb565] {
        let start = y as usize * self.width as usize;
        self.pixels
            .get(start..start + self.width as usize)
            .unwrap_or(&[])
    }

    /// Pixels of `rect` (clipped to the frame) row by row: the order a display's RAMWR
    /// expects inside an address window.
    pub fn pixels_in(&self, rect: Rectangle) -> impl Iterator<Item = Rgb565> + '_ {
        let rect = rect.intersection(&self.bounds());
        let x0 = rect.top_left.x.max(0) as usize;
        let y0 = rect.top_left.y.max(0) as u32;
        let w = rect.size.width as usize;
        (y0..y0 + rect.size.height)
            .flat_map(move |y| self.row(y).get(x0..x0 + w).unwrap_or(&[]).iter().copied())
    }

    /// Perceived brightness 0–255 of a pixel (for QR decoding in tests and the terminal).
    pub fn luma(&self, x: u32, y: u32) -> u8 {
        let c = self.pixel(x, y);
        let (r, g, b) = expand(c);
        ((u32::from(r) * 299 + u32::from(g) * 587 + u32::from(b) * 114) / 1000) as u8
    }

    /// The frame as packed 8-bit RGB, for PNG.
    pub fn to_rgb888(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pixels.len() * 3);
        for &c in &self.pixels {
            let (r, g, b) = expand(c);
            out.extend_from_slice(&[r, g, b]);
        }
        out
    }

    /// The frame as big-endian RGB565 bytes, exactly what goes over SPI for a full window.
    pub fn to_rgb565_be(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pixels.len() * 2);
        for &c in &self.pixels {
            out.extend_from_slice(&c.into_storage().to_be_bytes());
        }
        out
    }

    /// Builds a frame from packed 8-bit RGB (PNG snapshots). Returns `None` on a size mismatch.
    pub fn from_rgb888(width: u32, height: u32, rgb: &[u8]) -> Option<Self> {
        if rgb.len() != width as usize * height as usize * 3 {
            return None;
        }
        let pixels = rgb
            .chunks_exact(3)
            .map(|p| Rgb565::new(p[0] >> 3, p[1] >> 2, p[2] >> 3))
            .collect();
        Some(Self {
            width,
            height,
            pixels,
        })
    }

    /// Sets one pixel (ignored outside the frame).
    pub fn set_pixel(&mut self, x: u32, y: u32, color: Rgb565) {
        if x < self.width && y < self.height {
            self.pixels[(y * self.width + x) as usize] = color;
        }
    }

    /// Rectangles covering every pixel that differs from `previous`.
    ///
    /// Rows with changes are grouped into bands; a band ends at a gap of unchanged rows or when
    /// the next row's changes are far away horizontally. The result is a handful of address
    /// windows: the panel gets contiguous RAMWR bursts and nothing that did not change. When the
    /// changes cover most of the screen anyway, one full window is cheaper than many.
    pub fn diff(&self, previous: &Frame) -> Vec<Rectangle> {
        if previous.width != self.width || previous.height != self.height {
            return vec![self.bounds()];
        }
        const ROW_GAP: u32 = 4;
        const COL_GAP: u32 = 24;
        let mut bands: Vec<(u32, u32, u32, u32)> = Vec::new(); // x0, y0, x1, y1 inclusive
        let mut open: Option<(u32, u32, u32, u32)> = None;
        for y in 0..self.height {
            let (a, b) = (self.row(y), previous.row(y));
            if a == b {
                continue;
            }
            let Some(first) = a.iter().zip(b).position(|(p, q)| p != q) else {
                continue;
            };
            let last = a.len()
                - 1
                - a.iter()
                    .rev()
                    .zip(b.iter().rev())
                    .position(|(p, q)| p != q)
                    .unwrap_or(0);
            let (x0, x1) = (first as u32, last as u32);
            open = match open {
                Some((bx0, by0, bx1, by1))
                    if y - by1 <= ROW_GAP
                        && x0 <= bx1.saturating_add(COL_GAP)
                        && x1.saturating_add(COL_GAP) >= bx0 =>
                {
                    Some((bx0.min(x0), by0, bx1.max(x1), y))
                }
                Some(band) => {
                    bands.push(band);
                    Some((x0, y, x1, y))
                }
                None => Some((x0, y, x1, y)),
            };
        }
        bands.extend(open);
        let rects: Vec<Rectangle> = bands
            .into_iter()
            .map(|(x0, y0, x1, y1)| {
                Rectangle::new(
                    Point::new(x0 as i32, y0 as i32),
                    Size::new(x1 - x0 + 1, y1 - y0 + 1),
                )
            })
            .collect();
        let area: u64 = rects
            .iter()
            .map(|r| u64::from(r.size.width) * u64::from(r.size.height))
            .sum();
        let full = u64::from(self.width) * u64::from(self.height);
        if rects.len() > 1 && area * 10 > full * 7 {
            return vec![self.bounds()];
        }
        rects
    }
}

/// RGB565 to 8-bit channels with bit replication (so white stays 255, not 248).
pub(crate) fn expand(c: Rgb565) -> (u8, u8, u8) {
    let (r, g, b) = (c.r(), c.g(), c.b());
    (
        (r << 3) | (r >> 2),
        (g << 2) | (g >> 4),
        (b << 3) | (b >> 2),
    )
}

/// An RGB565 colour from 8-bit channels.
pub const fn rgb(r: u8, g: u8, b: u8) -> Rgb565 {
    Rgb565::new(r >> 3, g >> 2, b >> 3)
}

impl OriginDimensions for Frame {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Frame {
    type Color = Rgb565;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 {
                self.set_pixel(p.x as u32, p.y as u32, c);
            }
        }
        Ok(())
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Self::Color) -> Result<(), Self::Error> {
        let area = area.intersection(&self.bounds());
        if area.is_zero_sized() {
            return Ok(());
        }
        let x0 = area.top_left.x as usize;
        let w = area.size.width as usize;
        for y in area.rows() {
            let start = y as usize * self.width as usize + x0;
            self.pixels[start..start + w].fill(color);
        }
        Ok(())
    }

    fn clear(&mut self, color: Self::Color) -> Result<(), Self::Error> {
        self.pixels.fill(color);
        Ok(())
    }
}

/// A draw target that magnifies everything drawn on it by an integer factor.
///
/// embedded-graphics' mono fonts stop at about 16×29 px; the pairing code and countdowns need
/// to be read from across a counter, so they are drawn with a normal font through this wrapper.
pub(crate) struct Scaled<'a> {
    pub target: &'a mut Frame,
    pub origin: Point,
    pub scale: u32,
}

impl OriginDimensions for Scaled<'_> {
    fn size(&self) -> Size {
        Size::new(
            self.target.width / self.scale,
            self.target.height / self.scale,
        )
    }
}

impl DrawTarget for Scaled<'_> {
    type Color = Rgb565;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let s = self.scale as i32;
        for Pixel(p, c) in pixels {
            let r = Rectangle::new(
                self.origin + Point::new(p.x * s, p.y * s),
                Size::new(self.scale, self.scale),
            );
            self.target.fill_solid(&r, c)?;
        }
        Ok(())
    }
}

/// Raw value helper for tests that want to compare colours numerically.
pub fn raw(c: Rgb565) -> u16 {
    c.into_storage()
}
