//! Hidden-state channels as small multiples: one row per channel, and for each weight matrix a
//! group of panels at a few grow steps (start, quarters, end). Each panel is the matrix of that
//! channel's values, on the row's symmetric colour scale (fixed across its steps and layers).

use anyhow::Result;

use super::canvas::Picture;
use super::colormap;
use super::grow_file::{Grow, LayerGrid};
use super::text::{self, H, Style, V};
use super::weights::{draw_colorbar, draw_legend, draw_matrix, fmt_num};

/// Indices into `grow.steps` of the shown steps: first, quarters and last (deduplicated).
pub fn shown_steps(grow: &Grow) -> Vec<usize> {
    let last = grow.steps.len() - 1;
    let mut v: Vec<usize> = (0..=4).map(|q| (q * last + 2) / 4).collect();
    v.dedup();
    v
}

/// Draws the hidden-state small multiples of `grow`.
pub fn draw(grow: &Grow) -> Result<Picture> {
    let d = grow.hidden_width();
    let steps = shown_steps(grow);
    let grids: Vec<LayerGrid> = (0..grow.layers()).map(|l| LayerGrid::of(grow, l)).collect();
    // Channel c's scale: its largest magnitude over the shown steps and all layers.
    let channel: Vec<Vec<Vec<f64>>> =
        (0..d).map(|c| steps.iter().map(|&s| grow.steps[s].hidden.iter().map(|h| h[c]).collect()).collect()).collect();
    let scales: Vec<f64> = channel
        .iter()
        .map(|per_step| {
            let m = per_step.iter().flatten().filter(|v| v.is_finite()).fold(0.0f64, |a, v| a.max(v.abs()));
            colormap::nice_scale(m)
        })
        .collect();
    let cells: Vec<i32> = grids.iter().map(|g| (96 / g.rows.max(g.cols) as i32).clamp(4, 24)).collect();
    let panel_w: Vec<i32> = grids.iter().zip(&cells).map(|(g, c)| g.cols as i32 * c).collect();
    let row_h = grids.iter().zip(&cells).map(|(g, c)| g.rows as i32 * c).max().unwrap_or(0).max(18) + 12;
    let (gap, group_gap) = (10, 36);
    let group_w: Vec<i32> = panel_w.iter().map(|w| (w.max(&44) + gap) * steps.len() as i32 - gap).collect();
    let (left, top, right, bottom) = (118, 132, 130, 56);
    let body_w: i32 = group_w.iter().sum::<i32>() + group_gap * (grids.len() as i32 - 1);
    let title = format!(
        "Hidden-state channels{} of a grown network {:?} · seed {} · {} steps",
        if d == 0 { " (none recorded)" } else { "" },
        grow.sizes,
        grow.seed,
        grow.total_steps()
    );
    let sub = "rows: channel h[c] on its own scale ±s (left), fixed across steps and layers · columns: grow steps";
    let text_w = text::width(&title, Style::new(19.0).bold()).max(text::width(sub, Style::new(14.0))) as i32 + 40;
    let width = (left + body_w + right).max(text_w);
    let body_h = row_h * d.max(1) as i32;
    let height = top + body_h.max(220) + bottom;

    Picture::draw(width as u32, height as u32, |area| {
        let centred = Style::new(14.0).at(H::Center, V::Center);
        text::draw(area, &title, (width / 2, 20), Style { size: 19.0, ..centred }.bold())?;
        text::draw(area, sub, (width / 2, 46), centred)?;
        let small = Style::new(13.0).at(H::Center, V::Center);
        let mut gx = left;
        for (l, g) in grids.iter().enumerate() {
            let head = format!("layer {l} ({}×{}: rows i, columns j)", g.rows, g.cols);
            text::draw(area, &head, (gx + group_w[l] / 2, 78), centred)?;
            for (k, &s) in steps.iter().enumerate() {
                let px = gx + k as i32 * (panel_w[l].max(44) + gap);
                let step = format!("step {}", grow.steps[s].step);
                text::draw(area, &step, (px + panel_w[l] / 2, 104), small)?;
                for c in 0..d {
                    let py = top + c as i32 * row_h;
                    draw_matrix(area, (px, py), cells[l], g, &channel[c][k], scales[c], &[])?;
                }
            }
            gx += group_w[l] + group_gap;
        }
        for (c, scale) in scales.iter().enumerate() {
            let py = top + c as i32 * row_h + (row_h - 12) / 2;
            let name = format!("h[{c}] ±{}", fmt_num(*scale));
            text::draw(area, &name, (left - 10, py), small.at(H::Right, V::Center))?;
        }
        text::draw(area, "hidden channel c", (18, top + body_h / 2), centred.up())?;
        let bar_h = body_h.clamp(120, 300);
        draw_colorbar(
            area,
            (left + body_w + 30, top + (body_h - bar_h) / 2),
            16,
            bar_h,
            1.0,
            "h / s of its row (dimensionless)",
        )?;
        draw_legend(area, (left, height - 24), false)
    })
}
