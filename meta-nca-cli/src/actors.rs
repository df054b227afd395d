//! The actor engine in the CLI: the flags shared by `grow --engine actors`, `check` and
//! `bench-actors`, loading a run's rule and data, and a grow with the actor simulation.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use meta_nca_rule::checkpoint::{Checkpoint, write_atomic};
use meta_nca_rule::engine::EngineKind;
use meta_nca_rule::eval::{GrowRecord, GrowStep};
use meta_nca_rule::experiment::Experiment;
use meta_nca_rule::task_data::{Score, TaskData, score};
use meta_nca_rule::topology::{CellId, Scheduled, Topology};
use meta_nca_sim::trace::CellFilter;
use meta_nca_sim::world::World;
use meta_nca_sim::{AsyncSpec, Executor, Mode, Outcome, Setup, SimSpec};
use serde::Serialize;

use crate::trace::TraceFile;

/// Which engine grows the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineArg {
    /// The batched reference path.
    Reference,
    /// The actor simulation (`meta-nca-sim`).
    Actors,
}

/// Where the grows of an engine-agnostic experiment (robustness, continual) run: the reference
/// path, or one lockstep simulation per network with `executor` (`shards` shard tasks), all on
/// one runtime of one worker and one rule service (the networks run one after another).
pub fn engine_kind(engine: EngineArg, executor: ExecutorArg, shards: usize, seed: u64) -> Box<dyn EngineKind> {
    match engine {
        EngineArg::Reference => Box::new(meta_nca_rule::engine::ReferenceKind),
        EngineArg::Actors => {
            let executor = match executor {
                ExecutorArg::Tasks => meta_nca_sim::Executor::Tasks,
                ExecutorArg::Shards => meta_nca_sim::Executor::Shards { shards },
            };
            let spec = SimSpec { executor, workers: 1, seed, ..SimSpec::default() };
            Box::new(meta_nca_sim::engine::ActorKind { spec })
        }
    }
}

/// How the actor simulation schedules its cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutorArg {
    /// One tokio task per cell and per neuron.
    Tasks,
    /// Shard tasks hosting blocks of cells, with batched messages.
    Shards,
}

/// Lockstep or async.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeArg {
    /// A barrier per step; fires the same cells as the reference path.
    Lockstep,
    /// Every cell on its own clock, using summaries up to `--staleness` rounds old.
    Async,
}

/// Flags of the actor simulation.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Task per cell, or shards.
    #[arg(long, value_enum, default_value_t = ExecutorArg::Tasks)]
    pub executor: ExecutorArg,
    /// Lockstep or async.
    #[arg(long, value_enum, default_value_t = ModeArg::Lockstep)]
    pub mode: ModeArg,
    /// Shards of the shard executor (default: 4 per worker).
    #[arg(long, value_parser = crate::at_least_one)]
    pub shards: Option<usize>,
    /// tokio worker threads.
    #[arg(long, default_value_t = 2, value_parser = crate::at_least_one)]
    pub workers: usize,
    /// Async: how many rounds older than its own a summary a cell may use.
    #[arg(long, default_value_t = 1)]
    pub staleness: u32,
    /// Async: a cell yields to the scheduler up to this many times before each tick.
    #[arg(long, default_value_t = 4)]
    pub jitter: u32,
    /// Async: the rule service runs when this many queries wait...
    #[arg(long, default_value_t = 256, value_parser = crate::at_least_one)]
    pub batch_rows: usize,
    /// ...or this many microseconds after the oldest one.
    #[arg(long, default_value_t = 200)]
    pub deadline_us: u64,
    /// Cells to trace, `layer:i:j` with `*` wildcards, comma-separated (e.g. `0:1:2,1:*:*`).
    #[arg(long)]
    pub trace_cells: Option<String>,
    /// Write the traced cells' update events to this file as JSON lines (`meta-nca inspect`).
    #[arg(long)]
    pub trace_json: Option<PathBuf>,
}

/// `--engine` plus the simulation flags (flattened into `meta-nca grow`).
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Grow with the batched reference path or the actor simulation.
    #[arg(long, value_enum, default_value_t = EngineArg::Reference)]
    pub engine: EngineArg,
    /// Actor simulation settings.
    #[command(flatten)]
    pub sim: SimArgs,
}

impl SimArgs {
    /// The executor these flags choose.
    pub fn executor(&self, which: ExecutorArg) -> Executor {
        match which {
            ExecutorArg::Tasks => Executor::Tasks,
            ExecutorArg::Shards => Executor::Shards { shards: self.shards.unwrap_or(4 * self.workers.max(1)) },
        }
    }

    /// The mode these flags choose, firing at rate `p` in async mode.
    pub fn mode(&self, which: ModeArg, p: f64) -> Mode {
        match which {
            ModeArg::Lockstep => Mode::Lockstep,
            ModeArg::Async => Mode::Async(AsyncSpec {
                fire_fraction: p,
                max_staleness: self.staleness,
                jitter: self.jitter,
                batch_rows: self.batch_rows,
                deadline: Duration::from_micros(self.deadline_us),
            }),
        }
    }

    /// Whether `--trace-cells` or `--trace-json` was given.
    pub fn traces(&self) -> bool {
        self.trace_cells.is_some() || self.trace_json.is_some()
    }

    /// Checks the trace flags before a run on `topology` (with `changes` applied between
    /// steps): every `--trace-cells` pattern must name a cell that exists at some step, and the
    /// trace must not go to `save`, the file the run's result is written to.
    pub fn check_trace(&self, topology: &Topology, changes: &[Scheduled], save: Option<&Path>) -> Result<()> {
        if let (Some(trace), Some(save)) = (&self.trace_json, save)
            && same_file(trace, save)
        {
            bail!(
                "--trace-json {} and --save {} are the same file: one would overwrite the other",
                trace.display(),
                save.display()
            );
        }
        let Some(text) = &self.trace_cells else {
            return Ok(());
        };
        let mut topology = topology.clone();
        let mut cells: Vec<CellId> = topology.cells().copied().collect();
        for c in changes {
            if topology.apply(&c.change).is_ok() {
                cells.extend(topology.cells().copied());
            }
        }
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let filter = CellFilter::parse(item)?;
            if !cells.iter().any(|c| filter.matches(c)) {
                let shape: Vec<String> = (0..topology.num_layers())
                    .map(|l| format!("{l}:0..{}:0..{}", topology.rows(l), topology.cols(l)))
                    .collect();
                bail!("--trace-cells {item}: no such cell (layer:i:j of this network: {})", shape.join(", "));
            }
        }
        Ok(())
    }

    /// A simulation spec; with `--trace-json`, also the trace file to flush after the run.
    pub fn spec(
        &self,
        executor: ExecutorArg,
        mode: ModeArg,
        p: f64,
        seed: u64,
    ) -> Result<(SimSpec, Option<TraceFile>)> {
        let trace = match &self.trace_cells {
            Some(t) => CellFilter::parse(t)?,
            None if self.trace_json.is_some() => CellFilter::all(),
            None => CellFilter::none(),
        };
        let (dispatch, file) = match &self.trace_json {
            Some(path) => {
                let (dispatch, file) = crate::trace::dispatch(path)?;
                (Some(dispatch), Some(file))
            }
            None => (None, None),
        };
        let spec = SimSpec {
            executor: self.executor(executor),
            mode: self.mode(mode, p),
            workers: self.workers.max(1),
            record_rounds: true,
            seed,
            trace,
            dispatch,
            ..SimSpec::default()
        };
        Ok((spec, file))
    }
}

/// Whether two paths name the same file (the files need not exist; their folders must, to be
/// told apart through links).
fn same_file(a: &Path, b: &Path) -> bool {
    let resolve = |p: &Path| {
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        match (parent.canonicalize(), p.file_name()) {
            (Ok(dir), Some(name)) => dir.join(name),
            _ => std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
        }
    };
    resolve(a) == resolve(b)
}

/// A run's rule with its grow (training) and validation data.
pub struct Loaded {
    /// The checkpoint.
    pub ckpt: Checkpoint,
    /// The data networks are grown on.
    pub train: Arc<TaskData>,
    /// Held-out data.
    pub val: Arc<TaskData>,
}

impl Loaded {
    /// The rule of `ckpt` with the primary task of `exp` (what `load_run` returns).
    pub fn new(ckpt: Checkpoint, exp: &Experiment) -> Self {
        let task = exp.primary();
        Self { ckpt, train: task.train.clone(), val: task.val.clone() }
    }
}

/// The episode `meta-nca grow` grows with the reference path, for the actors.
pub fn setup(loaded: &Loaded, sizes: &[usize], steps: usize, p: f64, seed: u64) -> Result<Setup> {
    let m = &loaded.ckpt.meta;
    let topology = Topology::dense(sizes, m.config.task.bias)?;
    Ok(Setup::grow_episode(
        loaded.ckpt.rule.clone(),
        m.perception.clone(),
        m.code,
        m.config.task.weight_init,
        topology,
        loaded.train.clone(),
        steps,
        p,
        seed,
    )?)
}

/// Train and validation scores of the network in state `state`.
pub fn scores(world: &World, loaded: &Loaded, state: &[f64]) -> (Score, Score) {
    let net = world.dense_net(state);
    (score(&net, &loaded.train), score(&net, &loaded.val))
}

/// What to grow: layer sizes, steps, firing fraction, seed.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Layer sizes.
    pub sizes: Vec<usize>,
    /// Grow steps.
    pub steps: usize,
    /// Firing fraction (lockstep) or rate (async).
    pub fire_fraction: f64,
    /// Seed of the episode.
    pub seed: u64,
}

/// `meta-nca grow --engine actors --mode async`: grows one network with cells on their own clocks
/// (lockstep grows go through `eval::grow_one` like the reference path's).
pub fn grow(args: &EngineArgs, loaded: &Loaded, plan: Plan, save: &Path) -> Result<()> {
    let Plan { sizes, steps, fire_fraction: p, seed } = plan;
    let sizes = &sizes[..];
    let setup = setup(loaded, sizes, steps, p, seed)?;
    let (spec, trace) = args.sim.spec(args.sim.executor, args.sim.mode, p, seed)?;
    let out: Outcome = meta_nca_sim::run(&setup, &spec)?;
    if let Some(t) = trace {
        t.lock().map_err(|_| anyhow::anyhow!("trace writer poisoned"))?.flush()?;
    }
    let (train, val) = scores(&setup.world, loaded, &out.state);
    let width = setup.world.ctx.spec.state_width();
    // The grow record `plot --grow` reads: step t is every cell after its own t-th round.
    let step = |step: usize, state: &[f64], fired: Vec<bool>| {
        GrowStep::new(step, state, width, fired, scores(&setup.world, loaded, state), None)
    };
    let mut recorded = vec![step(0, &setup.state0, Vec::new())];
    recorded.extend(out.states.iter().zip(&out.fired).enumerate().map(|(t, (s, f))| step(t + 1, s, f.clone())));
    let record = GrowRecord {
        sizes: sizes.to_vec(),
        bias: out.topology.bias(),
        seed,
        fire_fraction: p,
        cells: out.cells(),
        steps: recorded,
        engine: format!("actors (async, {:?} executor)", args.sim.executor).to_lowercase(),
        changes: Vec::new(),
        feedback: if out.topology.feedback_seed().is_some() { out.topology.feedback().collect() } else { Vec::new() },
    };
    record.check().context("the recorded async grow")?;
    write_atomic(save, &serde_json::to_vec(&record)?).with_context(|| format!("saving {}", save.display()))?;
    let s = &out.stats;
    writeln!(
        std::io::stdout(),
        "actors ({:?}, {:?})  seed {seed}  sizes {sizes:?}  steps {steps}  p {p}  final train acc {:.4}  val acc {:.4}  saved {}",
        args.sim.executor,
        args.sim.mode,
        train.acc,
        val.acc,
        save.display()
    )?;
    writeln!(
        std::io::stdout(),
        "cell-steps {}  updates {}  mean |dw| {:.5}  staleness {:?}  rule batches {} (mean {:.1} rows)  {:.3} s",
        s.cell_steps,
        s.updates,
        s.sum_abs_dw / s.updates.max(1) as f64,
        s.staleness,
        s.rule.batches,
        s.rule.mean_batch(),
        s.seconds
    )?;
    Ok(())
}
