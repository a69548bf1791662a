//! Render, compare with what the driver shows, send only the difference.
//!
//! This is the "draw only what changed" rule in one place, shared by the display task, the
//! tests and the benchmark: a countdown tick changes a bar and a few digits, so only those
//! rectangles reach the bus and the QR is never resent.

use std::time::SystemTime;

use embedded_graphics::primitives::Rectangle;

use crate::driver::{Driver, DriverError};
use crate::frame::Frame;
use crate::render::{Rendered, Renderer};
use crate::screen::Screen;

/// What one [`Presenter::show`] did.
#[derive(Clone, Debug)]
pub struct Presented {
    /// Rectangles sent to the driver (empty when nothing changed).
    pub dirty: Vec<Rectangle>,
    /// The rendered screen.
    pub rendered: Rendered,
}

/// Keeps the frame a driver currently shows.
#[derive(Debug)]
pub struct Presenter {
    renderer: Renderer,
    shown: Option<Frame>,
}

impl Presenter {
    /// A presenter rendering with `renderer`.
    pub fn new(renderer: Renderer) -> Self {
        Self {
            renderer,
            shown: None,
        }
    }

    /// Forget what the driver shows (after reopening or a failed write): the next
    /// [`Presenter::show`] sends the whole frame.
    pub fn invalidate(&mut self) {
        self.shown = None;
    }

    /// Whether the driver is known to show a complete frame.
    pub fn has_frame(&self) -> bool {
        self.shown.is_some()
    }

    /// Renders `screen` at `now` and sends what changed to `driver`.
    ///
    /// On error the shown frame is unknown (a write may have stopped halfway), so the next
    /// call redraws everything.
    pub fn show(
        &mut self,
        driver: &mut dyn Driver,
        screen: &Screen,
        now: SystemTime,
    ) -> Result<Presented, DriverError> {
        let rendered = self.renderer.render(screen, now);
        let dirty = match &self.shown {
            Some(prev) => rendered.frame.diff(prev),
            None => vec![rendered.frame.bounds()],
        };
        if !dirty.is_empty() {
            self.shown = None;
            driver.present(&rendered, &dirty)?;
            self.shown = Some(rendered.frame.clone());
        }
        Ok(Presented { dirty, rendered })
    }
}
