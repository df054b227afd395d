//! The rule's forward pass without a tape: plain loops over the rule's weights, packed once,
//! with bias and activation fused into each layer and every buffer reused. The actors' rule
//! service and the reference path's steps without tape run it; meta-training (on the tape)
//! runs dfdx's matrix products.
//!
//! Exactness: every output value is computed by the same operations in the same order,
//! whatever the number of rows, their position in a pass or the thread that computes them:
//! `z_j = (Σ_k x_k·W_kj, k ascending, from 0) + b_j`, then the activation (or the bound).
//! So a pass split across threads or chunks gives the same bits as one pass. dfdx's product
//! (gemm) fuses multiply and add, this loop does not: the two differ by rounding (~1e-16
//! relative), which tests check against the tape path.

use dfdx::prelude::HasShape;

use super::{Activation, RuleNet, RuleShape, tanh};

/// Columns of one register tile; a layer's weights are packed in blocks of this many columns.
const COLS: usize = 4;
/// Rows of one register tile.
const ROWS: usize = 4;
/// Rows that travel through every layer together (the hidden values of a tile stay in L1).
const TILE: usize = 64;

/// One layer, its weights packed for the kernel.
#[derive(Debug, Clone)]
struct Dense {
    fan_in: usize,
    fan_out: usize,
    /// `[blocks][fan_in][COLS]`: block `c` holds columns `c·COLS..`, zero past `fan_out`.
    packed: Vec<f64>,
    /// `[blocks·COLS]`, zero past `fan_out`.
    bias: Vec<f64>,
}

impl Dense {
    /// From dfdx's layout: `[fan_in + 1, fan_out]`, the last row the bias.
    fn new(values: &[f64], fan_in: usize, fan_out: usize) -> Self {
        let blocks = fan_out.div_ceil(COLS);
        let mut packed = vec![0.0; blocks * fan_in * COLS];
        let mut bias = vec![0.0; blocks * COLS];
        for j in 0..fan_out {
            let (c, jj) = (j / COLS, j % COLS);
            for k in 0..fan_in {
                packed[(c * fan_in + k) * COLS + jj] = values[k * fan_out + j];
            }
            bias[j] = values[fan_in * fan_out + j];
        }
        Self { fan_in, fan_out, packed, bias }
    }

    /// `y[r, j] = f(Σ_k x[r, k]·W[k, j] + b[j])` for `rows` rows of `x` (`[rows, fan_in]`) into
    /// `y` (`[rows, fan_out]`).
    fn apply(&self, x: &[f64], rows: usize, y: &mut [f64], f: impl Fn(f64) -> f64 + Copy) {
        let (fan_in, fan_out) = (self.fan_in, self.fan_out);
        debug_assert!(x.len() >= rows * fan_in && y.len() >= rows * fan_out);
        let row = |r: usize| &x[r * fan_in..(r + 1) * fan_in];
        for r0 in (0..rows).step_by(ROWS) {
            // A short last group repeats its last row: the repeats are computed and not written.
            let last = rows - 1;
            let xs: [&[f64]; ROWS] = std::array::from_fn(|i| row((r0 + i).min(last)));
            for (c, (w, b)) in self.packed.chunks_exact(fan_in * COLS).zip(self.bias.chunks_exact(COLS)).enumerate() {
                let acc = tile(xs, w);
                let (j0, width) = (c * COLS, COLS.min(fan_out - c * COLS));
                for (i, acc_row) in acc.iter().enumerate().take(rows - r0) {
                    let out = &mut y[(r0 + i) * fan_out + j0..(r0 + i) * fan_out + j0 + width];
                    for ((o, &a), &b) in out.iter_mut().zip(acc_row).zip(b) {
                        *o = a + b;
                    }
                }
            }
        }
        // Apart from the products, so that it runs over whole rows (and vectorises).
        for v in &mut y[..rows * fan_out] {
            *v = f(*v);
        }
    }
}

/// The register tile: `acc[i][j] = Σ_k xs[i][k]·w[k][j]`, k ascending from 0.
#[inline(always)]
fn tile(xs: [&[f64]; ROWS], w: &[f64]) -> [[f64; COLS]; ROWS] {
    let mut acc = [[0.0; COLS]; ROWS];
    let fan_in = w.len() / COLS;
    let xs = xs.map(|x| &x[..fan_in]);
    for (k, wk) in w.chunks_exact(COLS).enumerate() {
        for (acc_row, x) in acc.iter_mut().zip(&xs) {
            let a = x[k];
            for (c, &wkj) in acc_row.iter_mut().zip(wk) {
                *c += a * wkj;
            }
        }
    }
    acc
}

/// A rule network ready for forward passes without tape: its weights packed, its buffers
/// kept between passes. Build one per owner ([`RuleNet::forward_pass`]) and call
/// [`Self::run`] for every pass.
#[derive(Debug, Clone)]
pub struct ForwardPass {
    layers: Vec<Dense>,
    activation: Activation,
    input_squash: bool,
    output_scale: f64,
    input: usize,
    output: usize,
    /// Two buffers of `TILE` rows of the widest layer, the input and output of a layer in turn.
    buffers: [Vec<f64>; 2],
}

impl ForwardPass {
    /// The pass of `rule` as it is now (later changes to `rule` are not seen).
    ///
    /// # Panics
    /// If a layer's weights do not have the shape `[fan_in + 1, fan_out]` of `rule.shape`.
    pub fn new(rule: &RuleNet) -> Self {
        let dims = rule.shape.dims();
        for (k, (d, w)) in dims.windows(2).zip(&rule.layers).enumerate() {
            let want = (d[0] + 1, d[1]);
            assert_eq!(*w.shape(), want, "rule layer {k} has shape {:?}, its shape says {want:?}", w.shape());
        }
        assert_eq!(rule.layers.len() + 1, dims.len(), "the rule has the wrong number of layers");
        let layers: Vec<Dense> =
            dims.windows(2).zip(&rule.layers).map(|(d, w)| Dense::new(&w.as_vec(), d[0], d[1])).collect();
        let widest = dims.iter().copied().max().unwrap_or(1);
        let RuleShape { activation, input_squash, output_scale, input, output, .. } = rule.shape;
        Self {
            layers,
            activation,
            input_squash,
            output_scale,
            input,
            output,
            buffers: [vec![0.0; TILE * widest], vec![0.0; TILE * widest]],
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
        match self.activation {
            Activation::Relu => self.pass_with(x, out, |z| if z > 0.0 { z } else { 0.0 }, last),
            Activation::Tanh => self.pass_with(x, out, tanh, last),
        }
    }

    fn pass_with(
        &mut self,
        x: &[f64],
        out: &mut [f64],
        hidden: impl Fn(f64) -> f64 + Copy,
        last: impl Fn(f64) -> f64 + Copy,
    ) {
        let (input, output) = (self.input, self.output);
        let rows = out.len() / output.max(1);
        assert!(
            x.len() == rows * input && out.len() == rows * output,
            "a rule pass of {rows} rows needs [{rows}, {input}] in and [{rows}, {output}] out"
        );
        let [mut cur, mut next] = std::mem::take(&mut self.buffers);
        for r0 in (0..rows).step_by(TILE) {
            let m = TILE.min(rows - r0);
            let x = &x[r0 * input..(r0 + m) * input];
            if self.input_squash {
                for (s, &v) in cur.iter_mut().zip(x) {
                    *s = tanh(v);
                }
            }
            for (k, layer) in self.layers.iter().enumerate() {
                let src = if k == 0 && !self.input_squash { x } else { &cur[..m * layer.fan_in] };
                if k + 1 == self.layers.len() {
                    layer.apply(src, m, &mut out[r0 * output..(r0 + m) * output], last);
                } else {
                    layer.apply(src, m, &mut next, hidden);
                    std::mem::swap(&mut cur, &mut next);
                }
            }
        }
        self.buffers = [cur, next];
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

    /// The pass gives dfdx's numbers on the tape (to rounding), and the same bits whether the
    /// rows go in one pass, one at a time or in uneven pieces.
    #[test]
    fn matches_the_tape_and_ignores_how_rows_are_split() {
        let dev = Cpu::default();
        let mut rng = StdRng::seed_from_u64(7);
        for hidden in [&[][..], &[16], &[5, 7], &[4, 9, 6]] {
            for activation in [Activation::Relu, Activation::Tanh] {
                for squash in [false, true] {
                    let rule = rule(hidden, activation, squash, &mut rng);
                    for rows in [0, 1, 3, 5, 64, 67, 130] {
                        let x: Vec<f64> = (0..rows * 11).map(|_| rng.gen_range(-3.0..3.0)).collect();
                        let mut pass = rule.forward_pass();
                        let mut out = vec![0.0; rows * 3];
                        pass.run(&x, &mut out);
                        if rows > 0 {
                            let t = dev.tensor_from_vec(x.clone(), (rows, 11)).retaped::<OwnedTape<f64, Cpu>>();
                            let taped = rule.forward(t).as_vec();
                            for (a, b) in out.iter().zip(&taped) {
                                assert!((a - b).abs() <= 1e-14 * (1.0 + b.abs()), "{a} vs {b} (tape)");
                            }
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
