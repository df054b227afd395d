//! The task network: a dense MLP `z_{l+1} = a_l · (W_l ⊙ M_l)`, ReLU on hidden layers, logits
//! at the top, and its exact reverse pass. One home for the forward semantics: the reference
//! path, evaluation and the backprop baseline all run this code.
//!
//! Activity is stored neuron-major (`[neurons, B]`): every loop over the batch is contiguous.

/// Dense weights of one task network. Dead connections hold 0 (`W ⊙ M`).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseNet<E> {
    /// Neurons per layer, bias neurons not counted.
    pub sizes: Vec<usize>,
    /// Whether each non-output layer has a constant-1 bias neuron (the last row of `W_l`).
    pub bias: bool,
    /// `W_l`, row-major `[n_l + bias, n_{l+1}]`.
    pub weights: Vec<Vec<E>>,
}

impl DenseNet<f64> {
    /// All-zero weights for `sizes`.
    pub fn zeros(sizes: &[usize], bias: bool) -> Self {
        let weights = (0..sizes.len() - 1).map(|l| vec![0.0; (sizes[l] + usize::from(bias)) * sizes[l + 1]]).collect();
        Self { sizes: sizes.to_vec(), bias, weights }
    }
}

impl<E> DenseNet<E> {
    /// Number of weight matrices.
    pub fn num_layers(&self) -> usize {
        self.weights.len()
    }

    /// Rows of `W_l` (neurons of layer `l` plus bias).
    pub fn rows(&self, l: usize) -> usize {
        self.sizes[l] + usize::from(self.bias)
    }

    /// Columns of `W_l`.
    pub fn cols(&self, l: usize) -> usize {
        self.sizes[l + 1]
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.sizes[self.sizes.len() - 1]
    }
}

/// Everything the forward pass computed on a batch, kept for perception and the reverse pass.
#[derive(Debug, Clone)]
pub struct Activity {
    /// Batch size `B`.
    pub batch: usize,
    /// `a_l` for `l in 0..L`, neuron-major `[n_l + bias, B]` (the bias row is all ones).
    pub acts: Vec<Vec<f64>>,
    /// `z_{l+1}` for `l in 0..L`, neuron-major `[n_{l+1}, B]`; the last is the logits.
    pub pre: Vec<Vec<f64>>,
    /// `softmax(z_L)`, `[C, B]`.
    pub probs: Vec<f64>,
    /// `e = onehot(y) - softmax(z_L)`, `[C, B]` (zeros when no labels were given).
    pub err: Vec<f64>,
}

fn axpy(out: &mut [f64], k: f64, x: &[f64]) {
    out.iter_mut().zip(x).for_each(|(o, x)| *o += k * x);
}

/// Forward pass of `net` on `x` (row-major `[B, n0]`). With labels, also the error signal.
pub fn forward(net: &DenseNet<f64>, x: &[f64], y: Option<&[usize]>) -> Activity {
    let n0 = net.sizes[0];
    let batch = x.len() / n0.max(1);
    let nl = net.num_layers();
    let mut a = vec![0.0; net.rows(0) * batch];
    for (b, row) in x.chunks_exact(n0).enumerate() {
        for (i, &v) in row.iter().enumerate() {
            a[i * batch + b] = v;
        }
    }
    if net.bias {
        a[n0 * batch..].iter_mut().for_each(|v| *v = 1.0);
    }
    let mut acts = Vec::with_capacity(nl);
    let mut pre = Vec::with_capacity(nl);
    for l in 0..nl {
        let (rows, cols) = (net.rows(l), net.cols(l));
        let w = &net.weights[l];
        let mut z = vec![0.0; cols * batch];
        for (c, zc) in z.chunks_exact_mut(batch).enumerate() {
            for r in 0..rows {
                let wrc = w[r * cols + c];
                if wrc != 0.0 {
                    axpy(zc, wrc, &a[r * batch..(r + 1) * batch]);
                }
            }
        }
        if l + 1 < nl {
            let mut next = Vec::with_capacity(net.rows(l + 1) * batch);
            next.extend(z.iter().map(|&v| v.max(0.0)));
            if net.bias {
                next.extend(std::iter::repeat_n(1.0, batch));
            }
            acts.push(std::mem::replace(&mut a, next));
        } else {
            acts.push(std::mem::take(&mut a));
        }
        pre.push(z);
    }
    let c = net.classes();
    let logits = &pre[nl - 1];
    let mut probs = vec![0.0; c * batch];
    for b in 0..batch {
        let m = (0..c).fold(f64::NEG_INFINITY, |m, j| m.max(logits[j * batch + b]));
        let mut sum = 0.0;
        for j in 0..c {
            let e = (logits[j * batch + b] - m).exp();
            probs[j * batch + b] = e;
            sum += e;
        }
        for j in 0..c {
            probs[j * batch + b] /= sum;
        }
    }
    let mut err: Vec<f64> = probs.iter().map(|&p| -p).collect();
    match y {
        Some(y) => y.iter().enumerate().for_each(|(b, &label)| err[label * batch + b] += 1.0),
        None => err.iter_mut().for_each(|v| *v = 0.0),
    }
    Activity { batch, acts, pre, probs, err }
}

/// Mean cross-entropy of the logits and the number of correct argmax predictions.
pub fn loss_and_correct(act: &Activity, y: &[usize]) -> (f64, usize) {
    let batch = act.batch;
    let logits = act.pre.last().map(Vec::as_slice).unwrap_or(&[]);
    let c = logits.len() / batch.max(1);
    let mut loss = 0.0;
    let mut correct = 0;
    let mut z = vec![0.0; c];
    for (b, &label) in y.iter().enumerate() {
        z.iter_mut().enumerate().for_each(|(j, v)| *v = logits[j * batch + b]);
        let m = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let lse = m + z.iter().map(|&v| (v - m).exp()).sum::<f64>().ln();
        loss += lse - z[label];
        if argmax(&z) == label {
            correct += 1;
        }
    }
    (loss / batch.max(1) as f64, correct)
}

/// Index of the largest entry (the first one on ties).
pub fn argmax(z: &[f64]) -> usize {
    let mut best = 0;
    for (k, &v) in z.iter().enumerate() {
        if v > z[best] {
            best = k;
        }
    }
    best
}

/// Gradients arriving at a network's activity from outside (perception or a loss), laid out
/// like [`Activity`].
#[derive(Debug, Clone)]
pub struct ActivityGrad {
    /// d/d `a_l`, `[n_l + bias, B]`; used for hidden layers `l >= 1` only (inputs and bias are constants).
    pub d_acts: Vec<Vec<f64>>,
    /// d/d `z_{l+1}`, `[n_{l+1}, B]`.
    pub d_pre: Vec<Vec<f64>>,
    /// d/d `e`, `[C, B]`.
    pub d_err: Vec<f64>,
}

impl ActivityGrad {
    /// All-zero gradients shaped like `act`.
    pub fn zeros_like(act: &Activity) -> Self {
        Self {
            d_acts: act.acts.iter().map(|a| vec![0.0; a.len()]).collect(),
            d_pre: act.pre.iter().map(|z| vec![0.0; z.len()]).collect(),
            d_err: vec![0.0; act.err.len()],
        }
    }

    /// The gradient of `scale * mean cross-entropy` at the logits.
    pub fn cross_entropy(act: &Activity, y: &[usize], scale: f64) -> Self {
        let mut g = Self::zeros_like(act);
        let batch = act.batch;
        let k = scale / batch.max(1) as f64;
        if let Some(dz) = g.d_pre.last_mut() {
            dz.iter_mut().zip(&act.probs).for_each(|(d, p)| *d = p * k);
            y.iter().enumerate().for_each(|(b, &label)| dz[label * batch + b] -= k);
        }
        g
    }
}

/// Reverse pass: d/d `W_l` (dense, same layout as the weights) of whatever produced `grad`.
/// Consumes `grad` as scratch space.
pub fn backward(net: &DenseNet<f64>, act: &Activity, mut grad: ActivityGrad) -> Vec<Vec<f64>> {
    let batch = act.batch;
    let nl = net.num_layers();
    let c = net.classes();
    // e = onehot - softmax(z_L): dz_L -= p ⊙ (de - <de, p>), per sample.
    let dz_top = &mut grad.d_pre[nl - 1];
    for b in 0..batch {
        let dot_b = (0..c).map(|j| act.probs[j * batch + b] * grad.d_err[j * batch + b]).sum::<f64>();
        for j in 0..c {
            let p = act.probs[j * batch + b];
            dz_top[j * batch + b] -= p * (grad.d_err[j * batch + b] - dot_b);
        }
    }
    let mut dw: Vec<Vec<f64>> = net.weights.iter().map(|w| vec![0.0; w.len()]).collect();
    for l in (0..nl).rev() {
        let (rows, cols) = (net.rows(l), net.cols(l));
        let a = &act.acts[l];
        let dz = std::mem::take(&mut grad.d_pre[l]);
        dw[l] = at_z(a, rows, &dz, cols);
        if l == 0 {
            break;
        }
        // Into the hidden layer l: da_l += W_l dz_{l+1}, then dz_l += da_l ⊙ relu'(z_l).
        let w = &net.weights[l];
        let n = net.sizes[l];
        let mut da = std::mem::take(&mut grad.d_acts[l]);
        for r in 0..n {
            let dar = &mut da[r * batch..(r + 1) * batch];
            for (cc, dzc) in dz.chunks_exact(batch).enumerate() {
                let wrc = w[r * cols + cc];
                if wrc != 0.0 {
                    axpy(dar, wrc, dzc);
                }
            }
        }
        let z = &act.pre[l - 1];
        let dzl = &mut grad.d_pre[l - 1];
        for ((d, &zv), &g) in dzl.iter_mut().zip(z).zip(&da[..n * batch]) {
            if zv > 0.0 {
                *d += g;
            }
        }
    }
    dw
}

/// Backward messages (SPEC "Local error messages") sent down through the feedback matrices
/// `fb` (laid out like [`DenseNet::weights`]; the weights themselves for `backward`, the cells'
/// fixed `B` with dead connections at 0 for `alignment`). Laid out like [`Activity::pre`]:
/// `δ[k]` is `[n_{k+1}, B]`, the message of layer `k + 1`'s neurons; `δ[L-1] = e`, and for a
/// hidden layer `δ[k-1][j] = relu'(z_k[j]) · Σ_c fb_k[j, c] δ[k][c]` (`relu'(0) = 0`; bias
/// neurons send no message).
pub fn messages(net: &DenseNet<f64>, act: &Activity, fb: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let batch = act.batch;
    let nl = net.num_layers();
    let mut out = vec![Vec::new(); nl];
    out[nl - 1] = act.err.clone();
    for k in (1..nl).rev() {
        let (n, cols) = (net.sizes[k], net.cols(k));
        let mut d = vec![0.0; n * batch];
        for (j, dj) in d.chunks_exact_mut(batch.max(1)).enumerate() {
            for (c, mc) in out[k].chunks_exact(batch.max(1)).enumerate() {
                let f = fb[k][j * cols + c];
                if f != 0.0 {
                    axpy(dj, f, mc);
                }
            }
        }
        d.iter_mut().zip(&act.pre[k - 1]).filter(|(_, z)| **z <= 0.0).for_each(|(v, _)| *v = 0.0);
        out[k - 1] = d;
    }
    out
}

/// The adjoint of [`messages`]: `g[k]`, the gradient of the messages `δ[k]`, is pushed down
/// the recursion (consumed as scratch) into `grad.d_err`; with `dw` (the messages went
/// through the weights themselves) each layer's direct weight gradient is added to it.
/// `relu'` is piecewise constant: no gradient flows through it.
pub fn messages_adjoint(
    net: &DenseNet<f64>,
    act: &Activity,
    fb: &[Vec<f64>],
    msgs: &[Vec<f64>],
    mut g: Vec<Vec<f64>>,
    grad: &mut ActivityGrad,
    mut dw: Option<&mut [Vec<f64>]>,
) {
    let nl = net.num_layers();
    for k in 1..nl {
        let (n, cols) = (net.sizes[k], net.cols(k));
        // u = relu'(z_k) ⊙ g[k-1]: the gradient at the sum Σ_c fb_k[j, c] δ[k][c].
        let mut u = std::mem::take(&mut g[k - 1]);
        u.iter_mut().zip(&act.pre[k - 1]).filter(|(_, z)| **z <= 0.0).for_each(|(v, _)| *v = 0.0);
        add_a_g(&mut g[k], cols, &u, n, &fb[k]);
        if let Some(dw) = dw.as_deref_mut() {
            let direct = at_z(&u, n, &msgs[k], cols);
            dw[k][..n * cols].iter_mut().zip(&direct).for_each(|(d, v)| *d += v);
        }
    }
    grad.d_err.iter_mut().zip(&g[nl - 1]).for_each(|(d, v)| *d += v);
}

/// Per-neuron batch means of a neuron-major `[n, B]` matrix.
pub fn means(m: &[f64], n: usize) -> Vec<f64> {
    let batch = m.len() / n.max(1);
    m.chunks_exact(batch.max(1)).map(|row| row.iter().sum::<f64>() / batch.max(1) as f64).collect()
}

/// `H[r, c] = Σ_b a[r, b] z[c, b]`: `a` is `[ra, B]`, `z` is `[cz, B]`, `H` is `[ra, cz]`.
///
/// Each sum runs over `b` in order from `-0.0`, exactly as an iterator's `sum` would (the
/// same bits as one dot product per entry), but [`AT_Z_ROWS`] rows by [`AT_Z_LANES`] columns
/// of `H` are accumulated together in registers, over a copy of `z` laid out `[B, cz]`, under
/// the widest SIMD the CPU has (`pulp`): the additions of different entries run side by side
/// instead of one dependent chain per entry.
pub fn at_z(a: &[f64], ra: usize, z: &[f64], cz: usize) -> Vec<f64> {
    let batch = a.len() / ra.max(1);
    if batch == 0 || cz == 0 {
        return vec![0.0; ra * cz];
    }
    let padded = cz.div_ceil(AT_Z_LANES) * AT_Z_LANES;
    let mut zt = vec![0.0; batch * padded];
    for (c, zc) in z.chunks_exact(batch).enumerate().take(cz) {
        for (b, &v) in zc.iter().enumerate() {
            zt[b * padded + c] = v;
        }
    }
    let mut out = vec![0.0; ra * cz];
    pulp::Arch::new().dispatch(AtZ { a, batch, zt: &zt, padded, cz, out: &mut out });
    out
}

/// Columns of `H` that [`at_z`] accumulates together.
const AT_Z_LANES: usize = 8;
/// Rows of `H` that [`at_z`] accumulates together.
const AT_Z_ROWS: usize = 4;

/// [`at_z`]'s kernel, for [`pulp::Arch::dispatch`]: `zt` is `z` laid out `[B, padded]`.
struct AtZ<'a> {
    a: &'a [f64],
    batch: usize,
    zt: &'a [f64],
    padded: usize,
    cz: usize,
    out: &'a mut [f64],
}

impl AtZ<'_> {
    /// Rows `first..first + R` of `H`.
    #[inline(always)]
    fn block<const R: usize>(&mut self, first: usize) {
        let rows: [&[f64]; R] = std::array::from_fn(|k| &self.a[(first + k) * self.batch..][..self.batch]);
        for c in (0..self.padded).step_by(AT_Z_LANES) {
            let mut sums = [[-0.0; AT_Z_LANES]; R];
            for (b, zb) in self.zt.chunks_exact(self.padded).enumerate() {
                let zb = &zb[c..c + AT_Z_LANES];
                for (row, ar) in sums.iter_mut().zip(&rows) {
                    let v = ar[b];
                    for (s, w) in row.iter_mut().zip(zb) {
                        *s += v * w;
                    }
                }
            }
            let width = AT_Z_LANES.min(self.cz - c);
            for (k, row) in sums.iter().enumerate() {
                self.out[(first + k) * self.cz + c..][..width].copy_from_slice(&row[..width]);
            }
        }
    }
}

impl pulp::WithSimd for AtZ<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(mut self, _simd: S) {
        let ra = self.a.len() / self.batch;
        let mut r = 0;
        while r + AT_Z_ROWS <= ra {
            self.block::<AT_Z_ROWS>(r);
            r += AT_Z_ROWS;
        }
        while r < ra {
            self.block::<1>(r);
            r += 1;
        }
    }
}

/// `out[r, :] += Σ_c g[r, c] z[c, :]`: `out` is `[ra, B]`, `z` is `[cz, B]`, `g` is `[ra, cz]`.
pub fn add_z_gt(out: &mut [f64], ra: usize, z: &[f64], cz: usize, g: &[f64]) {
    let batch = out.len() / ra.max(1);
    for (r, orow) in out.chunks_exact_mut(batch.max(1)).enumerate() {
        for (c, zc) in z.chunks_exact(batch.max(1)).enumerate().take(cz) {
            let k = g[r * cz + c];
            if k != 0.0 {
                axpy(orow, k, zc);
            }
        }
    }
}

/// `out[c, :] += Σ_r g[r, c] a[r, :]`: `out` is `[cz, B]`, `a` is `[ra, B]`, `g` is `[ra, cz]`.
pub fn add_a_g(out: &mut [f64], cz: usize, a: &[f64], ra: usize, g: &[f64]) {
    let batch = out.len() / cz.max(1);
    for (c, orow) in out.chunks_exact_mut(batch.max(1)).enumerate() {
        for (r, ar) in a.chunks_exact(batch.max(1)).enumerate().take(ra) {
            let k = g[r * cz + c];
            if k != 0.0 {
                axpy(orow, k, ar);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `at_z` gives, bit for bit, one dot product per entry summed in batch order (what it
    /// replaced), zeros included: every layer's Hebbian statistics and weight gradients
    /// depend on it.
    #[test]
    fn at_z_is_a_dot_product_per_entry_bit_for_bit() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(3);
        for (ra, cz, batch) in [(1, 1, 1), (5, 3, 7), (17, 10, 128), (4, 9, 33), (3, 2, 0)] {
            let mut draw = |n: usize| -> Vec<f64> {
                (0..n).map(|_| if rng.gen_bool(0.2) { -0.0 } else { rng.gen_range(-3.0..3.0) }).collect()
            };
            let (a, z) = (draw(ra * batch), draw(cz * batch));
            let got = at_z(&a, ra, &z, cz);
            for r in 0..ra {
                for c in 0..cz {
                    let want: f64 = if batch == 0 {
                        0.0
                    } else {
                        a[r * batch..(r + 1) * batch]
                            .iter()
                            .zip(&z[c * batch..(c + 1) * batch])
                            .map(|(x, y)| x * y)
                            .sum()
                    };
                    assert_eq!(got[r * cz + c].to_bits(), want.to_bits(), "[{ra}, {cz}] B {batch}: entry ({r}, {c})");
                }
            }
        }
    }

    fn net() -> DenseNet<f64> {
        let mut net = DenseNet::zeros(&[2, 3, 2], true);
        for (l, w) in net.weights.iter_mut().enumerate() {
            for (k, v) in w.iter_mut().enumerate() {
                *v = ((k * 7 + l * 3) % 5) as f64 * 0.3 - 0.57;
            }
        }
        net
    }

    #[test]
    fn cross_entropy_gradient_matches_finite_differences() {
        let x = [0.5, -1.0, 1.5, 0.2, -0.3, 0.8];
        let y = [0, 1, 1];
        let mut net = net();
        let act = forward(&net, &x, Some(&y));
        let dw = backward(&net, &act, ActivityGrad::cross_entropy(&act, &y, 1.0));
        let eps = 1e-6;
        // The weights are perturbed in place, so the loops index them.
        #[allow(clippy::needless_range_loop)]
        for l in 0..net.num_layers() {
            for k in 0..net.weights[l].len() {
                let orig = net.weights[l][k];
                net.weights[l][k] = orig + eps;
                let up = loss_and_correct(&forward(&net, &x, Some(&y)), &y).0;
                net.weights[l][k] = orig - eps;
                let down = loss_and_correct(&forward(&net, &x, Some(&y)), &y).0;
                net.weights[l][k] = orig;
                let fd = (up - down) / (2.0 * eps);
                assert!((fd - dw[l][k]).abs() < 1e-7, "layer {l} weight {k}: fd {fd} vs {}", dw[l][k]);
            }
        }
    }
}
