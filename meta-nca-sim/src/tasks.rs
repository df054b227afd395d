//! The task-per-cell executor: every cell and every neuron is its own tokio task with an
//! unbounded inbox, and every message is one channel send, except reports and drives, which
//! are summed on the way into one message per neuron, fan and round. Unbounded sends never
//! wait, so the cycles that neighbouring cells and neurons form can never deadlock; the
//! protocol bounds how many messages a round can produce. A coordinator drives lockstep rounds (the barrier) or
//! just waits for every cell to finish (async). A querying cell awaits its rule answer on a
//! oneshot (its inbox fills meanwhile and is drained in one go afterwards). Shutdown: the rule
//! service is closed (a cell still awaiting an answer gets none and stops), a stop message in
//! every inbox, a `TaskTracker` to wait for all of them (see `Spawner`); a panicking task
//! reports itself through its [`FailGuard`] and cancels the rest instead of leaving the
//! coordinator hanging.

use std::sync::{Arc, Mutex};

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, oneshot};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;

use crate::cell::Cell;
use crate::neuron::Neuron;
use crate::protocol::{CellDone, CellMsg, Fan, NeuronMsg, Outbox, Partial};
use crate::rule_service::{Answer, Reply, RuleHandle};
use crate::sim::{Collector, Parts, RunStats};
use crate::world::World;
use crate::{Error, Result};

/// What actors tell the coordinator.
#[derive(Debug)]
pub(crate) enum CoordMsg {
    /// A cell finished a round.
    Done(CellDone),
    /// A batch of finished rounds (shards, when weights are recorded).
    DoneBatch(Vec<CellDone>),
    /// Counts of finished rounds and the final states among them (shards, not recording).
    Progress { stats: crate::sim::RunStats, finals: Vec<(u32, Vec<f64>)> },
    /// An actor failed; the run is over.
    Failed { actor: String, message: String },
}

/// Reports a panic of the task that owns it, and cancels the run.
pub(crate) struct FailGuard {
    pub(crate) actor: String,
    pub(crate) coord: UnboundedSender<CoordMsg>,
    pub(crate) token: CancellationToken,
}

impl FailGuard {
    pub(crate) fn fail(&self, message: String) {
        let _ = self.coord.send(CoordMsg::Failed { actor: self.actor.clone(), message });
        self.token.cancel();
    }
}

impl Drop for FailGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.fail("panicked".into());
        }
    }
}

/// Reports or drives to one neuron being summed on the way: `(round, kind, sum so far)`,
/// kind 0/1 = reports of the in/out fan, 2 = drives.
type Sums = Mutex<Vec<(u32, u8, Partial)>>;

/// Every inbox; `None` tells a task to stop (cheaper than checking a cancellation token on
/// every poll of ten thousand tasks).
struct Routes {
    cells: Vec<UnboundedSender<Option<CellMsg>>>,
    neurons: Vec<UnboundedSender<Option<NeuronMsg>>>,
    /// Per neuron: its reports and drives summed on the way (see [`TaskOut::to_neuron`]).
    sums: Vec<Sums>,
    coord: UnboundedSender<CoordMsg>,
    /// Whether every round's report goes to the coordinator (recording weights); otherwise
    /// cells count themselves off `barrier` and send their sums once, with their final state.
    record: bool,
    /// Lockstep: cells still to finish the round; the last one wakes the coordinator.
    remaining: AtomicUsize,
    barrier: Notify,
}

impl Routes {
    fn stop_all(&self) {
        self.cells.iter().for_each(|tx| {
            let _ = tx.send(None);
        });
        self.neurons.iter().for_each(|tx| {
            let _ = tx.send(None);
        });
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
    /// The owning cell's counts, sent with its final state.
    stats: &'a mut RunStats,
}

impl Outbox for TaskOut<'_> {
    /// Reports and drives are summed on the way, as the shards do: the cell adds its row to
    /// the neuron's running sum under a lock, and the last cell of the fan sends the neuron
    /// one message with the whole sum. A neuron needs every report (and drive) of a round
    /// before it can act, so this changes no outcome, and it saves ~3 channel messages and
    /// ~1.1-1.7 neuron wake-ups per cell-step (counted at 10k cells).
    fn to_neuron(&mut self, neuron: u32, msg: NeuronMsg) {
        let n = neuron as usize;
        let (round, kind, part) = match msg {
            NeuronMsg::Report { round, fan: Fan::In, part } => (round, 0u8, part),
            NeuronMsg::Report { round, fan: Fan::Out, part } => (round, 1, part),
            NeuronMsg::Drive { round, part } => (round, 2, part),
            msg @ NeuronMsg::Logit { .. } => {
                let _ = self.routes.neurons[n].send(Some(msg));
                return;
            }
        };
        let expected = self.world.fan(neuron, if kind == 1 { Fan::Out } else { Fan::In }).len();
        let complete = if part.count as usize >= expected {
            Some(part)
        } else {
            let mut sums = self.routes.sums[n].lock().unwrap_or_else(|e| e.into_inner());
            match sums.iter().position(|(r, k, _)| *r == round && *k == kind) {
                Some(i) => {
                    sums[i].2.merge(&part);
                    (sums[i].2.count as usize >= expected).then(|| sums.swap_remove(i).2)
                }
                None => {
                    sums.push((round, kind, part));
                    None
                }
            }
        };
        if let Some(part) = complete {
            let msg = match kind {
                0 => NeuronMsg::Report { round, fan: Fan::In, part },
                1 => NeuronMsg::Report { round, fan: Fan::Out, part },
                _ => NeuronMsg::Drive { round, part },
            };
            let _ = self.routes.neurons[n].send(Some(msg));
        }
    }
    fn broadcast(&mut self, neuron: u32, fan: Fan, msg: CellMsg) {
        for &c in self.world.fan(neuron, fan) {
            let _ = self.routes.cells[c as usize].send(Some(msg.clone()));
        }
    }
    fn query(&mut self, _cell: u32, perception: Vec<f64>) {
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

async fn cell_task(
    mut cell: Cell,
    mut rx: UnboundedReceiver<Option<CellMsg>>,
    world: Arc<World>,
    routes: Arc<Routes>,
    rule: RuleHandle,
    jitter: u32,
    guard: FailGuard,
) {
    let mut rng = u64::from(cell.index).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut stats = RunStats::default();
    while let Some(Some(mut msg)) = rx.recv().await {
        loop {
            let mut out =
                TaskOut { routes: &routes, world: &world, rule: Some(&rule), answer: None, tick: false, stats: &mut stats };
            cell.handle(msg, &world.ctx, &mut out);
            if let Some(answer) = out.answer.take() {
                // No select on the run's cancellation token (a waiter registration under a
                // mutex per query): a closed service answers `None` (see `run`).
                match answer.await {
                    Ok(Some(a)) => msg = CellMsg::Update { block: a.block, row: a.first as u32 },
                    _ => return guard.fail("the rule service stopped answering".into()),
                }
            } else if out.tick {
                if jitter > 0 {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    for _ in 0..rng % u64::from(jitter + 1) {
                        tokio::task::yield_now().await;
                    }
                }
                msg = CellMsg::Tick;
            } else {
                break;
            }
        }
    }
}

async fn neuron_task(
    mut neuron: Neuron,
    mut rx: UnboundedReceiver<Option<NeuronMsg>>,
    world: Arc<World>,
    routes: Arc<Routes>,
    _guard: FailGuard,
) {
    let mut unused = RunStats::default();
    while let Some(Some(msg)) = rx.recv().await {
        let mut out = TaskOut { routes: &routes, world: &world, rule: None, answer: None, tick: false, stats: &mut unused };
        neuron.handle(msg, &world.ctx, &mut out);
    }
}

/// Runs the simulation with one task per cell and per neuron.
pub(crate) async fn run(parts: Parts) -> Result<Collector> {
    let Parts { world, cells, neurons, rule, fires, jitter, spawner, mut collector, .. } = parts;
    let token = spawner.token.clone();
    let (coord_tx, mut coord_rx) = unbounded_channel();
    let (cell_tx, cell_rx): (Vec<_>, Vec<_>) = (0..cells.len()).map(|_| unbounded_channel()).unzip();
    let (neuron_tx, neuron_rx): (Vec<_>, Vec<_>) = (0..neurons.len()).map(|_| unbounded_channel()).unzip();
    let routes = Arc::new(Routes {
        cells: cell_tx,
        neurons: neuron_tx,
        sums: (0..neurons.len()).map(|_| Sums::default()).collect(),
        coord: coord_tx.clone(),
        record: collector.recording(),
        remaining: AtomicUsize::new(0),
        barrier: Notify::new(),
    });
    let guard = |actor: String| FailGuard { actor, coord: coord_tx.clone(), token: token.clone() };
    for (cell, rx) in cells.into_iter().zip(cell_rx) {
        let g = guard(format!("cell {}", world.cell_id(cell.index)));
        spawner.spawn_stoppable(cell_task(cell, rx, world.clone(), routes.clone(), rule.clone(), jitter, g));
    }
    for (neuron, rx) in neurons.into_iter().zip(neuron_rx) {
        let g = guard(format!("neuron {}", neuron.index));
        spawner.spawn_stoppable(neuron_task(neuron, rx, world.clone(), routes.clone(), g));
    }
    let n = world.num_cells();
    let result = async {
        if world.ctx.async_mode {
            routes.cells.iter().for_each(|tx| {
                let _ = tx.send(Some(CellMsg::Tick));
            });
            while collector.finished < n {
                receive(&mut coord_rx, &mut collector).await?;
            }
        } else if n > 0 {
            for (round, fire) in fires.iter().enumerate() {
                rule.expect(fire.iter().filter(|&&f| f).count());
                routes.remaining.store(n, Ordering::Release);
                for (tx, &f) in routes.cells.iter().zip(fire) {
                    let _ = tx.send(Some(CellMsg::Begin { round: round as u32, fire: f }));
                }
                if routes.record {
                    let target = collector.stats.cell_steps + n as u64;
                    while collector.stats.cell_steps < target {
                        receive(&mut coord_rx, &mut collector).await?;
                    }
                } else {
                    // Wait for the last cell of the round, or for a failure report.
                    loop {
                        tokio::select! {
                            () = routes.barrier.notified() => break,
                            r = receive(&mut coord_rx, &mut collector) => r?,
                        }
                    }
                }
            }
            while collector.finished < n {
                receive(&mut coord_rx, &mut collector).await?;
            }
        }
        Ok(())
    }
    .await;
    rule.close();
    routes.stop_all();
    spawner.shutdown().await;
    result.map(|()| collector)
}

/// Takes one message off the coordinator's inbox.
pub(crate) async fn receive(rx: &mut UnboundedReceiver<CoordMsg>, collector: &mut Collector) -> Result<()> {
    match rx.recv().await {
        Some(CoordMsg::Done(d)) => collector.add(d),
        Some(CoordMsg::DoneBatch(ds)) => ds.into_iter().for_each(|d| collector.add(d)),
        Some(CoordMsg::Progress { stats, finals }) => collector.absorb(&stats, finals),
        Some(CoordMsg::Failed { actor, message }) => return Err(Error::ActorFailed { actor, message }),
        None => return Err(Error::ActorFailed { actor: "coordinator".into(), message: "every actor is gone".into() }),
    }
    Ok(())
}
