//! The public face of the simulation: what to run ([`Setup`], [`SimSpec`]), how to run it
//! ([`Simulation`]: a tokio runtime with the chosen executor, stepped and reshaped between
//! steps; [`run`]: a whole grow in one call), and what came out ([`Outcome`], [`Snapshot`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use meta_nca_rule::init::{HiddenCode, RowSource, WeightInit, carry_plan};
use meta_nca_rule::task_data::TaskData;
use meta_nca_rule::topology::{CellId, Change, Topology};
use rand::Rng;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::instrument::WithSubscriber;

use crate::coord::Collector;
use crate::protocol::{CellDone, NeuronSummary};
use crate::rule_service::{Batching, RuleHandle, RuleStats};
pub use crate::setup::Setup;
use crate::trace::CellFilter;
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
    pub fire_fraction: f64,
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
        Self { fire_fraction: 0.8, max_staleness: 1, jitter: 4, batch_rows: 256, deadline: Duration::from_micros(200) }
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
    /// The network at the end (topology changes included).
    pub topology: Topology,
    /// Final state rows `[cells, 1+d]`, in [`Topology::cells`] order.
    pub state: Vec<f64>,
    /// `weights[t][c]`: weight of cell `c` (the state-row order of step `t`) after step `t`,
    /// when recorded.
    pub weights: Vec<Vec<f64>>,
    /// Counts.
    pub stats: RunStats,
}

impl Outcome {
    /// The cells' ids, in state-row order.
    pub fn cells(&self) -> Vec<CellId> {
        self.topology.cells().copied().collect()
    }
}

/// The simulation between two steps, as its actors report it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// State rows `[cells, 1+d]`, in [`Topology::cells`] order.
    pub state: Vec<f64>,
    /// Every live cell's pre- and post-neuron as the cell itself knows them, in the same
    /// order (checked against the network when gathered).
    pub links: Vec<(u32, u32)>,
    /// Every live cell's fixed feedback weight `B` as the cell itself carries it, in the same
    /// order.
    pub feedback: Vec<f64>,
    /// Per neuron (the batch's neuron order): the summary of the last round it finished,
    /// i.e. what its cells perceived at the last step (`None` before the first step, and for
    /// a neuron that joined since).
    pub summaries: Vec<Option<Arc<NeuronSummary>>>,
}

/// A topology change as the executors apply it: the new network, and for each of its cells
/// and neurons where it comes from.
pub(crate) struct Reshape {
    pub(crate) world: Arc<World>,
    /// Per cell of the new network: the old state row it continues, or a new cell's start.
    pub(crate) cells: Vec<RowSource>,
    /// Per neuron of the new network: the old neuron it continues, or `None`.
    pub(crate) neurons: Vec<Option<u32>>,
    /// The next round: the one new cells join at.
    pub(crate) round: u32,
}

/// Default [`SimSpec::rule_chunk`]. Measured with `bench-actors` (10k cells, lockstep): 1024
/// rows let the rule service start while cells still perceive, instead of one serial pass per
/// step (8192 covered a whole step at 10k cells), and its passes are cheaper per row (no fresh
/// multi-megabyte buffers per pass): shards 0.47 -> 1.0 M cell-steps/s, tasks 0.28 -> 0.34 M.
/// At 1M cells (rule-bound either way) the rate stayed within the host's noise.
pub const RULE_CHUNK: usize = 1024;

/// Everything an executor needs to start.
pub(crate) struct Parts {
    pub(crate) world: Arc<World>,
    pub(crate) cells: Vec<crate::cell::Cell>,
    pub(crate) neurons: Vec<crate::neuron::Neuron>,
    pub(crate) rule: RuleHandle,
    /// Async scheduling jitter.
    pub(crate) jitter: u32,
    /// [`SimSpec::rule_chunk`].
    pub(crate) chunk: usize,
    pub(crate) spawner: Spawner,
    pub(crate) collector: Collector,
    /// Seed of the cells' async clocks (new cells too).
    pub(crate) seed: u64,
    /// Which cells (new ones too) are traced.
    pub(crate) trace: CellFilter,
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
    /// Spawns a tracked task that ends when the run is cancelled (`None`) or on its own.
    pub(crate) fn spawn<F>(&self, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let token = self.token.clone();
        match &self.dispatch {
            Some(d) => {
                self.tracker.spawn(async move { token.run_until_cancelled(task).await }.with_subscriber(d.clone()))
            }
            None => self.tracker.spawn(async move { token.run_until_cancelled(task).await }),
        }
    }

    /// Spawns a tracked task that stops on its own (on a stop message); it is not wrapped in
    /// the cancellation token, which saves a lock per poll. It must watch the token itself
    /// wherever it awaits anything but its inbox.
    pub(crate) fn spawn_stoppable<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> JoinHandle<()> {
        match &self.dispatch {
            Some(d) => self.tracker.spawn(task.with_subscriber(d.clone())),
            None => self.tracker.spawn(task),
        }
    }

    /// Cancels every actor and waits for all of them to stop.
    pub(crate) async fn shutdown(&self) {
        self.tracker.close();
        self.token.cancel();
        self.tracker.wait().await;
    }
}

/// The coordinator of a run, for either executor.
enum Driver {
    Tasks(crate::tasks::Driver),
    Shards(crate::shards::Driver),
}

impl Driver {
    async fn run_async(&mut self) -> Result<()> {
        match self {
            Driver::Tasks(d) => d.run_async().await,
            Driver::Shards(d) => d.run_async().await,
        }
    }
    async fn step(&mut self, round: u32, fire: &[bool]) -> Result<()> {
        match self {
            Driver::Tasks(d) => d.step(round, fire).await,
            Driver::Shards(d) => d.step(round, fire).await,
        }
    }
    /// Every cell's row and every neuron's last summary; `last`: the run ends after it.
    async fn snapshot(&mut self, last: bool) -> Result<Snapshot> {
        match self {
            Driver::Tasks(d) => d.snapshot(last).await,
            Driver::Shards(d) => d.snapshot(last).await,
        }
    }
    async fn reshape(&mut self, reshape: Reshape) -> Result<()> {
        match self {
            Driver::Tasks(d) => d.reshape(reshape).await,
            Driver::Shards(d) => d.reshape(reshape).await,
        }
    }
    async fn finish(self) -> Result<Collector> {
        match self {
            Driver::Tasks(d) => d.finish().await,
            Driver::Shards(d) => d.finish().await,
        }
    }
    fn live_tasks(&self) -> usize {
        match self {
            Driver::Tasks(d) => d.live_tasks(),
            Driver::Shards(d) => d.live_tasks(),
        }
    }
}

/// A running actor simulation of one network: its actors live on a tokio runtime of its own
/// between calls. In lockstep mode it advances one step at a time ([`Self::step`]) and its
/// topology can change between steps ([`Self::reshape`]); [`run`] is the whole grow in one call.
pub struct Simulation {
    /// `None` once a call failed: the actors were stopped then.
    driver: Option<Driver>,
    world: Arc<World>,
    round: u32,
    started: Instant,
    service: Option<std::thread::JoinHandle<RuleStats>>,
    /// `None` once stopped.
    runtime: Option<tokio::runtime::Runtime>,
}

/// The error of a call after the simulation stopped.
fn stopped() -> Error {
    Error::ActorFailed { actor: "simulation".into(), message: "stopped after an earlier failure".into() }
}

impl Simulation {
    /// Starts the actors of `setup` (its starting state; its firing draws are [`run`]'s).
    pub fn start(setup: &Setup, spec: &SimSpec) -> Result<Self> {
        let mut ctx = setup.world.ctx.clone();
        let batching = match spec.mode {
            Mode::Lockstep => {
                // Open-ended: the cells run until they are stopped.
                ctx.rounds = u32::MAX;
                Batching::Announced { chunk: spec.rule_chunk.max(1) }
            }
            Mode::Async(a) => {
                if !(a.fire_fraction > 0.0 && a.fire_fraction <= 1.0) {
                    return Err(Error::Config {
                        key: "fire-rate",
                        message: format!("must be in (0, 1], got {}", a.fire_fraction),
                    });
                }
                ctx.async_mode = true;
                ctx.fire_fraction = a.fire_fraction;
                ctx.max_staleness = a.max_staleness;
                Batching::CountOrDeadline { max_rows: a.batch_rows.max(1), deadline: a.deadline }
            }
        };
        if let Executor::Shards { shards: 0 } = spec.executor {
            return Err(Error::Config { key: "shards", message: "at least one shard is needed".into() });
        }
        let mut world = (*setup.world).clone();
        world.ctx = ctx;
        let world = Arc::new(world);
        let traced = |id: &CellId| spec.trace.matches(id);
        let cells = match &spec.dispatch {
            Some(d) => tracing::dispatcher::with_default(d, || world.make_cells(&setup.state0, spec.seed, &traced))?,
            None => world.make_cells(&setup.state0, spec.seed, &traced)?,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(spec.workers.max(1))
            .enable_time()
            .build()
            .map_err(Error::Runtime)?;
        let (rule, service) =
            RuleHandle::spawn(setup.rule.clone(), batching, runtime.handle().clone()).map_err(Error::Runtime)?;
        let spawner =
            Spawner { tracker: TaskTracker::new(), token: CancellationToken::new(), dispatch: spec.dispatch.clone() };
        let parts = Parts {
            neurons: world.make_neurons(),
            collector: Collector::new(&world, spec.record_weights),
            world: world.clone(),
            cells,
            rule,
            jitter: match spec.mode {
                Mode::Async(a) => a.jitter,
                Mode::Lockstep => 0,
            },
            chunk: spec.rule_chunk.max(1),
            spawner,
            seed: spec.seed,
            trace: spec.trace.clone(),
        };
        let executor = spec.executor;
        // Actors are spawned from inside the runtime (tokio::spawn needs one).
        let driver = runtime.block_on(async move {
            match executor {
                Executor::Tasks => Driver::Tasks(crate::tasks::Driver::start(parts)),
                Executor::Shards { shards } => Driver::Shards(crate::shards::Driver::start(parts, shards)),
            }
        });
        Ok(Self {
            driver: Some(driver),
            world,
            round: 0,
            started: Instant::now(),
            service: Some(service),
            runtime: Some(runtime),
        })
    }

    /// The network as it is now.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The network's topology as it is now.
    pub fn topology(&self) -> &Topology {
        &self.world.topology
    }

    /// Steps done.
    pub fn round(&self) -> u32 {
        self.round
    }

    /// Live tokio tasks of the simulation (cells and neurons with the task executor, shards
    /// with the shard executor).
    pub fn live_tasks(&self) -> usize {
        self.driver.as_ref().map_or(0, Driver::live_tasks)
    }

    /// Runs `job` on the coordinator task inside the runtime (its many wake-ups then stay
    /// inside the worker pool instead of unparking this thread each time). A failure stops
    /// every actor; the simulation refuses further calls.
    fn drive<T, Fut>(&mut self, job: impl FnOnce(Driver) -> Fut) -> Result<T>
    where
        T: Send + 'static,
        Fut: Future<Output = (Driver, Result<T>)> + Send + 'static,
    {
        let runtime = self.runtime.as_ref().ok_or_else(stopped)?;
        let driver = self.driver.take().ok_or_else(stopped)?;
        match runtime.block_on(runtime.spawn(job(driver))) {
            Ok((driver, Ok(value))) => {
                self.driver = Some(driver);
                Ok(value)
            }
            Ok((driver, Err(e))) => {
                let _ = runtime.block_on(driver.finish());
                Err(e)
            }
            Err(e) => Err(Error::ActorFailed { actor: "coordinator".into(), message: e.to_string() }),
        }
    }

    /// Lockstep: one step, firing the cells flagged in `fire` (in [`Topology::cells`] order).
    pub fn step(&mut self, fire: &[bool]) -> Result<()> {
        self.lockstep("step")?;
        if fire.len() != self.world.num_cells() {
            return Err(Error::Config {
                key: "fire",
                message: format!("{} firing flags for {} cells", fire.len(), self.world.num_cells()),
            });
        }
        let (round, fire) = (self.round, fire.to_vec());
        self.drive(move |mut d| async move {
            let r = d.step(round, &fire).await;
            (d, r)
        })?;
        self.round += 1;
        Ok(())
    }

    fn lockstep(&self, what: &str) -> Result<()> {
        if self.world.ctx.async_mode {
            return Err(Error::Config { key: "mode", message: format!("{what} needs lockstep mode") });
        }
        Ok(())
    }

    /// The state rows and the neurons' last summaries, as the actors report them.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        self.gather(false)
    }

    /// A snapshot; `last`: the run ends after it, so the cells hand their rows over.
    fn gather(&mut self, last: bool) -> Result<Snapshot> {
        self.lockstep("a snapshot")?;
        self.drive(move |mut d| async move {
            let r = d.snapshot(last).await;
            (d, r)
        })
    }

    /// Lockstep, between steps: continues on `topology`. Surviving cells (matched by layer
    /// and stable index) keep their state and their actors; removed cells' and neurons'
    /// actors end; new cells start as [`carry_plan`] says (`code`, `init`, drawn from `rng`
    /// exactly as the reference path's [`meta_nca_rule::reference::Grower::reshape`] draws
    /// them). An error (an index that does not fit `code`) leaves the simulation unchanged.
    pub fn reshape<R: Rng>(
        &mut self,
        topology: Topology,
        code: &HiddenCode,
        init: WeightInit,
        rng: &mut R,
    ) -> Result<()> {
        let data = self.world.data.clone();
        self.reshape_on(topology, data, code, init, rng)
    }

    /// [`Self::reshape`] onto new data (a new phase of a changing task): every neuron learns
    /// its new place and what it knows of the data (input columns, labels) as the topology
    /// changes, and every later step sees `data`, which must fit `topology`.
    pub fn reshape_on<R: Rng>(
        &mut self,
        topology: Topology,
        data: Arc<TaskData>,
        code: &HiddenCode,
        init: WeightInit,
        rng: &mut R,
    ) -> Result<()> {
        self.lockstep("a topology change")?;
        let cells = carry_plan(code, init, &self.world.topology, &topology, rng)?;
        let world = Arc::new(self.world.reshaped(topology, data)?);
        let neurons = world.neuron_sources(&self.world);
        let reshape = Reshape { world: world.clone(), cells, neurons, round: self.round };
        self.drive(move |mut d| async move {
            let r = d.reshape(reshape).await;
            (d, r)
        })?;
        self.world = world;
        Ok(())
    }

    /// Lockstep: applies one topology operation between steps (see [`Self::reshape`]); an
    /// operation on something that does not exist is an error and changes nothing.
    pub fn apply<R: Rng>(&mut self, change: &Change, code: &HiddenCode, init: WeightInit, rng: &mut R) -> Result<()> {
        let mut topology = (*self.world.topology).clone();
        topology.apply(change)?;
        self.reshape(topology, code, init, rng)
    }

    /// Stops every actor and returns the final state and counts.
    pub fn finish(mut self) -> Result<Outcome> {
        let lockstep = !self.world.ctx.async_mode;
        let state = if lockstep { Some(self.gather(true)?.state) } else { None };
        let seconds = self.started.elapsed().as_secs_f64();
        let (collector, rule) = self.stop();
        let collector = collector.ok_or_else(stopped)??;
        let state = state.unwrap_or_else(|| collector.state.clone());
        Ok(collector.finish(state, (*self.world.topology).clone(), seconds, rule?))
    }

    /// Stops every actor (`None`: they were stopped by an earlier failure), then the runtime
    /// (whatever is left on it goes, so no rule handle outlives it), then the rule service,
    /// which ends with the last handle.
    fn stop(&mut self) -> (Option<Result<Collector>>, Result<RuleStats>) {
        let collector = match (self.driver.take(), &self.runtime) {
            (Some(driver), Some(runtime)) => {
                Some(runtime.block_on(runtime.spawn(driver.finish())).unwrap_or_else(|e| {
                    Err(Error::ActorFailed { actor: "coordinator".into(), message: e.to_string() })
                }))
            }
            _ => None,
        };
        drop(self.runtime.take());
        let rule = match self.service.take() {
            Some(service) => service
                .join()
                .map_err(|_| Error::ActorFailed { actor: "rule service".into(), message: "panicked".into() }),
            None => Ok(RuleStats::default()),
        };
        (collector, rule)
    }
}

impl Drop for Simulation {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Runs `setup` as `spec` says: every step of `setup.fires` in lockstep, or every cell on its
/// own clock for as many rounds in async mode.
pub fn run(setup: &Setup, spec: &SimSpec) -> Result<Outcome> {
    let mut sim = Simulation::start(setup, spec)?;
    sim.started = Instant::now();
    match spec.mode {
        Mode::Lockstep => {
            for fire in &setup.fires {
                sim.step(fire)?;
            }
        }
        Mode::Async(_) => {
            sim.drive(|mut d| async move {
                let r = d.run_async().await;
                (d, r)
            })?;
        }
    }
    sim.finish()
}
