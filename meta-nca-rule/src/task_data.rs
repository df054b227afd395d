//! The data task networks are grown and scored on: standardised features with their labels
//! ([`TaskData`]), and the loss and accuracy of one network on them ([`score`]).

use crate::task::{self, DenseNet};

/// The data a batch is grown on: standardised features and labels (the "batch" of SPEC).
#[derive(Debug, Clone)]
pub struct TaskData {
    /// Features, row-major `[B, n0]`.
    pub x: Vec<f64>,
    /// Labels `0..classes`.
    pub y: Vec<usize>,
    /// `n0`.
    pub features: usize,
    /// `nL`.
    pub classes: usize,
}

impl TaskData {
    /// The rows `rows` of this set, in that order.
    pub fn rows(&self, rows: &[usize]) -> TaskData {
        let f = self.features;
        let x = rows.iter().flat_map(|&r| self.x[r * f..(r + 1) * f].iter().copied()).collect();
        let y = rows.iter().map(|&r| self.y[r]).collect();
        TaskData { x, y, features: f, classes: self.classes }
    }

    /// This set cut in two at random, class by class: `(grow, held_out)`, the second holding
    /// `round(fraction · n_c)` of each class's `n_c` rows (at least one, and never all, of a
    /// class of two rows or more), both in row order.
    pub fn hold_out<R: rand::Rng>(&self, fraction: f64, rng: &mut R) -> (TaskData, TaskData) {
        let (mut grow, mut held) = (Vec::new(), Vec::new());
        for c in 0..self.classes {
            let mut mine: Vec<usize> = (0..self.y.len()).filter(|&r| self.y[r] == c).collect();
            rand::seq::SliceRandom::shuffle(mine.as_mut_slice(), rng);
            let n = mine.len();
            let k = if n < 2 { 0 } else { ((fraction * n as f64).round() as usize).clamp(1, n - 1) };
            held.extend_from_slice(&mine[..k]);
            grow.extend_from_slice(&mine[k..]);
        }
        grow.sort_unstable();
        held.sort_unstable();
        (self.rows(&grow), self.rows(&held))
    }
}

/// Loss and accuracy of one network on one set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction of correct argmax predictions.
    pub acc: f64,
}

/// Scores `net` on `data`.
pub fn score(net: &DenseNet<f64>, data: &TaskData) -> Score {
    let act = task::forward(net, &data.x, Some(&data.y));
    let (loss, correct) = task::loss_and_correct(&act, &data.y);
    Score { loss, acc: correct as f64 / data.y.len().max(1) as f64 }
}
