//! The learning suite of `meta-nca suite` (`suite.json`): left, every task's validation
//! accuracy after K steps (tasks ordered by backprop's accuracy), the grown networks (labels as given and permuted) next to Adam at
//! equal steps, backprop to convergence and logistic regression, with a key of task names;
//! right, the mean over tasks against the step count (growth past K).

use std::path::Path;

use anyhow::{Context, Result, bail};
use plotters::style::RGBColor;
use serde::Deserialize;

use super::canvas::Picture;
use super::chart::{self, Axis, Chart, Corner, Series};
use super::text::{self, H, Style, V};

/// Accuracy on the two splits.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Acc {
    /// Validation accuracy.
    pub val: f64,
}

/// Mean over networks.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Mean {
    /// The mean.
    pub mean: f64,
}

/// One step count of one task.
#[derive(Debug, Clone, Deserialize)]
pub struct Horizon {
    /// Steps.
    pub steps: usize,
    /// Grown, labels as given.
    pub grown_val: Mean,
    /// Grown, labels permuted.
    pub permuted_val: Mean,
    /// Adam at equal steps.
    pub adam: Acc,
    /// Adam from Xavier weights at equal steps (absent from suites run before it was measured).
    #[serde(default)]
    pub adam_xavier: Option<Acc>,
}

/// One task.
#[derive(Debug, Clone, Deserialize)]
pub struct Task {
    /// Name.
    pub name: String,
    /// Per step count, ascending.
    pub horizons: Vec<Horizon>,
    /// Backprop to convergence.
    pub backprop: Acc,
    /// Logistic regression.
    pub logistic: Acc,
}

/// The parts of `suite.json` the picture shows.
#[derive(Debug, Clone, Deserialize)]
pub struct Suite {
    /// Networks per task.
    pub networks: usize,
    /// Adam's learning rate.
    pub adam_lr: f64,
    /// Adam's learning rate from Xavier weights (absent from older suites).
    #[serde(default)]
    pub adam_xavier_lr: Option<f64>,
    /// The tasks.
    pub tasks: Vec<Task>,
}

impl Suite {
    /// Adam-from-Xavier's learning rate, when every task has that baseline.
    fn xavier_lr(&self) -> Option<f64> {
        self.adam_xavier_lr.filter(|_| self.tasks.iter().all(|t| t.horizons.iter().all(|h| h.adam_xavier.is_some())))
    }

    /// Reads `suite.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let suite: Suite = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a suite.json written by `meta-nca suite`", path.display()))?;
        if suite.tasks.is_empty() || suite.tasks.iter().any(|t| t.horizons.is_empty()) {
            bail!("{}: no task with results: nothing to plot", path.display());
        }
        Ok(suite)
    }
}

const BLUE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const LIGHT_BLUE: RGBColor = RGBColor(0x9e, 0xc9, 0xe2);
const ORANGE: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const RED: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const GREY: RGBColor = RGBColor(0x60, 0x60, 0x60);
const BROWN: RGBColor = RGBColor(0x8c, 0x56, 0x4b);

fn dotted(s: Series) -> Series {
    Series { dots: true, width: 1, ..s }
}

fn dashed(s: Series) -> Series {
    Series { dashed: true, ..dotted(s) }
}

/// Per task at the first step count (tasks in the order of `order`).
fn tasks_chart(s: &Suite, order: &[usize]) -> Chart {
    let at = |f: fn(&Task) -> f64| order.iter().enumerate().map(|(i, &t)| ((i + 1) as f64, f(&s.tasks[t]))).collect();
    let k = s.tasks[0].horizons[0].steps;
    let mut series = vec![
        Series { width: 2, ..dashed(Series::new("backprop (converged)", RED, at(|t| t.backprop.val))) },
        dashed(Series::new("logistic regression", GREY, at(|t| t.logistic.val))),
        dashed(Series::new(&format!("Adam, {k} steps, lr {}", s.adam_lr), ORANGE, at(|t| t.horizons[0].adam.val))),
    ];
    if let Some(lr) = s.xavier_lr() {
        let label = format!("Adam from Xavier, {k} steps, lr {lr}");
        series.push(dashed(Series::new(&label, BROWN, at(|t| t.horizons[0].adam_xavier.map_or(f64::NAN, |a| a.val)))));
    }
    series.extend([
        dotted(Series::new("grown, labels permuted", LIGHT_BLUE, at(|t| t.horizons[0].permuted_val.mean))),
        Series { width: 2, ..dotted(Series::new("grown", BLUE, at(|t| t.horizons[0].grown_val.mean))) },
    ]);
    Chart {
        title: format!("Validation accuracy per task after {k} steps"),
        x_title: "task, by backprop accuracy (key below)".into(),
        y_title: "validation accuracy".into(),
        x: Axis::linear(0.5, s.tasks.len() as f64 + 0.5),
        y: Axis::linear(0.0, 1.0),
        series,
        markers: Vec::new(),
        legend: Corner::LowerRight,
    }
}

/// Mean over tasks against the step count.
fn steps_chart(s: &Suite) -> Chart {
    let steps: Vec<usize> = s.tasks[0].horizons.iter().map(|h| h.steps).collect();
    let n = s.tasks.len() as f64;
    let mean =
        |i: usize, f: fn(&Horizon) -> f64| s.tasks.iter().filter_map(|t| t.horizons.get(i)).map(f).sum::<f64>() / n;
    let curve = |f: fn(&Horizon) -> f64| steps.iter().enumerate().map(|(i, &st)| (st as f64, mean(i, f))).collect();
    let flat = |f: fn(&Task) -> f64| {
        let v = s.tasks.iter().map(f).sum::<f64>() / n;
        steps.iter().map(|&st| (st as f64, v)).collect()
    };
    let mut series = vec![
        Series { dashed: true, width: 3, ..Series::new("backprop (converged)", RED, flat(|t| t.backprop.val)) },
        Series { dashed: true, ..Series::new("logistic regression", GREY, flat(|t| t.logistic.val)) },
        Series { width: 2, ..dotted(Series::new("Adam, equal steps", ORANGE, curve(|h| h.adam.val))) },
    ];
    if s.xavier_lr().is_some() {
        let adam_xavier = curve(|h| h.adam_xavier.map_or(f64::NAN, |a| a.val));
        series.push(Series { width: 2, ..dotted(Series::new("Adam from Xavier, equal steps", BROWN, adam_xavier)) });
    }
    series.extend([
        dotted(Series::new("grown, labels permuted", LIGHT_BLUE, curve(|h| h.permuted_val.mean))),
        Series { width: 3, ..dotted(Series::new("grown", BLUE, curve(|h| h.grown_val.mean))) },
    ]);
    let values = || series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|v| v.is_finite());
    let lo = values().fold(1.0, f64::min);
    let hi = values().fold(0.0, f64::max);
    let (first, last) = (steps[0] as f64, steps[steps.len() - 1] as f64);
    Chart {
        title: "Mean over tasks: growth past K".into(),
        x_title: "rule steps (Adam: steps)".into(),
        y_title: "validation accuracy, mean over tasks".into(),
        x: if last > first { Axis::Log(first, last) } else { Axis::linear(first - 1.0, last + 1.0) },
        y: Axis::linear(((lo - 0.02) * 20.0).floor() / 20.0, (((hi + 0.02) * 20.0).ceil() / 20.0).min(1.0)),
        series,
        markers: vec![(first, "K".into())],
        legend: Corner::LowerRight,
    }
}

/// Draws the suite; `name` goes into the title.
pub fn draw(s: &Suite, name: &str) -> Result<Picture> {
    let mut order: Vec<usize> = (0..s.tasks.len()).collect();
    order.sort_by(|&a, &b| s.tasks[a].backprop.val.total_cmp(&s.tasks[b].backprop.val));
    let key: Vec<String> = order.iter().enumerate().map(|(i, &t)| format!("{} {}", i + 1, s.tasks[t].name)).collect();
    let per_line = 8;
    let key_lines: Vec<String> = key.chunks(per_line).map(|c| c.join("   ")).collect();
    let (pw, chart_h) = (900, 600);
    let h = chart_h + 56 + 20 * key_lines.len() as i32;
    let w = 2 * pw;
    Picture::draw(w as u32, h as u32, |area| {
        let title = format!("{name}: learning suite ({} grown networks per task)", s.networks);
        text::draw(area, &title, (w / 2, 20), Style::new(19.0).bold().at(H::Center, V::Center))?;
        chart::draw(area, (6, 46, pw - 6, 46 + chart_h), &tasks_chart(s, &order))?;
        chart::draw(area, (pw + 6, 46, w - 6, 46 + chart_h), &steps_chart(s))?;
        for (i, line) in key_lines.iter().enumerate() {
            let y = 46 + chart_h + 10 + 20 * i as i32;
            text::draw(area, line, (96, y), Style::new(13.0).at(H::Left, V::Top))?;
        }
        Ok(())
    })
}
