//! Reading a grow record (`meta-nca grow --save`, or one grown in memory from a snapshot) and
//! laying each layer's cells out as a matrix.

use std::path::Path;

use anyhow::{Context, Result};

/// A recorded grow of one network (the JSON `meta-nca grow --save` writes).
pub use meta_nca_rule::eval::GrowRecord as Grow;

/// Reads and checks a grow record JSON file.
pub fn load(path: &Path) -> Result<Grow> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let grow: Grow = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a grow record (meta-nca grow --save)", path.display()))?;
    grow.check().with_context(|| format!("in grow record {}", path.display()))?;
    if let Some(c) = grow.changes.first() {
        anyhow::bail!(
            "{}: the network changes during this grow ({c}); the weight and hidden-state pictures need one fixed network",
            path.display()
        );
    }
    Ok(grow)
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
