//! Adam with global-norm gradient clipping over flat parameter lists. Kept here rather than
//! in dfdx so its state is plain data that checkpoints save and resume bit-exactly.

use serde::{Deserialize, Serialize};

/// Adam's moment estimates and step count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adam {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator guard.
    pub eps: f64,
    /// Steps taken.
    pub t: u64,
    /// First moments, one vector per parameter tensor.
    pub m: Vec<Vec<f64>>,
    /// Second moments, one vector per parameter tensor.
    pub v: Vec<Vec<f64>>,
}

impl Adam {
    /// Zero moments shaped like `params`.
    pub fn new(lr: f64, params: &[Vec<f64>]) -> Self {
        let zeros: Vec<Vec<f64>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
        Self { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, t: 0, m: zeros.clone(), v: zeros }
    }

    /// One update of `params` with `grads` (same shapes).
    pub fn step(&mut self, params: &mut [Vec<f64>], grads: &[Vec<f64>]) {
        self.t += 1;
        let t = i32::try_from(self.t).unwrap_or(i32::MAX);
        let c1 = 1.0 - self.beta1.powi(t);
        let c2 = 1.0 - self.beta2.powi(t);
        for (((p, g), m), v) in params.iter_mut().zip(grads).zip(&mut self.m).zip(&mut self.v) {
            for k in 0..p.len() {
                m[k] = self.beta1 * m[k] + (1.0 - self.beta1) * g[k];
                v[k] = self.beta2 * v[k] + (1.0 - self.beta2) * g[k] * g[k];
                p[k] -= self.lr * (m[k] / c1) / ((v[k] / c2).sqrt() + self.eps);
            }
        }
    }
}

/// The global L2 norm of `grads`.
pub fn global_norm(grads: &[Vec<f64>]) -> f64 {
    grads.iter().flatten().map(|g| g * g).sum::<f64>().sqrt()
}

/// Scales every gradient tensor to unit norm (Growing NCA's per-tensor normalisation): each
/// layer moves at the optimiser's pace whatever the scale of its raw gradient.
pub fn normalise_per_tensor(grads: &mut [Vec<f64>]) {
    for g in grads.iter_mut() {
        let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        g.iter_mut().for_each(|v| *v /= norm + 1e-8);
    }
}

/// Scales `grads` so their global norm is at most `max_norm` (0 = no clipping).
pub fn clip_global_norm(grads: &mut [Vec<f64>], max_norm: f64) {
    let norm = global_norm(grads);
    if max_norm > 0.0 && norm > max_norm {
        let k = max_norm / norm;
        grads.iter_mut().flatten().for_each(|g| *g *= k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_minimises_a_quadratic() {
        let mut p = vec![vec![3.0, -2.0]];
        let mut adam = Adam::new(0.1, &p);
        for _ in 0..500 {
            let g = vec![p[0].iter().map(|x| 2.0 * x).collect::<Vec<_>>()];
            adam.step(&mut p, &g);
        }
        assert!(p[0].iter().all(|x| x.abs() < 1e-2), "{p:?}");
    }

    #[test]
    fn clipping_bounds_the_norm() {
        let mut g = vec![vec![3.0], vec![4.0]];
        clip_global_norm(&mut g, 1.0);
        assert!((global_norm(&g) - 1.0).abs() < 1e-12);
        let mut small = vec![vec![0.3]];
        clip_global_norm(&mut small, 1.0);
        assert_eq!(small, vec![vec![0.3]]);
    }
}
