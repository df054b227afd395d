//! The rule's forward pass without a tape, for owners that run many (the actors' rule service)
//! and for the reference path's steps without tape: each layer is one fused kernel (bias,
//! product and activation written once into a buffer kept between passes), with no tensor, no
//! allocation and no copy per layer. The kernels run under the widest SIMD the CPU has (chosen
//! at run time, `pulp`): the compiler vectorises them across columns and rows, never changing
//! the order of one sum, so every CPU gives the same bits.
//!
//! Exactness: an output value is its bias, plus the products of the row's inputs with the
//! weights added in input order, then the activation: the same operations for a row wherever
//! it sits in a pass (a test checks that rows one at a time, in pieces or all at once give the
//! same bits), and the tape path's numbers to rounding (there dfdx's product sums in its own
//! order, with the bias as a row of the weights; ~1e-16).

use dfdx::shapes::HasShape;

use super::{Activation, RuleNet, RuleShape, tanh};

/// Output columns a kernel computes together (padded with zero weights); with [`ROWS`], the
/// block of sums that stays in registers.
const LANES: usize = 8;
/// Rows a kernel computes together (each weight is loaded once per block of rows).
const ROWS: usize = 4;

/// One layer: weights and bias, with the output columns padded to a multiple of [`LANES`].
#[derive(Debug, Clone)]
struct Dense {
    fan_in: usize,
    /// The layer's output width rounded up to a multiple of [`LANES`].
    padded: usize,
    /// `[fan_in, padded]`, zero past `fan_out`.
    weights: Vec<f64>,
    /// `[padded]`, zero past `fan_out`.
    bias: Vec<f64>,
}

impl Dense {
    /// `out[r] = f(bias + Σ_i x[r][i] · w[i])` for every row `r` of `x` (row stride
    /// `x_stride`), into `out` (row stride `self.padded`): the sum starts at the bias and adds
    /// the inputs in order, for every row alike.
    #[inline(always)]
    fn run(&self, x: &[f64], x_stride: usize, rows: usize, out: &mut [f64], f: impl Fn(f64) -> f64) {
        let mut r = 0;
        while r + ROWS <= rows {
            self.block::<ROWS>(x, x_stride, r, out);
            r += ROWS;
        }
        while r < rows {
            self.block::<1>(x, x_stride, r, out);
            r += 1;
        }
        // The activation in its own pass over the buffer, which vectorises (inside the
        // blocks it would not).
        for v in &mut out[..rows * self.padded] {
            *v = f(*v);
        }
    }

    /// The sums of rows `first..first + R`.
    #[inline(always)]
    fn block<const R: usize>(&self, x: &[f64], x_stride: usize, first: usize, out: &mut [f64]) {
        let inputs: [&[f64]; R] = std::array::from_fn(|k| &x[(first + k) * x_stride..][..self.fan_in]);
        for c in (0..self.padded).step_by(LANES) {
            let mut sums = [[0.0; LANES]; R];
            for row in &mut sums {
                row.copy_from_slice(&self.bias[c..c + LANES]);
            }
            for (i, w) in self.weights.chunks_exact(self.padded).enumerate() {
                let w = &w[c..c + LANES];
                for (row, input) in sums.iter_mut().zip(&inputs) {
                    let v = input[i];
                    for (s, w) in row.iter_mut().zip(w) {
                        *s += v * w;
                    }
                }
            }
            for (k, row) in sums.iter().enumerate() {
                out[(first + k) * self.padded + c..][..LANES].copy_from_slice(row);
            }
        }
    }
}

/// A rule network ready for forward passes without tape. Build one per owner
/// ([`RuleNet::forward_pass`]) and call [`Self::run`] for every pass.
#[derive(Debug, Clone)]
pub struct ForwardPass {
    layers: Vec<Dense>,
    activation: Activation,
    input_squash: bool,
    output_scale: f64,
    input: usize,
    output: usize,
    /// The input after the squash (when the rule squashes its inputs).
    squashed: Vec<f64>,
    /// Layer outputs, alternately.
    buffers: [Vec<f64>; 2],
    /// The SIMD the kernels run under.
    arch: pulp::Arch,
}

impl ForwardPass {
    /// The pass of `rule` as it is now (later changes to `rule` are not seen).
    ///
    /// # Panics
    /// If a layer's weights do not have the shape `[fan_in + 1, fan_out]` of `rule.shape`.
    pub fn new(rule: &RuleNet) -> Self {
        let dims = rule.shape.dims();
        assert_eq!(rule.layers.len() + 1, dims.len(), "the rule has the wrong number of layers");
        let layers = dims
            .windows(2)
            .zip(&rule.layers)
            .enumerate()
            .map(|(k, (d, w))| {
                let (fan_in, fan_out) = (d[0], d[1]);
                assert_eq!(*w.shape(), (fan_in + 1, fan_out), "rule layer {k} does not have its shape's size");
                let values = w.as_vec();
                let padded = fan_out.div_ceil(LANES) * LANES;
                let mut weights = vec![0.0; fan_in * padded];
                for (to, from) in weights.chunks_exact_mut(padded).zip(values.chunks_exact(fan_out)) {
                    to[..fan_out].copy_from_slice(from);
                }
                let mut bias = vec![0.0; padded];
                bias[..fan_out].copy_from_slice(&values[fan_in * fan_out..]);
                Dense { fan_in, padded, weights, bias }
            })
            .collect();
        let RuleShape { activation, input_squash, output_scale, input, output, .. } = rule.shape;
        Self {
            layers,
            activation,
            input_squash,
            output_scale,
            input,
            output,
            squashed: Vec::new(),
            buffers: [Vec::new(), Vec::new()],
            arch: pulp::Arch::new(),
        }
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
        let scale = self.output_scale;
        self.pass(x, out, move |z| scale * tanh(z));
    }

    /// The logits (the MLP before the bound) of every row of `x` into `out`, what
    /// [`RuleNet::logits`] gives.
    pub fn logits(&mut self, x: &[f64], out: &mut [f64]) {
        self.pass(x, out, |z| z);
    }

    fn pass(&mut self, x: &[f64], out: &mut [f64], last: impl Fn(f64) -> f64 + Copy) {
        let rows = out.len() / self.output.max(1);
        assert!(
            x.len() == rows * self.input && out.len() == rows * self.output,
            "a rule pass of {rows} rows needs [{rows}, {}] in and [{rows}, {}] out",
            self.input,
            self.output
        );
        match self.activation {
            Activation::Relu => self.pass_with(x, rows, out, |z| if z > 0.0 { z } else { 0.0 }, last),
            Activation::Tanh => self.pass_with(x, rows, out, tanh, last),
        }
    }

    fn pass_with(
        &mut self,
        x: &[f64],
        rows: usize,
        out: &mut [f64],
        hidden: impl Fn(f64) -> f64 + Copy,
        last: impl Fn(f64) -> f64 + Copy,
    ) {
        if rows == 0 {
            return;
        }
        let x = if self.input_squash {
            self.squashed.clear();
            self.squashed.extend(x.iter().map(|&v| tanh(v)));
            &self.squashed[..]
        } else {
            x
        };
        let layers = Layers {
            layers: &self.layers,
            x,
            input: self.input,
            rows,
            buffers: &mut self.buffers,
            out,
            output: self.output,
            hidden,
            last,
        };
        self.arch.dispatch(layers);
    }
}

/// Rows a pass takes through every layer at a time: their inputs and every layer's outputs
/// stay in the core's caches.
const CHUNK: usize = 256;

/// Every layer of one pass, as one kernel for [`pulp::Arch::dispatch`], [`CHUNK`] rows at a
/// time, into `out` (`[rows, output]`).
struct Layers<'a, H, L> {
    layers: &'a [Dense],
    x: &'a [f64],
    input: usize,
    rows: usize,
    buffers: &'a mut [Vec<f64>; 2],
    out: &'a mut [f64],
    output: usize,
    hidden: H,
    last: L,
}

impl<H: Fn(f64) -> f64 + Copy, L: Fn(f64) -> f64 + Copy> pulp::WithSimd for Layers<'_, H, L> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let [a, b] = self.buffers;
        let n = self.layers.len();
        let widest = self.layers.iter().map(|l| l.padded).max().unwrap_or(0);
        for buffer in [&mut *a, &mut *b] {
            buffer.resize(CHUNK.min(self.rows) * widest, 0.0);
        }
        for first in (0..self.rows).step_by(CHUNK) {
            let rows = CHUNK.min(self.rows - first);
            let x = &self.x[first * self.input..(first + rows) * self.input];
            for (k, layer) in self.layers.iter().enumerate() {
                // Layer k writes one buffer and reads the other, which layer k - 1 wrote.
                let (done, target) = if k % 2 == 0 { (&*b, &mut *a) } else { (&*a, &mut *b) };
                let (input, stride) = if k == 0 { (x, self.input) } else { (&done[..], self.layers[k - 1].padded) };
                if k + 1 < n {
                    layer.run(input, stride, rows, target, self.hidden);
                    continue;
                }
                // The last activation on the output columns only, as they are copied out.
                layer.run(input, stride, rows, target, |z| z);
                let out = &mut self.out[first * self.output..(first + rows) * self.output];
                for (o, t) in out.chunks_exact_mut(self.output).zip(target.chunks_exact(layer.padded)) {
                    o.iter_mut().zip(t).for_each(|(o, t)| *o = (self.last)(*t));
                }
            }
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
