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

use crate::fused::{Tensor2, fused, pure, values};

mod forward;
mod tanh;

pub use forward::ForwardPass;
pub use tanh::tanh;

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
    /// Squash every perception feature with `tanh` before the first layer (input
    /// normalisation: activity and Hebbian features can be large on unstandardised scales).
    #[serde(default)]
    pub input_squash: bool,
}

/// A runtime-sized rule MLP on dfdx's CPU device.
///
/// Each layer is one matrix `[fan_in + 1, fan_out]` whose last row is the bias: a column of
/// ones is appended to the layer's input by the same fused op that applies the hidden
/// nonlinearity, which keeps a rule call at two tape ops per layer.
#[derive(Debug, Clone)]
pub struct RuleNet {
    /// Sizes and bound.
    pub shape: RuleShape,
    /// `layers[k]`: `[fan_in + 1, fan_out]`, the last row being the bias.
    pub layers: Vec<Tensor<(usize, usize), f64, Cpu>>,
    dev: Cpu,
}

/// Appends a column of ones to `x` after applying `act` (`None`: identity), as one fused op.
fn activate_with_ones<T: Tape<f64, Cpu>>(dev: &Cpu, x: Tensor2<T>, act: Option<Activation>) -> Tensor2<T> {
    let (rows, cols) = *x.shape();
    fused(dev, x, (rows, cols + 1), move |x| {
        let mut out = Vec::with_capacity(rows * (cols + 1));
        let mut slope = Vec::with_capacity(rows * cols);
        for row in x.chunks_exact(cols.max(1)).take(rows) {
            for &v in row {
                let (y, dy) = match act {
                    None => (v, 1.0),
                    Some(Activation::Relu) => {
                        if v > 0.0 {
                            (v, 1.0)
                        } else {
                            (0.0, 0.0)
                        }
                    }
                    Some(Activation::Tanh) => {
                        let t = v.tanh();
                        (t, 1.0 - t * t)
                    }
                };
                out.push(y);
                slope.push(dy);
            }
            out.push(1.0);
        }
        let backward = move |g: &[f64]| {
            let mut dx = Vec::with_capacity(rows * cols);
            for (r, grow) in g.chunks_exact(cols + 1).enumerate() {
                dx.extend(grow[..cols].iter().zip(&slope[r * cols..(r + 1) * cols]).map(|(g, s)| g * s));
            }
            dx
        };
        (out, pure(backward))
    })
}

impl RuleNet {
    /// A fresh rule: hidden layers `U(±1/sqrt(fan_in))`, last layer `U(±last_init)`, biases 0.
    pub fn new<R: Rng>(dev: &Cpu, shape: RuleShape, rng: &mut R) -> Self {
        let dims = shape.dims();
        let mut layers = Vec::new();
        for (k, pair) in dims.windows(2).enumerate() {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            let a = if k + 2 == dims.len() { shape.last_init } else { 1.0 / (fan_in as f64).sqrt() };
            let mut data: Vec<f64> =
                (0..fan_in * fan_out).map(|_| if a > 0.0 { rng.gen_range(-a..a) } else { 0.0 }).collect();
            data.extend(std::iter::repeat_n(0.0, fan_out));
            layers.push(dev.tensor_from_vec(data, (fan_in + 1, fan_out)));
        }
        Self { shape, layers, dev: dev.clone() }
    }

    /// The MLP before the bound: perception `[cells, input]` → `[cells, output]`. Without a
    /// tape this is a [`ForwardPass`].
    pub fn logits<T: Tape<f64, Cpu>>(&self, x: Tensor2<T>) -> Tensor2<T> {
        if !T::OWNS_TAPE {
            return self.untaped(x, ForwardPass::logits);
        }
        let dev = &self.dev;
        let mut h = activate_with_ones(dev, x, self.shape.input_squash.then_some(Activation::Tanh));
        let last = self.layers.len() - 1;
        for (k, w) in self.layers.iter().enumerate() {
            let z = h.matmul(w.clone());
            if k == last {
                return z;
            }
            h = activate_with_ones(dev, z, Some(self.shape.activation));
        }
        unreachable!("a rule has at least one layer")
    }

    /// The update of every cell: perception `[cells, input]` → `Δ [cells, output]`.
    /// Without a tape this is a [`ForwardPass`].
    pub fn forward<T: Tape<f64, Cpu>>(&self, x: Tensor2<T>) -> Tensor2<T> {
        if !T::OWNS_TAPE {
            return self.untaped(x, ForwardPass::run);
        }
        self.logits(x).tanh() * self.shape.output_scale
    }

    /// A forward pass without tape over the rule's current weights, for an owner that runs
    /// many (it keeps its buffers).
    pub fn forward_pass(&self) -> ForwardPass {
        ForwardPass::new(self)
    }

    /// `pass` on `x`'s values, as a tensor with `x`'s (empty) tape.
    fn untaped<T: Tape<f64, Cpu>>(&self, x: Tensor2<T>, pass: fn(&mut ForwardPass, &[f64], &mut [f64])) -> Tensor2<T> {
        let (x, tape) = x.split_tape();
        let rows = x.shape().0;
        let mut out = vec![0.0; rows * self.shape.output];
        pass(&mut self.forward_pass(), &values(&x), &mut out);
        self.dev.tensor_from_vec(out, (rows, self.shape.output)).put_tape(tape)
    }

    /// Every parameter tensor as `(name, flat values)`.
    pub fn params_flat(&self) -> Vec<(String, Vec<f64>)> {
        self.layers.iter().enumerate().map(|(k, w)| (format!("layers.{k}"), w.as_vec())).collect()
    }

    /// Shape of every parameter tensor, in [`Self::params_flat`] order.
    pub fn param_shapes(&self) -> Vec<Vec<usize>> {
        self.layers.iter().map(|w| vec![w.shape().0, w.shape().1]).collect()
    }

    /// The gradient of every parameter, in [`Self::params_flat`] order.
    pub fn grads_flat(&self, grads: &Gradients<f64, Cpu>) -> Vec<Vec<f64>> {
        self.layers.iter().map(|w| grads.get(w).as_vec()).collect()
    }

    /// Overwrites every parameter from flat values in [`Self::params_flat`] order.
    pub fn set_params_flat(&mut self, values: &[Vec<f64>]) {
        for (w, v) in self.layers.iter_mut().zip(values) {
            w.copy_from(v);
        }
    }

    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.layers.iter().map(|w| w.shape().0 * w.shape().1).sum()
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
