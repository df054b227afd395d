//! `meta-nca bench`: median milliseconds per meta-epoch (forward, backward and Adam) of
//! standard configurations, measured side by side in one run; `--json` prints a [`BenchReport`].

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::limit;
use meta_nca_rule::config::{Config, FamilyConfig};
use meta_nca_rule::experiment::Experiment;
use meta_nca_rule::perception::Group;
use meta_nca_rule::train::Trainer;

/// Arguments of `meta-nca bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Timed meta-epochs per configuration (after 10 untimed ones).
    #[arg(long, default_value_t = 200, value_parser = crate::at_least_one)]
    epochs: usize,
    /// Override a config value in every configuration, e.g. `--set rule.hidden=[16]`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Only the configurations whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Print one JSON object instead of the tables.
    #[arg(long)]
    json: bool,
}

/// What `meta-nca bench` measures (`--json` prints it; the tables show it).
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// The CPU's model name (from `/proc/cpuinfo`).
    pub cpu: String,
    /// Cores available to the process.
    pub cores: usize,
    /// Threads of dfdx's matrix products (`--threads`).
    pub threads: usize,
    /// Timed meta-epochs per configuration, after 10 untimed ones (`--epochs`).
    pub epochs: usize,
    /// Milliseconds per meta-epoch (forward, backward and Adam; K = 10, p = 0.8, the full Iris
    /// train set) of each configuration `--only` kept.
    pub meta_epochs: Vec<Timing>,
    /// Milliseconds per grow step (no tape) of a `[784,10]` network on a generated task, on
    /// all its training rows and on minibatches of 128 (empty when `--only` leaves them out).
    pub grow_steps: Vec<Timing>,
    /// The default config's rule passes next to the machine's limit (null when `--only`
    /// leaves them out).
    pub rule_passes: Option<RulePasses>,
    /// The whole `train` loop on the prototype README config next to its bare meta-epoch
    /// (null when `--only` leaves it out).
    pub train_loop: Option<TrainLoop>,
}

/// What `train` costs beyond its meta-epochs: milliseconds per meta-epoch of the whole loop
/// (probes, checkpoints, `metrics.csv`) on the prototype README config, 1000 meta-epochs into a
/// scratch run folder, against the same config's bare meta-epoch timed in the same run.
#[derive(Debug, Serialize)]
pub struct TrainLoop {
    /// Runs of 1000 meta-epochs (`median_ms` etc. are over runs, each its mean per meta-epoch).
    pub runs: usize,
    /// The loop's milliseconds per meta-epoch.
    pub timing: Timing,
    /// Median milliseconds of the bare meta-epoch (the first table's prototype row).
    pub bare_ms: f64,
    /// `timing.median_ms / bare_ms`.
    pub ratio: f64,
}

/// Median, 10th and 90th percentile of the milliseconds one thing took, timed many times: one
/// row of a table.
#[derive(Debug, Serialize)]
pub struct Timing {
    /// What was timed.
    pub name: String,
    /// Cells of its networks, all together (absent when they vary: an architecture family).
    pub cells: Option<usize>,
    /// Median milliseconds.
    pub median_ms: f64,
    /// 10th percentile.
    pub p10_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
}

impl Timing {
    /// The row of `name` timed `times` (milliseconds, not empty).
    fn new(name: String, cells: Option<usize>, mut times: Vec<f64>) -> Self {
        times.sort_by(f64::total_cmp);
        let q = |f: f64| times[((times.len() - 1) as f64 * f).round() as usize];
        Self { name, cells, median_ms: q(0.5), p10_ms: q(0.1), p90_ms: q(0.9) }
    }

    fn print(&self) -> std::io::Result<()> {
        let cells = self.cells.map_or_else(|| "varies".to_string(), |c| c.to_string());
        let (name, median, p10, p90) = (&self.name, self.median_ms, self.p10_ms, self.p90_ms);
        writeln!(std::io::stdout(), "{name:<44}{cells:>8}{median:>10.3}{p10:>10.3}{p90:>10.3}")
    }
}

/// Rows per second of a rule's passes, one thread, in chunks of rows.
#[derive(Debug, Serialize)]
pub struct RulePasses {
    /// The rule's layer widths (perception width, hidden widths, state width).
    pub shapes: Vec<usize>,
    /// Rows per chunk.
    pub chunk: usize,
    /// Rows per second of each way (the table's "of limit" is each over `limit`).
    pub rows_per_second: limit::Rates,
}

fn cases() -> Vec<(&'static str, Config)> {
    let base = Config::default();
    let with = |f: &dyn Fn(&mut Config)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };
    vec![
        ("prototype README: [4,3], 1 net", base.clone()),
        ("3 layers hidden 5: [4,5,5,3], 1 net", with(&|c| c.task.hidden = vec![vec![5, 5]])),
        (
            "[4,5,5,3], 32 nets",
            with(&|c| {
                c.task.hidden = vec![vec![5, 5]];
                c.train.num_models = 32;
            }),
        ),
        (
            "sampled 1-5 layers x hidden 2/5/10, 8 nets",
            with(&|c| {
                c.task.family = Some(FamilyConfig { depths: vec![1, 2, 3, 4, 5], widths: vec![2, 5, 10] });
                c.train.num_models = 8;
            }),
        ),
        ("[4,5,5,3], 8 nets, default groups", messages(&base, &[])),
        ("[4,5,5,3], 8 nets, + backward", messages(&base, &[Group::Backward])),
        ("[4,5,5,3], 8 nets, + alignment", messages(&base, &[Group::Alignment])),
        ("[4,5,5,3], 8 nets, + backward + alignment", messages(&base, &[Group::Backward, Group::Alignment])),
    ]
}

/// `[4,5,5,3]`, 8 networks, the default perception plus `extra`: what the local error messages
/// cost, next to the same config without them.
fn messages(base: &Config, extra: &[Group]) -> Config {
    let mut c = base.clone();
    c.task.hidden = vec![vec![5, 5]];
    c.train.num_models = 8;
    c.rule.perception.extend_from_slice(extra);
    c
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// Runs `meta-nca bench`.
pub fn run(args: Args) -> Result<()> {
    let show = !args.json;
    let mut report = BenchReport {
        cpu: cpu_model(),
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        threads: rayon::current_num_threads(),
        epochs: args.epochs,
        meta_epochs: Vec::new(),
        grow_steps: Vec::new(),
        rule_passes: None,
        train_loop: None,
    };
    if show {
        writeln!(
            std::io::stdout(),
            "machine: {} ({} cores available), dfdx matmul threads: {}",
            report.cpu,
            report.cores,
            report.threads
        )?;
        writeln!(
            std::io::stdout(),
            "each row: 10 untimed meta-epochs, then {} timed; K = 10, p = 0.8, full Iris train set (120 rows)",
            args.epochs
        )?;
    }
    let cases: Vec<_> =
        cases().into_iter().filter(|(name, _)| args.only.as_deref().is_none_or(|o| name.contains(o))).collect();
    if show && !cases.is_empty() {
        writeln!(std::io::stdout())?;
        writeln!(
            std::io::stdout(),
            "{:<44}{:>8}{:>10}{:>10}{:>10}",
            "configuration",
            "cells",
            "median ms",
            "p10 ms",
            "p90 ms"
        )?;
    }
    for (name, mut config) in cases {
        for o in &args.overrides {
            config = config.with_override(o)?;
        }
        let mut trainer = Trainer::new(Experiment::new(config)?)?;
        let times = time_meta_epochs(&mut trainer, args.epochs)?;
        let row = Timing::new(name.to_string(), cells_of(&trainer), times);
        if show {
            row.print()?;
        }
        report.meta_epochs.push(row);
    }
    let prototype = report.meta_epochs.first().filter(|r| r.name.starts_with("prototype")).map(|r| r.median_ms);
    if args.only.as_deref().is_none_or(|o| "train loop".contains(o)) {
        report.train_loop = Some(train_loop(&args.overrides, prototype, show)?);
    }
    if args.only.as_deref().is_none_or(|o| "grow step rows".contains(o)) {
        report.grow_steps = grow_step_rows(args.epochs, show)?;
    }
    if args.only.as_deref().is_none_or(|o| "rule passes".contains(o)) {
        report.rule_passes = Some(rule_passes(&args.overrides, show)?);
    }
    if args.json {
        writeln!(std::io::stdout(), "{}", serde_json::to_string(&report)?)?;
    }
    Ok(())
}

/// Milliseconds of each of `epochs` meta-epochs of `trainer` (at least one), after 10 untimed.
fn time_meta_epochs(trainer: &mut Trainer, epochs: usize) -> Result<Vec<f64>> {
    for _ in 0..10 {
        trainer.meta_epoch()?;
    }
    let mut times = Vec::with_capacity(epochs.max(1));
    for _ in 0..epochs.max(1) {
        let t = Instant::now();
        trainer.meta_epoch()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(times)
}

/// Times the whole `train` loop ([`TrainLoop`]); `bare`: the prototype row's median, timed
/// here when `--only` left that row out. Printed if `show`.
fn train_loop(overrides: &[String], bare: Option<f64>, show: bool) -> Result<TrainLoop> {
    use crate::run_dir::Start;
    use crate::train::train_run;

    let mut config = Config::default();
    for o in overrides {
        config = config.with_override(o)?;
    }
    let mut trainer = Trainer::new(Experiment::new(config.clone())?)?;
    let cells = cells_of(&trainer);
    let bare_ms = match bare {
        Some(ms) => ms,
        None => Timing::new(String::new(), None, time_meta_epochs(&mut trainer, 200)?).median_ms,
    };
    let runs = 5;
    let mut times = Vec::with_capacity(runs);
    for k in 0..runs {
        let dir = std::env::temp_dir().join(format!("meta-nca-bench-train-{}-{k}", std::process::id()));
        let t = Instant::now();
        let summary = train_run(&config, &dir, Start::Replace, &indicatif::ProgressBar::hidden(), None);
        let elapsed = t.elapsed().as_secs_f64();
        let _ = std::fs::remove_dir_all(&dir);
        let summary = summary?;
        times.push(elapsed * 1e3 / summary.ran.max(1) as f64);
    }
    let timing = Timing::new("train loop: prototype README, 1000 meta-epochs".into(), cells, times);
    let ratio = timing.median_ms / bare_ms;
    if show {
        writeln!(std::io::stdout())?;
        writeln!(
            std::io::stdout(),
            "the whole train loop (probes of {} networks every {} meta-epochs, checkpoints every {}, metrics.csv), \
             {runs} runs; ms per meta-epoch",
            config.train.probe_networks,
            config.train.probe_every,
            config.train.checkpoint_every
        )?;
        writeln!(std::io::stdout(), "{:<44}{:>8}{:>10}{:>10}{:>10}", "what", "", "median ms", "p10 ms", "p90 ms")?;
        timing.print()?;
        writeln!(std::io::stdout(), "{:<44}{:>8}{bare_ms:>10.3}", "bare meta-epoch (the prototype row)", "")?;
        writeln!(std::io::stdout(), "{:<44}{:>8}{ratio:>10.2}", "loop / bare", "")?;
    }
    Ok(TrainLoop { runs, timing, bare_ms, ratio })
}

/// Rows per second of the default configuration's rule (with the `--set` overrides) next to
/// the limit: a bare chain of matrix products of its shapes ([`limit`]); printed if `show`.
fn rule_passes(overrides: &[String], show: bool) -> Result<RulePasses> {
    use meta_nca_rule::rule::RuleNet;
    use meta_nca_rule::topology::Topology;

    let mut config = Config::default();
    for o in overrides {
        config = config.with_override(o)?;
    }
    let topology = Topology::dense(&[4, 3], true)?;
    let code = config.hidden_code((1, topology.num_cells()));
    let (_, shape) = config.rule_shape(&code)?;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let rule = RuleNet::new(&dfdx::prelude::Cpu::default(), shape, &mut rng);
    let rates = limit::measure(&rule, 2.0);
    let passes = RulePasses { shapes: rule.shape.dims(), chunk: limit::CHUNK, rows_per_second: rates };
    if !show {
        return Ok(passes);
    }
    writeln!(std::io::stdout())?;
    writeln!(
        std::io::stdout(),
        "rule passes: shapes {:?} (the default config's rule), {}-row chunks, 1 thread, median of 7",
        passes.shapes,
        passes.chunk
    )?;
    writeln!(std::io::stdout(), "{:<52}{:>12}{:>10}", "what", "rows/s", "of limit")?;
    for (name, rate) in [
        ("bare matrix-product chain (the limit)", rates.limit),
        ("rule forward pass without tape", rates.forward),
        ("the same MLP through dfdx's ops on a tape", rates.taped),
    ] {
        writeln!(std::io::stdout(), "{name:<52}{:>12}{:>10.2}", limit::millions(rate), rate / rates.limit)?;
    }
    Ok(passes)
}

/// Median milliseconds of one grow step (perception, rule, update; no tape) of a `[784, 10]`
/// network on a generated 784-feature task of `rows` rows, on the whole training split or on
/// a minibatch of 128 rows (`grow.batch-size`): the minibatch step costs the same whatever
/// the row count. Printed if `show`.
fn grow_step_rows(epochs: usize, show: bool) -> Result<Vec<Timing>> {
    use meta_nca_rule::batch::Batch;
    use meta_nca_rule::config::TasksConfig;
    use meta_nca_rule::config::tasks::Kind;
    use meta_nca_rule::data::Split;
    use meta_nca_rule::episode::draw_rows;
    use meta_nca_rule::generate::{Shape, generate};
    use meta_nca_rule::init::{WeightInit, initial_state};
    use meta_nca_rule::random::{Stream, rng_for};
    use meta_nca_rule::reference::Grower;
    use meta_nca_rule::rule::RuleNet;
    use meta_nca_rule::task_data::TaskData;
    use meta_nca_rule::topology::Topology;

    if show {
        writeln!(std::io::stdout())?;
        writeln!(
            std::io::stdout(),
            "one grow step (no tape) of a [784,10] network on a generated task, 784 features, 10 classes"
        )?;
        writeln!(
            std::io::stdout(),
            "{:<44}{:>8}{:>10}{:>10}{:>10}",
            "rows seen per step",
            "cells",
            "median ms",
            "p10 ms",
            "p90 ms"
        )?;
    }
    let mut rows_out = Vec::new();
    let config = Config::default();
    let dev = dfdx::prelude::Cpu::default();
    for rows in [1000, 5000] {
        let mut rng = rng_for(0, Stream::Eval, rows as u64);
        let shape = Shape { features: 784, classes: 10, rows };
        let data = generate(Kind::Teacher, shape, &TasksConfig::default(), "bench", &mut rng).dataset;
        let split = Split::stratified(&data, 0.8, 0)?;
        let n = split.train_y.len();
        let train = std::sync::Arc::new(TaskData { x: split.train_x, y: split.train_y, features: 784, classes: 10 });
        let mut topology = Topology::dense(&[784, 10], true)?;
        let code = config.hidden_code((1, topology.num_cells()));
        let (spec, shape) = config.rule_shape(&code)?;
        let rule = RuleNet::new(&dev, shape, &mut rng);
        let state0 = initial_state(&code, WeightInit::Xavier, &mut topology, &mut rng)?;
        let fire = vec![true; topology.num_cells()];
        let cells = topology.num_cells();
        let grower = Grower::new(&dev, Batch::new(vec![topology]), spec, train)?;
        for batch in [None, Some(128)] {
            let mut times = Vec::new();
            for _ in 0..epochs.clamp(3, 20) {
                let picked = draw_rows(batch, n, 1, &mut rng);
                let state = grower.state_tensor(state0.clone());
                let t = Instant::now();
                let _ = grower.step_on(&rule, state, &fire, picked.first().map(Vec::as_slice));
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let name = match batch {
                None => format!("all {n} training rows"),
                Some(b) => format!("batch-size {b} of {n} training rows"),
            };
            let row = Timing::new(name, Some(cells), times);
            if show {
                row.print()?;
            }
            rows_out.push(row);
        }
    }
    Ok(rows_out)
}

/// Cells of the trainer's networks, all together (`None` for an architecture family).
fn cells_of(trainer: &Trainer) -> Option<usize> {
    let c = trainer.config();
    if c.task.family.is_some() {
        return None;
    }
    let bias = usize::from(c.task.bias);
    let task = trainer.exp.primary();
    let mut sizes = vec![task.train.features];
    sizes.extend(&c.task.hidden[0]);
    sizes.push(task.train.classes);
    let per_net: usize = sizes.windows(2).map(|w| (w[0] + bias) * w[1]).sum();
    Some(per_net * c.train.num_models)
}
