//! The local rule network: a dfdx MLP from a cell's perception to its update `(Δw, Δh)`,
//! shared by every cell of every layer and architecture.
//!
//! Its output is bounded, `Δ = scale · tanh(MLP(p))`, so a grow of any length moves a weight
//! by at most `scale` per step, and its last layer starts near (not at) zero: a new rule does
//! almost nothing, yet its output is not exactly zero, which keeps deep zero-initialised
//! networks off the dead saddle (SPEC "Rule network").

use dfdx::prelude::*;
use rand::Rng;
use serde::{Deserialize, Serialize};


/// Hidden-layer nonlinearity of the rule network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// `max(0, x)`.
    #[default]
    Relu,
    /// `tanh(x)`.
    Tanh,
}

/// Sizes and output bound of a rule network; stored with every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RuleShape {
    /// Perception width (input).
    pub input: usize,
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    /// Cell state width `1 + d` (output: `Δw, Δh`).
    pub output: usize,
    /// Hidden nonlinearity.
    pub activation: Activation,
    /// Bound of one update: `Δ = output_scale · tanh(·)`.
    pub output_scale: f64,
    /// Half-width of the uniform init of the last layer's weights (small: "almost do nothing").
    pub last_init: f64,
}

/// A runtime-sized rule MLP on dfdx's CPU device.
#[derive(Debug, Clone)]
pub struct RuleNet {
    /// Sizes and bound.
    pub shape: RuleShape,
    /// `weights[k]`: `[fan_in, fan_out]` of layer `k`.
    pub weights: Vec<Tensor<(usize, usize), f64, Cpu>>,
    /// `biases[k]`: `[fan_out]` of layer `k`.
    pub biases: Vec<Tensor<(usize,), f64, Cpu>>,
}

impl RuleNet {
    /// A fresh rule: hidden layers `U(±1/sqrt(fan_in))`, last layer `U(±last_init)`, biases 0.
    pub fn new<R: Rng>(dev: &Cpu, shape: RuleShape, rng: &mut R) -> Self {
        let dims = shape.dims();
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        for (k, pair) in dims.windows(2).enumerate() {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            let a = if k + 2 == dims.len() { shape.last_init } else { 1.0 / (fan_in as f64).sqrt() };
            let data: Vec<f64> = (0..fan_in * fan_out)
                .map(|_| if a > 0.0 { rng.gen_range(-a..a) } else { 0.0 })
                .collect();
            let mut w = dev.zeros_like(&(fan_in, fan_out));
            w.copy_from(&data);
            weights.push(w);
            biases.push(dev.zeros_like(&(fan_out,)));
        }
        Self { shape, weights, biases }
    }

    /// The MLP before the bound: perception `[cells, input]` → `[cells, output]`.
    pub fn logits<T: Tape<f64, Cpu>>(
        &self,
        x: Tensor<(usize, usize), f64, Cpu, T>,
    ) -> Tensor<(usize, usize), f64, Cpu, T> {
        let rows = x.shape().0;
        let last = self.weights.len() - 1;
        let mut h = x;
        for (k, (w, b)) in self.weights.iter().zip(&self.biases).enumerate() {
            let cols = w.shape().1;
            let z = h.matmul(w.clone()) + b.clone().broadcast_like::<_, Axis<0>>(&(rows, cols));
            h = match (k == last, self.shape.activation) {
                (true, _) => z,
                (false, Activation::Relu) => z.relu(),
                (false, Activation::Tanh) => z.tanh(),
            };
        }
        h
    }

    /// The update of every cell: perception `[cells, input]` → `Δ [cells, output]`.
    pub fn forward<T: Tape<f64, Cpu>>(
        &self,
        x: Tensor<(usize, usize), f64, Cpu, T>,
    ) -> Tensor<(usize, usize), f64, Cpu, T> {
        self.logits(x).tanh() * self.shape.output_scale
    }

    /// Every parameter as `(name, flat values)`, weights then bias per layer.
    pub fn params_flat(&self) -> Vec<(String, Vec<f64>)> {
        let mut out = Vec::new();
        for (k, (w, b)) in self.weights.iter().zip(&self.biases).enumerate() {
            out.push((format!("layers.{k}.weight"), w.as_vec()));
            out.push((format!("layers.{k}.bias"), b.as_vec()));
        }
        out
    }

    /// The gradient of every parameter, in [`Self::params_flat`] order (zeros where absent).
    pub fn grads_flat(&self, grads: &Gradients<f64, Cpu>) -> Vec<Vec<f64>> {
        let mut out = Vec::new();
        for (w, b) in self.weights.iter().zip(&self.biases) {
            out.push(grads.get(w).as_vec());
            out.push(grads.get(b).as_vec());
        }
        out
    }

    /// Overwrites every parameter from flat values in [`Self::params_flat`] order.
    pub fn set_params_flat(&mut self, values: &[Vec<f64>]) {
        for (k, (w, b)) in self.weights.iter_mut().zip(self.biases.iter_mut()).enumerate() {
            w.copy_from(&values[2 * k]);
            b.copy_from(&values[2 * k + 1]);
        }
    }

    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.weights.iter().map(|w| w.shape().0 * w.shape().1).sum::<usize>()
            + self.biases.iter().map(|b| b.shape().0).sum::<usize>()
    }
}

/// The bound applied to every logit, `Δ = scale · tanh(logit)`, and its derivative.
pub fn bound(scale: f64, logit: f64) -> (f64, f64) {
    let t = logit.tanh();
    (scale * t, scale * (1.0 - t * t))
}

impl RuleShape {
    /// `[input, hidden.., output]`.
    pub fn dims(&self) -> Vec<usize> {
        let mut d = vec![self.input];
        d.extend(&self.hidden);
        d.push(self.output);
        d
    }
}
