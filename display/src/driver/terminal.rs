//! The `terminal` driver: the QR in Unicode half-blocks plus the status text, for a developer
//! running the agent in a shell without a panel.
//!
//! Two QR rows fit in one character cell (`▀`, `▄`, `█`, space), so a version-12 symbol with
//! its quiet zone takes 73 columns × 37 rows: it fits an 80×40 terminal. The QR is printed
//! black on white with explicit colours because a dark terminal theme would otherwise invert it
//! and most phone scanners reject inverted codes.
//!
//! Like the panel, the terminal is only partly rewritten on a countdown tick: lines that did not
//! change are skipped by cursor positioning. Logs should therefore go to a file or the journal
//! while this driver owns the terminal.

use std::io::{self, Write};

use embedded_graphics::primitives::Rectangle;

use super::{Driver, DriverError};
use crate::content::{Countdown, code_number};
use crate::qr::{QUIET_ZONE, QrMatrix};
use crate::render::Rendered;
use crate::screen::Mark;

/// Prints screens to a terminal-like writer.
pub struct TerminalDriver<W: Write + Send> {
    out: W,
    ansi: bool,
    shown: Vec<String>,
}

impl TerminalDriver<io::Stdout> {
    /// A driver on this process's stdout, with ANSI colours and cursor control.
    pub fn stdout() -> Self {
        Self::new(io::stdout(), true)
    }
}

impl<W: Write + Send> TerminalDriver<W> {
    /// A driver on `out`; without `ansi` every frame is printed in full, plain.
    pub fn new(out: W, ansi: bool) -> Self {
        Self {
            out,
            ansi,
            shown: Vec::new(),
        }
    }

    /// The writer (tests read what was printed).
    pub fn get_ref(&self) -> &W {
        &self.out
    }
}

/// The text lines a terminal shows for `rendered` (without colour codes).
pub fn lines(rendered: &Rendered) -> Vec<String> {
    let c = &rendered.content;
    let mut out = vec![c.title.clone()];
    if let Some(q) = &c.qr {
        out.push(code_number(q.index, q.count, c.strings));
    }
    if let Some((h, _)) = &c.headline {
        out.push(h.clone());
    }
    if let Some(m) = &rendered.qr_matrix {
        out.extend(half_blocks(m));
    }
    if let Some(cd) = &c.countdown {
        out.push(countdown_line(cd));
    }
    if let Some(hint) = c.hint {
        out.push(hint.to_string());
    }
    out.extend(c.body.iter().cloned());
    let t = c.strings;
    let mark = |m: Mark| match m {
        Mark::Up => t.mark_up.as_str(),
        Mark::Down => t.mark_down.as_str(),
        Mark::Unknown => "?",
        Mark::Hidden => "-",
    };
    out.push(format!(
        "{}: {}  {}: {}",
        t.network,
        mark(c.network),
        t.mqtt,
        mark(c.mqtt)
    ));
    // No-break spaces only steer the panel's line wrapping.
    out.into_iter().map(|l| l.replace('\u{a0}', " ")).collect()
}

fn countdown_line(cd: &Countdown) -> String {
    match cd.fraction() {
        Some(f) => {
            let filled = (f * 20.0).round() as usize;
            format!(
                "{} {}  [{}{}]",
                cd.label,
                cd.text(),
                "#".repeat(filled),
                ".".repeat(20 - filled.min(20))
            )
        }
        None => format!("{} {}", cd.label, cd.text()),
    }
}

/// The QR with its quiet zone as half-block lines: dark modules are `█`/`▀`/`▄`.
pub fn half_blocks(m: &QrMatrix) -> Vec<String> {
    let n = m.width_with_quiet_zone();
    let dark = |x: u32, y: u32| {
        x >= QUIET_ZONE && y >= QUIET_ZONE && m.is_dark(x - QUIET_ZONE, y - QUIET_ZONE)
    };
    (0..n.div_ceil(2))
        .map(|row| {
            (0..n)
                .map(|x| match (dark(x, 2 * row), dark(x, 2 * row + 1)) {
                    (true, true) => '█',
                    (true, false) => '▀',
                    (false, true) => '▄',
                    (false, false) => ' ',
                })
                .collect()
        })
        .collect()
}

impl<W: Write + Send> TerminalDriver<W> {
    fn write_all(&mut self, new: &[String], qr_rows: std::ops::Range<usize>) -> io::Result<()> {
        let full = !self.ansi || self.shown.len() != new.len();
        let mut buf = String::new();
        if self.ansi && full {
            buf.push_str("\x1b[H\x1b[2J");
        }
        for (i, line) in new.iter().enumerate() {
            if !full && self.shown.get(i) == Some(line) {
                continue;
            }
            if self.ansi {
                buf.push_str(&format!("\x1b[{};1H", i + 1));
                if qr_rows.contains(&i) {
                    buf.push_str("\x1b[30;47m");
                    buf.push_str(line);
                    buf.push_str("\x1b[0m\x1b[K");
                } else {
                    buf.push_str(line);
                    buf.push_str("\x1b[K");
                }
            } else {
                buf.push_str(line);
                buf.push('\n');
            }
        }
        if self.ansi {
            buf.push_str(&format!("\x1b[{};1H", new.len() + 1));
        }
        self.out.write_all(buf.as_bytes())?;
        self.out.flush()
    }
}

impl<W: Write + Send> Driver for TerminalDriver<W> {
    fn name(&self) -> &'static str {
        "terminal"
    }

    fn present(&mut self, rendered: &Rendered, dirty: &[Rectangle]) -> Result<(), DriverError> {
        let new = lines(rendered);
        // The terminal shows text, not pixels: a frame change that changes no line (a pixel
        // of the countdown bar) prints nothing.
        let _ = dirty;
        if new == self.shown {
            return Ok(());
        }
        let c = &rendered.content;
        let qr_start = 1 + usize::from(c.qr.is_some()) + usize::from(c.headline.is_some());
        let qr_len = rendered
            .qr_matrix
            .as_ref()
            .map_or(0, |m| m.width_with_quiet_zone().div_ceil(2) as usize);
        if let Err(source) = self.write_all(&new, qr_start..qr_start + qr_len) {
            self.shown.clear();
            return Err(DriverError::Io {
                path: "terminal".into(),
                source,
            });
        }
        self.shown = new;
        Ok(())
    }
}
