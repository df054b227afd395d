//! `meta-nca continual`: grow networks with a run's rule through a schedule whose data changes
//! (classes arriving one or a few at a time, or inputs drifting) on the embedded datasets and
//! held-out generated tasks, next to backprop fine-tuned phase by phase and backprop on all the
//! data at once. The experiment comes from `--config FILE.toml` ([`ContinualConfig`]) and
//! flags; tables are printed and `report.json`, `curves.csv`, `phases.csv`, `summary.csv` and
//! the resolved `config.toml` are written into a folder of the run.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use meta_nca_rule::baseline::BaselineSpec;
use meta_nca_rule::checkpoint::write_atomic;
use meta_nca_rule::config::schedule::ScheduleSpec;
use meta_nca_rule::continual::{ContinualReport, ContinualSpec, run as run_continual};
use meta_nca_rule::engine::EngineKind;
use meta_nca_rule::experiment::TaskSource;
use meta_nca_rule::random::Stream;
use serde::{Deserialize, Serialize};

use crate::actors::{EngineArg, ExecutorArg};
use crate::run_dir::{Which, load_run, write_csv};

/// Arguments of `meta-nca continual`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run folder written by `meta-nca train`.
    #[arg(long)]
    run: PathBuf,
    /// Experiment config (TOML, e.g. configs/continual-class.toml); without it, the defaults
    /// of [`ContinualConfig`] (class-incremental on Iris and Wine).
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// Which checkpoint of the run.
    #[arg(long, value_enum, default_value_t = Which::Best)]
    checkpoint: Which,
    /// Where the grows run (overrides the config's `engine`).
    #[arg(long, value_enum)]
    engine: Option<EngineArg>,
    /// Networks grown per task (overrides the config's `networks`).
    #[arg(long, value_parser = crate::at_least_one)]
    networks: Option<usize>,
    /// Seed of the grows, drifts and baselines (overrides the config's `seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// Output folder (default: RUN/continual-<config name>); refused if it exists, unless --force.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace the output folder's files if it exists.
    #[arg(long)]
    force: bool,
    /// Print the reports as one JSON array instead of tables.
    #[arg(long)]
    json: bool,
}

/// The backprop baselines of a continual experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// Full-batch Adam epochs per phase of the fine-tuned network (the joint network trains
    /// this many times the number of phases).
    pub epochs: usize,
    /// Adam learning rate.
    pub lr: f64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self { epochs: 100, lr: 0.01 }
    }
}

/// A continual experiment (`configs/continual-*.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ContinualConfig {
    /// Datasets: embedded names or CSV paths.
    pub datasets: Vec<String>,
    /// Held-out generated tasks (drawn from the run's `[tasks]` ranges, evaluation stream; a
    /// class-incremental schedule starts one with at most all but one of its classes).
    pub generated: usize,
    /// Networks grown per task.
    pub networks: usize,
    /// Seed.
    pub seed: u64,
    /// Firing fraction (unset: the run's `grow.fire-fraction`).
    pub fire_fraction: Option<f64>,
    /// Where the grows run.
    pub engine: EngineArg,
    /// Actors: the executor (`shards`: two shard tasks per network).
    pub executor: ExecutorArg,
    /// The phases.
    pub schedule: ScheduleSpec,
    /// The backprop baselines.
    pub baseline: BaselineConfig,
}

impl Default for ContinualConfig {
    fn default() -> Self {
        Self {
            datasets: vec!["iris".into(), "wine".into()],
            generated: 0,
            networks: 20,
            seed: 0,
            fire_fraction: None,
            engine: EngineArg::Reference,
            executor: ExecutorArg::Tasks,
            schedule: ScheduleSpec::default(),
            baseline: BaselineConfig::default(),
        }
    }
}

impl ContinualConfig {
    fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is not a continual experiment config", path.display()))
    }

    fn check(&self) -> Result<()> {
        self.schedule.check("schedule")?;
        if self.datasets.is_empty() && self.generated == 0 {
            bail!("the config names no dataset and no generated task");
        }
        if self.networks == 0 {
            bail!("networks must be at least 1");
        }
        if let Some(p) = self.fire_fraction
            && !(p > 0.0 && p <= 1.0)
        {
            bail!("fire-fraction must be in (0, 1], got {p}");
        }
        if self.baseline.epochs == 0 || !(self.baseline.lr > 0.0 && self.baseline.lr.is_finite()) {
            bail!("baseline: epochs must be >= 1 and lr positive and finite");
        }
        Ok(())
    }

    fn engine_kind(&self) -> Box<dyn EngineKind> {
        crate::actors::engine_kind(self.engine, self.executor, 2, self.seed)
    }
}

/// One row of `curves.csv`.
#[derive(Serialize)]
struct CurveRow<'a> {
    task: &'a str,
    step: usize,
    phase: usize,
    seen: f64,
    old: Option<f64>,
    new: Option<f64>,
    first: f64,
}

/// One row of `phases.csv`.
#[derive(Serialize)]
struct PhaseRow<'a> {
    task: &'a str,
    phase: usize,
    start: usize,
    steps: usize,
    outputs: usize,
    arriving: String,
    domain: usize,
    train_rows: usize,
    grown_seen: f64,
    grown_old: Option<f64>,
    grown_new: Option<f64>,
    fine_tune_seen: f64,
    fine_tune_old: Option<f64>,
    fine_tune_new: Option<f64>,
}

/// One row of `summary.csv`.
#[derive(Serialize)]
struct SummaryRow<'a> {
    task: &'a str,
    method: &'a str,
    seen: f64,
    first: f64,
    forgetting: Option<f64>,
}

fn write_files(dir: &Path, config: &ContinualConfig, reports: &[ContinualReport]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let curves = reports.iter().flat_map(|r| {
        r.curve.iter().map(|c| CurveRow {
            task: &r.task,
            step: c.step,
            phase: c.phase,
            seen: c.seen,
            old: c.old,
            new: c.new,
            first: c.first,
        })
    });
    write_csv(&dir.join("curves.csv"), None, curves)?;
    let phases = reports.iter().flat_map(|r| {
        r.phases.iter().zip(&r.phase_ends).enumerate().map(|(p, (info, end))| PhaseRow {
            task: &r.task,
            phase: p,
            start: info.start,
            steps: info.steps,
            outputs: info.outputs,
            arriving: info.arriving.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
            domain: info.domain,
            train_rows: info.train_rows,
            grown_seen: end.grown.seen,
            grown_old: end.grown.old,
            grown_new: end.grown.new,
            fine_tune_seen: end.fine_tune.seen,
            fine_tune_old: end.fine_tune.old,
            fine_tune_new: end.fine_tune.new,
        })
    });
    write_csv(&dir.join("phases.csv"), None, phases)?;
    let summary = reports.iter().flat_map(|r| {
        [("grown", &r.grown), ("fine-tune", &r.fine_tune), ("joint", &r.joint)].map(|(method, s)| SummaryRow {
            task: &r.task,
            method,
            seen: s.seen,
            first: s.first,
            forgetting: s.forgetting,
        })
    });
    write_csv(&dir.join("summary.csv"), None, summary)?;
    write_atomic(&dir.join("report.json"), serde_json::to_string_pretty(reports)?.as_bytes())?;
    let body = toml::to_string(config).context("writing the continual config as TOML")?;
    let head = "# The resolved continual experiment, written by `meta-nca continual`; rerun it with\n\
                #   meta-nca continual --run <run> --config <this file>\n";
    write_atomic(&dir.join("config.toml"), format!("{head}{body}").as_bytes())?;
    Ok(())
}

/// The tasks of the experiment: its datasets, then its generated tasks.
fn tasks(config: &ContinualConfig, run: &meta_nca_rule::config::Config) -> Result<Vec<TaskSource>> {
    let mut out = Vec::new();
    for name in &config.datasets {
        out.push(TaskSource::load(run, name, None).with_context(|| format!("loading dataset {name}"))?);
    }
    for i in 0..config.generated {
        let g = meta_nca_rule::generate::draw(&run.tasks, config.seed, Stream::EvalTasks, 10_000 + i as u64);
        out.push(TaskSource::from_dataset(run, g.dataset).context("splitting a generated task")?);
    }
    Ok(out)
}

/// Runs `meta-nca continual`.
pub fn run(args: Args) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => ContinualConfig::load(path)?,
        None => ContinualConfig::default(),
    };
    if let Some(e) = args.engine {
        config.engine = e;
    }
    if let Some(n) = args.networks {
        config.networks = n;
    }
    if let Some(s) = args.seed {
        config.seed = s;
    }
    config.check()?;
    let name = args.config.as_deref().and_then(Path::file_stem).map_or("continual".into(), |s| {
        let s = s.to_string_lossy();
        if s.starts_with("continual") { s.into_owned() } else { format!("continual-{s}") }
    });
    let out = args.out.clone().unwrap_or_else(|| args.run.join(&name));
    if out.exists() && !args.force {
        bail!("{} exists; pass --force to replace its files, or --out for another folder", out.display());
    }
    let (ckpt, _) = load_run(&args.run, args.checkpoint)?;
    let run_cfg = &ckpt.meta.config;
    let fire_fraction = config.fire_fraction.unwrap_or(run_cfg.grow.fire_fraction);
    let engine = config.engine_kind();
    let mut reports = Vec::new();
    for (k, task) in tasks(&config, run_cfg)?.into_iter().enumerate() {
        // A named dataset must fit the schedule; a generated task (its class count drawn) starts
        // with at most all but one of its classes.
        let schedule = if k < config.datasets.len() {
            config.schedule.check_classes(&task.name, task.split.num_classes)?;
            config.schedule.clone()
        } else {
            config.schedule.for_classes(task.split.num_classes)
        };
        crate::memory::check_actors_for(&task.archs, run_cfg.task.bias, config.engine, config.executor)?;
        let spec = ContinualSpec {
            schedule,
            networks: config.networks,
            fire_fraction,
            seed: config.seed,
            baseline: BaselineSpec { epochs: config.baseline.epochs, lr: config.baseline.lr, seed: config.seed },
        };
        let (layers, cells) = task.archs.extent(run_cfg.task.bias);
        if let Err(e) = ckpt.meta.code.check_fits(layers, cells) {
            if k < config.datasets.len() {
                return Err(e).with_context(|| format!("the rule cannot grow networks for {}", task.name));
            }
            if args.json {
                eprintln!("skipped {}: {e}", task.name);
            } else {
                writeln!(std::io::stdout(), "skipped {}: {e}\n", task.name)?;
            }
            continue;
        }
        let report = run_continual(&ckpt.rule, &ckpt.meta, engine.as_ref(), &task, &spec)
            .with_context(|| format!("continual experiment on {}", task.name))?;
        if !args.json {
            writeln!(std::io::stdout(), "{}", report.table())?;
        }
        reports.push(report);
    }
    write_files(&out, &config, &reports)?;
    if args.json {
        writeln!(std::io::stdout(), "{}", serde_json::to_string(&reports)?)?;
    } else {
        let mut stdout = std::io::stdout().lock();
        write_mean(&mut stdout, &reports)?;
        writeln!(stdout, "seed {}; files in {}", config.seed, out.display())?;
    }
    Ok(())
}

/// Writes the mean over tasks of where each method ended.
fn write_mean(out: &mut impl Write, reports: &[ContinualReport]) -> std::io::Result<()> {
    if reports.len() < 2 {
        return Ok(());
    }
    let n = reports.len() as f64;
    writeln!(out, "mean over {} tasks          all seen  first phase  forgetting", reports.len())?;
    for (name, pick) in [
        ("grown", (|r: &ContinualReport| r.grown) as fn(&ContinualReport) -> _),
        ("backprop fine-tuned", |r: &ContinualReport| r.fine_tune),
        ("backprop on all data", |r: &ContinualReport| r.joint),
    ] {
        let seen = reports.iter().map(|r| pick(r).seen).sum::<f64>() / n;
        let first = reports.iter().map(|r| pick(r).first).sum::<f64>() / n;
        let forgetting: Vec<f64> = reports.iter().filter_map(|r| pick(r).forgetting).collect();
        let forgetting = if forgetting.is_empty() {
            "-".to_string()
        } else {
            format!("{:.3}", forgetting.iter().sum::<f64>() / forgetting.len() as f64)
        };
        writeln!(out, "{name:<28} {seen:>8.3} {first:>12.3} {forgetting:>11}")?;
    }
    Ok(())
}
