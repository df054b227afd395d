//! Robustness curves from the CSVs `meta-nca robustness` writes into a run folder
//! (`robustness-prune-<mode>.csv`, `robustness-neurons.csv`, `robustness-churn.csv`): the
//! grown networks' mean accuracy against the rule step, validation solid and training dashed,
//! one colour per fraction / count / rate, the damage step as a marker. A prune with its
//! `<stem>-baseline.csv` gets a second panel: validation accuracy against the fraction
//! removed, the rule's recovery next to the backprop network pruned alike.

use std::path::Path;

use super::table::Table;
use anyhow::{Context, Result, bail};
use plotters::style::RGBColor;

use super::canvas::Picture;
use super::chart::{self, Axis, Chart, Corner, Series};
use super::text::{self, H, Style, V};
use crate::robustness_config::Damage;

/// The damage a curves file records is told by the CSV's first column: `fraction` (prune,
/// connections removed once), `added` (neurons, hidden neurons added once) or `rate` (churn,
/// connections replaced at every step).
impl Damage {
    fn of_column(name: &str) -> Result<Self> {
        Ok(match name {
            "fraction" => Self::Prune,
            "added" => Self::Neurons,
            "rate" => Self::Churn,
            other => bail!(
                "the first column is '{other}', not 'fraction' (prune), 'added' (neurons) or 'rate' (churn): \
                 not a curves file of `meta-nca robustness`"
            ),
        })
    }

    /// The legend entry of one curve.
    fn label(self, key: f64) -> String {
        match self {
            Self::Prune => format!("{} removed", percent(key)),
            Self::Neurons if key == 1.0 => "+1 neuron".into(),
            Self::Neurons => format!("+{key} neurons"),
            Self::Churn => format!("{} per step", percent(key)),
        }
    }
}

/// `0.3` → `30%`, `0.025` → `2.5%`.
fn percent(q: f64) -> String {
    let p = 100.0 * q;
    if (p - p.round()).abs() < 1e-9 { format!("{p:.0}%") } else { format!("{p:.1}%") }
}

/// One curve: a fraction, count or rate, and the mean accuracies at each step.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// The fraction removed, the neurons added or the churn rate.
    pub key: f64,
    /// Step of each point (-1: before the damage; 0: right after it, or before the churn).
    pub steps: Vec<f64>,
    /// Mean training accuracy at each step.
    pub train: Vec<f64>,
    /// Mean validation accuracy at each step.
    pub val: Vec<f64>,
}

/// The curves of one robustness CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct Curves {
    /// The damage the curves follow.
    pub kind: Damage,
    /// One per fraction / count / rate, in file order.
    pub curves: Vec<Curve>,
}

impl Curves {
    /// Reads a curves CSV (`<key>,step,grown_train_acc,grown_val_acc`).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses the text of a curves CSV; rows of one key are consecutive.
    pub fn parse(text: &str) -> Result<Self> {
        let table = Table::parse(text)?;
        let Table { names, rows } = &table;
        let kind = Damage::of_column(&names[0])?;
        let (step, train, val) =
            (table.column("step")?, table.column("grown_train_acc")?, table.column("grown_val_acc")?);
        let mut curves: Vec<Curve> = Vec::new();
        for (line, row) in rows {
            let key = row[0];
            match curves.last_mut() {
                Some(c) if c.key == key => {}
                _ => {
                    if curves.iter().any(|c| c.key == key) {
                        bail!("line {line}: the rows of {} {key} are not consecutive", names[0]);
                    }
                    curves.push(Curve { key, steps: Vec::new(), train: Vec::new(), val: Vec::new() });
                }
            }
            if let Some(c) = curves.last_mut() {
                c.steps.push(row[step]);
                c.train.push(row[train]);
                c.val.push(row[val]);
            }
        }
        Ok(Self { kind, curves })
    }
}

/// The backprop baseline of a prune, one row per fraction.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// Fractions removed.
    pub fraction: Vec<f64>,
    /// Adam epochs of the fine-tune after pruning.
    pub fine_tune_epochs: Vec<f64>,
    /// Validation accuracy before pruning.
    pub before: Vec<f64>,
    /// Right after pruning, without retraining.
    pub pruned: Vec<f64>,
    /// After the fine-tune.
    pub fine_tuned: Vec<f64>,
}

impl Baseline {
    /// Reads a baseline CSV
    /// (`fraction,fine_tune_epochs,before_val_acc,pruned_val_acc,fine_tuned_val_acc`).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses the text of a baseline CSV.
    pub fn parse(text: &str) -> Result<Self> {
        let table = Table::parse(text)?;
        let col = |name: &str| table.values(name);
        Ok(Self {
            fraction: col("fraction")?,
            fine_tune_epochs: col("fine_tune_epochs")?,
            before: col("before_val_acc")?,
            pruned: col("pruned_val_acc")?,
            fine_tuned: col("fine_tuned_val_acc")?,
        })
    }
}

/// Path of the baseline CSV that belongs to the curves CSV `curves`.
pub fn baseline_path(curves: &Path) -> Option<std::path::PathBuf> {
    let stem = curves.file_stem()?.to_string_lossy().into_owned();
    Some(curves.with_file_name(format!("{stem}-baseline.csv")))
}

/// Ten distinguishable colours (Tableau 10), one per curve, repeating after ten.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];
const GREY: RGBColor = RGBColor(0x60, 0x60, 0x60);

/// An accuracy axis from a round value below the lowest accuracy up to 1.
fn accuracy_axis<'a>(values: impl Iterator<Item = &'a f64>) -> Axis {
    let lo = values.copied().filter(|v| v.is_finite()).fold(1.0, f64::min);
    Axis::linear((((lo - 0.02) * 10.0).floor() / 10.0).clamp(0.0, 0.9), 1.0)
}

/// The accuracy-over-steps panel; `y` is shared with the baseline panel.
fn steps_chart(c: &Curves, y: Axis) -> Chart {
    let (lo, hi) = c
        .curves
        .iter()
        .flat_map(|c| &c.steps)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
    let mut series = Vec::new();
    for (i, curve) in c.curves.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points = |acc: &[f64]| curve.steps.iter().copied().zip(acc.iter().copied()).collect();
        series.push(Series::new(&c.kind.label(curve.key), color, points(&curve.val)));
        series.push(Series { name: None, dashed: true, width: 1, ..Series::new("", color, points(&curve.train)) });
    }
    // Legend entries for the two line styles.
    series.push(Series::new("validation", GREY, Vec::new()));
    series.push(Series { dashed: true, width: 1, ..Series::new("train", GREY, Vec::new()) });
    let (title, x_title, marker) = match c.kind {
        Damage::Prune => {
            ("Connections removed, then rule steps", "rule steps after the damage (-1: before it)", "damage")
        }
        Damage::Neurons => {
            ("Hidden neurons added, then rule steps", "rule steps after adding neurons (-1: before)", "neurons added")
        }
        Damage::Churn => {
            ("Connections replaced at every rule step", "churned rule steps (0: before the churn)", "churn from here")
        }
    };
    Chart {
        title: title.into(),
        x_title: x_title.into(),
        y_title: "accuracy, mean over the grown networks".into(),
        // From -1 at most, so that the marker at 0 is inside the plot (churn starts at 0).
        x: Axis::linear(lo.min(-1.0), hi),
        y,
        series,
        markers: vec![(0.0, marker.into())],
        legend: Corner::LowerRight,
    }
}

/// The by-fraction panel of a prune: the grown networks right after the damage and after the
/// last rule step, next to the backprop network before, pruned alike, and fine-tuned.
fn baseline_chart(c: &Curves, b: &Baseline, y: Axis) -> Chart {
    let pct = |q: &f64| 100.0 * q;
    let grown = |at: fn(&Curve) -> f64| c.curves.iter().map(|c| (pct(&c.key), at(c))).collect::<Vec<_>>();
    let backprop = |v: &[f64]| b.fraction.iter().map(pct).zip(v.iter().copied()).collect::<Vec<_>>();
    let dotted = |s: Series| Series { dots: true, ..s };
    let last_step = c.curves.iter().filter_map(|c| c.steps.last()).fold(0.0, |a: f64, s| a.max(*s));
    let epochs = b.fine_tune_epochs.first().copied().unwrap_or(f64::NAN);
    let (blue, red) = (PALETTE[0], PALETTE[3]);
    let (light_blue, light_red) = (RGBColor(0x9e, 0xc9, 0xe2), RGBColor(0xf4, 0xa5, 0x82));
    let series = vec![
        dotted(Series::new("grown, before", GREY, grown(|c| c.val.first().copied().unwrap_or(f64::NAN)))),
        dotted(Series::new("grown, right after", light_blue, grown(|c| c.val.get(1).copied().unwrap_or(f64::NAN)))),
        dotted(Series::new(
            &format!("grown, after {last_step} rule steps"),
            blue,
            grown(|c| c.val.last().copied().unwrap_or(f64::NAN)),
        )),
        dotted(Series { dashed: true, ..Series::new("backprop, before", GREY, backprop(&b.before)) }),
        dotted(Series { dashed: true, ..Series::new("backprop, pruned", light_red, backprop(&b.pruned)) }),
        dotted(Series {
            dashed: true,
            ..Series::new(&format!("backprop, fine-tuned {epochs} epochs"), red, backprop(&b.fine_tuned))
        }),
    ];
    let xs = c.curves.iter().map(|c| pct(&c.key)).chain(b.fraction.iter().map(pct));
    let hi = xs.fold(0.0, f64::max);
    Chart {
        title: "Validation accuracy by fraction removed".into(),
        x_title: "connections removed (%)".into(),
        y_title: "validation accuracy".into(),
        x: Axis::linear(0.0, if hi > 0.0 { hi * 1.05 } else { 1.0 }),
        y,
        series,
        markers: Vec::new(),
        legend: Corner::LowerLeft,
    }
}

/// Draws `curves` (and, for a prune, `baseline` as a second panel); `name` goes into the title.
pub fn draw(curves: &Curves, baseline: Option<&Baseline>, name: &str) -> Result<Picture> {
    let mut values: Vec<f64> = curves.curves.iter().flat_map(|c| c.val.iter().chain(&c.train)).copied().collect();
    if let Some(b) = baseline {
        values.extend(b.before.iter().chain(&b.pruned).chain(&b.fine_tuned));
    }
    let y = accuracy_axis(values.iter());
    let mut panels = vec![steps_chart(curves, y)];
    if let Some(b) = baseline.filter(|_| curves.kind == Damage::Prune) {
        panels.push(baseline_chart(curves, b, y));
    }
    let (pw, h) = (820, 600);
    let w = pw * panels.len() as i32;
    Picture::draw(w as u32, h as u32, |area| {
        text::draw(area, name, (w / 2, 20), Style::new(19.0).bold().at(H::Center, V::Center))?;
        for (i, panel) in panels.iter().enumerate() {
            let x0 = i as i32 * pw + 6;
            chart::draw(area, (x0, 46, x0 + pw - 12, h - 6), panel)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_curves_by_key_and_rejects_other_files() {
        let c = Curves::parse("rate,step,grown_train_acc,grown_val_acc\n0.1,0,0.9,0.8\n0.1,1,0.7,0.6\n0.2,0,0.9,0.8\n")
            .expect("parses");
        assert_eq!(c.kind, Damage::Churn);
        assert_eq!(c.curves.len(), 2);
        assert_eq!(c.curves[0].val, vec![0.8, 0.6]);
        let err = Curves::parse("epoch,step,grown_train_acc,grown_val_acc\n1,0,0,0\n").expect_err("not robustness");
        assert!(format!("{err:#}").contains("'epoch'"), "{err:#}");
        let err =
            Curves::parse("added,step,grown_train_acc,grown_val_acc\n1,0,0,0\n2,0,0,0\n1,1,0,0\n").expect_err("split");
        assert!(format!("{err:#}").contains("line 4"), "{err:#}");
    }

    #[test]
    fn labels() {
        assert_eq!(Damage::Prune.label(0.3), "30% removed");
        assert_eq!(Damage::Churn.label(0.025), "2.5% per step");
        assert_eq!(Damage::Neurons.label(1.0), "+1 neuron");
        assert_eq!(Damage::Neurons.label(2.0), "+2 neurons");
    }
}
