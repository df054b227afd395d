//! The small random generators every part shares: named streams of seeded [`StdRng`]s
//! ([`Stream`], [`rng_for`]), the SplitMix64 hash that derives their seeds, and a standard
//! normal draw.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Independent random streams derived from one seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Meta-training episodes.
    Train = 1,
    /// Evaluation episodes.
    Eval = 2,
    /// Single grows (`meta-nca grow`).
    Grow = 3,
    /// The fixed probe networks that pick the best checkpoint during training.
    Probe = 4,
    /// Generated tasks of meta-training (`generate`).
    TrainTasks = 5,
    /// Generated held-out tasks of evaluation (the learning suite); disjoint from `TrainTasks`.
    EvalTasks = 6,
    /// Continual experiments (`continual`): their grows, drifts and baselines.
    Continual = 7,
}

/// SplitMix64's output function: a well-mixed 64-bit hash of `z`.
pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator of item `index` of `stream` under `seed`.
pub fn rng_for(seed: u64, stream: Stream, index: u64) -> StdRng {
    StdRng::seed_from_u64(splitmix(splitmix(seed) ^ splitmix(stream as u64 ^ (index << 8))))
}

/// A standard normal draw (Box-Muller; `rand` alone has no normal distribution).
pub fn normal<R: Rng>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.r#gen::<f64>();
    let u2: f64 = rng.r#gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
