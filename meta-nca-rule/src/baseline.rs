//! The backprop baseline: the same architecture trained with Adam on the same split, so every
//! evaluation of a grown network stands next to what ordinary training reaches.

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::init::{WeightInit, initial_weight};
use crate::optim::Adam;
use crate::task::{self, ActivityGrad, DenseNet};
use crate::task_data::{Score, TaskData, score};
use crate::topology::Topology;

/// How the baseline is trained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaselineSpec {
    /// Full-batch Adam epochs.
    pub epochs: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Seed of the Xavier initialisation.
    pub seed: u64,
}

impl Default for BaselineSpec {
    fn default() -> Self {
        Self { epochs: 500, lr: 0.01, seed: 0 }
    }
}

/// Train and validation scores of a backprop-trained network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaselineScore {
    /// On the training set.
    pub train: Score,
    /// On the validation set.
    pub val: Score,
}

/// Trains a Xavier-initialised network of layer sizes `sizes` with full-batch Adam on
/// `train`; scores it on `train` and `val`.
pub fn train_baseline(
    sizes: &[usize],
    bias: bool,
    train: &TaskData,
    val: &TaskData,
    spec: BaselineSpec,
) -> crate::Result<BaselineScore> {
    let net = train_baseline_net(sizes, bias, train, spec)?;
    Ok(BaselineScore { train: score(&net, train), val: score(&net, val) })
}

/// The backprop-trained network itself (Xavier init, full-batch Adam on `train`).
pub fn train_baseline_net(
    sizes: &[usize],
    bias: bool,
    train: &TaskData,
    spec: BaselineSpec,
) -> crate::Result<DenseNet<f64>> {
    let mut net = xavier_net(sizes, bias, &mut StdRng::seed_from_u64(spec.seed))?;
    fine_tune(&mut net, None, train, spec.epochs, spec.lr);
    Ok(net)
}

/// A network of layer sizes `sizes` with every weight drawn Xavier-uniform from `rng`, cell
/// by cell in topology order (where every backprop baseline starts).
pub fn xavier_net(sizes: &[usize], bias: bool, rng: &mut StdRng) -> crate::Result<DenseNet<f64>> {
    let topology = Topology::dense(sizes, bias)?;
    let mut net = DenseNet::zeros(sizes, bias);
    for cell in topology.cells() {
        net.weights[cell.layer][cell.pre * topology.cols(cell.layer) + cell.post] =
            initial_weight(WeightInit::Xavier, &topology, cell, rng);
    }
    Ok(net)
}

/// `epochs` full-batch Adam steps on `train`; with `mask` (per layer, `false` = dead), dead
/// weights stay exactly zero.
pub fn fine_tune(net: &mut DenseNet<f64>, mask: Option<&[Vec<bool>]>, train: &TaskData, epochs: usize, lr: f64) {
    let mut adam = Adam::new(lr, &net.weights);
    for _ in 0..epochs {
        let act = task::forward(net, &train.x, Some(&train.y));
        let grad = ActivityGrad::cross_entropy(&act, &train.y, 1.0);
        let dw = task::backward(net, &act, grad);
        adam.step(&mut net.weights, &dw);
        if let Some(mask) = mask {
            for (w, m) in net.weights.iter_mut().zip(mask) {
                w.iter_mut().zip(m).filter(|(_, live)| !**live).for_each(|(w, _)| *w = 0.0);
            }
        }
    }
}

/// Full-batch Adam from `net`'s weights (one Adam state throughout), scored on `train` and
/// `val` after each of the step counts in `horizons` (ascending): the equal-step comparison of
/// a grow of that many rule steps.
pub fn adam_curve(
    mut net: DenseNet<f64>,
    train: &TaskData,
    val: &TaskData,
    lr: f64,
    horizons: &[usize],
) -> Vec<BaselineScore> {
    let mut adam = Adam::new(lr, &net.weights);
    let mut done = 0;
    let mut out = Vec::with_capacity(horizons.len());
    for &h in horizons {
        for _ in done..h {
            let act = task::forward(&net, &train.x, Some(&train.y));
            let grad = ActivityGrad::cross_entropy(&act, &train.y, 1.0);
            let dw = task::backward(&net, &act, grad);
            adam.step(&mut net.weights, &dw);
        }
        done = done.max(h);
        out.push(BaselineScore { train: score(&net, train), val: score(&net, val) });
    }
    out
}
