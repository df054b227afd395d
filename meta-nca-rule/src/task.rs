//! The task network: a dense MLP `z_{l+1} = a_l · (W_l ⊙ M_l)`, ReLU on hidden layers, logits
//! at the top, and its exact reverse pass. One home for the forward semantics: the reference
//! path, evaluation and the backprop baseline all run this code.

use num_traits::Float;

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

impl<E: Float> DenseNet<E> {
    /// All-zero weights for `sizes`.
    pub fn zeros(sizes: &[usize], bias: bool) -> Self {
        let weights = (0..sizes.len() - 1)
            .map(|l| vec![E::zero(); (sizes[l] + usize::from(bias)) * sizes[l + 1]])
            .collect();
        Self { sizes: sizes.to_vec(), bias, weights }
    }

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
pub struct Activity<E> {
    /// Batch size `B`.
    pub batch: usize,
    /// `a_l` for `l in 0..L`, row-major `[B, n_l + bias]` (bias column = 1).
    pub acts: Vec<Vec<E>>,
    /// `z_{l+1}` for `l in 0..L`, row-major `[B, n_{l+1}]`; the last is the logits.
    pub pre: Vec<Vec<E>>,
    /// `softmax(z_L)`, `[B, C]`.
    pub probs: Vec<E>,
    /// `e = onehot(y) - softmax(z_L)`, `[B, C]` (zeros when no labels were given).
    pub err: Vec<E>,
}

/// Forward pass of `net` on `x` (`[B, n0]` row-major). With labels, also the error signal.
pub fn forward<E: Float>(net: &DenseNet<E>, x: &[E], y: Option<&[usize]>) -> Activity<E> {
    let n0 = net.sizes[0];
    let batch = x.len() / n0;
    let mut acts = Vec::with_capacity(net.num_layers());
    let mut pre = Vec::with_capacity(net.num_layers());
    let mut a = with_bias(x, batch, n0, net.bias);
    for l in 0..net.num_layers() {
        let (rows, cols) = (net.rows(l), net.cols(l));
        let w = &net.weights[l];
        let mut z = vec![E::zero(); batch * cols];
        for b in 0..batch {
            let zb = &mut z[b * cols..(b + 1) * cols];
            for (r, &ar) in a[b * rows..(b + 1) * rows].iter().enumerate() {
                if ar != E::zero() {
                    for (zc, &wc) in zb.iter_mut().zip(&w[r * cols..(r + 1) * cols]) {
                        *zc = *zc + ar * wc;
                    }
                }
            }
        }
        let next = if l + 1 < net.num_layers() {
            let relu: Vec<E> = z.iter().map(|&v| v.max(E::zero())).collect();
            Some(with_bias(&relu, batch, cols, net.bias))
        } else {
            None
        };
        acts.push(a);
        pre.push(z);
        match next {
            Some(n) => a = n,
            None => break,
        }
    }
    let logits = pre.last().map(Vec::as_slice).unwrap_or(&[]);
    let c = net.classes();
    let mut probs = vec![E::zero(); batch * c];
    for b in 0..batch {
        softmax_into(&logits[b * c..(b + 1) * c], &mut probs[b * c..(b + 1) * c]);
    }
    let mut err: Vec<E> = probs.iter().map(|&p| -p).collect();
    if let Some(y) = y {
        for (b, &label) in y.iter().enumerate() {
            err[b * c + label] = err[b * c + label] + E::one();
        }
    } else {
        err.iter_mut().for_each(|v| *v = E::zero());
    }
    Activity { batch, acts, pre, probs, err }
}

fn with_bias<E: Float>(a: &[E], batch: usize, n: usize, bias: bool) -> Vec<E> {
    if !bias {
        return a.to_vec();
    }
    let mut out = Vec::with_capacity(batch * (n + 1));
    for b in 0..batch {
        out.extend_from_slice(&a[b * n..(b + 1) * n]);
        out.push(E::one());
    }
    out
}

fn softmax_into<E: Float>(z: &[E], out: &mut [E]) {
    let m = z.iter().fold(E::neg_infinity(), |m, &v| m.max(v));
    let mut sum = E::zero();
    for (o, &v) in out.iter_mut().zip(z) {
        *o = (v - m).exp();
        sum = sum + *o;
    }
    out.iter_mut().for_each(|o| *o = *o / sum);
}

/// Mean cross-entropy of the logits and the number of correct argmax predictions.
pub fn loss_and_correct<E: Float>(act: &Activity<E>, y: &[usize]) -> (E, usize) {
    let logits = act.pre.last().map(Vec::as_slice).unwrap_or(&[]);
    let c = act.probs.len() / act.batch.max(1);
    let mut loss = E::zero();
    let mut correct = 0;
    for (b, &label) in y.iter().enumerate() {
        let z = &logits[b * c..(b + 1) * c];
        let m = z.iter().fold(E::neg_infinity(), |m, &v| m.max(v));
        let lse = m + z.iter().fold(E::zero(), |s, &v| s + (v - m).exp()).ln();
        loss = loss + lse - z[label];
        if argmax(z) == label {
            correct += 1;
        }
    }
    (loss / E::from(act.batch.max(1)).unwrap_or_else(E::one), correct)
}

/// Index of the largest entry (the first one on ties).
pub fn argmax<E: Float>(z: &[E]) -> usize {
    let mut best = 0;
    for (k, &v) in z.iter().enumerate() {
        if v > z[best] {
            best = k;
        }
    }
    best
}

/// Gradients arriving at a network's activity from outside (perception or a loss).
#[derive(Debug, Clone)]
pub struct ActivityGrad<E> {
    /// d/d `a_l`, `[B, n_l + bias]`; used for hidden layers `l >= 1` only (inputs and bias are constants).
    pub d_acts: Vec<Vec<E>>,
    /// d/d `z_{l+1}`, `[B, n_{l+1}]`.
    pub d_pre: Vec<Vec<E>>,
    /// d/d `e`, `[B, C]`.
    pub d_err: Vec<E>,
}

impl<E: Float> ActivityGrad<E> {
    /// All-zero gradients shaped like `act`.
    pub fn zeros_like(act: &Activity<E>) -> Self {
        Self {
            d_acts: act.acts.iter().map(|a| vec![E::zero(); a.len()]).collect(),
            d_pre: act.pre.iter().map(|z| vec![E::zero(); z.len()]).collect(),
            d_err: vec![E::zero(); act.err.len()],
        }
    }

    /// The gradient of `scale * mean cross-entropy` at the logits.
    pub fn cross_entropy(act: &Activity<E>, y: &[usize], scale: E) -> Self {
        let mut g = Self::zeros_like(act);
        let c = act.probs.len() / act.batch.max(1);
        let k = scale / E::from(act.batch.max(1)).unwrap_or_else(E::one);
        if let Some(dz) = g.d_pre.last_mut() {
            for (b, &label) in y.iter().enumerate() {
                for j in 0..c {
                    let onehot = if j == label { E::one() } else { E::zero() };
                    dz[b * c + j] = (act.probs[b * c + j] - onehot) * k;
                }
            }
        }
        g
    }
}

/// Reverse pass: d/d `W_l` (dense, same layout as the weights) of whatever produced `grad`.
/// Consumes `grad` as scratch space.
pub fn backward<E: Float>(net: &DenseNet<E>, act: &Activity<E>, mut grad: ActivityGrad<E>) -> Vec<Vec<E>> {
    let batch = act.batch;
    let nl = net.num_layers();
    let c = net.classes();
    // e = onehot - softmax(z_L): dz_L -= p ⊙ (de - <de, p>).
    let dz_top = &mut grad.d_pre[nl - 1];
    for b in 0..batch {
        let p = &act.probs[b * c..(b + 1) * c];
        let de = &grad.d_err[b * c..(b + 1) * c];
        let dot = p.iter().zip(de).fold(E::zero(), |s, (&p, &d)| s + p * d);
        for j in 0..c {
            dz_top[b * c + j] = dz_top[b * c + j] - p[j] * (de[j] - dot);
        }
    }
    let mut dw: Vec<Vec<E>> = net.weights.iter().map(|w| vec![E::zero(); w.len()]).collect();
    for l in (0..nl).rev() {
        let (rows, cols) = (net.rows(l), net.cols(l));
        let a = &act.acts[l];
        let dz = std::mem::take(&mut grad.d_pre[l]);
        let dwl = &mut dw[l];
        for b in 0..batch {
            let dzb = &dz[b * cols..(b + 1) * cols];
            for (r, &ar) in a[b * rows..(b + 1) * rows].iter().enumerate() {
                if ar != E::zero() {
                    for (g, &d) in dwl[r * cols..(r + 1) * cols].iter_mut().zip(dzb) {
                        *g = *g + ar * d;
                    }
                }
            }
        }
        if l == 0 {
            break;
        }
        // Into the hidden layer l: da_l += dz_{l+1} W_l^T, then dz_l += da_l ⊙ relu'(z_l).
        let w = &net.weights[l];
        let n = net.sizes[l];
        let da = &mut grad.d_acts[l];
        for b in 0..batch {
            let dzb = &dz[b * cols..(b + 1) * cols];
            for r in 0..n {
                let s = w[r * cols..(r + 1) * cols].iter().zip(dzb).fold(E::zero(), |s, (&w, &d)| s + w * d);
                da[b * rows + r] = da[b * rows + r] + s;
            }
        }
        let z = &act.pre[l - 1];
        let dzl = &mut grad.d_pre[l - 1];
        for b in 0..batch {
            for r in 0..n {
                if z[b * n + r] > E::zero() {
                    dzl[b * n + r] = dzl[b * n + r] + da[b * rows + r];
                }
            }
        }
    }
    dw
}

/// Column means of a row-major `[B, cols]` matrix.
pub fn col_means(m: &[f64], cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; cols];
    let rows = m.len() / cols.max(1);
    for row in m.chunks_exact(cols.max(1)) {
        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
    let inv = 1.0 / rows.max(1) as f64;
    out.iter_mut().for_each(|o| *o *= inv);
    out
}

/// `A^T Z`: `a` is `[B, ra]`, `z` is `[B, cz]`, the result `[ra, cz]`.
pub fn at_z(a: &[f64], ra: usize, z: &[f64], cz: usize) -> Vec<f64> {
    let mut out = vec![0.0; ra * cz];
    for (arow, zrow) in a.chunks_exact(ra).zip(z.chunks_exact(cz)) {
        for (r, &av) in arow.iter().enumerate() {
            if av != 0.0 {
                out[r * cz..(r + 1) * cz].iter_mut().zip(zrow).for_each(|(o, zv)| *o += av * zv);
            }
        }
    }
    out
}

/// `out += Z G^T`: `z` is `[B, cz]`, `g` is `[ra, cz]`, `out` is `[B, ra]`.
pub fn add_z_gt(out: &mut [f64], ra: usize, z: &[f64], cz: usize, g: &[f64]) {
    for (orow, zrow) in out.chunks_exact_mut(ra).zip(z.chunks_exact(cz)) {
        for (r, o) in orow.iter_mut().enumerate() {
            *o += g[r * cz..(r + 1) * cz].iter().zip(zrow).map(|(g, z)| g * z).sum::<f64>();
        }
    }
}

/// `out += A G`: `a` is `[B, ra]`, `g` is `[ra, cz]`, `out` is `[B, cz]`.
pub fn add_a_g(out: &mut [f64], cz: usize, a: &[f64], ra: usize, g: &[f64]) {
    for (orow, arow) in out.chunks_exact_mut(cz).zip(a.chunks_exact(ra)) {
        for (r, &av) in arow.iter().enumerate() {
            if av != 0.0 {
                orow.iter_mut().zip(&g[r * cz..(r + 1) * cz]).for_each(|(o, g)| *o += av * g);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
