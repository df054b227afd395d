//! The static description of one simulated network: which cells and neurons exist, who is
//! connected to whom, and the shared read-only context every actor reads (perception, data,
//! mode). Built once from the shared definitions of `meta-nca-rule` ([`Batch`] numbers the
//! neurons exactly as the reference path does).

use std::sync::Arc;

use meta_nca_rule::batch::Batch;
use meta_nca_rule::perception::{Needs, PerceptionSpec};
use meta_nca_rule::task_data::TaskData;
use meta_nca_rule::topology::{CellId, Topology};

use crate::protocol::Fan;
use crate::{Error, Result};

/// Read-only context shared by every cell and neuron.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The perception groups.
    pub spec: PerceptionSpec,
    /// What the perception needs computed ([`PerceptionSpec::needs`], set by [`World::new`]):
    /// the forward pass, per-sample activity in the summaries, the backward message waves.
    /// Cells and neurons follow it, never the list of groups.
    pub needs: Needs,
    /// Samples in the batch the network is grown on.
    pub samples: usize,
    /// Rounds (grow steps) to run.
    pub rounds: u32,
    /// How many rounds old a summary a cell may use (0: only its own round's).
    pub max_staleness: u32,
    /// Async mode: cells tick on their own clocks and draw their own firing.
    pub async_mode: bool,
    /// Async mode: firing probability per tick.
    pub fire_fraction: f64,
    /// Cells report their whole state row after every round (the run records them).
    pub record: bool,
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
    /// Per neuron: its layer and index within the layer.
    places: Arc<Vec<(usize, usize)>>,
    /// Per cell: its fixed feedback weight `B` (the topology's, in cell order).
    feedback: Arc<Vec<f64>>,
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
        ctx.needs = spec.needs();
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
        let places = sizes
            .iter()
            .enumerate()
            .flat_map(|(k, &nk)| (0..nk + usize::from(topology.bias() && k + 1 < sizes.len())).map(move |idx| (k, idx)))
            .collect();
        Ok(Self {
            places: Arc::new(places),
            feedback: Arc::new(topology.feedback().collect()),
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
    pub fn fan(&self, neuron: u32, fan: Fan) -> &[u32] {
        match fan {
            Fan::In => &self.in_cells[neuron as usize],
            Fan::Out => &self.out_cells[neuron as usize],
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

    /// Layer and index of neuron `g` (the bias neuron of layer `k` has index `sizes[k]`).
    pub fn neuron_place(&self, g: u32) -> (usize, usize) {
        self.places[g as usize]
    }

    /// Whether neuron `g` is a hidden neuron (not an input, bias or output neuron): the
    /// neurons that take backward messages from their outgoing cells.
    pub fn is_hidden(&self, g: u32) -> bool {
        let sizes = self.topology.sizes();
        let (k, idx) = self.neuron_place(g);
        k > 0 && k + 1 < sizes.len() && idx < sizes[k]
    }

    /// The fixed feedback weight `B` of cell `c` (0 when the network has none).
    pub fn feedback(&self, c: u32) -> f64 {
        self.feedback[c as usize]
    }

    /// The same network after a topology change: the same context, `topology`'s cells and
    /// neurons, grown on `data` from now on.
    pub fn reshaped(&self, topology: Topology, data: Arc<TaskData>) -> Result<Self> {
        Self::new(topology, data, self.ctx.spec.clone(), self.ctx.clone())
    }

    /// For every neuron of `self`, the neuron of `old` it continues (`None`: a new neuron).
    /// Neurons keep no state between steps, so only their identity carries over: a neuron
    /// continues the old neuron that a surviving cell connected it to on the same side, and
    /// in a layer whose size did not change, an unmatched neuron continues the one at its place.
    pub fn neuron_sources(&self, old: &World) -> Vec<Option<u32>> {
        let n = self.num_neurons();
        let mut sources = vec![None; n];
        let old_rows: std::collections::HashMap<(usize, usize), usize> =
            old.batch.cells().iter().enumerate().map(|(r, s)| ((s.id.layer, s.id.index), r)).collect();
        let mut taken = vec![false; old.num_neurons()];
        for slot in self.batch.cells() {
            if let Some(&r) = old_rows.get(&(slot.id.layer, slot.id.index)) {
                let was = &old.batch.cells()[r];
                for (new, prev) in [(slot.pre, was.pre), (slot.post, was.post)] {
                    if sources[new].is_none() && !taken[prev] {
                        sources[new] = Some(prev as u32);
                        taken[prev] = true;
                    }
                }
            }
        }
        let (sizes, old_sizes) = (self.topology.sizes(), old.topology.sizes());
        for (g, source) in sources.iter_mut().enumerate() {
            let (k, idx) = self.places[g];
            if source.is_none() && sizes[k] == old_sizes[k] {
                let prev = old.batch.neuron(0, k, idx);
                if !taken[prev] {
                    *source = Some(prev as u32);
                    taken[prev] = true;
                }
            }
        }
        sources
    }
}
