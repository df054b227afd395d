//! A continual experiment of `meta-nca continual` (`report.json`): one panel per task, the
//! grown networks' mean accuracy against the rule step on every class seen so far, on the old
//! and on the new classes, and on the first phase's data, with each phase boundary marked
//! (a class arriving, or an input drift); backprop fine-tuned phase by phase as dots at the
//! phase ends, and backprop on all the data at once as a dashed line.

use std::path::Path;

use anyhow::{Context, Result, bail};
use meta_nca_rule::config::schedule::ScheduleKind;
use meta_nca_rule::continual::ContinualReport;
use meta_nca_rule::continual::report::CurvePoint;
use plotters::style::RGBColor;

use super::canvas::Picture;
use super::chart::{self, Axis, Chart, Corner, Series};
use super::text::{self, H, Style, V};

/// Reads `report.json`.
pub fn load(path: &Path) -> Result<Vec<ContinualReport>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let reports: Vec<ContinualReport> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a report.json written by `meta-nca continual`", path.display()))?;
    if reports.is_empty() || reports.iter().any(|r| r.curve.is_empty()) {
        bail!("{}: no task with a curve: nothing to plot", path.display());
    }
    Ok(reports)
}

const BLUE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const ORANGE: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const GREEN: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const RED: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const GREY: RGBColor = RGBColor(0x60, 0x60, 0x60);

/// The panel of one task.
fn panel(r: &ContinualReport) -> Chart {
    // Each phase's stretch of a line, with a break between phases (the old and new classes
    // of one phase are not those of the next).
    let line = |pick: &dyn Fn(&CurvePoint) -> Option<f64>| {
        let mut points = Vec::with_capacity(r.curve.len() + r.phases.len());
        for (k, c) in r.curve.iter().enumerate() {
            if k > 0 && r.curve[k - 1].phase != c.phase {
                points.push((c.step as f64, f64::NAN));
            }
            points.push((c.step as f64, pick(c).unwrap_or(f64::NAN)));
        }
        points
    };
    let ends: Vec<f64> = r.phases.iter().map(|p| (p.start + p.steps) as f64).collect();
    let tuned = ends.iter().zip(&r.phase_ends).map(|(&s, e)| (s, e.fine_tune.seen)).collect();
    let last = ends.last().copied().unwrap_or(1.0);
    let first_name = match r.kind {
        ScheduleKind::ClassIncremental => "first phase's classes",
        ScheduleKind::DomainIncremental => "original inputs",
    };
    let mut series = vec![
        Series::new("every class so far", BLUE, line(&|c| Some(c.seen))),
        Series { width: 1, ..Series::new("old classes", ORANGE, line(&|c| c.old)) },
        Series { width: 1, ..Series::new("new classes", GREEN, line(&|c| c.new)) },
        Series { dashed: true, width: 1, ..Series::new(first_name, GREY, line(&|c| Some(c.first))) },
        Series { dots: true, width: 1, ..Series::new("backprop fine-tuned", RED, tuned) },
        Series {
            dashed: true,
            width: 1,
            ..Series::new("backprop, all data", RED, vec![(0.0, r.joint.seen), (last, r.joint.seen)])
        },
    ];
    series.retain(|s| s.points.iter().any(|p| p.1.is_finite()));
    let markers = r
        .phases
        .iter()
        .skip(1)
        .map(|p| {
            let label = if p.arriving.is_empty() {
                format!("drift {}", p.domain)
            } else {
                format!("+{}", p.arriving.iter().map(ToString::to_string).collect::<Vec<_>>().join(","))
            };
            (p.start as f64, label)
        })
        .collect();
    Chart {
        title: format!(
            "{} (forgetting: grown {:.2}, backprop {:.2})",
            r.task,
            forgetting(r, true),
            forgetting(r, false)
        ),
        x_title: "rule steps".into(),
        y_title: "validation accuracy (grown: mean)".into(),
        x: Axis::linear(0.0, last.max(1.0)),
        y: Axis::linear(0.0, 1.0),
        series,
        markers,
        legend: Corner::LowerLeft,
    }
}

fn forgetting(r: &ContinualReport, grown: bool) -> f64 {
    let s = if grown { r.grown } else { r.fine_tune };
    s.forgetting.unwrap_or(f64::NAN)
}

/// Draws every task of `reports` in a grid of panels; `name` heads the picture.
pub fn draw(reports: &[ContinualReport], name: &str) -> Result<Picture> {
    let cols = reports.len().clamp(1, 3) as i32;
    let rows = (reports.len() as i32 + cols - 1) / cols;
    let (pw, ph) = (640, 470);
    let (w, h) = (pw * cols, 46 + ph * rows);
    Picture::draw(w as u32, h as u32, |area| {
        text::draw(area, name, (w / 2, 20), Style::new(19.0).bold().at(H::Center, V::Center))?;
        for (i, r) in reports.iter().enumerate() {
            let (c, row) = (i as i32 % cols, i as i32 / cols);
            let (x0, y0) = (c * pw + 6, 46 + row * ph);
            chart::draw(area, (x0, y0, x0 + pw - 12, y0 + ph - 8), &panel(r))?;
        }
        Ok(())
    })
}
