//! The true limit of a rule pass on this machine, for `bench` and `bench-actors`: a bare chain
//! of f64 matrix products with the rule's shapes (perception width → hidden widths → state
//! width, no bias, no activation) through dfdx's gemm-backed product, in chunks of rows on one
//! thread, with no simulation; and the rule's own passes timed the same way, to be reported as
//! a fraction of it.

use std::hint::black_box;
use std::time::Instant;

use dfdx::prelude::*;
use meta_nca_rule::rule::RuleNet;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Rows per chunk, the rule service's pass size.
pub const CHUNK: usize = 1024;

/// Rows per second of each way of running the rule's shapes, one thread, `CHUNK`-row chunks.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Rates {
    /// The bare product chain (the limit).
    pub limit: f64,
    /// The rule's forward pass without tape (bias, activations and bound included).
    pub forward: f64,
    /// The same rule through dfdx's ops on a tape (meta-training's forward).
    pub taped: f64,
}

/// Median rows per second of `chunk_pass` (one chunk of [`CHUNK`] rows) over 7 runs of about
/// `seconds / 7` each, after one untimed run.
fn rows_per_second(seconds: f64, mut chunk_pass: impl FnMut()) -> f64 {
    chunk_pass();
    let mut rates = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let mut chunks = 0usize;
        while t.elapsed().as_secs_f64() < seconds / 7.0 {
            chunk_pass();
            chunks += 1;
        }
        rates.push((chunks * CHUNK) as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// Times the three ways on `rule`'s shapes for about `seconds` each.
pub fn measure(rule: &RuleNet, seconds: f64) -> Rates {
    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(0);
    let dims = rule.shape.dims();
    let input = rule.shape.input;
    let x: Vec<f64> = (0..CHUNK * input).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let xt = dev.tensor_from_vec(x.clone(), (CHUNK, input));
    let weights: Vec<Tensor<(usize, usize), f64, Cpu>> = dims
        .windows(2)
        .map(|d| dev.tensor_from_vec((0..d[0] * d[1]).map(|_| rng.gen_range(-0.5..0.5)).collect(), (d[0], d[1])))
        .collect();
    let limit = rows_per_second(seconds, || {
        let mut h = xt.clone();
        for w in &weights {
            h = h.matmul(w.clone());
        }
        black_box(h);
    });
    let mut pass = rule.forward_pass();
    let mut out = vec![0.0; CHUNK * rule.shape.output];
    let forward = rows_per_second(seconds, || {
        pass.run(black_box(&x), &mut out);
        black_box(&out);
    });
    let taped = rows_per_second(seconds, || {
        black_box(rule.forward(xt.clone().retaped::<OwnedTape<f64, Cpu>>()));
    });
    Rates { limit, forward, taped }
}

/// `rate` in millions, to three significant digits.
pub fn millions(rate: f64) -> String {
    format!("{:.3}M", rate / 1e6)
}
