//! Topology of one task network: layer sizes, bias cells, the live connections and their
//! stable cell ids. Both the batched reference path and the actor simulation read it. Its
//! `change` submodule: the changes between grow steps ([`Change`], [`Scheduled`]).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One live connection `(layer, pre, post)` and the stable index it got at creation.
///
/// `pre` counts the layer's neurons `0..n_l`; when bias cells are on, `pre == n_l` is the
/// constant-1 bias neuron. `post` counts the next layer's neurons `0..n_{l+1}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CellId {
    /// Weight-matrix index `l` (the connection goes from layer `l` to layer `l+1`).
    pub layer: usize,
    /// Pre-synaptic neuron (row of `W_l`); `n_l` is the bias neuron.
    pub pre: usize,
    /// Post-synaptic neuron (column of `W_l`).
    pub post: usize,
    /// Index within the layer: row-major `pre * n_{l+1} + post` at creation; a cell added
    /// later takes the next unused index. Feeds the hidden-state index code.
    pub index: usize,
}

impl std::fmt::Display for CellId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.layer, self.pre, self.post)
    }
}

/// The live cells of one weight matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LayerCellsFile")]
pub struct LayerCells {
    /// Live cells, in creation order (fully connected layers: row-major).
    pub cells: Vec<CellId>,
    /// Each live cell's fixed feedback weight `B` (same order as `cells`; all 0 when the
    /// network draws none): what the `alignment` messages travel through.
    pub feedback: Vec<f64>,
    /// The index the next added cell of this layer gets.
    pub next_index: usize,
}

/// [`LayerCells`] as written before feedback weights existed (read as all zero).
#[derive(Deserialize)]
struct LayerCellsFile {
    cells: Vec<CellId>,
    #[serde(default)]
    feedback: Vec<f64>,
    next_index: usize,
}

impl TryFrom<LayerCellsFile> for LayerCells {
    type Error = String;

    fn try_from(f: LayerCellsFile) -> std::result::Result<Self, String> {
        let feedback = match f.feedback.len() {
            0 => vec![0.0; f.cells.len()],
            n if n == f.cells.len() => f.feedback,
            n => return Err(format!("{} cells but {n} feedback weights", f.cells.len())),
        };
        Ok(Self { cells: f.cells, feedback, next_index: f.next_index })
    }
}

/// Layer sizes, bias flag and live connections of one task network.
///
/// A cell's fixed feedback weight `B` (SPEC "Local error messages") is part of the network:
/// drawn once when the cell is created, uniformly on `[-s, s]` with `s = sqrt(6 / (rows +
/// cols))` of its weight matrix at that moment, from the network's feedback seed and the cell's
/// stable `(layer, index)`, carried with the cell through every change, never updated. Both
/// engines apply changes through [`Topology::apply`], so they hold the same `B`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    sizes: Vec<usize>,
    bias: bool,
    layers: Vec<LayerCells>,
    /// Seed of the feedback weights; `None`: no feedback weights (every `B` is 0).
    #[serde(default)]
    feedback_seed: Option<u64>,
}

impl Topology {
    /// A fully connected network with layer sizes `[n0, .., nL]` (at least two entries, all > 0).
    pub fn dense(sizes: &[usize], bias: bool) -> Result<Self> {
        if sizes.len() < 2 {
            return Err(Error::Topology(format!(
                "an architecture needs at least an input and an output layer, got {sizes:?}"
            )));
        }
        if let Some(pos) = sizes.iter().position(|&n| n == 0) {
            return Err(Error::Topology(format!("layer {pos} of {sizes:?} has no neurons")));
        }
        let layers = (0..sizes.len() - 1)
            .map(|l| {
                let rows = sizes[l] + usize::from(bias);
                let cols = sizes[l + 1];
                let cells = (0..rows)
                    .flat_map(|pre| (0..cols).map(move |post| (pre, post)))
                    .map(|(pre, post)| CellId { layer: l, pre, post, index: pre * cols + post })
                    .collect();
                LayerCells { feedback: vec![0.0; rows * cols], cells, next_index: rows * cols }
            })
            .collect();
        Ok(Self { sizes: sizes.to_vec(), bias, layers, feedback_seed: None })
    }

    /// Gives every cell, present and future, a fixed feedback weight drawn from `seed` (see
    /// [`Topology`]). Present cells are drawn at the current layer sizes.
    pub fn set_feedback_seed(&mut self, seed: u64) {
        self.feedback_seed = Some(seed);
        for l in 0..self.layers.len() {
            let fb: Vec<f64> = self.layers[l].cells.iter().map(|c| self.draw_feedback(c)).collect();
            self.layers[l].feedback = fb;
        }
    }

    /// The feedback seed, if the network has feedback weights.
    pub fn feedback_seed(&self) -> Option<u64> {
        self.feedback_seed
    }

    /// The feedback weight a cell created now as `cell` gets.
    fn draw_feedback(&self, cell: &CellId) -> f64 {
        let Some(seed) = self.feedback_seed else { return 0.0 };
        let s = (6.0 / (self.rows(cell.layer) + self.cols(cell.layer)) as f64).sqrt();
        let bits =
            crate::random::splitmix(seed ^ crate::random::splitmix(((cell.layer as u64) << 40) ^ cell.index as u64));
        let u = (bits >> 11) as f64 / (1u64 << 53) as f64;
        s * (2.0 * u - 1.0)
    }

    /// Every live cell's feedback weight, in [`Self::cells`] order.
    pub fn feedback(&self) -> impl Iterator<Item = f64> + '_ {
        self.layers.iter().flat_map(|l| l.feedback.iter().copied())
    }

    /// Neurons per layer, bias neurons not counted.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// Whether each non-output layer has a constant-1 bias neuron.
    pub fn bias(&self) -> bool {
        self.bias
    }

    /// Number of weight matrices `L`.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Rows of `W_l`: the layer's neurons plus the bias neuron when on.
    pub fn rows(&self, layer: usize) -> usize {
        self.sizes[layer] + usize::from(self.bias)
    }

    /// Columns of `W_l`.
    pub fn cols(&self, layer: usize) -> usize {
        self.sizes[layer + 1]
    }

    /// The live cells of weight matrix `layer`.
    pub fn layer(&self, layer: usize) -> &LayerCells {
        &self.layers[layer]
    }

    /// All live cells, layer by layer.
    pub fn cells(&self) -> impl Iterator<Item = &CellId> {
        self.layers.iter().flat_map(|l| l.cells.iter())
    }

    /// Number of live cells.
    pub fn num_cells(&self) -> usize {
        self.layers.iter().map(|l| l.cells.len()).sum()
    }

    /// The live-connection mask of `W_l`, row-major `[rows, cols]`.
    pub fn mask(&self, layer: usize) -> Vec<bool> {
        let cols = self.cols(layer);
        let mut m = vec![false; self.rows(layer) * cols];
        for c in &self.layers[layer].cells {
            m[c.pre * cols + c.post] = true;
        }
        m
    }

    fn check_connection(&self, layer: usize, pre: usize, post: usize) -> Result<()> {
        if layer >= self.num_layers() {
            return Err(Error::Topology(format!(
                "no weight matrix {layer}: the network {:?} has {}",
                self.sizes,
                self.num_layers()
            )));
        }
        if pre >= self.rows(layer) || post >= self.cols(layer) {
            return Err(Error::Topology(format!(
                "connection {layer}:{pre}:{post} is outside W_{layer} ({} x {})",
                self.rows(layer),
                self.cols(layer)
            )));
        }
        Ok(())
    }

    /// Removes the cells of `W_layer` that `gone` picks (with their feedback weights) and
    /// returns them.
    fn remove_cells(&mut self, layer: usize, gone: impl Fn(&CellId) -> bool) -> Vec<CellId> {
        let lc = &mut self.layers[layer];
        let (mut cells, mut feedback, mut removed) = (Vec::new(), Vec::new(), Vec::new());
        for (&c, &b) in lc.cells.iter().zip(&lc.feedback) {
            if gone(&c) {
                removed.push(c);
            } else {
                cells.push(c);
                feedback.push(b);
            }
        }
        (lc.cells, lc.feedback) = (cells, feedback);
        removed
    }

    /// Removes the live connection `layer:pre:post`; an error if there is no such live cell.
    pub fn remove_connection(&mut self, layer: usize, pre: usize, post: usize) -> Result<CellId> {
        self.check_connection(layer, pre, post)?;
        let pos = self.layers[layer]
            .cells
            .iter()
            .position(|c| c.pre == pre && c.post == post)
            .ok_or_else(|| Error::Topology(format!("connection {layer}:{pre}:{post} is not live")))?;
        self.layers[layer].feedback.remove(pos);
        Ok(self.layers[layer].cells.remove(pos))
    }

    /// Adds connection `layer:pre:post` as a fresh cell with the layer's next unused index;
    /// an error if it is already live.
    pub fn add_connection(&mut self, layer: usize, pre: usize, post: usize) -> Result<CellId> {
        self.check_connection(layer, pre, post)?;
        if self.layers[layer].cells.iter().any(|c| c.pre == pre && c.post == post) {
            return Err(Error::Topology(format!("connection {layer}:{pre}:{post} is already live")));
        }
        let id = CellId { layer, pre, post, index: self.layers[layer].next_index };
        let b = self.draw_feedback(&id);
        let lc = &mut self.layers[layer];
        lc.next_index += 1;
        lc.cells.push(id);
        lc.feedback.push(b);
        Ok(id)
    }

    /// A layer whose neurons can come and go: a hidden layer, or the output layer (a class
    /// arriving or retiring). Input neurons are the data's features and stay.
    fn check_neuron_layer(&self, layer: usize) -> Result<()> {
        if layer == 0 || layer >= self.sizes.len() {
            return Err(Error::Topology(format!(
                "layer {layer} of {:?} has no neurons that can be added or removed (hidden layers are 1 to {}, \
                 the output layer is {})",
                self.sizes,
                self.sizes.len().saturating_sub(2),
                self.sizes.len() - 1
            )));
        }
        Ok(())
    }

    /// Whether `layer` is the output layer.
    fn is_output(&self, layer: usize) -> bool {
        layer + 1 == self.sizes.len()
    }

    /// Removes neuron `idx` of layer `layer` (hidden or output) with every connection into
    /// and out of it; the neurons after it (and a hidden layer's bias neuron) move down by one.
    /// Removing an output neuron retires its class: the classes after it move down by one.
    /// Returns the removed cells. An error, and nothing changed, if there is no such neuron or
    /// it is the layer's last one.
    pub fn remove_neuron(&mut self, layer: usize, idx: usize) -> Result<Vec<CellId>> {
        self.check_neuron_layer(layer)?;
        if idx >= self.sizes[layer] {
            return Err(Error::Topology(format!(
                "layer {layer} has {} neurons, there is no neuron {idx}",
                self.sizes[layer]
            )));
        }
        if self.sizes[layer] == 1 {
            return Err(Error::Topology(format!("neuron {idx} is the last one of layer {layer}")));
        }
        let mut removed = self.remove_cells(layer - 1, |c| c.post == idx);
        self.layers[layer - 1].cells.iter_mut().filter(|c| c.post > idx).for_each(|c| c.post -= 1);
        if !self.is_output(layer) {
            removed.extend(self.remove_cells(layer, |c| c.pre == idx));
            self.layers[layer].cells.iter_mut().filter(|c| c.pre > idx).for_each(|c| c.pre -= 1);
        }
        self.sizes[layer] -= 1;
        Ok(removed)
    }

    /// Adds a neuron at the end of layer `layer` (hidden or output), connected from every
    /// neuron of the layer before (bias included) and, in a hidden layer, to every neuron of
    /// the layer after; the new cells take the next unused indices of their layers. A new
    /// output neuron is a new class with the next label. Returns the new neuron's index and
    /// the added cells.
    pub fn add_neuron(&mut self, layer: usize) -> Result<(usize, Vec<CellId>)> {
        self.check_neuron_layer(layer)?;
        let idx = self.sizes[layer];
        let output = self.is_output(layer);
        // The bias neuron of a hidden `layer` moves from row idx to row idx + 1.
        if self.bias && !output {
            self.layers[layer].cells.iter_mut().filter(|c| c.pre == idx).for_each(|c| c.pre += 1);
        }
        self.sizes[layer] += 1;
        let mut added = Vec::new();
        for pre in 0..self.rows(layer - 1) {
            added.push(self.add_connection(layer - 1, pre, idx)?);
        }
        if !output {
            for post in 0..self.cols(layer) {
                added.push(self.add_connection(layer, idx, post)?);
            }
        }
        Ok((idx, added))
    }
}

mod change;
pub use change::{Change, Scheduled};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_counts_and_indices() {
        let t = Topology::dense(&[4, 5, 3], true).expect("valid");
        assert_eq!(t.num_cells(), 5 * 5 + 6 * 3);
        let l1: Vec<usize> = t.layer(1).cells.iter().map(|c| c.index).collect();
        assert_eq!(l1, (0..18).collect::<Vec<_>>());
        assert_eq!(t.layer(1).cells[4], CellId { layer: 1, pre: 1, post: 1, index: 4 });
    }

    #[test]
    fn remove_and_add_take_fresh_index() {
        let mut t = Topology::dense(&[2, 2], false).expect("valid");
        t.remove_connection(0, 1, 0).expect("live");
        assert!(t.remove_connection(0, 1, 0).is_err());
        assert!(t.remove_connection(0, 2, 0).is_err());
        assert!(t.remove_connection(1, 0, 0).is_err());
        let id = t.add_connection(0, 1, 0).expect("free");
        assert_eq!(id.index, 4);
        assert!(t.add_connection(0, 1, 0).is_err());
        assert_eq!(t.mask(0), vec![true, true, true, true]);
    }

    #[test]
    fn neurons_come_and_go_with_their_connections() {
        let mut t = Topology::dense(&[2, 3, 2], true).expect("valid");
        let removed = t.remove_neuron(1, 1).expect("hidden neuron");
        assert_eq!(removed.len(), 3 + 2);
        assert_eq!(t.sizes(), &[2, 2, 2]);
        assert_eq!(t.num_cells(), 3 * 2 + 3 * 2);
        // The old neuron 2 is now 1, and the bias row moved from 3 to 2.
        assert!(t.layer(1).cells.iter().all(|c| c.pre <= 2));
        assert_eq!(t.mask(1), vec![true; 6]);
        let (idx, added) = t.add_neuron(1).expect("hidden layer");
        assert_eq!(idx, 2);
        assert_eq!(added.len(), 3 + 2);
        assert_eq!(t.sizes(), &[2, 3, 2]);
        assert_eq!(t.mask(0), vec![true; 9]);
        assert_eq!(t.mask(1), vec![true; 8]);
        // New cells take fresh indices, never reused ones.
        assert!(added.iter().filter(|c| c.layer == 0).all(|c| c.index >= 9));
        assert!(t.remove_neuron(0, 0).is_err());
        assert!(t.remove_neuron(3, 0).is_err());
        assert!(t.remove_neuron(1, 3).is_err());
        assert!(t.add_neuron(3).is_err());
        let mut one = Topology::dense(&[2, 1, 2], false).expect("valid");
        assert!(one.remove_neuron(1, 0).is_err());
    }

    #[test]
    fn output_neurons_are_classes_that_come_and_go() {
        let mut t = Topology::dense(&[2, 3, 2], true).expect("valid");
        let (idx, added) = t.add_neuron(2).expect("output layer");
        assert_eq!((idx, t.sizes()), (2, &[2, 3, 3][..]));
        // From every hidden neuron and the bias neuron, nothing out of an output neuron.
        assert_eq!(added.len(), 4);
        assert!(added.iter().all(|c| c.layer == 1 && c.post == 2 && c.index >= 8));
        assert_eq!(t.mask(1), vec![true; 12]);
        let removed = t.remove_neuron(2, 0).expect("output neuron");
        assert_eq!(removed.len(), 4);
        assert_eq!(t.sizes(), &[2, 3, 2]);
        // The old class 1 is now 0 and the new class 2 is 1; hidden cells are untouched.
        assert!(t.layer(1).cells.iter().all(|c| c.post < 2));
        assert_eq!(t.layer(0).cells.len(), 9);
        let mut one_layer = Topology::dense(&[3, 2], true).expect("valid");
        one_layer.add_neuron(1).expect("output layer of a 1-layer net");
        assert_eq!((one_layer.sizes(), one_layer.num_cells()), (&[3, 3][..], 12));
        one_layer.remove_neuron(1, 2).expect("output");
        one_layer.remove_neuron(1, 0).expect("output");
        assert!(one_layer.remove_neuron(1, 0).is_err(), "the last class stays");
        assert!(one_layer.add_neuron(0).is_err(), "input neurons are the data's features");
    }

    #[test]
    fn rejects_bad_architectures() {
        assert!(Topology::dense(&[4], true).is_err());
        assert!(Topology::dense(&[4, 0, 3], true).is_err());
    }

    #[test]
    fn feedback_weights_are_bounded_seeded_and_travel_with_their_cells() {
        let mut t = Topology::dense(&[3, 4, 2], true).expect("valid");
        assert!(t.feedback().all(|b| b == 0.0), "no seed, no feedback weights");
        t.set_feedback_seed(42);
        let bound = |l: usize, t: &Topology| (6.0 / (t.rows(l) + t.cols(l)) as f64).sqrt();
        for l in 0..2 {
            let lc = t.layer(l);
            assert_eq!(lc.cells.len(), lc.feedback.len());
            assert!(lc.feedback.iter().all(|b| b.abs() <= bound(l, &t) && *b != 0.0));
        }
        let before: Vec<(CellId, f64)> = t.cells().copied().zip(t.feedback()).collect();
        let mut changed = t.clone();
        changed.remove_connection(0, 1, 2).expect("live");
        changed.remove_neuron(1, 0).expect("hidden");
        let (_, added) = changed.add_neuron(1).expect("hidden");
        for (c, b) in changed.cells().zip(changed.feedback()) {
            match before.iter().find(|(o, _)| o.layer == c.layer && o.index == c.index) {
                Some((_, old)) => assert_eq!(b, *old, "{c} kept its B"),
                None => assert!(added.contains(c) && b != 0.0, "{c} is new and drew a B"),
            }
        }
        let mut again = Topology::dense(&[3, 4, 2], true).expect("valid");
        again.set_feedback_seed(42);
        assert_eq!(again.feedback().collect::<Vec<_>>(), t.feedback().collect::<Vec<_>>(), "seeded");
        let json = serde_json::to_string(&changed).expect("serialises");
        assert_eq!(serde_json::from_str::<Topology>(&json).expect("reads back"), changed);
    }
}
