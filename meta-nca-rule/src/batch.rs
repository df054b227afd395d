//! A batch of task networks flattened into one table of cells and neurons, so that every
//! layer of every network is perceived, and updated, by one rule call per step.

use crate::perception::{CellView, NeuronView, PerceptionSpec, perceive};
use crate::task::DenseNet;
use crate::topology::{CellId, Topology};

/// Where one cell of the batch lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellSlot {
    /// Network index in the batch.
    pub net: usize,
    /// The cell's id within its network.
    pub id: CellId,
    /// Global index of the pre-neuron.
    pub pre: usize,
    /// Global index of the post-neuron.
    pub post: usize,
}

/// Many task networks, possibly of different architectures, as one flat cell/neuron table.
///
/// Cells are ordered network by network, each in [`Topology::cells`] order; neurons network
/// by network, layer by layer (`n_k` neurons, then the bias neuron for `k < L`).
#[derive(Debug, Clone)]
pub struct Batch {
    topologies: Vec<Topology>,
    cells: Vec<CellSlot>,
    /// Per network: the first cell index, and one past the last.
    net_cells: Vec<(usize, usize)>,
    /// Per network, per layer `k in 0..=L`: global index of neuron 0 of layer `k`.
    neuron_base: Vec<Vec<usize>>,
    in_count: Vec<usize>,
    out_count: Vec<usize>,
}

impl Batch {
    /// Flattens `topologies`.
    pub fn new(topologies: Vec<Topology>) -> Self {
        let mut cells = Vec::new();
        let mut net_cells = Vec::new();
        let mut neuron_base = Vec::new();
        let mut next = 0;
        for (net, t) in topologies.iter().enumerate() {
            let sizes = t.sizes();
            let bases: Vec<usize> = (0..sizes.len())
                .map(|k| {
                    let base = next;
                    next += sizes[k] + usize::from(t.bias() && k + 1 < sizes.len());
                    base
                })
                .collect();
            let start = cells.len();
            for &id in t.cells() {
                cells.push(CellSlot { net, id, pre: bases[id.layer] + id.pre, post: bases[id.layer + 1] + id.post });
            }
            net_cells.push((start, cells.len()));
            neuron_base.push(bases);
        }
        let mut in_count = vec![0; next];
        let mut out_count = vec![0; next];
        for c in &cells {
            in_count[c.post] += 1;
            out_count[c.pre] += 1;
        }
        Self { topologies, cells, net_cells, neuron_base, in_count, out_count }
    }

    /// The networks' topologies.
    pub fn topologies(&self) -> &[Topology] {
        &self.topologies
    }

    /// Every live cell, in state-row order.
    pub fn cells(&self) -> &[CellSlot] {
        &self.cells
    }

    /// Number of live cells (rows of the state).
    pub fn num_cells(&self) -> usize {
        self.cells.len()
    }

    /// Number of networks.
    pub fn num_nets(&self) -> usize {
        self.topologies.len()
    }

    /// Number of neurons, bias neurons included.
    pub fn num_neurons(&self) -> usize {
        self.in_count.len()
    }

    /// State rows `start..end` of network `net`.
    pub fn net_cells(&self, net: usize) -> (usize, usize) {
        self.net_cells[net]
    }

    /// Neurons `start..end` of network `net`.
    pub fn net_neurons(&self, net: usize) -> (usize, usize) {
        let start = self.neuron_base[net][0];
        let end = self.neuron_base.get(net + 1).map_or(self.num_neurons(), |b| b[0]);
        (start, end)
    }

    /// Global index of neuron `idx` of layer `k` of network `net`.
    pub fn neuron(&self, net: usize, k: usize, idx: usize) -> usize {
        self.neuron_base[net][k] + idx
    }

    /// Live cells into / out of each neuron.
    pub fn counts(&self) -> (&[usize], &[usize]) {
        (&self.in_count, &self.out_count)
    }

    /// The dense masked weights of network `net` read from the `w` column of `state`.
    pub fn dense_net(&self, net: usize, state: &[f64], width: usize) -> DenseNet<f64> {
        let t = &self.topologies[net];
        DenseNet { sizes: t.sizes().to_vec(), bias: t.bias(), weights: self.dense(net, |c| state[c * width]) }
    }

    /// The feedback weights `B` of network `net` as dense matrices laid out like its weights
    /// (dead connections 0).
    pub fn dense_feedback(&self, net: usize) -> Vec<Vec<f64>> {
        let feedback: Vec<f64> = self.topologies[net].feedback().collect();
        let start = self.net_cells[net].0;
        self.dense(net, |c| feedback[c - start])
    }

    /// Per-cell values `value(c)` (`c`: the cell's row in the batch) of network `net` as dense
    /// matrices laid out like its weights, 0 at dead connections.
    pub fn dense(&self, net: usize, value: impl Fn(usize) -> f64) -> Vec<Vec<f64>> {
        let t = &self.topologies[net];
        let mut dense = DenseNet::zeros(t.sizes(), t.bias()).weights;
        let (start, end) = self.net_cells[net];
        for (c, slot) in self.cells[start..end].iter().enumerate() {
            dense[slot.id.layer][slot.id.pre * t.cols(slot.id.layer) + slot.id.post] = value(start + c);
        }
        dense
    }

    /// Sums of the state rows of the cells into (`in`) and out of (`out`) every neuron, `[N, width]`.
    pub fn neuron_sums(&self, state: &[f64], width: usize) -> (Vec<f64>, Vec<f64>) {
        let mut ins = vec![0.0; self.num_neurons() * width];
        let mut outs = vec![0.0; self.num_neurons() * width];
        for (slot, row) in self.cells.iter().zip(state.chunks_exact(width.max(1))) {
            for (sum, v) in ins[slot.post * width..][..width].iter_mut().zip(row) {
                *sum += v;
            }
            for (sum, v) in outs[slot.pre * width..][..width].iter_mut().zip(row) {
                *sum += v;
            }
        }
        (ins, outs)
    }
}

/// Per-neuron batch statistics and per-cell correlations of the networks' activity; zeros
/// when the perception needs no activity.
#[derive(Debug, Clone)]
pub struct ActivityStats {
    /// Batch mean of each neuron's activation.
    pub act: Vec<f64>,
    /// Batch mean of each neuron's pre-activation.
    pub pre_act: Vec<f64>,
    /// Batch mean of each output neuron's error signal.
    pub err: Vec<f64>,
    /// Per cell: batch mean of `a_pre * z_post`.
    pub hebb_z: Vec<f64>,
    /// Per cell: batch mean of `a_pre * e_post` (output-layer cells).
    pub hebb_e: Vec<f64>,
    /// Batch mean of each neuron's backward message through the weights.
    pub delta: Vec<f64>,
    /// Batch mean of each neuron's backward message through the feedback weights.
    pub delta_fa: Vec<f64>,
    /// Per cell: batch mean of `a_pre * δ_post` (through the weights).
    pub back: Vec<f64>,
    /// Per cell: batch mean of `a_pre * δ_post` (through the feedback weights).
    pub align: Vec<f64>,
}

impl ActivityStats {
    /// All zeros for `batch`.
    pub fn zeros(batch: &Batch) -> Self {
        let n = batch.num_neurons();
        let c = batch.num_cells();
        Self {
            act: vec![0.0; n],
            pre_act: vec![0.0; n],
            err: vec![0.0; n],
            hebb_z: vec![0.0; c],
            hebb_e: vec![0.0; c],
            delta: vec![0.0; n],
            delta_fa: vec![0.0; n],
            back: vec![0.0; c],
            align: vec![0.0; c],
        }
    }
}

/// What perceiving a cell of a batch reads besides its own state row: the summed states of
/// every neuron's incoming and outgoing cells (taken once from one state) and the activity
/// statistics. [`Self::cell`] perceives one cell, so a caller can perceive a batch whole
/// ([`perceive_batch`]) or a few cells at a time without a `[cells, width]` matrix.
pub struct Perceiver<'a> {
    spec: &'a PerceptionSpec,
    batch: &'a Batch,
    stats: &'a ActivityStats,
    ins: Vec<f64>,
    outs: Vec<f64>,
}

impl<'a> Perceiver<'a> {
    /// The neighbourhood of every cell of `batch` in `state` (`[cells, state width]`).
    pub fn new(spec: &'a PerceptionSpec, batch: &'a Batch, state: &[f64], stats: &'a ActivityStats) -> Self {
        let (ins, outs) = batch.neuron_sums(state, spec.state_width());
        Self { spec, batch, stats, ins, outs }
    }

    fn view(&self, g: usize) -> NeuronView<'_, f64> {
        let s = self.spec.state_width();
        let (in_count, out_count) = self.batch.counts();
        let stats = self.stats;
        NeuronView {
            in_sum: &self.ins[g * s..(g + 1) * s],
            in_count: in_count[g],
            out_sum: &self.outs[g * s..(g + 1) * s],
            out_count: out_count[g],
            act: stats.act[g],
            pre_act: stats.pre_act[g],
            err: stats.err[g],
            delta: stats.delta[g],
            delta_fa: stats.delta_fa[g],
        }
    }

    /// The perception of cell `c` (`spec.width()` values) into `out`; `row` is the cell's own
    /// state row in the state the sums were taken from.
    pub fn cell(&self, c: usize, row: &[f64], out: &mut [f64]) {
        let slot = &self.batch.cells()[c];
        let stats = self.stats;
        let cell = CellView {
            state: row,
            hebb_z: stats.hebb_z[c],
            hebb_e: stats.hebb_e[c],
            back: stats.back[c],
            align: stats.align[c],
        };
        perceive(self.spec, cell, self.view(slot.pre), self.view(slot.post), out);
    }
}

/// Perception of every cell of `batch`: `[cells, spec.width()]`, from the state `[cells, width]`
/// and the activity statistics. The batched form of [`perceive`].
pub fn perceive_batch(spec: &PerceptionSpec, batch: &Batch, state: &[f64], stats: &ActivityStats) -> Vec<f64> {
    let (s, f) = (spec.state_width(), spec.width());
    let perceiver = Perceiver::new(spec, batch, state, stats);
    let mut p = vec![0.0; batch.num_cells() * f];
    for (c, out) in p.chunks_exact_mut(f.max(1)).enumerate().take(batch.num_cells()) {
        perceiver.cell(c, &state[c * s..(c + 1) * s], out);
    }
    p
}
