//! `meta-nca sweep`: train one config under many seeds and tabulate how reliably it learns.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use meta_nca_rule::checkpoint::write_atomic;
use meta_nca_rule::eval::{EvalReport, EvalSpec, evaluate};
use meta_nca_rule::experiment::{Experiment, Task};

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

struct SeedResult {
    seed: u64,
    seconds: f64,
    reports: Vec<EvalReport>,
}

fn spread(v: &[f64]) -> (f64, f64, f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, min, max, std)
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
    println!(
        "sweep of {} seeds from {} ({} jobs), {} networks per evaluation, folder {}",
        args.seeds,
        args.first_seed,
        args.jobs,
        args.networks,
        out.display()
    );
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
    let table = render(&results, &cols);
    print!("{table}");
    write_atomic(&out.join("sweep.txt"), table.as_bytes())?;
    if !failures.is_empty() {
        bail!("{} seed(s) failed:\n  {}", failures.len(), failures.join("\n  "));
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

fn render(results: &[SeedResult], cols: &[Column]) -> String {
    let mut s = String::new();
    let _ = write!(s, "\n{:<8}{:>10}", "seed", "train s");
    for c in cols {
        let _ = write!(s, "{:>22}", c.title);
    }
    let _ = writeln!(s);
    let _ = write!(s, "{:<8}{:>10}", "", "");
    for _ in cols {
        let _ = write!(s, "{:>22}", "val mean (min-max)");
    }
    let _ = writeln!(s);
    for r in results {
        let _ = write!(s, "{:<8}{:>10.1}", r.seed, r.seconds);
        for rep in &r.reports {
            let _ =
                write!(s, "{:>22}", format!("{:.4} ({:.2}-{:.2})", rep.val_acc.mean, rep.val_acc.min, rep.val_acc.max));
        }
        let _ = writeln!(s);
    }
    if results.is_empty() {
        return s;
    }
    let _ = writeln!(s);
    let times: Vec<f64> = results.iter().map(|r| r.seconds).collect();
    for (label, pick) in [("mean", 0), ("min", 1), ("max", 2), ("std", 3)] {
        let t = spread(&times);
        let tv = [t.0, t.1, t.2, t.3][pick];
        let _ = write!(s, "{label:<8}{tv:>10.1}");
        for k in 0..cols.len() {
            let v: Vec<f64> = results.iter().map(|r| r.reports[k].val_acc.mean).collect();
            let sp = spread(&v);
            let _ = write!(s, "{:>22.4}", [sp.0, sp.1, sp.2, sp.3][pick]);
        }
        let _ = writeln!(s);
    }
    let _ = write!(s, "{:<8}{:>10}", "backprop", "");
    for k in 0..cols.len() {
        let _ = write!(s, "{:>22.4}", results[0].reports[k].baseline.val_acc);
    }
    let _ = writeln!(s);
    s
}
