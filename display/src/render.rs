//! Drawing a [`Content`] into a [`Frame`].
//!
//! Two looks: status screens are light text on a near-black background (high contrast, little
//! backlight glare in a shop), QR screens are black on white edge to edge, because phone
//! cameras find a QR fastest when the whole quiet zone and its surroundings are light.
//!
//! Every text draw is recorded in [`Rendered::text_boxes`], so tests can prove that no text
//! leaves the screen or overlaps the QR at any panel size.

use std::sync::Arc;
use std::time::SystemTime;

use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::pixelcolor::{Rgb565, RgbColor};
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{
    Circle, Line as LinePrim, PrimitiveStyle, Rectangle, RoundedRectangle, Triangle,
};
use embedded_graphics::text::{Baseline, Text};

use crate::config::UtcOffset;
use crate::content::{Content, HeadlineSize, Icon, Tone, code_number};
use crate::frame::{Frame, Scaled, rgb};
use crate::lang::Strings;
use crate::layout::{self, Face, Fonts, Line, MARGIN, QrArrangement, QrPlan, fit, wrap};
use crate::qr::{Level, QUIET_ZONE, QrPair};
use crate::screen::{Mark, Screen};

/// Smallest module size worth showing.
const MIN_MODULE_PX: u32 = 2;

const BG_DARK: Rgb565 = rgb(0x10, 0x14, 0x1a);
const STRIP_DARK: Rgb565 = rgb(0x22, 0x28, 0x30);
const TEXT_DIM: Rgb565 = rgb(0xc8, 0xcc, 0xd2);
const GREY: Rgb565 = rgb(0x6a, 0x72, 0x7a);
const INK: Rgb565 = Rgb565::BLACK;
const INK_DIM: Rgb565 = rgb(0x38, 0x38, 0x38);
const TRACK: Rgb565 = rgb(0xd0, 0xd4, 0xd8);
const TEAL: Rgb565 = rgb(0x0b, 0x6e, 0x63);

/// Where the QR ended up on a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrPlacement {
    /// The symbol including its quiet zone (all of it light).
    pub rect: Rectangle,
    /// Pixels per module.
    pub module_px: u32,
    /// Modules per side without the quiet zone.
    pub modules: u32,
    /// QR version.
    pub version: i16,
    /// Error-correction level.
    pub level: Level,
    /// Arrangement of the screen around it.
    pub arrangement: QrArrangement,
}

/// A rendered screen.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// The picture.
    pub frame: Frame,
    /// What it says (the terminal driver prints this).
    pub content: Content,
    /// The QR, when the screen has one.
    pub qr: Option<QrPlacement>,
    /// The QR matrix, for drivers that draw it their own way (terminal).
    pub qr_matrix: Option<Arc<crate::qr::QrMatrix>>,
    /// Bounding boxes of every piece of text drawn.
    pub text_boxes: Vec<Rectangle>,
    /// Every line of text drawn, and whether it was cut short (an ellipsis
    /// drawn after it): what the fit tests read.
    pub lines: Vec<(String, bool)>,
}

impl Rendered {
    /// When the passage of time alone changes this screen.
    pub fn next_change(&self) -> Option<SystemTime> {
        self.content.next_change
    }
}

/// Turns screens into frames for one panel size, caching the QR encoding between frames.
#[derive(Debug)]
pub struct Renderer {
    width: u32,
    height: u32,
    offset: UtcOffset,
    strings: &'static Strings,
    qr_cache: Option<(crate::screen::QrPayload, Result<QrPair, crate::qr::QrError>)>,
}

impl Renderer {
    /// A renderer for a `width`×`height` picture (after rotation).
    pub fn new(width: u32, height: u32, offset: UtcOffset) -> Self {
        Self {
            width,
            height,
            offset,
            strings: crate::lang::english(),
            qr_cache: None,
        }
    }

    /// The same renderer, in the language `strings` (English by default).
    pub fn with_language(mut self, strings: &'static Strings) -> Self {
        self.strings = strings;
        self
    }

    /// Picture size.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Renders `screen` as it looks at `now`.
    pub fn render(&mut self, screen: &Screen, now: SystemTime) -> Rendered {
        let content = Content::of(screen, now, self.offset, self.strings);
        self.render_content(content)
    }

    /// Renders already-computed content.
    pub fn render_content(&mut self, content: Content) -> Rendered {
        let mut out = Rendered {
            frame: Frame::new(self.width, self.height, BG_DARK),
            content,
            qr: None,
            qr_matrix: None,
            text_boxes: Vec::new(),
            lines: Vec::new(),
        };
        let pair = match &out.content.qr {
            Some(q) => {
                let fresh = !matches!(&self.qr_cache, Some((p, _)) if *p == q.payload);
                if fresh {
                    tracing::debug!(bytes = q.payload.len(), "encoding pairing QR");
                    let pair = QrPair::encode(q.payload.expose().as_bytes());
                    self.qr_cache = Some((q.payload.clone(), pair));
                }
                self.qr_cache.as_ref().map(|(_, p)| p.clone())
            }
            None => None,
        };
        let t = out.content.strings;
        match pair {
            Some(Ok(pair)) => {
                let plan = layout::plan_qr(
                    self.width,
                    self.height,
                    &pair,
                    &t.scan_hint,
                    &t.scan_hint_short,
                );
                // One pixel per module does not scan from a panel; say so instead.
                if plan.module_px >= MIN_MODULE_PX {
                    draw_qr_screen(&mut out, &plan);
                    return out;
                }
                out.content.qr = None;
                out.content.title = t.screen_too_small.clone();
                draw_status_screen(&mut out);
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "pairing QR cannot be encoded");
                out.content.qr = None;
                out.content.title = t.qr_too_long.clone();
                out.content.body = vec![t.qr_too_long_advice.clone()];
                draw_status_screen(&mut out);
            }
            None => draw_status_screen(&mut out),
        }
        out
    }
}

fn tone_color(tone: Tone) -> Rgb565 {
    match tone {
        Tone::Neutral => rgb(0xa8, 0xb0, 0xb8),
        Tone::Info => rgb(0x40, 0xbc, 0xf4),
        Tone::Good => rgb(0x25, 0xd3, 0x66),
        Tone::Warn => rgb(0xff, 0xb3, 0x00),
        Tone::Bad => rgb(0xff, 0x55, 0x55),
    }
}

/// Tone colour dark enough for text on white.
fn tone_ink(tone: Tone) -> Rgb565 {
    match tone {
        Tone::Warn => rgb(0x9a, 0x4a, 0x00),
        Tone::Bad => rgb(0xb0, 0x00, 0x20),
        _ => INK,
    }
}

// ---------------------------------------------------------------------------------------------
// Text primitives

fn draw_text(out: &mut Rendered, line: &Line, face: Face, color: Rgb565, top_left: Point) {
    let style = MonoTextStyle::new(face.font, color);
    if face.scale <= 1 {
        let _ =
            Text::with_baseline(&line.text, top_left, style, Baseline::Top).draw(&mut out.frame);
    } else {
        let mut target = Scaled {
            target: &mut out.frame,
            origin: top_left,
            scale: face.scale,
        };
        let _ =
            Text::with_baseline(&line.text, Point::zero(), style, Baseline::Top).draw(&mut target);
    }
    if line.ellipsis {
        // One cell with three dots on the baseline: an ellipsis without needing a glyph that
        // latin-1 bitmap fonts lack, and narrower than "...".
        let cw = face.cell_w() as i32;
        let x = top_left.x + line.text.chars().count() as i32 * cw;
        let dot = (face.font.character_size.width * face.scale / 6).max(2) as i32;
        let y = top_left.y + face.baseline() as i32 - dot + 1;
        let pitch = (cw - dot) / 3;
        for i in 0..3 {
            let dx = pitch / 2 + i * pitch;
            let _ = out.frame.fill_solid(
                &Rectangle::new(Point::new(x + dx, y), Size::new(dot as u32, dot as u32)),
                color,
            );
        }
    }
    out.text_boxes.push(Rectangle::new(
        top_left,
        Size::new(face.line_w(line), face.line_h()),
    ));
    out.lines.push((line.text.clone(), line.ellipsis));
}

fn draw_centered(out: &mut Rendered, line: &Line, face: Face, color: Rgb565, cx: i32, y: i32) {
    let w = face.line_w(line) as i32;
    draw_text(out, line, face, color, Point::new(cx - w / 2, y));
}

fn word(text: &str) -> Line {
    Line {
        text: text.into(),
        ellipsis: false,
    }
}

// ---------------------------------------------------------------------------------------------
// Status marks

fn mark_d(face: Face) -> u32 {
    if face.line_h() >= 22 { 14 } else { 12 }
}

fn marks_width(content: &Content, face: Face) -> u32 {
    let mut w = 0;
    for (label, mark) in [("NET", content.network), ("MQTT", content.mqtt)] {
        if mark != Mark::Hidden {
            if w > 0 {
                w += 10;
            }
            w += face.width(label.len() as u32) + 4 + mark_d(face);
        }
    }
    w
}

fn draw_mark(frame: &mut Frame, mark: Mark, center: Point, d: u32, on_dark: bool) {
    let top_left = center - Point::new(d as i32 / 2, d as i32 / 2);
    match mark {
        Mark::Up => {
            let c = if on_dark {
                tone_color(Tone::Good)
            } else {
                TEAL
            };
            let _ = Circle::new(top_left, d)
                .into_styled(PrimitiveStyle::with_fill(c))
                .draw(frame);
        }
        Mark::Down => {
            let c = if on_dark {
                tone_color(Tone::Bad)
            } else {
                tone_ink(Tone::Bad)
            };
            let s = PrimitiveStyle::with_stroke(c, 3);
            let r = d as i32 / 2 - 1;
            for (a, b) in [
                (Point::new(-r, -r), Point::new(r, r)),
                (Point::new(-r, r), Point::new(r, -r)),
            ] {
                let _ = LinePrim::new(center + a, center + b)
                    .into_styled(s)
                    .draw(frame);
            }
        }
        Mark::Unknown => {
            let _ = Circle::new(top_left, d)
                .into_styled(PrimitiveStyle::with_stroke(GREY, 2))
                .draw(frame);
        }
        Mark::Hidden => {}
    }
}

/// Draws the marks with their labels ending at `right`, vertically centred on `cy`.
fn draw_marks(out: &mut Rendered, face: Face, right: i32, cy: i32, color: Rgb565, on_dark: bool) {
    let d = mark_d(face);
    let mut x = right - marks_width(&out.content, face) as i32;
    for (label, mark) in [("NET", out.content.network), ("MQTT", out.content.mqtt)] {
        if mark == Mark::Hidden {
            continue;
        }
        draw_text(
            out,
            &word(label),
            face,
            color,
            Point::new(x, cy - face.line_h() as i32 / 2),
        );
        x += face.width(label.len() as u32) as i32 + 4;
        draw_mark(
            &mut out.frame,
            mark,
            Point::new(x + d as i32 / 2, cy),
            d,
            on_dark,
        );
        x += d as i32 + 10;
    }
}

/// Draws the marks stacked, one per row, from `top_left`. Returns the height used.
fn draw_marks_column(out: &mut Rendered, face: Face, top_left: Point, color: Rgb565) -> u32 {
    let d = mark_d(face);
    let mut y = top_left.y;
    for (label, mark) in [("NET", out.content.network), ("MQTT", out.content.mqtt)] {
        if mark == Mark::Hidden {
            continue;
        }
        let text_at = Point::new(top_left.x + d as i32 + 4, y);
        draw_text(out, &word(label), face, color, text_at);
        let center = Point::new(top_left.x + d as i32 / 2, y + face.line_h() as i32 / 2);
        draw_mark(&mut out.frame, mark, center, d, false);
        y += face.line_h() as i32 + 2;
    }
    (y - top_left.y) as u32
}

/// The status strip across the top; `left` is optional small text on its left.
fn draw_strip(out: &mut Rendered, fonts: &Fonts, left: Option<&str>, on_dark: bool) {
    let w = out.frame.width();
    let (bg, fg) = if on_dark {
        (STRIP_DARK, TEXT_DIM)
    } else {
        (Rgb565::WHITE, INK_DIM)
    };
    let strip = Rectangle::new(Point::zero(), Size::new(w, fonts.strip_h));
    let _ = out.frame.fill_solid(&strip, bg);
    let cy = fonts.strip_h as i32 / 2;
    let face = fonts.small;
    let marks_w = marks_width(&out.content, face);
    draw_marks(out, face, w as i32 - MARGIN as i32, cy, fg, on_dark);
    if let Some(text) = left {
        let room = w.saturating_sub(2 * MARGIN + marks_w + if marks_w > 0 { 10 } else { 0 });
        let line = fit(text, face.max_cells(room));
        let at = Point::new(MARGIN as i32, cy - face.line_h() as i32 / 2);
        draw_text(out, &line, face, fg, at);
    }
}

// ---------------------------------------------------------------------------------------------
// Status screens

enum Block {
    Icon(Icon, u32),
    Text {
        lines: Vec<Line>,
        face: Face,
        color: Rgb565,
        gap: u32,
    },
    /// Label and value on one row, value in the title face.
    CountdownRow {
        label: Line,
        value: Line,
    },
    Space(u32),
}

impl Block {
    fn height(&self, fonts: &Fonts) -> u32 {
        match self {
            Block::Icon(_, s) => *s,
            Block::Text {
                lines, face, gap, ..
            } => {
                let n = lines.len() as u32;
                n * face.line_h() + n.saturating_sub(1) * gap
            }
            Block::CountdownRow { .. } => fonts.title.line_h(),
            Block::Space(h) => *h,
        }
    }
}

/// The blocks of a status screen at degradation `step`: 0 everything; 1 without the icon;
/// 2 a huge headline drawn at title size; 3 also the title in body size and the body cut
/// (with an ellipsis) to the lines that fit.
fn build_blocks(c: &Content, fonts: &Fonts, inner: u32, avail: u32, step: u32) -> Vec<Block> {
    let accent = tone_color(c.tone);
    let mut blocks = Vec::new();
    if let Some(icon) = c.icon.filter(|_| step == 0) {
        blocks.push(Block::Icon(icon, fonts.icon));
        blocks.push(Block::Space(10));
    }
    let title_face = if step >= 3 && fonts.title.max_cells(inner) < c.title.chars().count() {
        fonts.body
    } else {
        fonts.title
    };
    blocks.push(Block::Text {
        lines: wrap(&c.title, title_face.max_cells(inner), 2),
        face: title_face,
        color: accent,
        gap: 2,
    });
    if let Some((text, size)) = &c.headline {
        blocks.push(Block::Space(8));
        let huge = fonts.huge;
        let max = huge.max_cells(inner);
        let lines_face = match size {
            HeadlineSize::Huge if step < 2 && text.chars().count() <= max => {
                (vec![fit(text, max)], huge)
            }
            HeadlineSize::Huge if step < 2 && text.contains('-') => {
                let (a, b) = text.split_once('-').unwrap_or((text, ""));
                (vec![fit(a, max), fit(b, max)], huge)
            }
            _ => (wrap(text, fonts.title.max_cells(inner), 2), fonts.title),
        };
        blocks.push(Block::Text {
            lines: lines_face.0,
            face: lines_face.1,
            color: Rgb565::WHITE,
            gap: 4,
        });
    }
    let mut tail = Vec::new();
    if let Some(cd) = &c.countdown {
        tail.push(Block::Space(10));
        let value = cd.text();
        let label_w = fonts.body.width(cd.label.len() as u32);
        let row_w = label_w + 8 + fonts.title.width(value.len() as u32);
        if row_w <= inner {
            tail.push(Block::CountdownRow {
                label: word(cd.label),
                value: word(&value),
            });
        } else {
            for (text, face, color) in [
                (cd.label, fonts.body, TEXT_DIM),
                (&value, fonts.title, Rgb565::WHITE),
            ] {
                tail.push(Block::Text {
                    lines: vec![fit(text, face.max_cells(inner))],
                    face,
                    color,
                    gap: 0,
                });
            }
        }
    }
    if !c.body.is_empty() {
        let max = fonts.body.max_cells(inner);
        let mut lines: Vec<Line> = c.body.iter().flat_map(|p| wrap(p, max, 4)).collect();
        if step >= 3 {
            let used: u32 = blocks
                .iter()
                .chain(&tail)
                .map(|b| b.height(fonts))
                .sum::<u32>()
                + 8;
            let per = fonts.body.line_h() + 2;
            let room = (avail.saturating_sub(used) + 2) / per;
            if lines.len() as u32 > room {
                lines.truncate(room as usize);
                if let Some(last) = lines.last_mut() {
                    let mut l = fit(&last.text, max.saturating_sub(1));
                    l.ellipsis = true;
                    *last = l;
                }
            }
        }
        if !lines.is_empty() {
            blocks.push(Block::Space(8));
            blocks.push(Block::Text {
                lines,
                face: fonts.body,
                color: TEXT_DIM,
                gap: 2,
            });
        }
    }
    blocks.extend(tail);
    blocks
}

fn draw_status_screen(out: &mut Rendered) {
    let (w, h) = (out.frame.width(), out.frame.height());
    let fonts = Fonts::for_size(w, h);
    let _ = out.frame.clear(BG_DARK);
    draw_strip(out, &fonts, None, true);
    let inner = w.saturating_sub(2 * MARGIN);
    let avail = h.saturating_sub(fonts.strip_h + 2 * 6);
    let c = out.content.clone();
    let mut blocks = Vec::new();
    for step in 0..4 {
        blocks = build_blocks(&c, &fonts, inner, avail, step);
        if blocks.iter().map(|b| b.height(&fonts)).sum::<u32>() <= avail {
            break;
        }
    }
    let total: u32 = blocks.iter().map(|b| b.height(&fonts)).sum();
    let mut y = (fonts.strip_h + 6 + avail.saturating_sub(total) / 2) as i32;
    let cx = w as i32 / 2;
    let accent = tone_color(c.tone);
    for block in &blocks {
        match block {
            Block::Icon(icon, size) => {
                let center = Point::new(cx, y + *size as i32 / 2);
                draw_icon(&mut out.frame, *icon, center, *size, accent);
            }
            Block::Text {
                lines,
                face,
                color,
                gap,
            } => {
                let mut ly = y;
                for line in lines {
                    draw_centered(out, line, *face, *color, cx, ly);
                    ly += (face.line_h() + gap) as i32;
                }
            }
            Block::CountdownRow { label, value } => {
                let lw = fonts.body.line_w(label) as i32;
                let vw = fonts.title.line_w(value) as i32;
                let x = cx - (lw + 8 + vw) / 2;
                let dy = fonts.title.baseline() as i32 - fonts.body.baseline() as i32;
                draw_text(out, label, fonts.body, TEXT_DIM, Point::new(x, y + dy));
                draw_text(
                    out,
                    value,
                    fonts.title,
                    Rgb565::WHITE,
                    Point::new(x + lw + 8, y),
                );
            }
            Block::Space(_) => {}
        }
        y += block.height(&fonts) as i32;
    }
}

// ---------------------------------------------------------------------------------------------
// Icons

fn draw_icon(frame: &mut Frame, icon: Icon, center: Point, size: u32, accent: Rgb565) {
    let s = size as i32;
    let r = s / 2;
    let fill = PrimitiveStyle::with_fill(accent);
    let circle = Circle::with_center(center, size);
    let stroke_w = (size / 10).max(3);
    match icon {
        Icon::Logo => {
            let _ = circle.into_styled(fill).draw(frame);
            let bw = (s * 3 / 5) as u32;
            let bh = (s * 2 / 5) as u32;
            let tl = center - Point::new(bw as i32 / 2, bh as i32 / 2 + s / 20);
            let bubble = RoundedRectangle::with_equal_corners(
                Rectangle::new(tl, Size::new(bw, bh)),
                Size::new(6, 6),
            );
            let _ = bubble
                .into_styled(PrimitiveStyle::with_fill(BG_DARK))
                .draw(frame);
            let tail = Triangle::new(
                tl + Point::new(bw as i32 / 5, bh as i32 - 1),
                tl + Point::new(bw as i32 / 5 + s / 8, bh as i32 - 1),
                tl + Point::new(bw as i32 / 8, bh as i32 + s / 8),
            );
            let _ = tail
                .into_styled(PrimitiveStyle::with_fill(BG_DARK))
                .draw(frame);
            let d = (size / 12).max(3);
            for i in -1..=1 {
                let _ = Circle::with_center(
                    tl + Point::new(bw as i32 / 2 + i * (bw as i32 / 4), bh as i32 / 2),
                    d,
                )
                .into_styled(fill)
                .draw(frame);
            }
        }
        Icon::Spinner(step) => {
            let d = (size / 6).max(4);
            let ring = r - d as i32 / 2;
            for i in 0..8u8 {
                let a = f32::from(i) * std::f32::consts::FRAC_PI_4;
                let p = center
                    + Point::new(
                        (ring as f32 * a.sin()).round() as i32,
                        (-(ring as f32) * a.cos()).round() as i32,
                    );
                let lit = i == step % 8;
                let trail = i == (step + 7) % 8;
                let c = if lit {
                    accent
                } else if trail {
                    rgb(0x50, 0x58, 0x60)
                } else {
                    rgb(0x30, 0x36, 0x3c)
                };
                let _ = Circle::with_center(p, d)
                    .into_styled(PrimitiveStyle::with_fill(c))
                    .draw(frame);
            }
        }
        Icon::Clock => {
            let _ = circle
                .into_styled(PrimitiveStyle::with_stroke(accent, stroke_w))
                .draw(frame);
            let st = PrimitiveStyle::with_stroke(accent, stroke_w);
            let _ = LinePrim::new(center, center + Point::new(0, -r * 3 / 5))
                .into_styled(st)
                .draw(frame);
            let _ = LinePrim::new(center, center + Point::new(r / 2, 0))
                .into_styled(st)
                .draw(frame);
        }
        Icon::Check => {
            let _ = circle.into_styled(fill).draw(frame);
            let st = PrimitiveStyle::with_stroke(BG_DARK, stroke_w + 1);
            let a = center + Point::new(-r / 2, 0);
            let b = center + Point::new(-r / 8, r * 2 / 5);
            let c = center + Point::new(r / 2, -r * 2 / 5);
            let _ = LinePrim::new(a, b).into_styled(st).draw(frame);
            let _ = LinePrim::new(b, c).into_styled(st).draw(frame);
        }
        Icon::Warning => {
            let tri = Triangle::new(
                center + Point::new(0, -r),
                center + Point::new(r, r - s / 10),
                center + Point::new(-r, r - s / 10),
            );
            let _ = tri.into_styled(fill).draw(frame);
            let bw = (size / 10).max(3);
            let _ = Rectangle::new(
                center + Point::new(-(bw as i32) / 2, -r / 3),
                Size::new(bw, (s * 3 / 10) as u32),
            )
            .into_styled(PrimitiveStyle::with_fill(BG_DARK))
            .draw(frame);
            let _ = Rectangle::new(
                center + Point::new(-(bw as i32) / 2, r / 2 - s / 20),
                Size::new(bw, bw),
            )
            .into_styled(PrimitiveStyle::with_fill(BG_DARK))
            .draw(frame);
        }
        Icon::Cross => {
            let _ = circle.into_styled(fill).draw(frame);
            let st = PrimitiveStyle::with_stroke(BG_DARK, stroke_w + 1);
            let k = r * 2 / 5;
            let _ = LinePrim::new(center + Point::new(-k, -k), center + Point::new(k, k))
                .into_styled(st)
                .draw(frame);
            let _ = LinePrim::new(center + Point::new(-k, k), center + Point::new(k, -k))
                .into_styled(st)
                .draw(frame);
        }
        Icon::Pause => {
            let bw = (size / 4) as i32;
            for dx in [-bw - bw / 3, bw / 3] {
                let _ = Rectangle::new(
                    center + Point::new(dx, -r * 4 / 5),
                    Size::new(bw as u32, (s * 4 / 5) as u32),
                )
                .into_styled(fill)
                .draw(frame);
            }
        }
        Icon::Update => {
            let _ = circle.into_styled(fill).draw(frame);
            let tri = Triangle::new(
                center + Point::new(0, -r * 3 / 5),
                center + Point::new(r / 2, -r / 20),
                center + Point::new(-r / 2, -r / 20),
            );
            let _ = tri
                .into_styled(PrimitiveStyle::with_fill(BG_DARK))
                .draw(frame);
            let bw = (size / 6).max(4);
            let _ = Rectangle::new(
                center + Point::new(-(bw as i32) / 2, -r / 20),
                Size::new(bw, (r * 3 / 5) as u32),
            )
            .into_styled(PrimitiveStyle::with_fill(BG_DARK))
            .draw(frame);
        }
        Icon::Code => {
            let pw = (s * 11 / 20) as u32;
            let phone = RoundedRectangle::with_equal_corners(
                Rectangle::with_center(center, Size::new(pw, size)),
                Size::new(6, 6),
            );
            let _ = phone
                .into_styled(PrimitiveStyle::with_stroke(accent, stroke_w))
                .draw(frame);
            let d = (size / 10).max(3);
            for row in -1..=1 {
                for col in -1..=1 {
                    let p = center + Point::new(col * (pw as i32 / 4), row * (s / 6) - s / 20);
                    let _ = Rectangle::with_center(p, Size::new(d, d))
                        .into_styled(fill)
                        .draw(frame);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// QR screens

/// Draws the QR with its quiet zone at `top_left`; returns the area it covers.
fn draw_qr(out: &mut Rendered, plan: &QrPlan, top_left: Point) -> Rectangle {
    let m = &plan.matrix;
    let px = plan.module_px;
    let side = m.width_with_quiet_zone() * px;
    let rect = Rectangle::new(top_left, Size::new(side, side));
    let _ = out.frame.fill_solid(&rect, Rgb565::WHITE);
    let q = (QUIET_ZONE * px) as i32;
    let origin = top_left + Point::new(q, q);
    // Runs of dark modules become one rectangle each.
    for y in 0..m.width() {
        let mut x = 0;
        while x < m.width() {
            if !m.is_dark(x, y) {
                x += 1;
                continue;
            }
            let start = x;
            while x < m.width() && m.is_dark(x, y) {
                x += 1;
            }
            let run = Rectangle::new(
                origin + Point::new((start * px) as i32, (y * px) as i32),
                Size::new((x - start) * px, px),
            );
            let _ = out.frame.fill_solid(&run, Rgb565::BLACK);
        }
    }
    rect
}

fn draw_bar(frame: &mut Frame, rect: Rectangle, fraction: Option<f32>) {
    let _ = frame.fill_solid(&rect, TRACK);
    let f = fraction.unwrap_or(0.0).clamp(0.0, 1.0);
    let filled = (rect.size.width as f32 * f).round() as u32;
    if filled > 0 {
        let bar = Rectangle::new(rect.top_left, Size::new(filled, rect.size.height));
        let _ = frame.fill_solid(&bar, TEAL);
    }
}

/// The countdown row under the QR: `[n/m] [bar] 0:42 [marks]`; the code number and the marks
/// only when there is no status strip.
fn draw_qr_row(out: &mut Rendered, fonts: &Fonts, y: i32, with_extras: bool) {
    let w = out.frame.width();
    let face = fonts.body;
    let rh = face.line_h() as i32;
    let c = out.content.clone();
    let mut left = MARGIN as i32;
    let mut right = w as i32 - MARGIN as i32;
    if with_extras {
        // Symbols only: the labels do not fit beside the bar.
        let d = mark_d(fonts.small) as i32;
        let mut x = right - d;
        for mark in [c.mqtt, c.network] {
            if mark != Mark::Hidden {
                draw_mark(
                    &mut out.frame,
                    mark,
                    Point::new(x + d / 2, y + rh / 2),
                    d as u32,
                    false,
                );
                right = x - 6;
                x -= d + 6;
            }
        }
        if let Some(q) = &c.qr {
            let n = if q.count > 0 {
                format!("{}/{}", q.index, q.count)
            } else {
                format!("#{}", q.index)
            };
            let line = fit(&n, 5);
            draw_text(out, &line, face, INK, Point::new(left, y));
            left += face.line_w(&line) as i32 + 8;
        }
    }
    if let Some(cd) = &c.countdown {
        let line = fit(&cd.text(), 8);
        let tw = face.line_w(&line) as i32;
        draw_text(out, &line, face, INK, Point::new(right - tw, y));
        right -= tw + 8;
        let bh = fonts.bar_h as i32;
        if right > left {
            let bar = Rectangle::new(
                Point::new(left, y + (rh - bh) / 2),
                Size::new((right - left) as u32, bh as u32),
            );
            draw_bar(&mut out.frame, bar, cd.fraction());
        }
    }
}

fn draw_qr_screen(out: &mut Rendered, plan: &QrPlan) {
    let (w, h) = (out.frame.width(), out.frame.height());
    let _ = out.frame.clear(Rgb565::WHITE);
    let c = out.content.clone();
    let fonts = plan.fonts;
    let side = plan.matrix.width_with_quiet_zone() * plan.module_px;
    let title_color = tone_ink(c.tone);
    let code =
        c.qr.as_ref()
            .map(|q| code_number(q.index, q.count, c.strings));
    let qr_rect = if plan.arrangement == QrArrangement::Side {
        draw_side(out, plan, side, title_color, code.as_deref())
    } else {
        let inner = w.saturating_sub(2 * MARGIN);
        let strip = matches!(
            plan.arrangement,
            QrArrangement::Full | QrArrangement::NoHint
        );
        let title = plan.arrangement != QrArrangement::Compact;
        let hint_h = plan.hint_lines.len() as u32 * fonts.small.line_h();
        let fixed = if strip { fonts.strip_h + 2 } else { 0 }
            + if title { fonts.body.line_h() } else { 0 }
            + side
            + fonts.body.line_h()
            + if hint_h > 0 { hint_h + 1 } else { 0 };
        // Spread the spare height evenly over the gaps between the blocks.
        let gaps = 2 + u32::from(title) + u32::from(hint_h > 0);
        let gap = (h.saturating_sub(fixed) / (gaps + 1)) as i32;
        let mut y = 0;
        if strip {
            draw_strip(out, &fonts, code.as_deref(), false);
            y = (fonts.strip_h + 2) as i32;
        }
        y += gap;
        if title {
            let line = fit(&c.title, fonts.body.max_cells(inner));
            draw_centered(out, &line, fonts.body, title_color, w as i32 / 2, y);
            y += fonts.body.line_h() as i32 + gap;
        }
        let qr_rect = draw_qr(out, plan, Point::new((w as i32 - side as i32) / 2, y));
        y += side as i32 + gap;
        draw_qr_row(out, &fonts, y, !strip);
        y += fonts.body.line_h() as i32 + 1 + gap;
        for line in plan.hint_lines.clone() {
            draw_centered(out, &line, fonts.small, INK_DIM, w as i32 / 2, y);
            y += fonts.small.line_h() as i32;
        }
        qr_rect
    };
    out.qr = Some(QrPlacement {
        rect: qr_rect,
        module_px: plan.module_px,
        modules: plan.matrix.width(),
        version: plan.matrix.version(),
        level: plan.matrix.level(),
        arrangement: plan.arrangement,
    });
    out.qr_matrix = Some(Arc::clone(&plan.matrix));
}

/// Landscape: QR on the left (its quiet zone is the margin), a text column on the right.
fn draw_side(
    out: &mut Rendered,
    plan: &QrPlan,
    side: u32,
    title_color: Rgb565,
    code: Option<&str>,
) -> Rectangle {
    let (w, h) = (out.frame.width(), out.frame.height());
    let fonts = plan.fonts;
    let c = out.content.clone();
    let qr_rect = draw_qr(out, plan, Point::new(0, (h as i32 - side as i32) / 2));
    let x0 = side as i32 + 2;
    let col_w = w.saturating_sub(side + 2 + MARGIN);
    // The column is narrow on a 320×240 panel: small print there, body text when it is wide.
    let (text, value) = if col_w >= 160 {
        (fonts.body, fonts.title)
    } else {
        (fonts.small, fonts.title)
    };
    let mut y = MARGIN as i32;
    y += draw_marks_column(out, fonts.small, Point::new(x0, y), INK_DIM) as i32 + 8;
    for line in wrap(&c.title, text.max_cells(col_w), 2) {
        draw_text(out, &line, text, title_color, Point::new(x0, y));
        y += text.line_h() as i32;
    }
    if let Some(code) = code {
        let line = fit(code, fonts.small.max_cells(col_w));
        draw_text(out, &line, fonts.small, INK_DIM, Point::new(x0, y));
        y += fonts.small.line_h() as i32;
    }
    y += 8;
    if let Some(cd) = &c.countdown {
        let line = fit(&cd.text(), value.max_cells(col_w));
        draw_text(out, &line, value, INK, Point::new(x0, y));
        y += value.line_h() as i32 + 2;
        let bar = Rectangle::new(Point::new(x0, y), Size::new(col_w, fonts.bar_h));
        draw_bar(&mut out.frame, bar, cd.fraction());
        y += fonts.bar_h as i32 + 10;
    }
    // The phone path: the first wording and face that fits the room left, without cuts.
    let room = (h as i32 - MARGIN as i32 - y).max(0) as u32;
    let options = [
        (text, c.strings.scan_hint.as_str()),
        (text, c.strings.scan_hint_short.as_str()),
        (fonts.small, c.strings.scan_hint.as_str()),
        (fonts.small, c.strings.scan_hint_short.as_str()),
    ];
    let fitted = options.iter().map(|&(face, hint)| {
        let max_lines = (room / face.line_h()) as usize;
        (face, wrap(hint, face.max_cells(col_w), max_lines))
    });
    let mut chosen = None;
    for (face, lines) in fitted {
        let whole = !lines.is_empty() && !lines.iter().any(|l| l.ellipsis);
        chosen = Some((face, lines));
        if whole {
            break;
        }
    }
    if let Some((face, lines)) = chosen {
        for line in lines {
            draw_text(out, &line, face, INK_DIM, Point::new(x0, y));
            y += face.line_h() as i32;
        }
    }
    qr_rect
}
