//! The coordinator's side of a run, shared by both executors: what actors tell it
//! ([`CoordMsg`]), how a failing actor reports itself ([`FailGuard`]), what it collects
//! ([`Collector`]: counts, recorded states, async final states, snapshots), and its waits
//! ([`Coordinator`]: a lockstep round, every async cell finishing, a snapshot's answers).

use std::sync::Arc;

use meta_nca_rule::topology::Topology;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;

use crate::outcome::{Outcome, RunStats, Snapshot};
use crate::protocol::{CellDone, NeuronSummary};
use crate::rule_service::{RuleHandle, RuleStats};
use crate::world::World;
use crate::{Error, Result};

/// What actors tell the coordinator.
#[derive(Debug)]
pub(crate) enum CoordMsg {
    /// A cell finished a round.
    Done(CellDone),
    /// A batch of finished rounds (shards, when rounds are recorded).
    DoneBatch(Vec<CellDone>),
    /// Counts of finished rounds and the final states among them (not recording).
    Progress { stats: RunStats, finals: Vec<(u32, Vec<f64>)> },
    /// Answers to a snapshot request: counts so far, some cells' state rows (with their
    /// links and feedback weights) and some neurons' last summaries.
    Snapshot { stats: RunStats, cells: Vec<CellReport>, neurons: Vec<(u32, Option<Arc<NeuronSummary>>)> },
    /// An actor failed; the run is over.
    Failed { actor: String, message: String },
}

/// A cell's answer to a snapshot: its index, its neurons, its feedback weight, its state row.
pub(crate) type CellReport = (u32, (u32, u32), f64, Vec<f64>);

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

/// Collects the actors' reports: counts, recorded states, final states (async) and
/// snapshots.
pub(crate) struct Collector {
    width: usize,
    record: bool,
    /// Async: the final state rows the cells hand over, and how many did.
    pub(crate) state: Vec<f64>,
    pub(crate) finished: usize,
    /// Recording: every cell's state row after every round (`[cells, width]` per round) and
    /// whether it fired.
    rows: Vec<Vec<f64>>,
    fired: Vec<Vec<bool>>,
    pub(crate) stats: RunStats,
    /// The snapshot being gathered.
    snapshot: Option<Gathering>,
}

/// A snapshot being gathered: what came, and who has answered (every live cell and neuron
/// exactly once, each cell with the neurons the network gives it; anything else is a failure).
struct Gathering {
    snapshot: Snapshot,
    /// The network's cells and neurons.
    batch: Arc<meta_nca_rule::batch::Batch>,
    cells_seen: Vec<bool>,
    neurons_seen: Vec<bool>,
    missing: usize,
}

impl Gathering {
    fn cell(&mut self, c: u32, links: (u32, u32), feedback: f64, row: &[f64], width: usize) -> Result<()> {
        let c = c as usize;
        let failed = |message: String| Err(Error::ActorFailed { actor: format!("cell {c}"), message });
        if self.cells_seen.get(c) != Some(&false) || row.len() != width {
            let n = self.cells_seen.len();
            return failed(format!("answered a snapshot of {n} cells, but is not live or answered already"));
        }
        let slot = &self.batch.cells()[c];
        if (slot.pre as u32, slot.post as u32) != links {
            return failed(format!(
                "{} links neurons {} -> {}, the cell links {links:?}",
                slot.id, slot.pre, slot.post
            ));
        }
        self.cells_seen[c] = true;
        self.snapshot.links[c] = links;
        self.snapshot.feedback[c] = feedback;
        self.snapshot.state[c * width..(c + 1) * width].copy_from_slice(row);
        self.missing -= 1;
        Ok(())
    }

    fn neuron(&mut self, g: u32, summary: Option<Arc<NeuronSummary>>) -> Result<()> {
        let g = g as usize;
        if self.neurons_seen.get(g) != Some(&false) {
            return Err(Error::ActorFailed {
                actor: format!("neuron {g}"),
                message: format!("answered a snapshot of {} neurons twice or out of range", self.neurons_seen.len()),
            });
        }
        self.neurons_seen[g] = true;
        self.snapshot.summaries[g] = summary;
        self.missing -= 1;
        Ok(())
    }
}

impl Collector {
    /// A collector for `world`; when its context records (`Ctx::record`), it keeps every cell's
    /// state row after every round (lockstep rounds add their rows as they begin; async rounds
    /// are known up front).
    pub(crate) fn new(world: &World) -> Self {
        let record = world.ctx.record;
        let width = world.ctx.spec.state_width();
        let async_rounds = if record && world.ctx.async_mode { world.ctx.rounds as usize } else { 0 };
        Self {
            width,
            record,
            state: vec![0.0; world.num_cells() * width],
            finished: 0,
            rows: vec![vec![0.0; world.num_cells() * width]; async_rounds],
            fired: vec![vec![false; world.num_cells()]; async_rounds],
            stats: RunStats::default(),
            snapshot: None,
        }
    }

    /// Whether every cell's state row after every step is kept (then actors send every report).
    pub(crate) fn recording(&self) -> bool {
        self.record
    }

    /// A lockstep round of `cells` cells begins.
    pub(crate) fn begin_round(&mut self, cells: usize) {
        if self.record {
            self.rows.push(vec![0.0; cells * self.width]);
            self.fired.push(vec![false; cells]);
        }
    }

    /// Takes one message of an actor.
    pub(crate) fn take(&mut self, msg: CoordMsg) -> Result<()> {
        match msg {
            CoordMsg::Done(d) => self.add(d),
            CoordMsg::DoneBatch(ds) => ds.into_iter().for_each(|d| self.add(d)),
            CoordMsg::Progress { stats, finals } => {
                self.stats.merge(&stats);
                for (c, s) in finals {
                    let c = c as usize;
                    self.state[c * self.width..(c + 1) * self.width].copy_from_slice(&s);
                    self.finished += 1;
                }
            }
            CoordMsg::Snapshot { stats, cells, neurons } => {
                self.stats.merge(&stats);
                if let Some(gathering) = &mut self.snapshot {
                    for (c, links, feedback, row) in cells {
                        gathering.cell(c, links, feedback, &row, self.width)?;
                    }
                    for (g, summary) in neurons {
                        gathering.neuron(g, summary)?;
                    }
                }
            }
            CoordMsg::Failed { actor, message } => return Err(Error::ActorFailed { actor, message }),
        }
        Ok(())
    }

    fn add(&mut self, d: CellDone) {
        self.stats.record(&d);
        let c = d.cell as usize;
        let t = d.round as usize;
        if let (Some(rows), Some(fired), Some(row)) = (self.rows.get_mut(t), self.fired.get_mut(t), &d.row) {
            rows[c * self.width..(c + 1) * self.width].copy_from_slice(row);
            fired[c] = d.fired;
        }
        if let Some(s) = d.final_state {
            self.state[c * self.width..(c + 1) * self.width].copy_from_slice(&s);
            self.finished += 1;
        }
    }

    /// A snapshot of `world` is requested: one report per cell and per neuron will come.
    pub(crate) fn expect_snapshot(&mut self, world: &World) {
        let (cells, neurons) = (world.num_cells(), world.num_neurons());
        let snapshot = Snapshot {
            state: vec![0.0; cells * self.width],
            links: vec![(0, 0); cells],
            feedback: vec![0.0; cells],
            summaries: vec![None; neurons],
        };
        let (cells_seen, neurons_seen) = (vec![false; cells], vec![false; neurons]);
        let batch = world.batch.clone();
        self.snapshot = Some(Gathering { snapshot, batch, cells_seen, neurons_seen, missing: cells + neurons });
    }

    /// The snapshot, once every report has come.
    pub(crate) fn finish_snapshot(&mut self) -> Option<Snapshot> {
        match &self.snapshot {
            Some(g) if g.missing == 0 => self.snapshot.take().map(|g| g.snapshot),
            _ => None,
        }
    }

    pub(crate) fn finish(self, state: Vec<f64>, topology: Topology, seconds: f64, rule: RuleStats) -> Outcome {
        let mut stats = self.stats;
        stats.seconds = seconds;
        stats.rule = rule;
        Outcome { topology, state, width: self.width, states: self.rows, fired: self.fired, stats }
    }
}

/// The coordinator's inbox and what came through it.
pub(crate) struct Coordinator {
    tx: UnboundedSender<CoordMsg>,
    rx: UnboundedReceiver<CoordMsg>,
    pub(crate) collector: Collector,
}

impl Coordinator {
    pub(crate) fn new(collector: Collector) -> Self {
        let (tx, rx) = unbounded_channel();
        Self { tx, rx, collector }
    }

    /// Where actors send their reports.
    pub(crate) fn sender(&self) -> UnboundedSender<CoordMsg> {
        self.tx.clone()
    }

    /// A guard for `actor` that reports its panic here and cancels the run with `token`.
    pub(crate) fn guard(&self, actor: String, token: &CancellationToken) -> FailGuard {
        FailGuard { actor, coord: self.sender(), token: token.clone() }
    }

    /// Takes one message off the inbox.
    pub(crate) async fn receive(&mut self) -> Result<()> {
        match self.rx.recv().await {
            Some(msg) => self.collector.take(msg),
            None => Err(Error::ActorFailed { actor: "coordinator".into(), message: "every actor is gone".into() }),
        }
    }

    /// Takes every message already in the inbox (after the actors have stopped).
    pub(crate) fn drain(&mut self) -> Result<()> {
        while let Ok(msg) = self.rx.try_recv() {
            self.collector.take(msg)?;
        }
        Ok(())
    }

    /// Async mode: waits until all `cells` cells have handed over their final state.
    pub(crate) async fn until_finished(&mut self, cells: usize) -> Result<()> {
        while self.collector.finished < cells {
            self.receive().await?;
        }
        Ok(())
    }

    /// Lockstep: a round of `cells` cells firing as `fire` says is about to begin; announces
    /// its rule rows. `false`: the network has no cell, there is nothing to run.
    pub(crate) fn begin_round(&mut self, cells: usize, fire: &[bool], rule: &RuleHandle) -> bool {
        self.collector.begin_round(cells);
        if cells > 0 {
            rule.expect(fire.iter().filter(|&&f| f).count());
        }
        cells > 0
    }

    /// Lockstep: waits for the reports of `cells` more finished cell-rounds.
    pub(crate) async fn until_reported(&mut self, cells: usize) -> Result<()> {
        let target = self.collector.stats.cell_steps + cells as u64;
        while self.collector.stats.cell_steps < target {
            self.receive().await?;
        }
        Ok(())
    }

    /// A snapshot of `world` is requested (send the requests after this).
    pub(crate) fn expect_snapshot(&mut self, world: &World) {
        self.collector.expect_snapshot(world);
    }

    /// Waits for every answer to the snapshot requested.
    pub(crate) async fn snapshot(&mut self) -> Result<Snapshot> {
        loop {
            if let Some(snapshot) = self.collector.finish_snapshot() {
                return Ok(snapshot);
            }
            self.receive().await?;
        }
    }
}
