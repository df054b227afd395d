//! Which cells fire at a step: in each layer, `⌊p·n⌋` (at least 1) of the `n` live cells,
//! uniformly without replacement. The one definition both paths draw from.

use rand::Rng;

use crate::topology::Topology;

/// Number of cells that fire in a layer of `n` live cells (0 only when `n == 0`).
pub fn firing_count(n: usize, p: f64) -> usize {
    if n == 0 { 0 } else { ((p * n as f64).floor() as usize).clamp(1, n) }
}

/// Firing flags of `steps` grow steps of a batch of networks: per step, every network's
/// [`choose_firing`] in order, concatenated.
pub fn draw_fires<R: Rng>(rng: &mut R, topologies: &[Topology], steps: usize, p: f64) -> Vec<Vec<bool>> {
    (0..steps).map(|_| topologies.iter().flat_map(|t| choose_firing(rng, t, p)).collect()).collect()
}

/// Firing flags of every live cell of `topology`, in [`Topology::cells`] order.
pub fn choose_firing<R: Rng>(rng: &mut R, topology: &Topology, p: f64) -> Vec<bool> {
    let mut out = Vec::with_capacity(topology.num_cells());
    for l in 0..topology.num_layers() {
        let n = topology.layer(l).cells.len();
        let start = out.len();
        out.resize(start + n, false);
        for k in rand::seq::index::sample(rng, n, firing_count(n, p)) {
            out[start + k] = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn counts() {
        assert_eq!(firing_count(15, 0.8), 12);
        assert_eq!(firing_count(3, 0.1), 1);
        assert_eq!(firing_count(4, 1.0), 4);
        assert_eq!(firing_count(0, 0.5), 0);
    }

    #[test]
    fn exact_count_per_layer_and_seeded() {
        let t = Topology::dense(&[4, 5, 3], true).expect("valid");
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let f = choose_firing(&mut rng, &t, 0.5);
        assert_eq!(f[..25].iter().filter(|&&b| b).count(), 12);
        assert_eq!(f[25..].iter().filter(|&&b| b).count(), 9);
        let mut rng2 = rand::rngs::StdRng::seed_from_u64(7);
        assert_eq!(f, choose_firing(&mut rng2, &t, 0.5));
    }
}
