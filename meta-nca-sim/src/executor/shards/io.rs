//! A shard's plumbing: routing (which shard hosts which cell and neuron), its local queue and
//! outboxes, the per-neuron summing of reports, drives and backward parts, and the link to the rule service.
//! [`Io`] is the [`Outbox`] the shard's cells and neurons send through.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use meta_nca_rule::random::xorshift;
use tokio::sync::mpsc::UnboundedSender;

use super::ShardMsg;
use crate::executor::coord::CoordMsg;
use crate::outcome::RunStats;
use crate::protocol::{CellDone, CellMsg, Contribution, Fan, NeuronMsg, Outbox, Partial};
use crate::rule_service::{Reply, RuleHandle};
use crate::world::World;

#[derive(Debug)]
pub(super) enum Envelope {
    Neuron(u32, NeuronMsg),
    Broadcast { neuron: u32, fan: Fan, msg: CellMsg },
}

pub(super) enum Local {
    Cell(u32, CellMsg),
    Neuron(u32, NeuronMsg),
    /// `msg` to this shard's cells on the `fan` side of `neuron`, from the `from`-th on: one
    /// queue entry per broadcast, expanded as it is handled (and resumable when held).
    Fan {
        neuron: u32,
        fan: Fan,
        msg: CellMsg,
        from: u32,
    },
}

/// Whether handling `msg` can make a cell perceive and query the rule service (the
/// deliveries a saturated shard holds back).
pub(super) fn may_query(msg: &CellMsg) -> bool {
    matches!(msg, CellMsg::Summary { .. } | CellMsg::Tick | CellMsg::Begin { .. })
}

/// Static routing shared by all shards.
pub(super) struct Layout {
    pub(super) shards: usize,
    /// Cells `bounds[s]..bounds[s+1]` live in shard `s`.
    pub(super) bounds: Vec<u32>,
    /// Per neuron and fan (`[in, out]`): the shards that host some of its cells.
    pub(super) fan_shards: Vec<[Vec<u16>; 2]>,
}

impl Layout {
    pub(super) fn cell_shard(&self, c: u32) -> usize {
        self.bounds.partition_point(|&b| b <= c) - 1
    }
    pub(super) fn neuron_shard(&self, n: u32) -> usize {
        n as usize % self.shards
    }
}

pub(super) fn fan_slot(fan: Fan) -> usize {
    match fan {
        Fan::In => 0,
        Fan::Out => 1,
    }
}

/// Everything a shard owns besides its cells and neurons.
pub(super) struct Io {
    pub(super) me: usize,
    pub(super) layout: Arc<Layout>,
    pub(super) world: Arc<World>,
    pub(super) queue: VecDeque<Local>,
    /// Deliveries that may start a rule query, held while the shard is saturated (see
    /// [`Io::saturated`]): a held broadcast costs one entry, a perception row ~8 B per feature.
    pub(super) held: VecDeque<Local>,
    /// Rows sent to the rule service and not answered yet.
    pub(super) in_flight: usize,
    pub(super) outboxes: Vec<Vec<Envelope>>,
    pub(super) reports: HashMap<(u32, u32, u8), (Fan, Partial)>,
    pub(super) drives: HashMap<(u32, u32), Partial>,
    /// Backward parts to a (hidden) neuron of a round, summed on the way like drives.
    pub(super) backs: HashMap<(u32, u32), Partial>,
    pub(super) rule_cells: Vec<u32>,
    pub(super) rule_rows: Vec<f64>,
    pub(super) done: Vec<CellDone>,
    /// Whether every report goes to the coordinator (recording weights) or only sums.
    pub(super) record: bool,
    pub(super) stats: RunStats,
    pub(super) finals: Vec<(u32, Vec<f64>)>,
    pub(super) deferred: Vec<(u32, u32)>,
    pub(super) jitter: u32,
    pub(super) rng: u64,
    pub(super) rule_link: RuleLink,
}

impl Outbox for Io {
    fn to_neuron(&mut self, neuron: u32, msg: NeuronMsg) {
        self.route_neuron(neuron, msg);
    }
    fn contribute(&mut self, neuron: u32, round: u32, part: Contribution<'_>) {
        match part {
            Contribution::Report { fan, .. } => match self.reports.get_mut(&(neuron, round, part.slot())) {
                Some((_, sum)) => sum.add(&part),
                None => {
                    self.reports.insert((neuron, round, part.slot()), (fan, Partial::of(&part)));
                }
            },
            Contribution::Drive { .. } => match self.drives.get_mut(&(neuron, round)) {
                Some(sum) => sum.add(&part),
                None => {
                    self.drives.insert((neuron, round), Partial::of(&part));
                }
            },
            Contribution::Back { .. } => match self.backs.get_mut(&(neuron, round)) {
                Some(sum) => sum.add(&part),
                None => {
                    self.backs.insert((neuron, round), Partial::of(&part));
                }
            },
        }
    }
    fn broadcast(&mut self, neuron: u32, fan: Fan, msg: CellMsg) {
        let layout = self.layout.clone();
        for &s in &layout.fan_shards[neuron as usize][fan_slot(fan)] {
            if s as usize == self.me {
                self.deliver_local(neuron, fan, msg.clone());
            } else {
                self.outboxes[s as usize].push(Envelope::Broadcast { neuron, fan, msg: msg.clone() });
            }
        }
    }
    fn query(&mut self, cell: u32, width: usize, perceive: impl FnOnce(&mut [f64])) {
        self.rule_cells.push(cell);
        let start = self.rule_rows.len();
        self.rule_rows.resize(start + width, 0.0);
        perceive(&mut self.rule_rows[start..]);
        if self.rule_cells.len() >= self.rule_link.chunk {
            self.ask_rule();
        }
    }
    fn done(&mut self, mut done: CellDone) {
        if self.record {
            self.done.push(done);
        } else {
            self.stats.record(&done);
            if let Some(state) = done.final_state.take() {
                self.finals.push((done.cell, state));
            }
        }
    }
    fn tick_later(&mut self, cell: u32) {
        let wait = if self.jitter == 0 { 0 } else { (xorshift(&mut self.rng) % u64::from(self.jitter + 1)) as u32 };
        if wait == 0 {
            self.queue.push_back(Local::Cell(cell, CellMsg::Tick));
        } else {
            self.deferred.push((wait, cell));
        }
    }
}

/// What a shard needs to ask the rule service and get the answer back into its inbox.
pub(super) struct RuleLink {
    pub(super) rule: RuleHandle,
    pub(super) me: UnboundedSender<ShardMsg>,
    pub(super) coord: UnboundedSender<CoordMsg>,
    pub(super) actor: String,
    /// Most rows per query.
    pub(super) chunk: usize,
}

impl Io {
    /// Flow control: whether the rows in flight and waiting fill two chunks (one in a pass, one
    /// waiting for the next). Then the shard holds back every delivery that could start a query
    /// (into [`Io::held`]) until answers come back, so a shard never has more than two chunks of
    /// perception rows alive (without this, every firing cell of a round perceived at once and
    /// the rule service held all their rows: ~490 B per cell at 1M cells). Progress: a saturated
    /// shard has at least a chunk of rows at the rule service, which then runs a pass (it runs
    /// at `chunk` waiting rows).
    pub(super) fn saturated(&self) -> bool {
        self.in_flight + self.rule_cells.len() >= 2 * self.rule_link.chunk
    }

    /// Sends the waiting queries as one batch; the answer comes back into the shard's inbox.
    pub(super) fn ask_rule(&mut self) {
        if self.rule_cells.is_empty() {
            return;
        }
        self.in_flight += self.rule_cells.len();
        let cells = std::mem::take(&mut self.rule_cells);
        // The next chunk's rows get their whole buffer at once (no growing copies).
        let capacity = self.rule_rows.capacity();
        let rows = std::mem::replace(&mut self.rule_rows, Vec::with_capacity(capacity));
        let link = &self.rule_link;
        let (me, coord, actor) = (link.me.clone(), link.coord.clone(), link.actor.clone());
        let n = cells.len();
        let reply = Reply::new(move |answer| match answer {
            Some(answer) => {
                let _ = me.send(ShardMsg::Rule { cells, answer });
            }
            None => {
                let message = "the rule service stopped answering".into();
                let _ = coord.send(CoordMsg::Failed { actor, message });
            }
        });
        link.rule.query(rows, n, reply);
    }

    pub(super) fn route_neuron(&mut self, neuron: u32, msg: NeuronMsg) {
        let s = self.layout.neuron_shard(neuron);
        if s == self.me {
            self.queue.push_back(Local::Neuron(neuron, msg));
        } else {
            self.outboxes[s].push(Envelope::Neuron(neuron, msg));
        }
    }

    pub(super) fn deliver_local(&mut self, neuron: u32, fan: Fan, msg: CellMsg) {
        self.queue.push_back(Local::Fan { neuron, fan, msg, from: 0 });
    }

    /// Sends the summed reports, drives and backward parts on.
    pub(super) fn flush_sums(&mut self) {
        for ((neuron, round, _), (fan, part)) in std::mem::take(&mut self.reports) {
            self.route_neuron(neuron, NeuronMsg::Report { round, fan, part });
        }
        for ((neuron, round), part) in std::mem::take(&mut self.drives) {
            self.route_neuron(neuron, NeuronMsg::Drive { round, part });
        }
        for ((neuron, round), part) in std::mem::take(&mut self.backs) {
            self.route_neuron(neuron, NeuronMsg::Back { round, part });
        }
    }
}
