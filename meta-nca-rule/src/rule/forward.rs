//! The rule's forward pass without a tape, for owners that run many (the actors' rule service)
//! and for the reference path's steps without tape: dfdx's gemm-backed product for each layer's
//! weights, then the bias and the activation (or the bound) in one pass over the result, with
//! the weights split from their bias once and the buffers kept between passes.
//!
//! Exactness: an output value is the product's value for its row plus the bias, then the
//! activation: the same operations for a row wherever it sits in a pass, since every pass runs
//! on a multiple of 16 rows (gemm takes other paths, with other rounding, for fewer rows; a
//! test checks that rows one at a time, in pieces or all at once give the same bits), and the
//! tape path's numbers to rounding (there the bias rides in the product as a row of the
//! weights; ~1e-16).

use dfdx::prelude::*;

use super::{Activation, RuleNet, RuleShape, tanh};

/// Passes run on a multiple of this many rows (zero rows added): gemm takes other paths for
/// fewer rows, whose rounding differs.
const PAD: usize = 16;

/// One layer: weights without the bias row, and the bias.
#[derive(Debug, Clone)]
struct Dense {
    fan_out: usize,
    /// `[fan_in, fan_out]`.
    weights: Tensor<(usize, usize), f64, Cpu>,
    /// `[fan_out]`.
    bias: Vec<f64>,
}

/// A rule network ready for forward passes without tape. Build one per owner
/// ([`RuleNet::forward_pass`]) and call [`Self::run`] for every pass.
#[derive(Debug, Clone)]
pub struct ForwardPass {
    dev: Cpu,
    layers: Vec<Dense>,
    activation: Activation,
    input_squash: bool,
    output_scale: f64,
    input: usize,
    output: usize,
    /// A layer's output, between the product and the next layer's input.
    buffer: Vec<f64>,
}

impl ForwardPass {
    /// The pass of `rule` as it is now (later changes to `rule` are not seen).
    ///
    /// # Panics
    /// If a layer's weights do not have the shape `[fan_in + 1, fan_out]` of `rule.shape`.
    pub fn new(rule: &RuleNet) -> Self {
        let dims = rule.shape.dims();
        assert_eq!(rule.layers.len() + 1, dims.len(), "the rule has the wrong number of layers");
        let dev = Cpu::default();
        let layers = dims
            .windows(2)
            .zip(&rule.layers)
            .enumerate()
            .map(|(k, (d, w))| {
                let (fan_in, fan_out) = (d[0], d[1]);
                assert_eq!(*w.shape(), (fan_in + 1, fan_out), "rule layer {k} does not have its shape's size");
                let mut values = w.as_vec();
                let bias = values.split_off(fan_in * fan_out);
                Dense { fan_out, weights: dev.tensor_from_vec(values, (fan_in, fan_out)), bias }
            })
            .collect();
        let RuleShape { activation, input_squash, output_scale, input, output, .. } = rule.shape;
        Self { dev, layers, activation, input_squash, output_scale, input, output, buffer: Vec::new() }
    }

    /// Perception width (input columns).
    pub fn input(&self) -> usize {
        self.input
    }

    /// State width (output columns).
    pub fn output(&self) -> usize {
        self.output
    }

    /// The update of every row of `x` (`[rows, input]`) into `out` (`[rows, output]`):
    /// `scale · tanh(MLP(x))`, what [`RuleNet::forward`] gives.
    pub fn run(&mut self, x: &[f64], out: &mut [f64]) {
        self.run_owned(x.to_vec(), out);
    }

    /// [`Self::run`] on rows the caller gives away (no copy of them).
    pub fn run_owned(&mut self, x: Vec<f64>, out: &mut [f64]) {
        let x = self.input_tensor(x, out.len());
        let scale = self.output_scale;
        self.pass(x, out, move |z| scale * tanh(z));
    }

    /// The logits (the MLP before the bound) of every row of `x` into `out`, what
    /// [`RuleNet::logits`] gives.
    pub fn logits(&mut self, x: Vec<f64>, out: &mut [f64]) {
        let x = self.input_tensor(x, out.len());
        self.pass(x, out, |z| z);
    }

    /// `x` as a tensor `[rows, input]`, `rows` from `out_len`.
    fn input_tensor(&self, mut x: Vec<f64>, out_len: usize) -> Tensor<(usize, usize), f64, Cpu> {
        let rows = out_len / self.output.max(1);
        assert!(
            x.len() == rows * self.input && out_len == rows * self.output,
            "a rule pass of {rows} rows needs [{rows}, {}] in and [{rows}, {}] out",
            self.input,
            self.output
        );
        if self.input_squash {
            x.iter_mut().for_each(|v| *v = tanh(*v));
        }
        let padded = rows.div_ceil(PAD) * PAD;
        x.resize(padded * self.input, 0.0);
        self.dev.tensor_from_vec(x, (padded, self.input))
    }

    fn pass(&mut self, x: Tensor<(usize, usize), f64, Cpu>, out: &mut [f64], last: impl Fn(f64) -> f64 + Copy) {
        match self.activation {
            Activation::Relu => self.pass_with(x, out, |z| if z > 0.0 { z } else { 0.0 }, last),
            Activation::Tanh => self.pass_with(x, out, tanh, last),
        }
    }

    fn pass_with(
        &mut self,
        mut h: Tensor<(usize, usize), f64, Cpu>,
        out: &mut [f64],
        hidden: impl Fn(f64) -> f64 + Copy,
        last: impl Fn(f64) -> f64 + Copy,
    ) {
        let rows = h.shape().0;
        if rows == 0 {
            return;
        }
        let valid = out.len() / self.output.max(1);
        let n = self.layers.len();
        for (k, layer) in self.layers.iter().enumerate() {
            let mut z = h.matmul(layer.weights.clone());
            self.buffer.resize(rows * layer.fan_out, 0.0);
            if k + 1 == n {
                z.copy_into(&mut self.buffer);
                out.copy_from_slice(&self.buffer[..valid * self.output]);
                bias_and(out, &layer.bias, last);
                return;
            }
            z.copy_into(&mut self.buffer);
            bias_and(&mut self.buffer, &layer.bias, hidden);
            // The product's storage, now unshared, takes the next layer's input.
            z.copy_from(&self.buffer);
            h = z;
        }
    }
}

/// `v = f(v + b)` for every row `v` of `values`.
#[inline(always)]
fn bias_and(values: &mut [f64], bias: &[f64], f: impl Fn(f64) -> f64) {
    for row in values.chunks_exact_mut(bias.len().max(1)) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v = f(*v + b);
        }
    }
}

#[cfg(test)]
mod tests {
    use dfdx::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn rule(hidden: &[usize], activation: Activation, input_squash: bool, rng: &mut StdRng) -> RuleNet {
        let shape = RuleShape {
            input: 11,
            hidden: hidden.to_vec(),
            output: 3,
            activation,
            output_scale: 0.5,
            last_init: 0.3,
            input_squash,
        };
        let mut rule = RuleNet::new(&Cpu::default(), shape, rng);
        // Non-zero biases, so that the bias is checked too.
        let params: Vec<Vec<f64>> =
            rule.params_flat().into_iter().map(|(_, v)| v.iter().map(|_| rng.gen_range(-1.0..1.0)).collect()).collect();
        rule.set_params_flat(&params);
        rule
    }

    fn close(a: &[f64], b: &[f64], what: &str) {
        let d = a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(d <= 1e-14, "{what}: {d}");
    }

    /// The pass gives dfdx's numbers on the tape (to rounding), and the same bits whether the
    /// rows go in one pass, one at a time or in uneven pieces (what lets a rule service batch
    /// rows as they come, on any number of threads).
    #[test]
    fn matches_the_tape_and_ignores_how_rows_are_split() {
        let dev = Cpu::default();
        let mut rng = StdRng::seed_from_u64(7);
        for hidden in [&[][..], &[16], &[5, 7], &[4, 9, 6]] {
            for activation in [Activation::Relu, Activation::Tanh] {
                for squash in [false, true] {
                    let rule = rule(hidden, activation, squash, &mut rng);
                    for rows in [0, 1, 3, 5, 64, 67, 130, 1030] {
                        let x: Vec<f64> = (0..rows * 11).map(|_| rng.gen_range(-3.0..3.0)).collect();
                        let mut pass = rule.forward_pass();
                        let mut out = vec![0.0; rows * 3];
                        pass.run(&x, &mut out);
                        if rows > 0 {
                            let t = dev.tensor_from_vec(x.clone(), (rows, 11)).retaped::<OwnedTape<f64, Cpu>>();
                            let taped = rule.forward(t).as_vec();
                            close(&out, &taped, "the tape");
                            let untaped = rule.forward(dev.tensor_from_vec(x.clone(), (rows, 11))).as_vec();
                            assert_eq!(untaped, out);
                        }
                        let mut one = vec![0.0; rows * 3];
                        for (xr, o) in x.chunks_exact(11).zip(one.chunks_exact_mut(3)) {
                            pass.run(xr, o);
                        }
                        assert_eq!(one, out, "rows one at a time");
                        let cut = rows / 3;
                        let mut pieces = vec![0.0; rows * 3];
                        let (o1, o2) = pieces.split_at_mut(cut * 3);
                        pass.run(&x[..cut * 11], o1);
                        pass.run(&x[cut * 11..], o2);
                        assert_eq!(pieces, out, "rows in two pieces");
                    }
                }
            }
        }
    }
}
