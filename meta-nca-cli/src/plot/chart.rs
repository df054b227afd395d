//! A small line chart for panels of a picture: linear or logarithmic axes with round ticks, a
//! light grid, solid or dashed lines, vertical markers (an event at some x), and a legend.
//!
//! The training curves and the robustness curves (accuracy over steps, the damage step as a
//! marker, dashed baselines) use it.

use anyhow::Result;
use plotters::prelude::*;

use super::canvas::{Area, drawn};
use super::text::{self, H, Style, V};

/// An axis: the value range and how it maps to pixels.
#[derive(Debug, Clone, Copy)]
pub enum Axis {
    /// Linear over `[lo, hi]`.
    Linear(f64, f64),
    /// Logarithmic over `[lo, hi]`, both positive.
    Log(f64, f64),
}

impl Axis {
    /// A linear axis over `[lo, hi]`, widened when it is empty.
    pub fn linear(lo: f64, hi: f64) -> Self {
        if hi > lo { Self::Linear(lo, hi) } else { Self::Linear(lo - 0.5, lo + 0.5) }
    }

    /// Position of `v` along the axis in `[0, 1]` (outside for values out of range), `None`
    /// if the value cannot be placed (not finite, or not positive on a log axis).
    pub fn frac(&self, v: f64) -> Option<f64> {
        match *self {
            _ if !v.is_finite() => None,
            Self::Linear(lo, hi) => Some((v - lo) / (hi - lo)),
            Self::Log(lo, hi) => (v > 0.0).then(|| (v.ln() - lo.ln()) / (hi.ln() - lo.ln())),
        }
    }

    /// Tick values with their labels.
    pub fn ticks(&self) -> Vec<(f64, String)> {
        match *self {
            Self::Linear(lo, hi) => {
                let raw = (hi - lo) / 5.0;
                let mag = 10f64.powf(raw.log10().floor());
                let step = [1.0, 2.0, 2.5, 5.0, 10.0]
                    .iter()
                    .map(|m| m * mag)
                    .find(|s| *s >= raw * 0.999)
                    .unwrap_or(10.0 * mag);
                let decimals =
                    (-(step.log10().floor()) as i32).max(0) as usize + usize::from((step / mag - 2.5).abs() < 1e-9);
                let first = (lo / step).ceil() as i64;
                let last = (hi / step + 1e-9).floor() as i64;
                (first..=last)
                    .map(|k| {
                        let v = k as f64 * step;
                        let s = format!("{v:.decimals$}");
                        (
                            v,
                            if s.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
                                "0".into()
                            } else {
                                s
                            },
                        )
                    })
                    .collect()
            }
            Self::Log(lo, hi) => {
                let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
                let mantissas: &[f64] = if b - a <= 2 { &[1.0, 2.0, 5.0] } else { &[1.0] };
                // A label every decade up to 9 decades, then every second, third, …
                let every = ((b - a) / 9 + 1).max(1);
                (a..=b)
                    .filter(|e| (e - a) % every == 0)
                    .flat_map(|e| mantissas.iter().map(move |m| m * 10f64.powi(e)))
                    .filter(|v| *v >= lo * 0.999 && *v <= hi * 1.001)
                    .map(|v| (v, log_label(v)))
                    .collect()
            }
        }
    }
}

/// A tick label on a log axis: plain for 0.001–10000, otherwise `1e-5`.
fn log_label(v: f64) -> String {
    let e = v.log10().floor() as i32;
    if (-3..=4).contains(&e) {
        format!("{v:.*}", (-e).max(0) as usize)
    } else {
        let m = v / 10f64.powi(e);
        if (m - 1.0).abs() < 1e-9 { format!("1e{e}") } else { format!("{m:.0}e{e}") }
    }
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Name in the legend (`None`: not listed).
    pub name: Option<String>,
    /// Colour.
    pub color: RGBColor,
    /// Opacity (pale lines under a bold summary).
    pub alpha: f64,
    /// Line width in pixels.
    pub width: u32,
    /// Dashed (baselines, references): set it with `Series { dashed: true, ..Series::new(..) }`.
    pub dashed: bool,
    /// A dot at every point (lines of a few points, where one point alone draws no line).
    pub dots: bool,
    /// The points; non-finite ones break the line.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A solid line of width 2 named `name`.
    pub fn new(name: &str, color: RGBColor, points: Vec<(f64, f64)>) -> Self {
        Self { name: Some(name.to_string()), color, alpha: 1.0, width: 2, dashed: false, dots: false, points }
    }

    /// The same line thin, pale and unnamed (raw values under a smoothed line).
    pub fn pale(mut self) -> Self {
        self.name = None;
        self.alpha = 0.3;
        self.width = 1;
        self
    }
}

/// Where the legend goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corner {
    /// Top right of the plot.
    UpperRight,
    /// Bottom right of the plot.
    LowerRight,
    /// Bottom left of the plot.
    LowerLeft,
}

/// A chart panel.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Panel title.
    pub title: String,
    /// X-axis title (with unit).
    pub x_title: String,
    /// Y-axis title (with unit).
    pub y_title: String,
    /// X axis.
    pub x: Axis,
    /// Y axis.
    pub y: Axis,
    /// Lines, drawn in order.
    pub series: Vec<Series>,
    /// Vertical markers: x value and label (dashed grey line).
    pub markers: Vec<(f64, String)>,
    /// Legend position (no legend when fewer than two named lines).
    pub legend: Corner,
}

const AXIS: RGBColor = RGBColor(0x40, 0x40, 0x40);
const GRID: RGBColor = RGBColor(0xe4, 0xe4, 0xe4);

/// Draws `chart` into the pixel rectangle `[x0, x1) × [y0, y1)` of `area`.
pub fn draw(area: &Area<'_>, (x0, y0, x1, y1): (i32, i32, i32, i32), chart: &Chart) -> Result<()> {
    let (left, right, top, bottom) = (x0 + 86, x1 - 18, y0 + 38, y1 - 54);
    let px = |v: f64| chart.x.frac(v).map(|f| left as f64 + f * (right - left) as f64);
    let py = |v: f64| chart.y.frac(v).map(|f| bottom as f64 - f * (bottom - top) as f64);
    text::draw(area, &chart.title, ((x0 + x1) / 2, y0 + 14), Style::new(16.0).bold().at(H::Center, V::Center))?;
    let tick = Style::new(13.0);
    for (v, label) in chart.x.ticks() {
        if let Some(x) = px(v) {
            let x = x.round() as i32;
            drawn(area.draw(&PathElement::new(vec![(x, top), (x, bottom)], GRID)))?;
            drawn(area.draw(&PathElement::new(vec![(x, bottom), (x, bottom + 5)], AXIS)))?;
            text::draw(area, &label, (x, bottom + 8), tick.at(H::Center, V::Top))?;
        }
    }
    for (v, label) in chart.y.ticks() {
        if let Some(y) = py(v) {
            let y = y.round() as i32;
            drawn(area.draw(&PathElement::new(vec![(left, y), (right, y)], GRID)))?;
            drawn(area.draw(&PathElement::new(vec![(left - 5, y), (left, y)], AXIS)))?;
            text::draw(area, &label, (left - 8, y), tick.at(H::Right, V::Center))?;
        }
    }
    let axis_title = Style::new(14.0).at(H::Center, V::Center);
    text::draw(area, &chart.x_title, ((left + right) / 2, y1 - 16), axis_title)?;
    text::draw(area, &chart.y_title, (x0 + 14, (top + bottom) / 2), axis_title.up())?;
    let clip = |(x, y): (f64, f64)| {
        (x.clamp(left as f64, right as f64).round() as i32, y.clamp(top as f64, bottom as f64).round() as i32)
    };
    for (x, label) in &chart.markers {
        if let Some(x) = px(*x) {
            let x = x.round() as i32;
            dashed_line(area, &[(x, top), (x, bottom)], AXIS.mix(0.8).stroke_width(1))?;
            text::draw(area, label, (x + 4, top + 4), Style::new(12.0).at(H::Left, V::Top))?;
        }
    }
    for s in &chart.series {
        let style = s.color.mix(s.alpha).stroke_width(s.width);
        // Split at points that cannot be placed.
        let mut run: Vec<(i32, i32)> = Vec::new();
        let mut runs = Vec::new();
        for &(x, y) in &s.points {
            match (px(x), py(y)) {
                (Some(x), Some(y)) => run.push(clip((x, y))),
                _ => runs.push(std::mem::take(&mut run)),
            }
        }
        runs.push(run);
        if s.dots {
            for &(x, y) in runs.iter().flatten() {
                drawn(area.draw(&Circle::new((x, y), 3 + s.width as i32 / 2, s.color.mix(s.alpha).filled())))?;
            }
        }
        for run in runs.into_iter().filter(|r| !r.is_empty()) {
            if s.dashed {
                dashed_line(area, &run, style)?;
            } else {
                drawn(area.draw(&PathElement::new(run, style)))?;
            }
        }
    }
    drawn(area.draw(&Rectangle::new([(left, top), (right, bottom)], AXIS)))?;
    legend(area, chart, (left, top, right, bottom))
}

/// Draws a polyline as 8-pixel dashes with 5-pixel gaps.
fn dashed_line(area: &Area<'_>, points: &[(i32, i32)], style: ShapeStyle) -> Result<()> {
    let (on, off) = (8.0, 5.0);
    let mut phase = 0.0f64;
    for w in points.windows(2) {
        let (a, b) = ((w[0].0 as f64, w[0].1 as f64), (w[1].0 as f64, w[1].1 as f64));
        let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
        let mut t = 0.0;
        while t < len {
            let in_dash = phase < on;
            let left = if in_dash { on - phase } else { on + off - phase };
            let step = left.min(len - t);
            if in_dash {
                let p = |s: f64| {
                    ((a.0 + (b.0 - a.0) * s / len).round() as i32, (a.1 + (b.1 - a.1) * s / len).round() as i32)
                };
                drawn(area.draw(&PathElement::new(vec![p(t), p(t + step)], style)))?;
            }
            t += step;
            phase = (phase + step) % (on + off);
        }
    }
    Ok(())
}

/// Draws the legend of the named lines, if there are two or more.
fn legend(area: &Area<'_>, chart: &Chart, (left, top, right, bottom): (i32, i32, i32, i32)) -> Result<()> {
    let named: Vec<&Series> = chart.series.iter().filter(|s| s.name.is_some()).collect();
    if named.len() < 2 {
        return Ok(());
    }
    let style = Style::new(13.0);
    let w = named.iter().map(|s| text::width(s.name.as_deref().unwrap_or(""), style)).fold(0.0, f32::max) as i32 + 48;
    let h = named.len() as i32 * 20 + 10;
    let (lx, ly) = match chart.legend {
        Corner::UpperRight => (right - w - 10, top + 10),
        Corner::LowerRight => (right - w - 10, bottom - h - 10),
        Corner::LowerLeft => (left + 10, bottom - h - 10),
    };
    drawn(area.draw(&Rectangle::new([(lx, ly), (lx + w, ly + h)], WHITE.mix(0.9).filled())))?;
    drawn(area.draw(&Rectangle::new([(lx, ly), (lx + w, ly + h)], RGBColor(0xa0, 0xa0, 0xa0))))?;
    for (i, s) in named.iter().enumerate() {
        let y = ly + 15 + i as i32 * 20;
        let line = vec![(lx + 8, y), (lx + 34, y)];
        let style_line = s.color.mix(s.alpha).stroke_width(s.width.max(2));
        if s.dashed {
            dashed_line(area, &line, style_line)?;
        } else {
            drawn(area.draw(&PathElement::new(line, style_line)))?;
        }
        text::draw(area, s.name.as_deref().unwrap_or(""), (lx + 40, y), style)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ticks_are_round() {
        let t: Vec<String> = Axis::Linear(0.0, 1.0).ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(t, ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let t: Vec<String> = Axis::Linear(1.0, 1000.0).ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(t, ["200", "400", "600", "800", "1000"]);
    }

    #[test]
    fn log_ticks_are_decades() {
        let t: Vec<String> = Axis::Log(0.05, 30.0).ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(t, ["0.1", "1", "10"]);
        assert_eq!(log_label(1e-6), "1e-6");
        assert!(Axis::Log(1.0, 10.0).frac(0.0).is_none());
    }
}
