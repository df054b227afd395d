//! Reading a grow record (`meta-nca grow --save`, or one grown in memory from a snapshot) and
//! laying each layer's cells out as a matrix.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use meta_nca_rule::eval::GrowRecord;
use meta_nca_rule::topology::CellId;
use serde::Deserialize;

/// A recorded grow of one network (the JSON of [`GrowRecord`]).
#[derive(Debug, Clone, Deserialize)]
pub struct Grow {
    /// Layer sizes `[n0, …, nL]`.
    pub sizes: Vec<usize>,
    /// Bias cells on: each weight matrix has a bias row `pre == n_l`.
    pub bias: bool,
    /// Seed of the grow.
    pub seed: u64,
    /// Firing fraction.
    pub fire_fraction: f64,
    /// The live cells, in the order of every step's `weights` and `hidden`.
    pub cells: Vec<CellId>,
    /// The starting state and the state after every step.
    pub steps: Vec<Step>,
}

/// One recorded state.
#[derive(Debug, Clone, Deserialize)]
pub struct Step {
    /// Steps applied so far (0 = the starting state).
    pub step: usize,
    /// Weight of every cell.
    pub weights: Vec<f64>,
    /// Hidden state of every cell.
    pub hidden: Vec<Vec<f64>>,
    /// Which cells fired to reach this state (empty at step 0).
    #[serde(default)]
    pub fired: Vec<bool>,
    /// Training loss (nats).
    pub train_loss: f64,
    /// Training accuracy.
    pub train_acc: f64,
    /// Validation accuracy.
    pub val_acc: f64,
}

impl Grow {
    /// Reads and checks a grow record JSON file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let grow: Self = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a grow record (meta-nca grow --save)", path.display()))?;
        grow.check().with_context(|| format!("in grow record {}", path.display()))?;
        Ok(grow)
    }

    /// The same record, grown in memory.
    pub fn from_record(record: &GrowRecord) -> Result<Self> {
        let grow: Self = serde_json::from_value(serde_json::to_value(record)?)?;
        grow.check()?;
        Ok(grow)
    }

    /// Checks that every step, cell and hidden state fits the layer sizes.
    fn check(&self) -> Result<()> {
        ensure!(self.sizes.len() >= 2, "sizes {:?} has no weight matrix", self.sizes);
        ensure!(!self.steps.is_empty(), "no steps recorded");
        let mut seen = std::collections::HashSet::new();
        for c in &self.cells {
            ensure!(c.layer + 1 < self.sizes.len(), "cell {c} is beyond the last layer of sizes {:?}", self.sizes);
            let rows = self.sizes[c.layer] + usize::from(self.bias);
            ensure!(c.pre < rows && c.post < self.sizes[c.layer + 1], "cell {c} is outside its layer's matrix");
            ensure!(seen.insert((c.layer, c.pre, c.post)), "cell {c} appears twice");
        }
        let width = self.hidden_width();
        for s in &self.steps {
            let n = self.cells.len();
            ensure!(s.weights.len() == n, "step {} has {} weights for {n} cells", s.step, s.weights.len());
            ensure!(s.hidden.len() == n, "step {} has {} hidden states for {n} cells", s.step, s.hidden.len());
            ensure!(s.fired.is_empty() || s.fired.len() == n, "step {} has {} firing flags for {n} cells", s.step, s.fired.len());
            if let Some(h) = s.hidden.iter().find(|h| h.len() != width) {
                bail!("step {} has a hidden state of width {} (expected {width})", s.step, h.len());
            }
        }
        Ok(())
    }

    /// Number of weight matrices.
    pub fn layers(&self) -> usize {
        self.sizes.len() - 1
    }

    /// Hidden channels per cell.
    pub fn hidden_width(&self) -> usize {
        self.steps.first().and_then(|s| s.hidden.first()).map_or(0, Vec::len)
    }

    /// Rule steps of the grow (the last recorded step).
    pub fn total_steps(&self) -> usize {
        self.steps.last().map_or(0, |s| s.step)
    }
}

/// One weight matrix laid out for drawing: rows are pre-synaptic neurons (the bias neuron
/// last), columns post-synaptic neurons, and each slot holds its cell's position in the
/// record, or `None` for a dead (absent) connection.
#[derive(Debug, Clone)]
pub struct LayerGrid {
    /// Weight-matrix index `l`.
    pub layer: usize,
    /// Is this the last weight matrix (columns are output classes)?
    pub last: bool,
    /// Rows: `n_l`, plus 1 with a bias row.
    pub rows: usize,
    /// Columns: `n_{l+1}`.
    pub cols: usize,
    /// Whether the last row is the bias neuron.
    pub bias_row: bool,
    /// `[rows, cols]` row-major: the cell's index in `Grow::cells`.
    pub slots: Vec<Option<usize>>,
}

impl LayerGrid {
    /// The grid of weight matrix `layer` of `grow`.
    pub fn of(grow: &Grow, layer: usize) -> Self {
        let rows = grow.sizes[layer] + usize::from(grow.bias);
        let cols = grow.sizes[layer + 1];
        let mut slots = vec![None; rows * cols];
        for (k, c) in grow.cells.iter().enumerate().filter(|(_, c)| c.layer == layer) {
            slots[c.pre * cols + c.post] = Some(k);
        }
        Self { layer, last: layer + 2 == grow.sizes.len(), rows, cols, bias_row: grow.bias, slots }
    }

    /// The largest magnitude of this layer's cells over `values` (one slice per frame).
    pub fn max_abs<'a>(&self, frames: impl IntoIterator<Item = &'a [f64]>) -> f64 {
        let cells: Vec<usize> = self.slots.iter().flatten().copied().collect();
        frames
            .into_iter()
            .flat_map(|v| cells.iter().map(move |&k| v[k].abs()))
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
    }
}
