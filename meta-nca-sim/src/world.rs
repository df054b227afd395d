//! The static description of one simulated network: which cells and neurons exist, who is
//! connected to whom, and the shared read-only context every actor reads (perception, data,
//! mode). Built once from the shared definitions of `meta-nca-rule` ([`Batch`] numbers the
//! neurons exactly as the reference path does).

use std::sync::Arc;

use meta_nca_rule::batch::Batch;
use meta_nca_rule::perception::{Group, PerceptionSpec};
use meta_nca_rule::reference::TaskData;
use meta_nca_rule::topology::{CellId, Topology};

use crate::cell::Cell;
use crate::neuron::{Neuron, NeuronKind};
use crate::{Error, Result};

/// Read-only context shared by every cell and neuron.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The perception groups.
    pub spec: PerceptionSpec,
    /// Whether any group needs the forward pass.
    pub activity: bool,
    /// Whether the Hebbian group is on (summaries then carry per-sample vectors).
    pub hebbian: bool,
    /// Samples in the batch the network is grown on.
    pub samples: usize,
    /// Rounds (grow steps) to run.
    pub rounds: u32,
    /// How many rounds old a summary a cell may use (0: only its own round's).
    pub max_staleness: u32,
    /// Async mode: cells tick on their own clocks and draw their own firing.
    pub async_mode: bool,
    /// Async mode: firing probability per tick.
    pub fire_rate: f64,
}

/// One simulated network: its topology, neuron fans and shared context. Cloning shares the
/// (large) topology and fans; only the context is copied.
#[derive(Debug, Clone)]
pub struct World {
    /// The network.
    pub topology: Arc<Topology>,
    /// Cell and neuron numbering (one network).
    pub batch: Arc<Batch>,
    /// The grow data.
    pub data: Arc<TaskData>,
    /// Shared context.
    pub ctx: Ctx,
    /// Per neuron: its incoming cells.
    pub in_cells: Arc<Vec<Vec<u32>>>,
    /// Per neuron: its outgoing cells.
    pub out_cells: Arc<Vec<Vec<u32>>>,
}

impl World {
    /// Describes `topology` grown on `data` with perception `spec`.
    pub fn new(topology: Topology, data: Arc<TaskData>, spec: PerceptionSpec, mut ctx: Ctx) -> Result<Self> {
        let sizes = topology.sizes();
        if sizes[0] != data.features || sizes[sizes.len() - 1] != data.classes {
            return Err(Error::Config {
                key: "topology",
                message: format!(
                    "sizes {sizes:?} do not fit data with {} features and {} classes",
                    data.features, data.classes
                ),
            });
        }
        ctx.activity = spec.needs_activity();
        ctx.hebbian = spec.groups().contains(&Group::Hebbian);
        ctx.samples = data.y.len();
        ctx.spec = spec;
        let batch = Batch::new(vec![topology.clone()]);
        let n = batch.num_neurons();
        let mut in_cells = vec![Vec::new(); n];
        let mut out_cells = vec![Vec::new(); n];
        for (c, slot) in batch.cells().iter().enumerate() {
            in_cells[slot.post].push(c as u32);
            out_cells[slot.pre].push(c as u32);
        }
        Ok(Self {
            topology: Arc::new(topology),
            batch: Arc::new(batch),
            data,
            ctx,
            in_cells: Arc::new(in_cells),
            out_cells: Arc::new(out_cells),
        })
    }

    /// Number of cells.
    pub fn num_cells(&self) -> usize {
        self.batch.num_cells()
    }

    /// Number of neurons (bias neurons included).
    pub fn num_neurons(&self) -> usize {
        self.batch.num_neurons()
    }

    /// The cells on the `fan` side of `neuron`.
    pub fn fan(&self, neuron: u32, fan: crate::protocol::Fan) -> &[u32] {
        match fan {
            crate::protocol::Fan::In => &self.in_cells[neuron as usize],
            crate::protocol::Fan::Out => &self.out_cells[neuron as usize],
        }
    }

    /// The dense weights of the network in state `state` (`[cells, 1+d]`).
    pub fn dense_net(&self, state: &[f64]) -> meta_nca_rule::task::DenseNet<f64> {
        self.batch.dense_net(0, state, self.ctx.spec.state_width())
    }

    /// The id of cell `c`.
    pub fn cell_id(&self, c: u32) -> CellId {
        self.batch.cells()[c as usize].id
    }

    /// The cells, with their starting state rows `state0` (`[cells, 1+d]`, topology order).
    pub fn make_cells(&self, state0: &[f64], seed: u64, traced: &dyn Fn(&CellId) -> bool) -> Result<Vec<Cell>> {
        let s = self.ctx.spec.state_width();
        if state0.len() != self.num_cells() * s {
            return Err(Error::Config {
                key: "state0",
                message: format!("{} values for {} cells of width {s}", state0.len(), self.num_cells()),
            });
        }
        Ok(self
            .batch
            .cells()
            .iter()
            .zip(state0.chunks_exact(s))
            .enumerate()
            .map(|(c, (slot, row))| {
                Cell::new(c as u32, slot.id, slot.pre as u32, slot.post as u32, row.to_vec(), seed, traced(&slot.id))
            })
            .collect())
    }

    /// The neurons, in the batch's neuron order.
    pub fn make_neurons(&self) -> Vec<Neuron> {
        let sizes = self.topology.sizes();
        let bias = self.topology.bias();
        let last = sizes.len() - 1;
        let b = self.ctx.samples;
        let classes = sizes[last];
        let first_output = self.batch.neuron(0, last, 0) as u32;
        let labels: Arc<[usize]> = self.data.y.clone().into();
        let mut out = Vec::with_capacity(self.num_neurons());
        for (k, &nk) in sizes.iter().enumerate() {
            let count = nk + usize::from(bias && k < last);
            for idx in 0..count {
                let kind = if idx == nk {
                    NeuronKind::Bias(vec![1.0; b].into())
                } else if k == 0 {
                    let col: Vec<f64> = (0..b).map(|s| self.data.x[s * nk + idx]).collect();
                    NeuronKind::Input(col.into())
                } else if k == last {
                    NeuronKind::Output {
                        class: idx as u32,
                        classes: classes as u32,
                        first: first_output,
                        labels: labels.clone(),
                    }
                } else {
                    NeuronKind::Hidden
                };
                let g = self.batch.neuron(0, k, idx);
                out.push(Neuron::new(
                    g as u32,
                    kind,
                    self.in_cells[g].len(),
                    self.out_cells[g].len(),
                    self.ctx.spec.state_width(),
                ));
            }
        }
        out
    }
}
