//! A layer's weight matrix as a heatmap, and animations of it: one frame per grow step (or per
//! meta-epoch snapshot, see `epochs`), all on one fixed symmetric colour scale.
//!
//! Rows are pre-synaptic neurons (the bias neuron last, labelled `bias`), columns
//! post-synaptic neurons. Dead connections are grey and hatched; cells that fired to reach the
//! shown state carry a small black dot.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;

use super::GifOptions;
use super::canvas::{Area, GifWriter, Picture, drawn};
use super::colormap::{self, DEAD, GRID, HATCH};
use super::grow_file::{Grow, LayerGrid};
use super::text::{self, H, Style, V};

/// A short number for tick labels: up to 3 significant digits, trailing zeros dropped.
pub fn fmt_num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v.is_finite() { "0".into() } else { format!("{v}") };
    }
    let decimals = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    if s == "-0" { "0".into() } else { s }
}

/// Fills the `size × size` square at `(x, y)` as a dead cell: grey with diagonal hatching.
pub fn hatch(area: &Area<'_>, (x, y): (i32, i32), size: i32) -> Result<()> {
    for py in 0..size {
        for px in 0..size {
            let c = if (px + py) % 6 == 0 { HATCH } else { DEAD };
            drawn(area.draw_pixel((x + px, y + py), &c))?;
        }
    }
    Ok(())
}

/// Draws the matrix of `grid` with its top-left corner at `(x, y)`, `cell` pixels per cell:
/// `values[k]` is the value of record cell `k`; `fired[k]` (if given) marks it with a dot.
pub fn draw_matrix(
    area: &Area<'_>,
    (x, y): (i32, i32),
    cell: i32,
    grid: &LayerGrid,
    values: &[f64],
    scale: f64,
    fired: &[bool],
) -> Result<()> {
    for r in 0..grid.rows {
        for c in 0..grid.cols {
            let (x0, y0) = (x + c as i32 * cell, y + r as i32 * cell);
            match grid.slots[r * grid.cols + c] {
                Some(k) => {
                    let color = colormap::color(values[k], scale);
                    drawn(area.draw(&Rectangle::new([(x0, y0), (x0 + cell, y0 + cell)], color.filled())))?;
                    if fired.get(k) == Some(&true) && cell >= 10 {
                        let r = (cell / 8).max(2);
                        let at = (x0 + cell - r - 3, y0 + r + 3);
                        drawn(area.draw(&Circle::new(at, r + 1, WHITE.filled())))?;
                        drawn(area.draw(&Circle::new(at, r, BLACK.filled())))?;
                    }
                }
                None => hatch(area, (x0, y0), cell)?,
            }
        }
    }
    let (w, h) = (grid.cols as i32 * cell, grid.rows as i32 * cell);
    if cell >= 6 {
        for c in 1..grid.cols as i32 {
            drawn(area.draw(&PathElement::new(vec![(x + c * cell, y), (x + c * cell, y + h)], GRID)))?;
        }
        for r in 1..grid.rows as i32 {
            drawn(area.draw(&PathElement::new(vec![(x, y + r * cell), (x + w, y + r * cell)], GRID)))?;
        }
    }
    drawn(area.draw(&Rectangle::new([(x, y), (x + w, y + h)], RGBColor(0x60, 0x60, 0x60))))
}

/// Draws a vertical colour bar for `[-scale, scale]` at `(x, y)`, `w × h` pixels, with ticks
/// and `title` (rotated) to its right.
pub fn draw_colorbar(area: &Area<'_>, (x, y): (i32, i32), w: i32, h: i32, scale: f64, title: &str) -> Result<()> {
    for py in 0..h {
        let v = scale * (1.0 - 2.0 * py as f64 / (h - 1).max(1) as f64);
        let color = colormap::color(v, scale);
        drawn(area.draw(&Rectangle::new([(x, y + py), (x + w, y + py + 1)], color.filled())))?;
    }
    drawn(area.draw(&Rectangle::new([(x, y), (x + w, y + h)], RGBColor(0x60, 0x60, 0x60))))?;
    let small = Style::new(13.0);
    let mut widest = 0.0f32;
    for v in [scale, scale / 2.0, 0.0, -scale / 2.0, -scale] {
        let py = y + ((1.0 - v / scale) / 2.0 * (h - 1) as f64).round() as i32;
        drawn(area.draw(&PathElement::new(vec![(x + w, py), (x + w + 4, py)], BLACK)))?;
        let s = fmt_num(v);
        widest = widest.max(text::width(&s, small));
        text::draw(area, &s, (x + w + 7, py), small)?;
    }
    text::draw(area, title, (x + w + 22 + widest as i32, y + h / 2), Style::new(14.0).at(H::Center, V::Center).up())
}

/// Draws the legend of special cells (dead; fired if `with_fired`) starting at `(x, y)`.
pub fn draw_legend(area: &Area<'_>, (x, y): (i32, i32), with_fired: bool) -> Result<()> {
    let small = Style::new(13.0);
    hatch(area, (x, y - 7), 14)?;
    drawn(area.draw(&Rectangle::new([(x, y - 7), (x + 14, y + 7)], RGBColor(0x60, 0x60, 0x60))))?;
    text::draw(area, "no connection (dead)", (x + 20, y), small)?;
    if with_fired {
        let x = x + 20 + text::width("no connection (dead)", small) as i32 + 24;
        drawn(area.draw(&Circle::new((x + 7, y), 4, BLACK.filled())))?;
        text::draw(area, "fired in this step", (x + 18, y), small)?;
    }
    Ok(())
}

/// One frame of a weight animation: the values of every record cell and the frame's titles.
pub struct Shot<'a> {
    /// Value of every record cell.
    pub values: &'a [f64],
    /// Cells that fired to reach this state (empty: none marked).
    pub fired: &'a [bool],
    /// First title line (bold).
    pub title: String,
    /// Second title line.
    pub subtitle: String,
}

/// Style of a frame's first title line.
const TITLE: Style = Style { size: 19.0, bold: true, color: BLACK, h: H::Center, v: V::Center, up: false };
/// Style of a frame's second title line.
const SUBTITLE: Style = Style { size: 15.0, bold: false, ..TITLE };

/// Pixel layout of a layer's weight frame; it depends only on the matrix shape, so every frame
/// of an animation has the same size.
struct Layout {
    cell: i32,
    width: u32,
    height: u32,
    /// Top-left corner of the matrix.
    mx: i32,
    my: i32,
}

impl Layout {
    /// The layout of `grid`'s frames, at least `min_width` pixels wide (the titles' width).
    fn new(grid: &LayerGrid, min_width: i32) -> Self {
        let cell = (440 / grid.rows.max(grid.cols) as i32).clamp(6, 56);
        let (mw, mh) = (grid.cols as i32 * cell, grid.rows as i32 * cell);
        let (left, top, right, bottom) = (120, 80, 150, 90);
        let width = (left + mw + right).max(660).max(min_width);
        let height = top + mh.max(200) + bottom;
        // Centre the matrix with its colour bar.
        let mx = left.max((width - mw - right + left) / 2);
        let my = top + (mh.max(200) - mh) / 2;
        Self { cell, width: width as u32, height: height as u32, mx, my }
    }
}

/// Names of the two neuron axes of weight matrix `grid.layer`.
fn axis_titles(grid: &LayerGrid) -> (String, String) {
    let bias = if grid.bias_row { " (+ bias)" } else { "" };
    let rows = if grid.layer == 0 {
        format!("input feature i{bias}")
    } else {
        format!("hidden neuron i, layer {}{bias}", grid.layer)
    };
    let cols =
        if grid.last { "output class j".to_string() } else { format!("hidden neuron j, layer {}", grid.layer + 1) };
    (rows, cols)
}

/// Tick labels every `k`-th row/column so that labels do not overlap.
fn tick_every(cell: i32) -> usize {
    (16 + cell - 1).div_euclid(cell).max(1) as usize
}

/// Draws one frame of layer `grid` on the colour scale `±scale`.
fn draw_frame(grid: &LayerGrid, shot: &Shot<'_>, scale: f64, layout: &Layout) -> Result<Picture> {
    Picture::draw(layout.width, layout.height, |area| {
        let (w, _) = (layout.width as i32, layout.height as i32);
        text::draw(area, &shot.title, (w / 2, 22), TITLE)?;
        text::draw(area, &shot.subtitle, (w / 2, 50), SUBTITLE)?;
        let (cell, mx, my) = (layout.cell, layout.mx, layout.my);
        draw_matrix(area, (mx, my), cell, grid, shot.values, scale, shot.fired)?;
        let (mw, mh) = (grid.cols as i32 * cell, grid.rows as i32 * cell);
        let small = Style::new(13.0);
        let every = tick_every(cell);
        for r in (0..grid.rows).filter(|r| r % every == 0 || (grid.bias_row && r + 1 == grid.rows)) {
            let s = if grid.bias_row && r + 1 == grid.rows { "bias".to_string() } else { r.to_string() };
            text::draw(area, &s, (mx - 6, my + r as i32 * cell + cell / 2), small.at(H::Right, V::Center))?;
        }
        for c in (0..grid.cols).filter(|c| c % every == 0) {
            text::draw(
                area,
                &c.to_string(),
                (mx + c as i32 * cell + cell / 2, my + mh + 6),
                small.at(H::Center, V::Top),
            )?;
        }
        let (rows, cols) = axis_titles(grid);
        let axis = Style::new(14.0).at(H::Center, V::Center);
        text::draw(area, &rows, (mx - 52, my + mh / 2), axis.up())?;
        text::draw(area, &cols, (mx + mw / 2, my + mh + 34), axis)?;
        let bar_h = mh.max(160);
        let bar_y = my + (mh - bar_h) / 2;
        draw_colorbar(area, (mx + mw + 28, bar_y), 18, bar_h, scale, "weight w (dimensionless)")?;
        draw_legend(area, (mx.min(40), layout.height as i32 - 22), !shot.fired.is_empty())
    })
}

/// Writes the GIF `path` of layer `grid`, one frame per shot, on one symmetric colour scale
/// (`opts.scale`, or the largest |value| of the layer over all shots). Returns the scale.
pub fn animate(grid: &LayerGrid, shots: &[Shot<'_>], opts: &GifOptions, path: &Path) -> Result<f64> {
    let scale = opts.scale.unwrap_or_else(|| colormap::nice_scale(grid.max_abs(shots.iter().map(|s| s.values))));
    let title_w =
        shots.iter().map(|s| text::width(&s.title, TITLE).max(text::width(&s.subtitle, SUBTITLE))).fold(0.0, f32::max);
    let layout = Layout::new(grid, title_w as i32 + 40);
    let mut gif = GifWriter::create(path, layout.width, layout.height, colormap::palette())?;
    let frames_dir = opts.debug_frames.then(|| frames_dir(path));
    if let Some(dir) = &frames_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for (i, shot) in shots.iter().enumerate() {
        let picture = draw_frame(grid, shot, scale, &layout)?;
        let hold = if i + 1 == shots.len() { opts.frame_ms.saturating_mul(5).max(1500) } else { opts.frame_ms };
        gif.frame(&picture, hold)?;
        if let Some(dir) = &frames_dir {
            picture.save_png(&dir.join(format!("frame-{i:04}.png")))?;
        }
    }
    gif.finish().with_context(|| format!("writing {}", path.display()))?;
    Ok(scale)
}

/// Folder of the per-frame PNGs of the animation `path` (`--debug-frames`).
pub fn frames_dir(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{stem}-frames"))
}

/// Writes one GIF per weight matrix of `grow`, a frame per recorded step, as
/// `<out>/<stem>-layer<l>.gif`. Returns the files written.
pub fn grow_gifs(grow: &Grow, out: &Path, stem: &str, opts: &GifOptions) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let total = grow.total_steps();
    for layer in 0..grow.layers() {
        let grid = LayerGrid::of(grow, layer);
        let shots: Vec<Shot<'_>> = grow
            .steps
            .iter()
            .map(|s| Shot {
                values: &s.weights,
                fired: &s.fired,
                title: format!("Layer {layer} weights ({}×{}) · grow step {} of {total}", grid.rows, grid.cols, s.step),
                subtitle: format!(
                    "train acc {:.3} · val acc {:.3} · train loss {:.3} nats · seed {} · p = {}",
                    s.train_acc, s.val_acc, s.train_loss, grow.seed, grow.fire_fraction
                ),
            })
            .collect();
        let path = out.join(format!("{stem}-layer{layer}.gif"));
        animate(&grid, &shots, opts, &path)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::fmt_num;

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(0.13), "0.13");
        assert_eq!(fmt_num(-0.065), "-0.065");
        assert_eq!(fmt_num(2.0), "2");
        assert_eq!(fmt_num(1234.6), "1235");
        assert_eq!(fmt_num(1.5), "1.5");
    }
}
