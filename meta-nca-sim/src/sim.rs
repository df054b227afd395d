//! The public face of the simulation: what to run ([`Setup`], [`SimSpec`]), how to run it
//! ([`run`]: builds a tokio runtime and the chosen executor), and what came out ([`Outcome`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use meta_nca_rule::topology::CellId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::instrument::WithSubscriber;

use crate::protocol::CellDone;
use crate::rule_service::{Batching, RuleHandle, RuleStats};
use crate::trace::CellFilter;
pub use crate::setup::Setup;
use crate::world::World;
use crate::{Error, Result};

/// How cells are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    /// One tokio task per cell and per neuron, one message per delivery.
    Tasks,
    /// `shards` tokio tasks, each hosting a block of cells and neurons; batched messages.
    Shards {
        /// Number of shards.
        shards: usize,
    },
}

/// Async-mode settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AsyncSpec {
    /// Probability that a cell fires at a tick of its clock.
    pub fire_rate: f64,
    /// How many rounds older than its own a summary a cell may use.
    pub max_staleness: u32,
    /// Scheduling jitter: before each tick a cell yields to the scheduler up to this many
    /// times (uniformly drawn); shards defer the tick as many drain cycles.
    pub jitter: u32,
    /// The rule service runs when this many queries wait...
    pub batch_rows: usize,
    /// ...or this long after the oldest waiting query.
    pub deadline: Duration,
}

impl Default for AsyncSpec {
    fn default() -> Self {
        Self { fire_rate: 0.8, max_staleness: 1, jitter: 4, batch_rows: 256, deadline: Duration::from_micros(200) }
    }
}

/// Lockstep (a barrier per step, the episode's firing draws) or async (own clocks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// A barrier per step; fires exactly the cells the reference path fires.
    Lockstep,
    /// No global barrier.
    Async(AsyncSpec),
}

/// How to run a simulation.
#[derive(Debug, Clone)]
pub struct SimSpec {
    /// Scheduling.
    pub executor: Executor,
    /// Mode.
    pub mode: Mode,
    /// tokio worker threads.
    pub workers: usize,
    /// Keep every cell's weight after every step ([`Outcome::weights`]).
    pub record_weights: bool,
    /// Seed of the cells' async clocks.
    pub seed: u64,
    /// Cells that get a span and an update event.
    pub trace: CellFilter,
    /// Where the traced cells' spans and events go (default: the global subscriber). The
    /// actors' futures run under it, so a caller can send them to a file of its own.
    pub dispatch: Option<tracing::Dispatch>,
    /// Largest lockstep rule pass, and the most rows a shard has at the rule service at once
    /// (its perception rows are most of a shard's transient memory; small values exercise the
    /// shards' flow control in tests).
    pub rule_chunk: usize,
}

impl Default for SimSpec {
    fn default() -> Self {
        Self {
            executor: Executor::Tasks,
            mode: Mode::Lockstep,
            workers: 2,
            record_weights: false,
            seed: 0,
            trace: CellFilter::none(),
            dispatch: None,
            rule_chunk: RULE_CHUNK,
        }
    }
}

/// Counts of what the cells did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RunStats {
    /// Cell-rounds completed (cells × steps).
    pub cell_steps: u64,
    /// Rounds in which a cell fired.
    pub updates: u64,
    /// Sum of `|dw|` over updates.
    pub sum_abs_dw: f64,
    /// `staleness[k]`: updates (fired or not) that used summaries `k` rounds old.
    pub staleness: Vec<u64>,
    /// Wall-clock seconds of the simulation (runtime start-up excluded).
    pub seconds: f64,
    /// The rule service's counts.
    pub rule: RuleStats,
}

impl RunStats {
    /// Adds one finished round.
    pub fn record(&mut self, d: &CellDone) {
        self.cell_steps += 1;
        if d.fired {
            self.updates += 1;
            self.sum_abs_dw += d.dw.abs();
        }
        let k = d.staleness as usize;
        if self.staleness.len() <= k {
            self.staleness.resize(k + 1, 0);
        }
        self.staleness[k] += 1;
    }

    /// Adds another run's (or another actor's) counts.
    pub fn merge(&mut self, other: &RunStats) {
        self.cell_steps += other.cell_steps;
        self.updates += other.updates;
        self.sum_abs_dw += other.sum_abs_dw;
        if self.staleness.len() < other.staleness.len() {
            self.staleness.resize(other.staleness.len(), 0);
        }
        self.staleness.iter_mut().zip(&other.staleness).for_each(|(a, b)| *a += b);
        self.rule.batches += other.rule.batches;
        self.rule.rows += other.rule.rows;
        self.rule.max_batch = self.rule.max_batch.max(other.rule.max_batch);
        self.rule.forward_seconds += other.rule.forward_seconds;
    }

    /// Cell-steps per second.
    pub fn rate(&self) -> f64 {
        self.cell_steps as f64 / self.seconds.max(1e-12)
    }
}

/// What a simulation produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Final state rows `[cells, 1+d]`, in topology order.
    pub state: Vec<f64>,
    /// `weights[t][c]`: weight of cell `c` after step `t` (when recorded).
    pub weights: Vec<Vec<f64>>,
    /// Counts.
    pub stats: RunStats,
}

impl Outcome {
    /// The cells' ids, in state-row order.
    pub fn cells(world: &World) -> Vec<CellId> {
        world.topology.cells().copied().collect()
    }
}

/// Collects the cells' reports into an [`Outcome`].
pub(crate) struct Collector {
    width: usize,
    pub(crate) state: Vec<f64>,
    pub(crate) weights: Vec<Vec<f64>>,
    pub(crate) stats: RunStats,
    pub(crate) finished: usize,
}

impl Collector {
    pub(crate) fn new(world: &World, record: bool) -> Self {
        let width = world.ctx.spec.state_width();
        let rounds = if record { world.ctx.rounds as usize } else { 0 };
        Self {
            width,
            state: vec![0.0; world.num_cells() * width],
            weights: vec![vec![0.0; world.num_cells()]; rounds],
            stats: RunStats::default(),
            finished: 0,
        }
    }

    /// Whether every cell's weight after every step is kept (then actors send every report).
    pub(crate) fn recording(&self) -> bool {
        !self.weights.is_empty()
    }

    /// Adds counts summed by an actor and the final states it collected.
    pub(crate) fn absorb(&mut self, stats: &RunStats, finals: Vec<(u32, Vec<f64>)>) {
        self.stats.merge(stats);
        for (c, s) in finals {
            let c = c as usize;
            self.state[c * self.width..(c + 1) * self.width].copy_from_slice(&s);
            self.finished += 1;
        }
    }

    pub(crate) fn add(&mut self, d: CellDone) {
        self.stats.record(&d);
        let c = d.cell as usize;
        if let Some(row) = self.weights.get_mut(d.round as usize) {
            row[c] = d.w;
        }
        if let Some(s) = d.final_state {
            self.state[c * self.width..(c + 1) * self.width].copy_from_slice(&s);
            self.finished += 1;
        }
    }

    pub(crate) fn finish(self, seconds: f64, rule: RuleStats) -> Outcome {
        let mut stats = self.stats;
        stats.seconds = seconds;
        stats.rule = rule;
        Outcome { state: self.state, weights: self.weights, stats }
    }
}

/// Default [`SimSpec::rule_chunk`]. Measured with `bench-actors` (10k cells, lockstep): 1024
/// rows let the rule service start while cells still perceive, instead of one serial pass per
/// step (8192 covered a whole step at 10k cells), and its passes are cheaper per row (no fresh
/// multi-megabyte buffers per pass): shards 0.47 -> 1.0 M cell-steps/s, tasks 0.28 -> 0.34 M.
/// At 1M cells (rule-bound either way) the rate stayed within the host's noise.
pub const RULE_CHUNK: usize = 1024;

/// Everything an executor needs to run one simulation.
pub(crate) struct Parts {
    pub(crate) world: Arc<World>,
    pub(crate) cells: Vec<crate::cell::Cell>,
    pub(crate) neurons: Vec<crate::neuron::Neuron>,
    pub(crate) rule: RuleHandle,
    /// Lockstep firing flags per step.
    pub(crate) fires: Vec<Vec<bool>>,
    /// Async scheduling jitter.
    pub(crate) jitter: u32,
    /// [`SimSpec::rule_chunk`].
    pub(crate) chunk: usize,
    pub(crate) spawner: Spawner,
    pub(crate) collector: Collector,
}

/// Spawns the actors of one run: every task is tracked, stops when the token is cancelled,
/// and runs under the run's tracing dispatcher when it has one.
#[derive(Clone)]
pub(crate) struct Spawner {
    pub(crate) tracker: TaskTracker,
    pub(crate) token: CancellationToken,
    dispatch: Option<tracing::Dispatch>,
}

impl Spawner {
    pub(crate) fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) {
        let token = self.token.clone();
        match &self.dispatch {
            Some(d) => {
                self.tracker.spawn(async move { token.run_until_cancelled(task).await }.with_subscriber(d.clone()));
            }
            None => {
                self.tracker.spawn(async move { token.run_until_cancelled(task).await });
            }
        }
    }

    /// Spawns a tracked task that stops on its own (on a stop message); it is not wrapped in
    /// the cancellation token, which saves a lock per poll. It must watch the token itself
    /// wherever it awaits anything but its inbox.
    pub(crate) fn spawn_stoppable<F: Future<Output = ()> + Send + 'static>(&self, task: F) {
        match &self.dispatch {
            Some(d) => {
                self.tracker.spawn(task.with_subscriber(d.clone()));
            }
            None => {
                self.tracker.spawn(task);
            }
        }
    }

    /// Cancels every actor and waits for all of them to stop.
    pub(crate) async fn shutdown(&self) {
        self.tracker.close();
        self.token.cancel();
        self.tracker.wait().await;
    }
}

/// Runs `setup` as `spec` says, on a fresh tokio runtime with `spec.workers` workers.
pub fn run(setup: &Setup, spec: &SimSpec) -> Result<Outcome> {
    let mut ctx = setup.world.ctx.clone();
    let batching = match spec.mode {
        Mode::Lockstep => Batching::Announced { chunk: spec.rule_chunk.max(1) },
        Mode::Async(a) => {
            if !(a.fire_rate > 0.0 && a.fire_rate <= 1.0) {
                return Err(Error::Config { key: "fire-rate", message: format!("must be in (0, 1], got {}", a.fire_rate) });
            }
            ctx.async_mode = true;
            ctx.fire_rate = a.fire_rate;
            ctx.max_staleness = a.max_staleness;
            Batching::CountOrDeadline { max_rows: a.batch_rows.max(1), deadline: a.deadline }
        }
    };
    if let Executor::Shards { shards: 0 } = spec.executor {
        return Err(Error::Config { key: "shards", message: "at least one shard is needed".into() });
    }
    let world = if ctx.async_mode {
        let mut world = (*setup.world).clone();
        world.ctx = ctx;
        Arc::new(world)
    } else {
        setup.world.clone()
    };
    let traced = |id: &CellId| spec.trace.matches(id);
    let cells = match &spec.dispatch {
        Some(d) => tracing::dispatcher::with_default(d, || world.make_cells(&setup.state0, spec.seed, &traced))?,
        None => world.make_cells(&setup.state0, spec.seed, &traced)?,
    };
    let spawner = Spawner { tracker: TaskTracker::new(), token: CancellationToken::new(), dispatch: spec.dispatch.clone() };
    let neurons = world.make_neurons();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(spec.workers.max(1))
        .enable_time()
        .build()
        .map_err(Error::Runtime)?;
    let (rule, service) = RuleHandle::spawn(setup.rule.clone(), batching, runtime.handle().clone()).map_err(Error::Runtime)?;
    let collector = Collector::new(&world, spec.record_weights);
    let start = Instant::now();
    let jitter = match spec.mode {
        Mode::Async(a) => a.jitter,
        Mode::Lockstep => 0,
    };
    // The coordinator runs as a task on the runtime, not on this thread: its many wake-ups
    // then stay inside the worker pool instead of unparking a foreign thread each time.
    let chunk = spec.rule_chunk.max(1);
    let parts = Parts { world, cells, neurons, rule, fires: setup.fires.clone(), jitter, chunk, spawner, collector };
    let executor = spec.executor;
    let coordinator = async move {
        match executor {
            Executor::Tasks => crate::tasks::run(parts).await,
            Executor::Shards { shards } => crate::shards::run(parts, shards).await,
        }
    };
    let result = runtime.block_on(async { tokio::spawn(coordinator).await }).unwrap_or_else(|e| {
        Err(Error::ActorFailed { actor: "coordinator".into(), message: e.to_string() })
    });
    let seconds = start.elapsed().as_secs_f64();
    drop(runtime);
    let rule_stats = service
        .join()
        .map_err(|_| Error::ActorFailed { actor: "rule service".into(), message: "panicked".into() })?;
    Ok(result?.finish(seconds, rule_stats))
}
