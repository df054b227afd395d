//! `meta-nca sweep`: train one config under many seeds and tabulate how reliably it learns
//! (or print it as JSON: [`SweepReport`]); or, for a sweep beyond this machine, write the
//! seeds' training as shell commands (`--plan`) and tabulate their runs once they have finished
//! (`--collect`).
//!
//! # Layout
//! - `mod.rs`: the flags, training the seeds here, and what every mode shares: evaluating a
//!   seed's run and printing the report.
//! - [`report`]: the columns evaluated, [`SweepReport`] and its table.
//! - [`plan`]: `--plan`, one `meta-nca train` command per seed.
//! - [`collect`]: `--collect`, the report of runs trained elsewhere.

mod collect;
mod plan;
mod report;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use meta_nca_rule::checkpoint::write_atomic;
use meta_nca_rule::config::Config;
use meta_nca_rule::eval::{EvalSpec, evaluate};
use meta_nca_rule::experiment::Experiment;

use self::report::{Column, SeedResult, SweepReport, columns, render};
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
    /// Seeds trained (with --collect: evaluated) at the same time (one core each).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Sweep folder; each seed's run goes to `seed-N/` inside (default: runs/<config>-sweep).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also evaluate every rule on this dataset (e.g. one it never saw), as given and with
    /// its labels permuted (repeatable).
    #[arg(long = "eval-dataset", value_name = "DATASET")]
    eval_datasets: Vec<String>,
    /// Replace the runs of an earlier sweep in the seed folders (they are deleted first); with
    /// --plan, replace the plan file and the sweep's config.toml, and each line replaces its
    /// seed's run.
    #[arg(long)]
    force: bool,
    /// Skip the estimate of the memory the seeds trained at once need (with --plan: passed on
    /// to each `meta-nca train` line).
    #[arg(long)]
    no_memory_check: bool,
    /// Print one JSON object instead of the table (sweep.txt is written all the same).
    #[arg(long)]
    json: bool,
    /// Train nothing: write FILE, one shell command per seed (`meta-nca train` of the resolved
    /// config, written once as `config.toml` in the sweep folder, with `--set seed=N --out
    /// <folder>/seed-N`), for a SLURM job array, GNU parallel or `xargs -P` on machines that
    /// share the sweep folder; then run `--collect`. The lines call this very binary by its
    /// absolute path (and absolute folders), so they run from any directory on any machine that
    /// sees those paths, in any order.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["collect", "jobs", "json"])]
    plan: Option<PathBuf>,
    /// Train nothing: build the table (and sweep.txt, and --json's report) from the finished
    /// runs in DIR/seed-*/, each evaluated with its own config.toml. The seeds a `--plan`
    /// wrote DIR for are expected; one without a finished run (no best checkpoint, or fewer
    /// meta-epochs than its config asks) is named, and the command fails after printing the
    /// table of the others.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with_all = ["config", "overrides", "seeds", "first_seed", "out", "force", "no_memory_check"]
    )]
    collect: Option<PathBuf>,
}

/// Runs `meta-nca sweep`.
pub fn run(args: Args) -> Result<()> {
    if args.seeds == 0 || args.networks == 0 || args.jobs == 0 {
        bail!("--seeds, --networks and --jobs must be at least 1");
    }
    if let Some(dir) = &args.collect {
        return collect::run(dir, &args);
    }
    let (config, name) = args.config.load()?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("runs/{name}-sweep")));
    let exp = Experiment::new(config.clone()).context("preparing the experiment")?;
    let cols = columns(&exp, &args.eval_datasets)?;
    let end = args.first_seed.checked_add(args.seeds).context("--first-seed plus --seeds is beyond the last seed")?;
    let seeds: Vec<u64> = (args.first_seed..end).collect();
    if let Some(file) = &args.plan {
        return plan::write(file, &config, &out, &seeds, &args);
    }
    for &seed in &seeds {
        check_new_folder(&seed_dir(&out, seed), args.force)?;
    }
    let start = if args.force { Start::Replace } else { Start::New };
    if !args.no_memory_check {
        crate::memory::check_training(&config, args.jobs.min(seeds.len()))?;
    }
    if !args.json {
        writeln!(
            std::io::stdout(),
            "sweep of {} seeds from {} ({} jobs), {} networks per evaluation, folder {}",
            args.seeds,
            args.first_seed,
            args.jobs,
            args.networks,
            out.display()
        )?;
    }
    let (results, failures) = for_each_seed(&seeds, args.jobs, |seed| {
        let r = train_seed(&config, &out, seed, &cols, args.networks, start)?;
        eprintln!("seed {seed} done in {:.1} s: val acc {:.4}", r.seconds, r.reports[0].val_acc.mean);
        Ok(r)
    });
    let report = SweepReport::new(out, &cols, results, failures);
    finish(&report, args.json)?;
    if !report.failures.is_empty() {
        bail!("{} seed(s) failed:\n  {}", report.failures.len(), report.failures.join("\n  "));
    }
    Ok(())
}

/// Runs `work` for every seed, `jobs` seeds at a time; returns what succeeded (in no
/// particular order) and, by seed, each failure as `seed N: error`.
fn for_each_seed(
    seeds: &[u64],
    jobs: usize,
    work: impl Fn(u64) -> Result<SeedResult> + Sync,
) -> (Vec<SeedResult>, Vec<String>) {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(seeds.len()) {
            scope.spawn(|| {
                while let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::SeqCst)) {
                    match work(seed) {
                        Ok(r) => results.lock().unwrap_or_else(|p| p.into_inner()).push(r),
                        Err(e) => failures.lock().unwrap_or_else(|p| p.into_inner()).push((seed, format!("{e:#}"))),
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    failures.sort_by_key(|(seed, _)| *seed);
    let failures = failures.into_iter().map(|(seed, e)| format!("seed {seed}: {e}")).collect();
    (results.into_inner().unwrap_or_else(|p| p.into_inner()), failures)
}

/// Trains one seed of `config` into its seed folder and evaluates it.
fn train_seed(
    config: &Config,
    out: &Path,
    seed: u64,
    cols: &[Column],
    networks: usize,
    start: Start,
) -> Result<SeedResult> {
    let mut config = config.clone();
    config.seed = seed;
    let dir = seed_dir(out, seed);
    let summary = train_run(&config, &dir, start, &ProgressBar::hidden(), None)?;
    evaluate_seed(&dir, &config, cols, networks, summary.seconds)
}

/// Evaluates the best rule of the finished run in `dir`, trained with `config`, on every column
/// (growing with the config's steps and firing fraction, seeded with its seed).
fn evaluate_seed(dir: &Path, config: &Config, cols: &[Column], networks: usize, seconds: f64) -> Result<SeedResult> {
    let (ckpt, _) = load_run(dir, Which::Best)?;
    let seed = config.seed;
    let spec = EvalSpec { networks, steps: config.grow.steps, fire_fraction: config.grow.fire_fraction, seed };
    let reports =
        cols.iter().map(|c| evaluate(&ckpt.rule, &ckpt.meta, &c.task, spec)).collect::<Result<Vec<_>, _>>()?;
    Ok(SeedResult { seed, seconds, reports })
}

/// Writes the table to `sweep.txt` in the sweep folder, then prints the report (the table, or
/// one JSON object with `json`).
fn finish(report: &SweepReport, json: bool) -> Result<()> {
    let table = render(report);
    // The file first: a reader of stdout that stops early does not cost it.
    write_atomic(&report.folder.join("sweep.txt"), table.as_bytes())?;
    if json {
        writeln!(std::io::stdout(), "{}", serde_json::to_string(report)?)?;
    } else {
        write!(std::io::stdout(), "{table}")?;
    }
    Ok(())
}

/// The run folder of one seed of a sweep.
fn seed_dir(out: &Path, seed: u64) -> PathBuf {
    out.join(format!("seed-{seed}"))
}
