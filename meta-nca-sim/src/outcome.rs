//! What a run reports: its counts ([`RunStats`]), what it grew ([`Outcome`]) and the actors'
//! own view between two steps ([`Snapshot`]).

use std::sync::Arc;

use meta_nca_rule::topology::{CellId, Topology};

use crate::protocol::{CellDone, NeuronSummary};
use crate::rule_service::RuleStats;

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
    /// A state row's width `1 + d`.
    pub width: usize,
    /// `states[t]`: every cell's state row after step `t` (`[cells, 1+d]`, the state-row order
    /// of step `t`), when recorded.
    pub states: Vec<Vec<f64>>,
    /// `fired[t][c]`: whether cell `c` fired in step `t`, when recorded.
    pub fired: Vec<Vec<bool>>,
    /// Counts.
    pub stats: RunStats,
}

impl Outcome {
    /// The cells' ids, in state-row order.
    pub fn cells(&self) -> Vec<CellId> {
        self.topology.cells().copied().collect()
    }

    /// `weights()[t][c]`: the weight of cell `c` (the state-row order of step `t`) after step
    /// `t`, when recorded (the first column of [`Self::states`]).
    pub fn weights(&self) -> Vec<Vec<f64>> {
        self.states.iter().map(|rows| rows.chunks(self.width).map(|r| r[0]).collect()).collect()
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
