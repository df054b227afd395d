//! `meta-nca sweep`: train one config under many seeds and tabulate how reliably it learns
//! (or print it as JSON: [`SweepReport`]).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use meta_nca_rule::checkpoint::write_atomic;
use meta_nca_rule::eval::{EvalReport, EvalSpec, Stats, evaluate};
use meta_nca_rule::experiment::{Experiment, Task};
use serde::Serialize;

use crate::run_dir::{Start, Which, check_new_folder, load_run};
use crate::train::{ConfigFlags, train_run};

/// Arguments of `meta-nca sweep`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The experiment config and its overrides.
    #[command(flatten)]
    config: ConfigFlags,
    /// Number of seeds.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// The first seed (seeds are first, first+1, ...).
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Fresh networks grown to evaluate each seed's best rule.
    #[arg(long, default_value_t = 100)]
    networks: usize,
    /// Seeds trained at the same time (one core each).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Sweep folder; each seed's run goes to `seed-N/` inside (default: runs/<config>-sweep).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also evaluate every rule on this dataset (e.g. one it never saw), as given and with
    /// its labels permuted (repeatable).
    #[arg(long = "eval-dataset", value_name = "DATASET")]
    eval_datasets: Vec<String>,
    /// Replace the runs of an earlier sweep in the seed folders (they are deleted first).
    #[arg(long)]
    force: bool,
    /// Skip the estimate of the memory the seeds trained at once need.
    #[arg(long)]
    no_memory_check: bool,
    /// Print one JSON object instead of the table (sweep.txt is written all the same).
    #[arg(long)]
    json: bool,
}

/// One evaluated column of the table: a dataset, as given or with labels permuted.
struct Column {
    title: String,
    task: Task,
}

/// The columns of the table; fails before any training when a rule of this config could not
/// be grown on an evaluation dataset (its hidden-state code would not fit).
fn columns(exp: &Experiment, extra: &[String]) -> Result<Vec<Column>> {
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
    /// Seconds of training.
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
    /// The seeds that failed, with their errors (the command fails after printing).
    pub failures: Vec<String>,
}

impl SweepReport {
    fn new(folder: PathBuf, cols: &[Column], seeds: Vec<SeedResult>, failures: Vec<String>) -> Self {
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

/// Runs `meta-nca sweep`.
pub fn run(args: Args) -> Result<()> {
    if args.seeds == 0 || args.networks == 0 || args.jobs == 0 {
        bail!("--seeds, --networks and --jobs must be at least 1");
    }
    let (config, name) = args.config.load()?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("runs/{name}-sweep")));
    let exp = Experiment::new(config.clone()).context("preparing the experiment")?;
    let cols = columns(&exp, &args.eval_datasets)?;
    for seed in args.first_seed..args.first_seed + args.seeds {
        check_new_folder(&seed_dir(&out, seed), args.force)?;
    }
    let start = if args.force { Start::Replace } else { Start::New };
    if !args.no_memory_check {
        crate::memory::check_training(&config, args.jobs.min(args.seeds as usize))?;
    }
    if !args.json {
        println!(
            "sweep of {} seeds from {} ({} jobs), {} networks per evaluation, folder {}",
            args.seeds,
            args.first_seed,
            args.jobs,
            args.networks,
            out.display()
        );
    }
    let next = AtomicU64::new(args.first_seed);
    let results = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());
    let end = args.first_seed + args.seeds;
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.min(args.seeds as usize) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= end {
                        break;
                    }
                    match run_seed(&config, &out, seed, &cols, args.networks, start) {
                        Ok(r) => {
                            eprintln!(
                                "seed {seed} done in {:.1} s: val acc {:.4}",
                                r.seconds, r.reports[0].val_acc.mean
                            );
                            results.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                        }
                        Err(e) => {
                            failures.lock().unwrap_or_else(|p| p.into_inner()).push(format!("seed {seed}: {e:#}"))
                        }
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|r| r.seed);
    let report = SweepReport::new(out, &cols, results, failures);
    let table = render(&report);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{table}");
    }
    write_atomic(&report.folder.join("sweep.txt"), table.as_bytes())?;
    if !report.failures.is_empty() {
        bail!("{} seed(s) failed:\n  {}", report.failures.len(), report.failures.join("\n  "));
    }
    Ok(())
}

fn run_seed(
    config: &meta_nca_rule::config::Config,
    out: &std::path::Path,
    seed: u64,
    cols: &[Column],
    networks: usize,
    start: Start,
) -> Result<SeedResult> {
    let mut config = config.clone();
    config.seed = seed;
    let dir = seed_dir(out, seed);
    let summary = train_run(&config, &dir, start, &ProgressBar::hidden(), None)?;
    let (ckpt, _) = load_run(&dir, Which::Best)?;
    let spec = EvalSpec { networks, steps: config.grow.steps, fire_fraction: config.grow.fire_fraction, seed };
    let reports =
        cols.iter().map(|c| evaluate(&ckpt.rule, &ckpt.meta, &c.task, spec)).collect::<Result<Vec<_>, _>>()?;
    Ok(SeedResult { seed, seconds: summary.seconds, reports })
}

/// The run folder of one seed of a sweep.
fn seed_dir(out: &std::path::Path, seed: u64) -> PathBuf {
    out.join(format!("seed-{seed}"))
}

/// The table of a sweep.
fn render(report: &SweepReport) -> String {
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
