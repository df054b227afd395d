//! The task-per-cell executor: every cell and every neuron is its own tokio task with an
//! unbounded inbox, and every message is one channel send, except reports, drives and
//! backward parts, which are summed on the way into one message per neuron, kind and round.
//! Unbounded sends never wait, so the cycles that neighbouring cells and neurons form can
//! never deadlock; the protocol bounds how many messages a round can produce. The [`TaskDriver`] drives lockstep
//! rounds (the barrier), changes the topology between them, or just waits for every cell to
//! finish (async). A querying cell awaits its rule answer on a oneshot (its inbox fills
//! meanwhile and is drained in one go afterwards).
//!
//! Topology changes: the tasks of surviving cells and neurons live on and are told their new
//! place and routing ([`Inbox::Rewire`]); removed ones get [`Inbox::Stop`] and their tasks
//! end before the change returns; new ones are spawned into the running simulation. A send to
//! an inbox whose task has ended is reported as a failure, never dropped silently.
//!
//! Shutdown: the rule service is closed (a cell still awaiting an answer gets none and stops),
//! a stop message in every inbox, a `TaskTracker` to wait for all of them (see `Spawner`); a
//! panicking task reports itself through its [`FailGuard`] and cancels the rest instead of
//! leaving the coordinator hanging.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use meta_nca_rule::init::RowSource;
use meta_nca_rule::random::xorshift;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use crate::Result;
use crate::cell::Cell;
use crate::executor::coord::{Collector, CoordMsg, Coordinator, FailGuard};
use crate::executor::{Driver, Parts, Reshape, Spawner, missing};
use crate::neuron::Neuron;
use crate::outcome::{RunStats, Snapshot};
use crate::protocol::{CellDone, CellMsg, Contribution, Fan, NeuronMsg, Outbox, Partial};
use crate::rule_service::{Answer, Reply, RuleHandle};
use crate::trace::CellFilter;
use crate::world::World;

/// What a task's inbox carries: a protocol message, or a word from the coordinator (which
/// only speaks between lockstep rounds, when no protocol message is in flight).
#[derive(Debug)]
enum Inbox<M> {
    /// A protocol message.
    Msg(M),
    /// The network changed: the actor's new index, network and routing.
    Rewire { index: u32, world: Arc<World>, routes: Arc<Routes> },
    /// Report your state (a cell: its row and counts; a neuron: its last summary); `last`:
    /// the run is ending, a cell hands its row over instead of copying it.
    Snapshot { last: bool },
    /// Stop (removed, or the run is over); a cell sends its counts first.
    Stop,
}

/// Reports, drives or backward parts to one neuron being summed on the way: `(round, kind,
/// sum so far)`, kind 0/1 = reports of the in/out fan, 2 = drives, 3 = backward parts.
type Sums = Mutex<Vec<(u32, u8, Partial)>>;

/// Every inbox, indexed like the world's cells and neurons.
#[derive(Debug)]
struct Routes {
    cells: Vec<UnboundedSender<Inbox<CellMsg>>>,
    neurons: Vec<UnboundedSender<Inbox<NeuronMsg>>>,
    /// Per neuron: its reports and drives summed on the way (see [`TaskOut::to_neuron`]).
    sums: Vec<Sums>,
    coord: UnboundedSender<CoordMsg>,
    /// Whether every round's report goes to the coordinator (recording weights); otherwise
    /// cells count themselves off `barrier` and send their counts when asked.
    record: bool,
    /// Lockstep: cells still to finish the round; the last one wakes the coordinator.
    remaining: Arc<AtomicUsize>,
    barrier: Arc<Notify>,
    /// The run is over: actors are stopping, and messages still in flight (async summaries
    /// for cells that finished with older ones) have nobody left to matter to.
    closing: AtomicBool,
}

impl Routes {
    /// Sends `msg` to `inbox`; a send to an actor whose task has ended is a failure of the
    /// run (a message would be lost), reported to the coordinator.
    fn send<M>(&self, inbox: &UnboundedSender<Inbox<M>>, msg: M, to: impl FnOnce() -> String) {
        if inbox.send(Inbox::Msg(msg)).is_err() && !self.closing.load(Ordering::Acquire) {
            let message = "a message to it was lost: its task has ended".into();
            let _ = self.coord.send(CoordMsg::Failed { actor: to(), message });
        }
    }
}

/// One actor's outbox: sends go straight to the destination's inbox.
struct TaskOut<'a> {
    routes: &'a Routes,
    world: &'a World,
    /// Cells' outboxes have the rule service (neurons never query it).
    rule: Option<&'a RuleHandle>,
    /// The answer to the query the cell just sent.
    answer: Option<oneshot::Receiver<Option<Answer>>>,
    tick: bool,
    /// The owning cell's counts, sent when the cell finishes or is asked.
    stats: &'a mut RunStats,
}

impl Outbox for TaskOut<'_> {
    fn to_neuron(&mut self, neuron: u32, msg: NeuronMsg) {
        self.routes.send(&self.routes.neurons[neuron as usize], msg, || format!("neuron {neuron}"));
    }
    /// Reports, drives and backward parts are summed on the way, as the shards do: the cell
    /// adds its part to the neuron's running sum under a lock, and the last cell of the fan
    /// sends the neuron one message with the whole sum. A neuron needs every part of a round
    /// before it acts, so this changes no outcome, and it saves ~3 channel messages and
    /// ~1.1-1.7 neuron wake-ups per cell-step (counted at 10k cells).
    fn contribute(&mut self, neuron: u32, round: u32, part: Contribution<'_>) {
        let n = neuron as usize;
        let slot = part.slot();
        let expected = self.world.fan(neuron, part.fan()).len();
        let complete = if expected <= 1 {
            Some(Partial::of(&part))
        } else {
            let mut sums = self.routes.sums[n].lock().unwrap_or_else(|e| e.into_inner());
            match sums.iter().position(|(r, k, _)| *r == round && *k == slot) {
                Some(i) => {
                    sums[i].2.add(&part);
                    (sums[i].2.count as usize >= expected).then(|| sums.swap_remove(i).2)
                }
                None => {
                    sums.push((round, slot, Partial::of(&part)));
                    None
                }
            }
        };
        if let Some(sum) = complete {
            self.routes.send(&self.routes.neurons[n], part.message(round, sum), || format!("neuron {neuron}"));
        }
    }
    fn broadcast(&mut self, neuron: u32, fan: Fan, msg: CellMsg) {
        for &c in self.world.fan(neuron, fan) {
            self.routes.send(&self.routes.cells[c as usize], msg.clone(), || format!("cell {}", self.world.cell_id(c)));
        }
    }
    fn query(&mut self, _cell: u32, width: usize, perceive: impl FnOnce(&mut [f64])) {
        let mut perception = vec![0.0; width];
        perceive(&mut perception);
        let (tx, rx) = oneshot::channel();
        if let Some(rule) = self.rule {
            rule.query(perception, 1, Reply::new(move |answer| drop(tx.send(answer))));
        }
        self.answer = Some(rx);
    }
    fn done(&mut self, mut done: CellDone) {
        if self.routes.record {
            let _ = self.routes.coord.send(CoordMsg::Done(done));
            return;
        }
        self.stats.record(&done);
        if let Some(state) = done.final_state.take() {
            let stats = std::mem::take(&mut *self.stats);
            let _ = self.routes.coord.send(CoordMsg::Progress { stats, finals: vec![(done.cell, state)] });
        }
        if !self.world.ctx.async_mode && self.routes.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.routes.barrier.notify_one();
        }
    }
    fn tick_later(&mut self, _cell: u32) {
        self.tick = true;
    }
}

/// What every cell task gets besides its cell and inbox.
#[derive(Clone)]
struct CellEnv {
    rule: RuleHandle,
    jitter: u32,
}

async fn cell_task(
    mut cell: Cell,
    mut rx: UnboundedReceiver<Inbox<CellMsg>>,
    mut world: Arc<World>,
    mut routes: Arc<Routes>,
    env: CellEnv,
    guard: FailGuard,
) {
    let mut rng = u64::from(cell.index).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut stats = RunStats::default();
    while let Some(item) = rx.recv().await {
        let mut msg = match item {
            Inbox::Msg(msg) => msg,
            Inbox::Rewire { index, world: w, routes: r } => {
                cell.place(&w, index);
                (world, routes) = (w, r);
                continue;
            }
            Inbox::Snapshot { last } => {
                let row = if last { cell.take_state() } else { cell.state().to_vec() };
                let cells = vec![(cell.index, cell.neurons(), cell.feedback(), row)];
                let stats = std::mem::take(&mut stats);
                let _ = routes.coord.send(CoordMsg::Snapshot { stats, cells, neurons: Vec::new() });
                continue;
            }
            Inbox::Stop => break,
        };
        loop {
            let rule = Some(&env.rule);
            let mut out =
                TaskOut { routes: &routes, world: &world, rule, answer: None, tick: false, stats: &mut stats };
            cell.handle(msg, &world.ctx, &mut out);
            if let Some(answer) = out.answer.take() {
                // No select on the run's cancellation token (a waiter registration under a
                // mutex per query): a closed service answers `None` (see `Driver::finish`).
                match answer.await {
                    Ok(Some(a)) => msg = CellMsg::Update { block: a.block, row: a.first as u32 },
                    _ => return guard.fail("the rule service stopped answering".into()),
                }
            } else if out.tick {
                if env.jitter > 0 {
                    for _ in 0..xorshift(&mut rng) % u64::from(env.jitter + 1) {
                        tokio::task::yield_now().await;
                    }
                }
                msg = CellMsg::Tick;
            } else {
                break;
            }
        }
    }
    if stats.cell_steps > 0 {
        let _ = routes.coord.send(CoordMsg::Progress { stats, finals: Vec::new() });
    }
}

async fn neuron_task(
    mut neuron: Neuron,
    mut rx: UnboundedReceiver<Inbox<NeuronMsg>>,
    mut world: Arc<World>,
    mut routes: Arc<Routes>,
    _guard: FailGuard,
) {
    let mut unused = RunStats::default();
    while let Some(item) = rx.recv().await {
        match item {
            Inbox::Msg(msg) => {
                let mut out = TaskOut {
                    routes: &routes,
                    world: &world,
                    rule: None,
                    answer: None,
                    tick: false,
                    stats: &mut unused,
                };
                neuron.handle(msg, &world.ctx, &mut out);
            }
            Inbox::Rewire { index, world: w, routes: r } => {
                neuron.place(&w, index);
                (world, routes) = (w, r);
            }
            Inbox::Snapshot { .. } => {
                let neurons = vec![(neuron.index, neuron.last_summary().cloned())];
                let _ =
                    routes.coord.send(CoordMsg::Snapshot { stats: RunStats::default(), cells: Vec::new(), neurons });
            }
            Inbox::Stop => break,
        }
    }
}

/// The coordinator's side of a task-per-cell simulation: the routes, the tasks, and the
/// coordinator's inbox.
pub(crate) struct TaskDriver {
    world: Arc<World>,
    routes: Arc<Routes>,
    /// The task of every cell and neuron, indexed like the world's.
    cell_tasks: Vec<JoinHandle<()>>,
    neuron_tasks: Vec<JoinHandle<()>>,
    coord: Coordinator,
    env: CellEnv,
    spawner: Spawner,
    /// Seed of new cells' clocks, and which of them are traced.
    seed: u64,
    trace: CellFilter,
}

impl TaskDriver {
    /// Spawns one task per cell and per neuron.
    pub(crate) fn start(parts: Parts) -> Self {
        let Parts { world, cells, neurons, rule, jitter, spawner, collector, seed, trace, .. } = parts;
        let coord = Coordinator::new(collector);
        let (cell_tx, cell_rx): (Vec<_>, Vec<_>) = (0..cells.len()).map(|_| unbounded_channel()).unzip();
        let (neuron_tx, neuron_rx): (Vec<_>, Vec<_>) = (0..neurons.len()).map(|_| unbounded_channel()).unzip();
        let routes = Arc::new(Routes {
            sums: (0..neuron_tx.len()).map(|_| Sums::default()).collect(),
            cells: cell_tx,
            neurons: neuron_tx,
            coord: coord.sender(),
            record: coord.collector.recording(),
            remaining: Arc::new(AtomicUsize::new(0)),
            barrier: Arc::new(Notify::new()),
            closing: AtomicBool::new(false),
        });
        let mut driver = Self {
            world,
            routes,
            cell_tasks: Vec::new(),
            neuron_tasks: Vec::new(),
            coord,
            env: CellEnv { rule, jitter },
            spawner,
            seed,
            trace,
        };
        driver.cell_tasks = cells.into_iter().zip(cell_rx).map(|(cell, rx)| driver.spawn_cell(cell, rx)).collect();
        driver.neuron_tasks = neurons.into_iter().zip(neuron_rx).map(|(n, rx)| driver.spawn_neuron(n, rx)).collect();
        driver
    }

    fn guard(&self, actor: String) -> FailGuard {
        self.coord.guard(actor, &self.spawner.token)
    }

    fn spawn_cell(&self, cell: Cell, rx: UnboundedReceiver<Inbox<CellMsg>>) -> JoinHandle<()> {
        let guard = self.guard(format!("cell {}", self.world.cell_id(cell.index)));
        let (world, routes, env) = (self.world.clone(), self.routes.clone(), self.env.clone());
        self.spawner.spawn_stoppable(cell_task(cell, rx, world, routes, env, guard))
    }

    fn spawn_neuron(&self, neuron: Neuron, rx: UnboundedReceiver<Inbox<NeuronMsg>>) -> JoinHandle<()> {
        let guard = self.guard(format!("neuron {}", neuron.index));
        self.spawner.spawn_stoppable(neuron_task(neuron, rx, self.world.clone(), self.routes.clone(), guard))
    }
}

/// Where an actor of the reshaped network comes from: a surviving task (keeping its inbox) or a
/// new actor with the receiving end of its new inbox.
enum Place<A, M> {
    Kept(JoinHandle<()>),
    New(A, UnboundedReceiver<Inbox<M>>),
}

/// Tells every actor whose task was not kept to stop (through its old inbox); returns their
/// tasks, to be waited for.
fn stop_unkept<M>(tasks: Vec<Option<JoinHandle<()>>>, inboxes: &[UnboundedSender<Inbox<M>>]) -> Vec<JoinHandle<()>> {
    let unkept = tasks.into_iter().zip(inboxes).filter_map(|(task, inbox)| {
        let task = task?;
        let _ = inbox.send(Inbox::Stop);
        Some(task)
    });
    unkept.collect()
}

/// The tasks of the reshaped network, in its order: survivors are sent their new index and
/// routing, new actors are spawned.
fn settle<A, M>(
    places: Vec<Place<A, M>>,
    inboxes: &[UnboundedSender<Inbox<M>>],
    world: &Arc<World>,
    routes: &Arc<Routes>,
    spawn: impl Fn(A, UnboundedReceiver<Inbox<M>>) -> JoinHandle<()>,
) -> Vec<JoinHandle<()>> {
    let placed = places.into_iter().zip(inboxes).enumerate();
    placed
        .map(|(i, (place, inbox))| match place {
            Place::Kept(task) => {
                let _ = inbox.send(Inbox::Rewire { index: i as u32, world: world.clone(), routes: routes.clone() });
                task
            }
            Place::New(actor, rx) => spawn(actor, rx),
        })
        .collect()
}

impl Driver for TaskDriver {
    async fn run_async(&mut self) -> Result<()> {
        for tx in &self.routes.cells {
            let _ = tx.send(Inbox::Msg(CellMsg::Tick));
        }
        self.coord.until_finished(self.world.num_cells()).await
    }

    async fn step(&mut self, round: u32, fire: &[bool]) -> Result<()> {
        let n = self.world.num_cells();
        if !self.coord.begin_round(n, fire, &self.env.rule) {
            return Ok(());
        }
        self.routes.remaining.store(n, Ordering::Release);
        for (tx, &fire) in self.routes.cells.iter().zip(fire) {
            let _ = tx.send(Inbox::Msg(CellMsg::Begin { round, fire }));
        }
        if self.routes.record {
            self.coord.until_reported(n).await?;
        } else {
            // Wait for the last cell of the round, or for a failure report.
            loop {
                tokio::select! {
                    () = self.routes.barrier.notified() => break,
                    r = self.coord.receive() => r?,
                }
            }
        }
        Ok(())
    }

    async fn snapshot(&mut self, last: bool) -> Result<Snapshot> {
        self.coord.expect_snapshot(&self.world);
        for tx in &self.routes.cells {
            let _ = tx.send(Inbox::Snapshot { last });
        }
        for tx in &self.routes.neurons {
            let _ = tx.send(Inbox::Snapshot { last });
        }
        self.coord.snapshot().await
    }

    /// Survivors are rewired, removed actors stop (their tasks have ended when this
    /// returns), new ones are spawned.
    async fn reshape(&mut self, reshape: Reshape) -> Result<()> {
        let Reshape { world, cells, neurons, round } = reshape;
        let old = self.routes.clone();
        let mut old_cells: Vec<Option<JoinHandle<()>>> =
            std::mem::take(&mut self.cell_tasks).into_iter().map(Some).collect();
        let mut old_neurons: Vec<Option<JoinHandle<()>>> =
            std::mem::take(&mut self.neuron_tasks).into_iter().map(Some).collect();
        let mut cell_tx = Vec::with_capacity(cells.len());
        let mut cell_places = Vec::with_capacity(cells.len());
        for (c, source) in cells.into_iter().enumerate() {
            match source {
                RowSource::Old(r) => {
                    let task = old_cells.get_mut(r).and_then(Option::take).ok_or_else(|| missing("cell", r))?;
                    cell_tx.push(old.cells[r].clone());
                    cell_places.push(Place::Kept(task));
                }
                RowSource::New(row) => {
                    let (tx, rx) = unbounded_channel();
                    let traced = self.trace.matches(&world.cell_id(c as u32));
                    cell_tx.push(tx);
                    let cell = Cell::new(&world, c as u32, row, self.seed, traced).joining_at(round);
                    cell_places.push(Place::New(cell, rx));
                }
            }
        }
        let mut neuron_tx = Vec::with_capacity(neurons.len());
        let mut neuron_places = Vec::with_capacity(neurons.len());
        for (g, source) in neurons.into_iter().enumerate() {
            match source {
                Some(prev) => {
                    let prev = prev as usize;
                    let task =
                        old_neurons.get_mut(prev).and_then(Option::take).ok_or_else(|| missing("neuron", prev))?;
                    neuron_tx.push(old.neurons[prev].clone());
                    neuron_places.push(Place::Kept(task));
                }
                None => {
                    let (tx, rx) = unbounded_channel();
                    neuron_tx.push(tx);
                    neuron_places.push(Place::New(Neuron::new(&world, g as u32), rx));
                }
            }
        }
        self.world = world;
        self.routes = Arc::new(Routes {
            // Between rounds no sum is open.
            sums: (0..neuron_tx.len()).map(|_| Sums::default()).collect(),
            cells: cell_tx,
            neurons: neuron_tx,
            coord: old.coord.clone(),
            record: old.record,
            remaining: old.remaining.clone(),
            barrier: old.barrier.clone(),
            closing: AtomicBool::new(false),
        });
        // The removed: told to stop through the old routes, and waited for.
        let mut ending = stop_unkept(old_cells, &old.cells);
        ending.extend(stop_unkept(old_neurons, &old.neurons));
        drop(old);
        let (world, routes) = (&self.world, &self.routes);
        self.cell_tasks = settle(cell_places, &routes.cells, world, routes, |cell, rx| self.spawn_cell(cell, rx));
        self.neuron_tasks =
            settle(neuron_places, &routes.neurons, world, routes, |neuron, rx| self.spawn_neuron(neuron, rx));
        for task in ending {
            let _ = task.await;
        }
        Ok(())
    }

    /// Stops every actor and hands over what was collected. The rule service is closed first
    /// (a cell still awaiting an answer after a failure gets none and stops); idle actors
    /// take their stop message (cells send their counts first).
    async fn finish(mut self) -> Result<Collector> {
        self.env.rule.close();
        self.routes.closing.store(true, Ordering::Release);
        for tx in &self.routes.cells {
            let _ = tx.send(Inbox::Stop);
        }
        for tx in &self.routes.neurons {
            let _ = tx.send(Inbox::Stop);
        }
        self.spawner.shutdown().await;
        self.coord.drain()?;
        Ok(self.coord.collector)
    }
}
