//! The `png` driver: every change rewrites one PNG file, atomically.
//!
//! For headless units (support can fetch the file to see what the screen would show), for
//! documentation and for tests. The file is written to `<name>.tmp` and renamed over the old
//! one, so a reader never sees a half-written image.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use embedded_graphics::primitives::Rectangle;

use super::{Driver, DriverError};
use crate::frame::Frame;
use crate::render::Rendered;

/// Writes each frame to `path`.
#[derive(Debug)]
pub struct PngDriver {
    path: PathBuf,
}

impl PngDriver {
    /// A driver writing to `path` (parent directories are created on first write).
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The output file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Driver for PngDriver {
    fn name(&self) -> &'static str {
        "png"
    }

    fn present(&mut self, rendered: &Rendered, dirty: &[Rectangle]) -> Result<(), DriverError> {
        if dirty.is_empty() {
            return Ok(());
        }
        write_png_atomic(&self.path, &rendered.frame)
    }
}

/// Encodes a frame as an 8-bit RGB PNG, fast (the driver writes one per countdown second).
pub fn encode_png(frame: &Frame) -> Result<Vec<u8>, DriverError> {
    encode(frame, png::Compression::Fast)
}

/// Encodes a frame as a small PNG, for files kept in the repository (snapshots).
pub fn encode_png_small(frame: &Frame) -> Result<Vec<u8>, DriverError> {
    encode(frame, png::Compression::High)
}

fn encode(frame: &Frame, compression: png::Compression) -> Result<Vec<u8>, DriverError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, frame.width(), frame.height());
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(compression);
        let mut writer = enc
            .write_header()
            .map_err(|e| DriverError::Png(e.to_string()))?;
        writer
            .write_image_data(&frame.to_rgb888())
            .map_err(|e| DriverError::Png(e.to_string()))?;
        writer
            .finish()
            .map_err(|e| DriverError::Png(e.to_string()))?;
    }
    Ok(out)
}

/// Decodes an 8-bit RGB or RGBA PNG into a frame (snapshot tests).
pub fn decode_png(bytes: &[u8]) -> Result<Frame, DriverError> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder
        .read_info()
        .map_err(|e| DriverError::Png(e.to_string()))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| DriverError::Png("image too large".into()))?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| DriverError::Png(e.to_string()))?;
    let data = &buf[..info.buffer_size()];
    let rgb: Vec<u8> = match (info.color_type, info.bit_depth) {
        (png::ColorType::Rgb, png::BitDepth::Eight) => data.to_vec(),
        (png::ColorType::Rgba, png::BitDepth::Eight) => data
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        other => {
            return Err(DriverError::Png(format!(
                "unsupported PNG format {other:?}"
            )));
        }
    };
    Frame::from_rgb888(info.width, info.height, &rgb)
        .ok_or_else(|| DriverError::Png("size mismatch".into()))
}

/// Writes `frame` to `path` via a temporary file and a rename. The file is
/// the owner's only (0600): while pairing it shows the QR, which carries the
/// pairing secret, and `png_path` may lie outside the private data dir.
pub fn write_png_atomic(path: &Path, frame: &Frame) -> Result<(), DriverError> {
    let bytes = encode_png(frame)?;
    let io = |source| DriverError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover from a crash may have other permissions: start afresh.
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    drop(f);
    fs::rename(&tmp, path).map_err(io)
}
