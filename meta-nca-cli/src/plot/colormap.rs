//! The diverging colour map of weight and hidden-state pictures, and the GIF palette built
//! around it.
//!
//! Values are drawn on a symmetric scale `[-s, s]`: negative blue, zero near-white, positive
//! red (ColorBrewer's RdBu, reversed). A value is first snapped to one of [`LEVELS`] levels, so
//! the colours a heatmap uses are exactly palette entries and read the same in every GIF frame.
//! Dead cells and non-finite values get colours outside the map (see [`DEAD`], [`NON_FINITE`]).

use plotters::style::RGBColor;

use super::canvas::Palette;

/// ColorBrewer RdBu (11 classes) from -1 (dark blue) to +1 (dark red).
const ANCHORS: [[u8; 3]; 11] = [
    [0x05, 0x30, 0x61],
    [0x21, 0x66, 0xac],
    [0x43, 0x93, 0xc3],
    [0x92, 0xc5, 0xde],
    [0xd1, 0xe5, 0xf0],
    [0xf7, 0xf7, 0xf7],
    [0xfd, 0xdb, 0xc7],
    [0xf4, 0xa5, 0x82],
    [0xd6, 0x60, 0x4d],
    [0xb2, 0x18, 0x2b],
    [0x67, 0x00, 0x1f],
];

/// Number of colour levels (odd, so that 0 has its own level, the map's centre).
pub const LEVELS: usize = 129;

/// Fill of a dead (absent) connection: mid grey, hatched with [`HATCH`].
pub const DEAD: RGBColor = RGBColor(0x9a, 0x9a, 0x9a);
/// Hatch lines over [`DEAD`].
pub const HATCH: RGBColor = RGBColor(0x4a, 0x4a, 0x4a);
/// Fill of a NaN or infinite value.
pub const NON_FINITE: RGBColor = RGBColor(0, 0, 0);
/// Cell borders.
pub const GRID: RGBColor = RGBColor(0xc8, 0xc8, 0xc8);

/// The bytes of a colour.
pub fn rgb(c: RGBColor) -> [u8; 3] {
    [c.0, c.1, c.2]
}

/// Colour at position `t ∈ [-1, 1]` of the map (linear between the anchors).
fn at(t: f64) -> [u8; 3] {
    let x = (t.clamp(-1.0, 1.0) + 1.0) / 2.0 * (ANCHORS.len() - 1) as f64;
    let i = (x.floor() as usize).min(ANCHORS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (ANCHORS[i], ANCHORS[i + 1]);
    std::array::from_fn(|k| (a[k] as f64 + f * (b[k] as f64 - a[k] as f64)).round() as u8)
}

/// Colour of level `l` in `0..LEVELS`.
pub fn level_color(l: usize) -> RGBColor {
    let t = 2.0 * l.min(LEVELS - 1) as f64 / (LEVELS - 1) as f64 - 1.0;
    let [r, g, b] = at(t);
    RGBColor(r, g, b)
}

/// Level of `value` on the symmetric scale `[-scale, scale]` (clamped), `None` if not finite.
pub fn level(value: f64, scale: f64) -> Option<usize> {
    if !value.is_finite() {
        return None;
    }
    let t = if scale > 0.0 { (value / scale).clamp(-1.0, 1.0) } else { 0.0 };
    Some(((t + 1.0) / 2.0 * (LEVELS - 1) as f64).round() as usize)
}

/// Colour of `value` on the symmetric scale `[-scale, scale]`.
pub fn color(value: f64, scale: f64) -> RGBColor {
    level(value, scale).map_or(NON_FINITE, level_color)
}

/// A symmetric scale for values whose largest magnitude is `max_abs`: rounded up to two
/// significant digits (so colour-bar labels are short), 1 when everything is zero.
pub fn nice_scale(max_abs: f64) -> f64 {
    if !(max_abs.is_finite() && max_abs > 0.0) {
        return 1.0;
    }
    let unit = 10f64.powf(max_abs.log10().floor() - 1.0);
    (max_abs / unit - 1e-9).ceil() * unit
}

/// The GIF palette: every colour-map level, the special colours, 64 greys (text
/// anti-aliasing) and a coarse colour cube for anything else: 129 + 4 + 64 + 27 = 224 colours.
pub fn palette() -> Palette {
    let mut colors: Vec<[u8; 3]> = (0..LEVELS).map(|l| rgb(level_color(l))).collect();
    colors.extend([DEAD, HATCH, NON_FINITE, GRID].map(rgb));
    colors.extend((0..64u32).map(|g| [(g * 255 / 63) as u8; 3]));
    for r in [0u8, 128, 255] {
        for g in [0u8, 128, 255] {
            for b in [0u8, 128, 255] {
                colors.push([r, g, b]);
            }
        }
    }
    Palette::new(colors).expect("224 colours fit a GIF palette")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_the_centre_and_the_ends_are_the_anchors() {
        assert_eq!(level(0.0, 2.0), Some(LEVELS / 2));
        assert_eq!(level(-5.0, 2.0), Some(0));
        assert_eq!(level(5.0, 2.0), Some(LEVELS - 1));
        assert_eq!(level(f64::NAN, 2.0), None);
        assert_eq!(rgb(level_color(0)), ANCHORS[0]);
        assert_eq!(rgb(level_color(LEVELS - 1)), ANCHORS[10]);
        assert_eq!(rgb(level_color(LEVELS / 2)), ANCHORS[5]);
    }

    #[test]
    fn nice_scale_rounds_up() {
        assert_eq!(nice_scale(0.0), 1.0);
        assert!((nice_scale(0.1234) - 0.13).abs() < 1e-12);
        assert!((nice_scale(2.0) - 2.0).abs() < 1e-12);
        assert!(nice_scale(3.01) >= 3.01);
    }
}
