//! The small random generators every part shares: named streams of seeded [`StdRng`]s
//! ([`Stream`], [`rng_for`]), the SplitMix64 hash that derives their seeds, the two cheap
//! in-place generators of the simulation ([`splitmix_next`] for the cells' async clocks,
//! [`xorshift`] for the executors' scheduling jitter), and a standard normal draw.

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

/// Advances a SplitMix64 generator by one step and returns its output.
///
/// The state moves by the golden-ratio increment and the output is [`splitmix`] of the old
/// state, so the sequence is SplitMix64's: cheap, and good enough for a cell's firing draws.
pub fn splitmix_next(state: &mut u64) -> u64 {
    let out = splitmix(*state);
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    out
}

/// Advances Marsaglia's xorshift64 generator (shifts 13, 7, 17) and returns the new state.
///
/// A zero state stays zero forever, so seed it with an odd number. Used only for scheduling
/// jitter, where speed matters and quality hardly does.
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference SplitMix64 outputs from seed 0 (Vigna's `splitmix64.c`); the cells' async
    /// clocks, and so every async run, depend on these exact values.
    #[test]
    fn splitmix_next_is_splitmix64() {
        let mut state = 0;
        let got: Vec<u64> = (0..3).map(|_| splitmix_next(&mut state)).collect();
        assert_eq!(got, [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F]);
        assert_eq!(state, 3u64.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }

    /// The first xorshift64 outputs from state 1; the executors' jitter depends on them.
    #[test]
    fn xorshift_sequence_is_pinned() {
        let mut state = 1;
        let got: Vec<u64> = (0..3).map(|_| xorshift(&mut state)).collect();
        assert_eq!(got, [0x0000_0000_4082_2041, 0x1000_4106_0C01_1441, 0x9B1E_842F_6E86_2629]);
    }
}
