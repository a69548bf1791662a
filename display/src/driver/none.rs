//! The `none` driver: accepts every frame and shows nothing.
//!
//! Exists so the agent can treat "no display configured" like any other driver.

use embedded_graphics::primitives::Rectangle;

use super::{Driver, DriverError};
use crate::render::Rendered;

/// Discards frames.
#[derive(Debug, Default)]
pub struct NoneDriver;

impl Driver for NoneDriver {
    fn name(&self) -> &'static str {
        "none"
    }

    fn present(&mut self, _rendered: &Rendered, _dirty: &[Rectangle]) -> Result<(), DriverError> {
        Ok(())
    }
}
