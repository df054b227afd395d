//! Training curves from a run's `metrics.csv`: meta-loss, train/validation accuracy of the
//! grown networks, meta-gradient norm and time per meta-epoch, as a 2 × 2 panel PNG.
//!
//! Every meta-epoch is drawn as a thin pale line, and a centred moving mean over it as a
//! bold one (one meta-epoch grows only a few networks, so single rows are noisy).

use std::path::Path;

use super::table::Table;
use anyhow::{Context, Result};
use plotters::style::RGBColor;

use super::canvas::Picture;
use super::chart::{self, Axis, Chart, Corner, Series};
use super::text::{self, H, Style, V};

/// The columns of `metrics.csv` that are drawn, one `Vec` per column, one entry per row.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Meta-epoch of the row.
    pub epoch: Vec<f64>,
    /// Meta-loss (cross-entropy, nats).
    pub loss: Vec<f64>,
    /// Training accuracy of the grown networks.
    pub train_acc: Vec<f64>,
    /// Validation accuracy of the grown networks.
    pub val_acc: Vec<f64>,
    /// Global norm of the meta-gradient before clipping.
    pub grad_norm: Vec<f64>,
    /// Wall time of the meta-epoch in seconds.
    pub seconds: Vec<f64>,
}

impl Metrics {
    /// Reads `metrics.csv` (columns found by their header names, extra columns ignored).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses the text of `metrics.csv`.
    pub fn parse(text: &str) -> Result<Self> {
        let table = Table::parse(text)?;
        let col = |name: &str| table.values(name);
        Ok(Self {
            epoch: col("epoch")?,
            loss: col("loss")?,
            train_acc: col("train_acc")?,
            val_acc: col("val_acc")?,
            grad_norm: col("grad_norm")?,
            seconds: col("seconds")?,
        })
    }
}

/// Centred moving mean over `window` rows (shorter at the ends); non-finite values skipped.
pub fn moving_mean(v: &[f64], window: usize) -> Vec<f64> {
    let half = window / 2;
    (0..v.len())
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(v.len());
            let ok: Vec<f64> = v[lo..hi].iter().copied().filter(|x| x.is_finite()).collect();
            if ok.is_empty() { f64::NAN } else { ok.iter().sum::<f64>() / ok.len() as f64 }
        })
        .collect()
}

const BLUE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const ORANGE: RGBColor = RGBColor(0xe6, 0x55, 0x0d);

/// The raw values of a column (pale) and their moving mean (bold, named `name`).
fn raw_and_mean(name: &str, color: RGBColor, x: &[f64], y: &[f64], window: usize) -> [Series; 2] {
    let raw = Series::new(name, color, x.iter().copied().zip(y.iter().copied()).collect()).pale();
    let mean = Series::new(name, color, x.iter().copied().zip(moving_mean(y, window)).collect());
    [raw, mean]
}

/// A linear axis from 0 to a little above the largest finite value.
fn from_zero(values: &[f64]) -> Axis {
    let hi = values.iter().copied().filter(|v| v.is_finite()).fold(0.0, f64::max);
    Axis::linear(0.0, if hi > 0.0 { hi * 1.05 } else { 1.0 })
}

/// A log axis over the positive values (linear from 0 when there are none).
fn log_axis(values: &[f64]) -> Axis {
    let pos = values.iter().copied().filter(|v| v.is_finite() && *v > 0.0);
    let lo = pos.clone().fold(f64::INFINITY, f64::min);
    let hi = pos.fold(0.0, f64::max);
    if hi <= 0.0 {
        return from_zero(values);
    }
    if hi > lo { Axis::Log(lo / 1.2, hi * 1.2) } else { Axis::Log(lo / 2.0, hi * 2.0) }
}

/// The four panels of the training curves.
pub fn charts(m: &Metrics) -> Vec<Chart> {
    let window = (m.epoch.len() / 40).max(1);
    let x = Axis::linear(m.epoch[0], m.epoch[m.epoch.len() - 1]);
    let ms: Vec<f64> = m.seconds.iter().map(|s| s * 1e3).collect();
    let panel = |title: &str, y_title: &str, y: Axis, series: Vec<Series>, legend| Chart {
        title: title.into(),
        x_title: "meta-epoch".into(),
        y_title: y_title.into(),
        x,
        y,
        series,
        markers: Vec::new(),
        legend,
    };
    let acc: Vec<Series> = raw_and_mean("train", BLUE, &m.epoch, &m.train_acc, window)
        .into_iter()
        .chain(raw_and_mean("validation", ORANGE, &m.epoch, &m.val_acc, window))
        .collect();
    vec![
        panel(
            "Meta-loss (train cross-entropy at the loss step)",
            "cross-entropy (nats)",
            from_zero(&m.loss),
            raw_and_mean("meta-loss", BLUE, &m.epoch, &m.loss, window).into(),
            Corner::UpperRight,
        ),
        panel(
            "Accuracy of the networks grown in each meta-epoch",
            "accuracy (fraction correct)",
            Axis::Linear(0.0, 1.0),
            acc,
            Corner::LowerRight,
        ),
        panel(
            "Meta-gradient norm (global L2, before clipping)",
            "‖∇ meta-loss‖₂ (log scale)",
            log_axis(&m.grad_norm),
            raw_and_mean("gradient norm", BLUE, &m.epoch, &m.grad_norm, window).into(),
            Corner::UpperRight,
        ),
        panel(
            "Wall time per meta-epoch",
            "time (ms)",
            from_zero(&ms),
            raw_and_mean("time", BLUE, &m.epoch, &ms, window).into(),
            Corner::UpperRight,
        ),
    ]
}

/// Draws the training curves of `m`; `name` (the run folder's name) goes into the title.
pub fn draw(m: &Metrics, name: &str) -> Result<Picture> {
    let n = m.epoch.len();
    let window = (n / 40).max(1);
    let (w, h) = (1200, 860);
    Picture::draw(w as u32, h as u32, |area| {
        let smoothing = if window > 1 {
            format!("pale: every meta-epoch, bold: moving mean over {window} meta-epochs")
        } else {
            "one point per meta-epoch".to_string()
        };
        let title = format!("Training curves of {name}: {n} meta-epochs ({smoothing})");
        text::draw(area, &title, (w / 2, 20), Style::new(19.0).bold().at(H::Center, V::Center))?;
        let (top, pw, ph) = (40, w / 2, (h - 40) / 2);
        for (i, c) in charts(m).iter().enumerate() {
            let (col, row) = (i as i32 % 2, i as i32 / 2);
            let (x0, y0) = (col * pw + 6, top + row * ph + 6);
            chart::draw(area, (x0, y0, x0 + pw - 12, y0 + ph - 12), c)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_by_header_name_and_reports_bad_lines() {
        let m =
            Metrics::parse("epoch,loss_step,loss,train_acc,val_acc,grad_norm,seconds\n1,10,1.0,0.5,0.4,0.1,0.002\n")
                .expect("parses");
        assert_eq!(m.loss, vec![1.0]);
        assert_eq!(m.val_acc, vec![0.4]);
        let err =
            Metrics::parse("epoch,loss,train_acc,val_acc,grad_norm,seconds\n1,x,0,0,0,0\n").expect_err("bad number");
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        assert!(Metrics::parse("epoch,loss\n").is_err());
    }

    #[test]
    fn moving_mean_is_centred() {
        assert_eq!(moving_mean(&[1.0, 2.0, 3.0], 3), vec![1.5, 2.0, 2.5]);
        assert_eq!(moving_mean(&[1.0, 2.0], 1), vec![1.0, 2.0]);
    }
}
