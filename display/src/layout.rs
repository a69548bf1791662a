//! Fonts, text fitting and the choice of QR screen arrangement.
//!
//! Pure geometry, no drawing: which font, how many lines, where the QR goes. Kept apart from
//! [`crate::render`] so the rules that guarantee "no clipped text at any size" can be read (and
//! tested) without the pixel pushing around them.

use std::sync::Arc;

use embedded_graphics::mono_font::MonoFont;

use crate::qr::{QrMatrix, QrPair};

/// A bitmap font at an integer magnification.
///
/// ProFont tops out at 16×29 px cells; bigger text (the pairing code, titles on 3.5" panels)
/// is the same bitmap with every pixel drawn as a square, which stays crisp on a panel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Face {
    pub font: &'static MonoFont<'static>,
    pub scale: u32,
}

impl Face {
    const fn new(font: &'static MonoFont<'static>, scale: u32) -> Self {
        Self { font, scale }
    }

    /// Advance of one character cell.
    pub fn cell_w(&self) -> u32 {
        (self.font.character_size.width + self.font.character_spacing) * self.scale
    }

    /// Height of a line.
    pub fn line_h(&self) -> u32 {
        self.font.character_size.height * self.scale
    }

    /// Distance from the top of a line to the baseline.
    pub fn baseline(&self) -> u32 {
        self.font.baseline * self.scale
    }

    /// Pixel width of `cells` characters.
    pub fn width(&self, cells: u32) -> u32 {
        (cells * self.cell_w()).saturating_sub(self.font.character_spacing * self.scale)
    }

    /// How many characters fit in `width` pixels.
    pub fn max_cells(&self, width: u32) -> usize {
        ((width + self.font.character_spacing * self.scale) / self.cell_w()) as usize
    }

    /// Pixel width of a fitted line.
    pub fn line_w(&self, line: &Line) -> u32 {
        self.width(line.cells())
    }
}

const P14: &MonoFont<'static> = &profont::PROFONT_14_POINT; // 10×17 cells
const P18: &MonoFont<'static> = &profont::PROFONT_18_POINT; // 12×22 cells
const P24: &MonoFont<'static> = &profont::PROFONT_24_POINT; // 16×29 cells

/// The type scale of one panel size.
///
/// Physical pixel density is similar across the supported panels (about 140–165 ppi), so
/// the same pixel sizes are about the same millimetres everywhere. The 2.0–2.8" panels get
/// 12×22 body text (≈3.5 mm lines, readable at arm's length) and 16×29 titles; the 3.5"
/// panels have room for one step more everywhere.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fonts {
    /// Status strip, hints, side columns.
    pub small: Face,
    /// Body text.
    pub body: Face,
    /// Titles, headlines, countdown values.
    pub title: Face,
    /// The pairing code.
    pub huge: Face,
    /// Height of the status strip.
    pub strip_h: u32,
    /// Icon diameter.
    pub icon: u32,
    /// Countdown bar thickness.
    pub bar_h: u32,
}

impl Fonts {
    /// The type scale for a `w`×`h` picture.
    pub fn for_size(w: u32, h: u32) -> Self {
        if w.min(h) >= 320 {
            Fonts {
                small: Face::new(P18, 1),
                body: Face::new(P24, 1),
                title: Face::new(P18, 2),
                huge: Face::new(P24, 2),
                strip_h: 24,
                icon: 64,
                bar_h: 12,
            }
        } else {
            Fonts {
                small: Face::new(P14, 1),
                body: Face::new(P18, 1),
                title: Face::new(P24, 1),
                huge: Face::new(P24, 2),
                strip_h: 19,
                icon: 48,
                bar_h: 8,
            }
        }
    }
}

/// Side margin for text.
pub(crate) const MARGIN: u32 = 8;

/// Joins words that should stay on one line ("Link a device"); drawn as a space.
pub(crate) const JOIN: char = '\u{a0}';

/// One line of text after fitting: at most the allowed characters, with an ellipsis cell
/// appended when something was cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Line {
    pub text: String,
    pub ellipsis: bool,
}

impl Line {
    /// Character cells the line occupies, ellipsis included.
    pub fn cells(&self) -> u32 {
        self.text.chars().count() as u32 + u32::from(self.ellipsis)
    }
}

/// `text` on one line of at most `max` cells, cut with an ellipsis when longer.
pub(crate) fn fit(text: &str, max: usize) -> Line {
    let text = text.trim().replace(JOIN, " ");
    if text.chars().count() <= max {
        return Line {
            text,
            ellipsis: false,
        };
    }
    Line {
        text: text
            .chars()
            .take(max.saturating_sub(1))
            .collect::<String>()
            .trim_end()
            .to_string(),
        ellipsis: max > 0,
    }
}

/// Greedy word wrap into lines of at most `max` cells and at most `max_lines` lines.
///
/// Words are separated by spaces only ([`JOIN`] keeps phrases together where they fit);
/// words longer than a line are broken, and the last line gets an ellipsis when text was
/// dropped.
pub(crate) fn wrap(text: &str, max: usize, max_lines: usize) -> Vec<Line> {
    if max == 0 || max_lines == 0 {
        return Vec::new();
    }
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    let push_word = |word: &str, cur: &mut String, lines: &mut Vec<String>| {
        let wl = word.chars().count();
        let cl = cur.chars().count();
        if cl > 0 && cl + 1 + wl <= max {
            cur.push(' ');
            cur.push_str(word);
            return;
        }
        if cl > 0 {
            lines.push(std::mem::take(cur));
        }
        if wl <= max {
            *cur = word.to_string();
        } else {
            let chars: Vec<char> = word.chars().collect();
            let mut chunks = chars.chunks(max).peekable();
            while let Some(chunk) = chunks.next() {
                let s: String = chunk.iter().collect();
                if chunks.peek().is_some() {
                    lines.push(s);
                } else {
                    *cur = s;
                }
            }
        }
    };
    for word in text.split([' ', '\n', '\t']).filter(|w| !w.is_empty()) {
        if word.contains(JOIN) && word.chars().count() > max {
            // The phrase does not fit a line even alone: let it break at its joins.
            for part in word.split(JOIN) {
                push_word(part, &mut cur, &mut lines);
            }
        } else {
            push_word(word, &mut cur, &mut lines);
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    let cut = lines.len() > max_lines;
    lines.truncate(max_lines);
    let n = lines.len();
    lines
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            if cut && i + 1 == n {
                let mut l = fit(&s, max.saturating_sub(1));
                l.ellipsis = true;
                l
            } else {
                Line {
                    text: s.replace(JOIN, " "),
                    ellipsis: false,
                }
            }
        })
        .collect()
}

/// How a QR screen is arranged; richer arrangements first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum QrArrangement {
    /// Status strip, title, QR, countdown row, phone hint (portrait panels).
    Full,
    /// Status strip, title, QR, countdown row.
    NoHint,
    /// Title, QR, countdown row with code number and marks (square panels).
    Medium,
    /// QR and countdown row only.
    Compact,
    /// QR on the left, everything else in a column on the right (landscape panels).
    Side,
}

/// The chosen QR arrangement and symbol.
#[derive(Clone, Debug)]
pub(crate) struct QrPlan {
    pub arrangement: QrArrangement,
    pub matrix: Arc<QrMatrix>,
    pub module_px: u32,
    pub fonts: Fonts,
    /// The phone path under the QR (Full only).
    pub hint_lines: Vec<Line>,
}

/// Minimum width of the text column beside a QR on landscape panels.
pub(crate) const SIDE_COLUMN_MIN: u32 = 96;

/// The hint wrapped in at most two lines: the long wording if it fits, else the short one.
pub(crate) fn hint_lines(long: &str, short: &str, face: Face, width: u32) -> Vec<Line> {
    let max = face.max_cells(width);
    let l = wrap(long, max, 3);
    if l.len() <= 2 && !l.iter().any(|l| l.ellipsis) {
        return l;
    }
    wrap(short, max, 2)
}

/// Picks the arrangement and error-correction level for a `w`×`h` screen.
///
/// Order of importance: most whole pixels per module (what makes a QR scan from a small
/// panel), then the richer arrangement (staff need the title and the phone path), then level
/// M over L for the same module size.
pub(crate) fn plan_qr(w: u32, h: u32, pair: &QrPair, long_hint: &str, short_hint: &str) -> QrPlan {
    let fonts = Fonts::for_size(w, h);
    let inner = w.saturating_sub(2 * MARGIN);
    let hint = hint_lines(long_hint, short_hint, fonts.small, inner);
    let title_h = fonts.body.line_h();
    let row_h = fonts.body.line_h();
    let hint_h = hint.len() as u32 * fonts.small.line_h();
    let mut candidates: Vec<(QrArrangement, u32)> = Vec::new();
    if w > h {
        candidates.push((
            QrArrangement::Side,
            h.min(w.saturating_sub(SIDE_COLUMN_MIN)),
        ));
    } else {
        // Vertical gaps: 2 px under the strip and 1 px above the hint; the QR's quiet zone
        // already separates it from the title and the countdown row.
        let strip = fonts.strip_h + 2;
        for (a, chrome) in [
            (QrArrangement::Full, strip + title_h + row_h + 1 + hint_h),
            (QrArrangement::NoHint, strip + title_h + row_h),
            (QrArrangement::Medium, title_h + row_h),
            (QrArrangement::Compact, row_h),
        ] {
            candidates.push((a, w.min(h.saturating_sub(chrome))));
        }
    }
    let mut best: Option<(QrArrangement, Arc<QrMatrix>, u32)> = None;
    for (arrangement, side) in candidates {
        let (matrix, px) = pair.best_for(side);
        // Candidates come richest first, so only strictly bigger modules replace one.
        if best.as_ref().is_none_or(|(_, _, bpx)| px > *bpx) {
            best = Some((arrangement, Arc::clone(matrix), px));
        }
    }
    let (arrangement, matrix, module_px) =
        best.unwrap_or((QrArrangement::Compact, Arc::clone(&pair.m), 0));
    QrPlan {
        arrangement,
        matrix,
        module_px,
        fonts,
        hint_lines: if arrangement == QrArrangement::Full {
            hint
        } else {
            Vec::new()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_words_and_marks_cuts() {
        let l = wrap("one two three four", 9, 5);
        assert_eq!(
            l.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["one two", "three", "four"]
        );
        let l = wrap("abcdefghijklmnop", 5, 2);
        assert_eq!(l[0].text, "abcde");
        assert!(l[1].ellipsis);
        assert!(l[1].cells() <= 5);
        let l = wrap("one two three four", 9, 2);
        assert_eq!(l.len(), 2);
        assert!(l[1].ellipsis && l[1].cells() <= 9);
        let l = fit("Outlet Jakarta Selatan", 10);
        assert_eq!(l.cells(), 10);
        assert!(l.ellipsis);
    }

    #[test]
    fn joined_phrases_stay_together() {
        let text = "Linked\u{a0}devices >\u{a0}Link\u{a0}a\u{a0}device";
        let l = wrap(text, 22, 3);
        assert_eq!(
            l.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["Linked devices", "> Link a device"]
        );
        let l = wrap(text, 9, 6);
        assert!(l.iter().all(|l| l.cells() <= 9), "{l:?}");
    }
}
