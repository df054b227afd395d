//! What a sweep finds: the evaluated columns, one [`SeedResult`] per seed, the spread over the
//! seeds ([`SweepReport`], printed by `--json`) and the table drawn from it.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use meta_nca_rule::eval::{EvalReport, Stats};
use meta_nca_rule::experiment::{Experiment, TaskSource};
use serde::Serialize;

/// One evaluated column of the table: a dataset, as given or with labels permuted.
pub struct Column {
    /// The column's title (the dataset's name, `… perm` when permuted).
    pub title: String,
    /// What each seed's best rule grows networks on.
    pub task: TaskSource,
}

/// The columns of the table; fails before any training when a rule of this config could not
/// be grown on an evaluation dataset (its hidden-state code would not fit).
pub fn columns(exp: &Experiment, extra: &[String]) -> Result<Vec<Column>> {
    let code = exp.config.hidden_code(exp.extent());
    let mut tasks = vec![exp.primary().clone()];
    for name in extra {
        let other = Experiment::with_dataset(&exp.config, name).with_context(|| format!("loading dataset {name}"))?;
        let (layers, cells) = other.extent();
        code.check_fits(layers, cells).with_context(|| {
            format!(
                "a rule trained with this config cannot grow networks on {name} ({cells} cells in one layer); \
                 set rule.index-code=false (layer-only init) or a larger rule.index-bits"
            )
        })?;
        tasks.push(other.primary().clone());
    }
    let mut out = Vec::new();
    for task in tasks {
        let c = task.split.num_classes;
        let perm: Vec<usize> = (0..c).map(|k| (k + 1) % c).collect();
        let permuted = task.permuted(&exp.config, &perm)?;
        out.push(Column { title: task.name.clone(), task });
        out.push(Column { title: format!("{} perm", permuted.name.replace(" (labels permuted)", "")), task: permuted });
    }
    Ok(out)
}

/// One seed of a sweep.
#[derive(Debug, Serialize)]
pub struct SeedResult {
    /// The seed (its run is `seed-N/` in the sweep folder).
    pub seed: u64,
    /// Seconds of training: wall-clock when the sweep trained the seed itself; with
    /// `--collect`, the sum of the run's `metrics.csv` seconds (the meta-epochs themselves,
    /// without probes and checkpoint writes, over every invocation that trained it).
    pub seconds: f64,
    /// The evaluation of its best rule on each column, in [`SweepReport::columns`] order (the
    /// table shows `val_acc`'s mean, min and max).
    pub reports: Vec<EvalReport>,
}

/// Mean, min, max and standard deviation of a sample.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    /// Mean, min and max.
    #[serde(flatten)]
    pub stats: Stats,
    /// Standard deviation of the population (dividing by the sample size).
    pub std: f64,
}

impl Spread {
    /// The spread of `v` (not empty).
    fn of(v: &[f64]) -> Self {
        let stats = Stats::of(v);
        let std = (v.iter().map(|x| (x - stats.mean).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt();
        Self { stats, std }
    }

    /// Mean, min, max and standard deviation: the table's rows.
    fn row(&self) -> [f64; 4] {
        [self.stats.mean, self.stats.min, self.stats.max, self.std]
    }
}

/// The spread over the seeds of a sweep: the rows below the seeds in the table.
#[derive(Debug, Serialize)]
pub struct SweepSummary {
    /// Seconds of training.
    pub seconds: Spread,
    /// Per column: the spread of the seeds' mean validation accuracy.
    pub val_acc: Vec<Spread>,
}

/// What `meta-nca sweep` finds (`--json` prints it; the table, also in `sweep.txt`, shows
/// it; the table's backprop row is the first seed's `reports[k].baseline.val_acc`).
#[derive(Debug, Serialize)]
pub struct SweepReport {
    /// The sweep folder.
    pub folder: PathBuf,
    /// The table's columns, the datasets evaluated: the config's, the same with its labels
    /// permuted, then each `--eval-dataset` alike.
    pub columns: Vec<String>,
    /// Every seed that finished, by seed.
    pub seeds: Vec<SeedResult>,
    /// Over the seeds that finished (null when none did).
    pub summary: Option<SweepSummary>,
    /// The seeds that failed (with `--collect`: whose run is missing or unfinished), each as
    /// `seed N: why` (the command fails after printing).
    pub failures: Vec<String>,
}

impl SweepReport {
    /// The report of the seeds in `seeds` (any order) and the `failures`.
    pub fn new(folder: PathBuf, cols: &[Column], mut seeds: Vec<SeedResult>, failures: Vec<String>) -> Self {
        seeds.sort_by_key(|r| r.seed);
        let summary = (!seeds.is_empty()).then(|| SweepSummary {
            seconds: Spread::of(&seeds.iter().map(|r| r.seconds).collect::<Vec<_>>()),
            val_acc: (0..cols.len())
                .map(|k| Spread::of(&seeds.iter().map(|r| r.reports[k].val_acc.mean).collect::<Vec<_>>()))
                .collect(),
        });
        let columns = cols.iter().map(|c| c.title.clone()).collect();
        Self { folder, columns, seeds, summary, failures }
    }
}

/// The table of a sweep.
pub fn render(report: &SweepReport) -> String {
    let mut s = String::new();
    let _ = write!(s, "\n{:<8}{:>10}", "seed", "train s");
    for title in &report.columns {
        let _ = write!(s, "{title:>22}");
    }
    let _ = writeln!(s);
    let _ = write!(s, "{:<8}{:>10}", "", "");
    for _ in &report.columns {
        let _ = write!(s, "{:>22}", "val mean (min-max)");
    }
    let _ = writeln!(s);
    for r in &report.seeds {
        let _ = write!(s, "{:<8}{:>10.1}", r.seed, r.seconds);
        for rep in &r.reports {
            let _ =
                write!(s, "{:>22}", format!("{:.4} ({:.2}-{:.2})", rep.val_acc.mean, rep.val_acc.min, rep.val_acc.max));
        }
        let _ = writeln!(s);
    }
    let (Some(summary), Some(first)) = (&report.summary, report.seeds.first()) else {
        return s;
    };
    let _ = writeln!(s);
    for (k, label) in ["mean", "min", "max", "std"].into_iter().enumerate() {
        let _ = write!(s, "{label:<8}{:>10.1}", summary.seconds.row()[k]);
        for spread in &summary.val_acc {
            let _ = write!(s, "{:>22.4}", spread.row()[k]);
        }
        let _ = writeln!(s);
    }
    let _ = write!(s, "{:<8}{:>10}", "backprop", "");
    for rep in &first.reports {
        let _ = write!(s, "{:>22.4}", rep.baseline.val_acc);
    }
    let _ = writeln!(s);
    s
}
