//! Text: DejaVu Sans compiled into the binary (the `dejavu` crate), rasterised with `ab_glyph`
//! and blended onto a picture pixel by pixel.
//!
//! `plotters`' own `ab_glyph` text puts every glyph on its own truncated offset, which lifts
//! small glyphs (a decimal point reads as a middle dot at 13 px); this lays a line out on one
//! baseline, so no system font and no font lookup is involved.

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use anyhow::Result;
use plotters::prelude::*;

use super::canvas::{Area, drawn};

/// Horizontal anchor of a line of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H {
    /// The anchor is the start of the text.
    Left,
    /// The anchor is the middle.
    Center,
    /// The anchor is the end.
    Right,
}

/// Vertical anchor of a line of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V {
    /// The anchor is the top of the line box.
    Top,
    /// The anchor is the middle of the digits' height (what tick labels centre on).
    Center,
}

/// A text style: size in pixels, weight, colour, anchor and direction.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Font size in pixels (the line box height).
    pub size: f32,
    /// Bold face.
    pub bold: bool,
    /// Colour.
    pub color: RGBColor,
    /// Horizontal anchor.
    pub h: H,
    /// Vertical anchor.
    pub v: V,
    /// Read upwards (rotated a quarter turn anticlockwise), as a y-axis title.
    pub up: bool,
}

impl Style {
    /// Black regular text of `size` pixels, anchored at its left middle.
    pub fn new(size: f32) -> Self {
        Self { size, bold: false, color: BLACK, h: H::Left, v: V::Center, up: false }
    }

    /// The same, bold.
    pub fn bold(self) -> Self {
        Self { bold: true, ..self }
    }

    /// The same, anchored at `h`, `v`.
    pub fn at(self, h: H, v: V) -> Self {
        Self { h, v, ..self }
    }

    /// The same, reading upwards.
    pub fn up(self) -> Self {
        Self { up: true, ..self }
    }
}

fn font(bold: bool) -> &'static FontRef<'static> {
    static FONTS: OnceLock<[FontRef<'static>; 2]> = OnceLock::new();
    let fonts = FONTS.get_or_init(|| {
        // Compiled-in, known-good TTF files: failing to parse them is a broken build.
        let parse = |bytes| FontRef::try_from_slice(bytes).expect("the embedded DejaVu Sans font parses");
        [parse(dejavu::sans::regular()), parse(dejavu::sans::bold())]
    });
    &fonts[usize::from(bold)]
}

/// Width of `s` in pixels.
pub fn width(s: &str, style: Style) -> f32 {
    let f = font(style.bold).as_scaled(PxScale::from(style.size));
    let mut x = 0.0;
    let mut prev = None;
    for c in s.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            x += f.kern(p, id);
        }
        x += f.h_advance(id);
        prev = Some(id);
    }
    x
}

/// Draws `s` with its anchor at `at`.
pub fn draw(area: &Area<'_>, s: &str, at: (i32, i32), style: Style) -> Result<()> {
    let f = font(style.bold).as_scaled(PxScale::from(style.size));
    let ascent = f.ascent();
    let w = width(s, style);
    let ox = match style.h {
        H::Left => 0.0,
        H::Center => w / 2.0,
        H::Right => w,
    };
    // Layout coordinates: y = 0 at the top of the line box, the baseline at `ascent`.
    let digit_height = f.outline_glyph(f.scaled_glyph('0')).map_or(0.7 * style.size, |g| {
        let b = g.px_bounds();
        b.max.y - b.min.y
    });
    let oy = match style.v {
        V::Top => 0.0,
        V::Center => ascent - digit_height / 2.0,
    };
    let mut caret = 0.0;
    let mut prev = None;
    for c in s.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            caret += f.kern(p, id);
        }
        prev = Some(id);
        let glyph = id.with_scale_and_position(PxScale::from(style.size), point(caret, ascent));
        caret += f.h_advance(id);
        let Some(outline) = f.outline_glyph(glyph) else { continue };
        let b = outline.px_bounds();
        let mut result = Ok(());
        outline.draw(|gx, gy, coverage| {
            if result.is_err() || coverage <= 0.0 {
                return;
            }
            let (lx, ly) = (b.min.x + gx as f32 - ox, b.min.y + gy as f32 - oy);
            let (dx, dy) = if style.up { (ly, -lx) } else { (lx, ly) };
            let px = (at.0 as f32 + dx).round() as i32;
            let py = (at.1 as f32 + dy).round() as i32;
            result = drawn(area.draw_pixel((px, py), &style.color.mix(coverage.min(1.0) as f64)));
        });
        result?;
    }
    Ok(())
}
