//! Initialisation of a cell: its starting weight and its hidden-state code. The bit widths
//! are fixed when a rule is created and travel with it (see [`HiddenCode`]).

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::topology::{CellId, Topology};
use crate::{Error, Result};

/// How a cell's starting weight is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WeightInit {
    /// Every weight starts at 0 (the prototype's choice).
    #[default]
    Zeros,
    /// Xavier-uniform: `U(-a, a)` with `a = sqrt(6 / (rows + cols))` of the weight matrix.
    Xavier,
}

/// Layout of the starting hidden state: `[layer code | index code | extra zeros]`.
///
/// Bits are most significant first. The widths are part of a rule: a rule trained with one
/// layout cannot read another, and a cell whose layer or index does not fit is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HiddenCode {
    /// Bits of the layer-index code.
    pub layer_bits: usize,
    /// Bits of the within-layer cell-index code; 0 means `layer-only` init.
    pub index_bits: usize,
    /// Extra channels that start at zero.
    pub extra: usize,
    /// Whether a network's cells get fixed random feedback weights `B` (the `alignment`
    /// group reads them): [`initial_state`] then draws the network's feedback seed.
    #[serde(default)]
    pub feedback: bool,
}

/// Bits needed to write every value in `0..count` (at least 1).
pub fn bits_for(count: usize) -> usize {
    let max = count.saturating_sub(1);
    (usize::BITS - max.leading_zeros()).max(1) as usize
}

impl HiddenCode {
    /// Widths large enough for networks of up to `max_layers` weight matrices with at most
    /// `max_cells_per_layer` cells in one matrix; `with_index = false` gives layer-only init.
    pub fn for_family(max_layers: usize, max_cells_per_layer: usize, with_index: bool, extra: usize) -> Self {
        Self {
            layer_bits: bits_for(max_layers),
            index_bits: if with_index { bits_for(max_cells_per_layer) } else { 0 },
            extra,
            feedback: false,
        }
    }

    /// Checks that networks of up to `layers` weight matrices with at most `cells` cells in
    /// one matrix fit this layout; the error names the first cell that would not.
    pub fn check_fits(&self, layers: usize, cells: usize) -> Result<()> {
        let mut h = vec![0.0f64; self.dim()];
        let last = CellId { layer: layers.saturating_sub(1), pre: 0, post: 0, index: cells.saturating_sub(1) };
        self.encode_into(&last, &mut h)
    }

    /// Hidden-state width `d`.
    pub fn dim(&self) -> usize {
        self.layer_bits + self.index_bits + self.extra
    }

    /// Writes the starting hidden state of `cell` into `out` (length [`Self::dim`]).
    pub fn encode_into<E: num_traits::Float>(&self, cell: &CellId, out: &mut [E]) -> Result<()> {
        let overflow = || Error::EncodingOverflow {
            layer: cell.layer,
            index: cell.index,
            layer_bits: self.layer_bits,
            index_bits: self.index_bits,
        };
        let fits = |v: usize, bits: usize| bits >= usize::BITS as usize || v >> bits == 0;
        if !fits(cell.layer, self.layer_bits) || (self.index_bits > 0 && !fits(cell.index, self.index_bits)) {
            return Err(overflow());
        }
        debug_assert_eq!(out.len(), self.dim());
        out.iter_mut().for_each(|v| *v = E::zero());
        let mut write = |offset: usize, value: usize, bits: usize| {
            for b in 0..bits {
                if (value >> (bits - 1 - b)) & 1 == 1 {
                    out[offset + b] = E::one();
                }
            }
        };
        write(0, cell.layer, self.layer_bits);
        write(self.layer_bits, cell.index, self.index_bits);
        Ok(())
    }
}

/// Starting weight of `cell` in `topology`.
pub fn initial_weight<R: Rng>(init: WeightInit, topology: &Topology, cell: &CellId, rng: &mut R) -> f64 {
    match init {
        WeightInit::Zeros => 0.0,
        WeightInit::Xavier => {
            let a = (6.0 / (topology.rows(cell.layer) + topology.cols(cell.layer)) as f64).sqrt();
            rng.gen_range(-a..a)
        }
    }
}

/// Starting state rows `[w, h..]` of every live cell of `topology`, in [`Topology::cells`] order.
/// When `code` asks for feedback weights and the network has none yet, its feedback seed is
/// drawn first (one draw from `rng`; the weights follow from it, see [`Topology`]).
pub fn initial_state<R: Rng>(
    code: &HiddenCode,
    init: WeightInit,
    topology: &mut Topology,
    rng: &mut R,
) -> Result<Vec<f64>> {
    if code.feedback && topology.feedback_seed().is_none() {
        topology.set_feedback_seed(rng.r#gen());
    }
    let width = 1 + code.dim();
    let mut out = vec![0.0; topology.num_cells() * width];
    for (row, cell) in out.chunks_mut(width).zip(topology.cells()) {
        row[0] = initial_weight(init, topology, cell, rng);
        code.encode_into(cell, &mut row[1..])?;
    }
    Ok(out)
}

/// Where each cell's state row comes from after a topology change.
#[derive(Debug, Clone, PartialEq)]
pub enum RowSource {
    /// The row of the same cell (same layer and stable index) before the change.
    Old(usize),
    /// A new cell, starting from this row.
    New(Vec<f64>),
}

/// For every cell of `new`, in [`Topology::cells`] order: its row in `old`'s state (matched by
/// layer and stable index, [`Topology::rows_in`]), or the starting row of a cell `old` did not have. What a topology
/// change between grow steps does to the state; an index that does not fit `code` is an error.
pub fn carry_plan<R: Rng>(
    code: &HiddenCode,
    init: WeightInit,
    old: &Topology,
    new: &Topology,
    rng: &mut R,
) -> Result<Vec<RowSource>> {
    new.cells()
        .zip(new.rows_in(old))
        .map(|(cell, row)| match row {
            Some(r) => Ok(RowSource::Old(r)),
            None => {
                let mut row = vec![0.0; 1 + code.dim()];
                row[0] = initial_weight(init, new, cell, rng);
                code.encode_into(cell, &mut row[1..])?;
                Ok(RowSource::New(row))
            }
        })
        .collect()
}

/// Applies a [`carry_plan`] to state rows of width `width`.
pub fn apply_plan(plan: &[RowSource], old_state: &[f64], width: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(plan.len() * width);
    for source in plan {
        match source {
            RowSource::Old(r) => out.extend_from_slice(&old_state[r * width..(r + 1) * width]),
            RowSource::New(row) => out.extend_from_slice(row),
        }
    }
    out
}

/// State rows of `new` carried over from `old`: [`carry_plan`] applied to `old_state`.
pub fn carry_state<R: Rng>(
    code: &HiddenCode,
    init: WeightInit,
    old: &Topology,
    old_state: &[f64],
    new: &Topology,
    rng: &mut R,
) -> Result<Vec<f64>> {
    Ok(apply_plan(&carry_plan(code, init, old, new, rng)?, old_state, 1 + code.dim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits() {
        assert_eq!(bits_for(1), 1);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(3), 2);
        assert_eq!(bits_for(15), 4);
        assert_eq!(bits_for(16), 4);
        assert_eq!(bits_for(17), 5);
    }

    #[test]
    fn code_is_msb_first() {
        let code = HiddenCode { layer_bits: 2, index_bits: 4, extra: 2, feedback: false };
        let mut h = vec![9.0f64; code.dim()];
        code.encode_into(&CellId { layer: 1, pre: 0, post: 0, index: 6 }, &mut h).expect("fits");
        assert_eq!(h, vec![0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn carried_state_keeps_survivors_and_initialises_newcomers() {
        let code = HiddenCode { layer_bits: 1, index_bits: 5, extra: 1, feedback: false };
        let mut old = Topology::dense(&[2, 2, 2], true).expect("valid");
        let mut rng = rand::rngs::mock::StepRng::new(0, 1);
        let mut state = initial_state(&code, WeightInit::Zeros, &mut old, &mut rng).expect("fits");
        state.iter_mut().enumerate().for_each(|(k, v)| *v += k as f64);
        let mut new = old.clone();
        new.remove_neuron(1, 0).expect("hidden");
        let (_, added) = new.add_neuron(1).expect("hidden");
        let carried = carry_state(&code, WeightInit::Zeros, &old, &state, &new, &mut rng).expect("fits");
        let width = 1 + code.dim();
        for (cell, row) in new.cells().zip(carried.chunks(width)) {
            match old.cells().position(|c| c.layer == cell.layer && c.index == cell.index) {
                Some(k) => assert_eq!(row, &state[k * width..(k + 1) * width]),
                None => {
                    assert!(added.contains(cell));
                    let mut fresh = vec![0.0; code.dim()];
                    code.encode_into(cell, &mut fresh).expect("fits");
                    assert_eq!(row[0], 0.0);
                    assert_eq!(&row[1..], &fresh[..]);
                }
            }
        }
        let narrow = HiddenCode { layer_bits: 1, index_bits: 3, extra: 0, feedback: false };
        let mut small = Topology::dense(&[2, 2, 2], true).expect("valid");
        let s0 = initial_state(&narrow, WeightInit::Zeros, &mut small, &mut rng).expect("fits");
        let mut grown = small.clone();
        grown.add_neuron(1).expect("hidden");
        grown.add_neuron(1).expect("hidden");
        assert!(matches!(
            carry_state(&narrow, WeightInit::Zeros, &small, &s0, &grown, &mut rng),
            Err(Error::EncodingOverflow { .. })
        ));
    }

    #[test]
    fn overflow_is_an_error() {
        let code = HiddenCode { layer_bits: 1, index_bits: 3, extra: 0, feedback: false };
        let mut h = vec![0.0f64; code.dim()];
        let err = code.encode_into(&CellId { layer: 0, pre: 0, post: 0, index: 8 }, &mut h);
        assert!(matches!(err, Err(Error::EncodingOverflow { index: 8, .. })));
        let err = code.encode_into(&CellId { layer: 2, pre: 0, post: 0, index: 0 }, &mut h);
        assert!(matches!(err, Err(Error::EncodingOverflow { layer: 2, .. })));
        let layer_only = HiddenCode { layer_bits: 1, index_bits: 0, extra: 1, feedback: false };
        let mut h = vec![0.0f64; layer_only.dim()];
        assert!(layer_only.encode_into(&CellId { layer: 1, pre: 0, post: 0, index: 1000 }, &mut h).is_ok());
    }
}
