//! The public face of the simulation: how to run it ([`SimSpec`], [`Mode`], [`Executor`]),
//! the running simulation ([`Simulation`]: a tokio runtime with the chosen executor, stepped
//! and reshaped between steps) and a whole grow in one call ([`run`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use meta_nca_rule::init::{HiddenCode, WeightInit, carry_plan};
use meta_nca_rule::task_data::TaskData;
use meta_nca_rule::topology::{CellId, Change, Topology};
use rand::Rng;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use crate::cell::Cell;
use crate::executor::coord::Collector;
use crate::executor::shards::ShardDriver;
use crate::executor::tasks::TaskDriver;
use crate::executor::{DriverHandle, DriverMsg, Parts, Reshape, Spawner};
use crate::host::Host;
use crate::neuron::Neuron;
use crate::outcome::{Outcome, Snapshot};
use crate::rule_service::{Batching, RuleStats};
use crate::setup::Setup;
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
    /// Keep every cell's state row and firing after every step ([`Outcome::states`],
    /// [`Outcome::fired`], [`Outcome::weights`]).
    pub record_rounds: bool,
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

impl SimSpec {
    /// Refuses impossible settings.
    pub(crate) fn validate(&self) -> Result<()> {
        if let Mode::Async(a) = self.mode
            && !(a.fire_fraction > 0.0 && a.fire_fraction <= 1.0)
        {
            let message = format!("must be in (0, 1], got {}", a.fire_fraction);
            return Err(Error::Config { key: "fire-rate", message });
        }
        if let Executor::Shards { shards: 0 } = self.executor {
            return Err(Error::Config { key: "shards", message: "at least one shard is needed".into() });
        }
        Ok(())
    }

    /// When the rule service runs a pass: lockstep rounds announce their rows (passes of at
    /// most [`Self::rule_chunk`] rows); async cells are served by count or deadline.
    pub(crate) fn batching(&self) -> Batching {
        match self.mode {
            Mode::Lockstep => Batching::Announced { chunk: self.rule_chunk.max(1) },
            Mode::Async(a) => Batching::CountOrDeadline { max_rows: a.batch_rows.max(1), deadline: a.deadline },
        }
    }
}

impl Default for SimSpec {
    fn default() -> Self {
        Self {
            executor: Executor::Tasks,
            mode: Mode::Lockstep,
            workers: 2,
            record_rounds: false,
            seed: 0,
            trace: CellFilter::none(),
            dispatch: None,
            rule_chunk: RULE_CHUNK,
        }
    }
}

/// Default [`SimSpec::rule_chunk`]. Measured with `bench-actors` (10k cells, lockstep): 1024
/// rows let the rule service start while cells still perceive, instead of one serial pass per
/// step (8192 covered a whole step at 10k cells), and its passes are cheaper per row (no fresh
/// multi-megabyte buffers per pass): shards 0.47 -> 1.0 M cell-steps/s, tasks 0.28 -> 0.34 M.
/// At 1M cells (rule-bound either way) the rate stayed within the host's noise.
pub const RULE_CHUNK: usize = 1024;

/// A running actor simulation of one network: its actors live on a tokio runtime between
/// calls (its own; the engine's simulations share one). In lockstep mode it advances one step at a time ([`Self::step`]) and its
/// topology can change between steps ([`Self::reshape`]); [`run`] is the whole grow in one call.
pub struct Simulation {
    /// The coordinator actor; `None` once stopped (a call failed, or the run finished).
    driver: Option<DriverHandle>,
    /// The actors' tasks (not the coordinator's).
    tasks: TaskTracker,
    world: Arc<World>,
    round: u32,
    started: Instant,
    /// Its runtime and rule service, its own or shared.
    host: Host,
}

/// The error of a call after the simulation stopped.
fn stopped() -> Error {
    Error::ActorFailed { actor: "simulation".into(), message: "stopped after an earlier failure".into() }
}

impl Simulation {
    /// Starts the actors of `setup` (its starting state; its firing draws are [`run`]'s).
    pub fn start(setup: &Setup, spec: &SimSpec) -> Result<Self> {
        spec.validate()?;
        Self::start_on(setup, spec, Host::new(&setup.rule, spec.workers, spec.batching())?)
    }

    /// [`Self::start`] on `host`, whose rule service must batch as [`SimSpec::batching`] says
    /// and run `setup`'s rule.
    pub(crate) fn start_on(setup: &Setup, spec: &SimSpec, host: Host) -> Result<Self> {
        spec.validate()?;
        let mut ctx = setup.world.ctx.clone();
        match spec.mode {
            // Open-ended: the cells run until they are stopped.
            Mode::Lockstep => ctx.rounds = u32::MAX,
            Mode::Async(a) => {
                ctx.async_mode = true;
                ctx.fire_fraction = a.fire_fraction;
                ctx.max_staleness = a.max_staleness;
            }
        }
        ctx.record = spec.record_rounds;
        let mut world = (*setup.world).clone();
        world.ctx = ctx;
        let world = Arc::new(world);
        let traced = |id: &CellId| spec.trace.matches(id);
        let cells = match &spec.dispatch {
            Some(d) => tracing::dispatcher::with_default(d, || Cell::all(&world, &setup.state0, spec.seed, &traced))?,
            None => Cell::all(&world, &setup.state0, spec.seed, &traced)?,
        };
        let (Some(runtime), Some(rule)) = (host.runtime(), host.rule()) else { return Err(stopped()) };
        let spawner = Spawner::new(spec.dispatch.clone());
        let tasks = spawner.tracker.clone();
        let parts = Parts {
            neurons: Neuron::all(&world),
            collector: Collector::new(&world),
            world: world.clone(),
            cells,
            rule: rule.clone(),
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
                Executor::Tasks => DriverHandle::spawn(TaskDriver::start(parts)),
                Executor::Shards { shards } => DriverHandle::spawn(ShardDriver::start(parts, shards)),
            }
        });
        Ok(Self { driver: Some(driver), tasks, world, round: 0, started: Instant::now(), host })
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
        self.tasks.len()
    }

    /// Asks the coordinator actor (see [`DriverHandle`]). A failure stops every actor; the
    /// simulation refuses further calls.
    fn call<T>(&mut self, msg: impl FnOnce(oneshot::Sender<Result<T>>) -> DriverMsg) -> Result<T> {
        let (Some(runtime), Some(driver)) = (self.host.runtime(), &self.driver) else { return Err(stopped()) };
        let answer = runtime.block_on(driver.ask(msg));
        if answer.is_err() {
            let _ = self.halt();
        }
        answer
    }

    /// Stops every actor through the coordinator, which then ends (`None`: it already had).
    fn halt(&mut self) -> Option<Result<Collector>> {
        let (driver, runtime) = (self.driver.take()?, self.host.runtime()?);
        Some(runtime.block_on(driver.ask(|respond_to| DriverMsg::Finish { respond_to })))
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
        let fired = fire.iter().filter(|f| **f).count();
        self.call(|respond_to| DriverMsg::Step { round, fire, respond_to })?;
        tracing::debug!(round, cells = self.world.num_cells(), fired, "actor round");
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
        self.call(|respond_to| DriverMsg::Snapshot { last, respond_to })
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
        self.call(|respond_to| DriverMsg::Reshape { reshape, respond_to })?;
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

    /// Stops every actor (`None`: they were stopped by an earlier failure), then lets go of
    /// the runtime and the rule service (see [`Host::stop`]).
    fn stop(&mut self) -> (Option<Result<Collector>>, Result<RuleStats>) {
        let collector = self.halt();
        (collector, self.host.stop())
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
            sim.call(|respond_to| DriverMsg::RunAsync { respond_to })?;
        }
    }
    sim.finish()
}
