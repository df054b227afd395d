//! A grow episode: the random draws of one grow (architectures, starting state, firing flags
//! of every step), made from a seed so that any grow can be replayed exactly, by the
//! reference path or by anything that must match it.

use rand::rngs::StdRng;

use crate::config::Architectures;
use crate::firing::draw_fires;
use crate::init::{HiddenCode, WeightInit, initial_state};
use crate::topology::Topology;

/// What a grow needs besides the rule.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeSpec<'a> {
    /// Architectures to draw from.
    pub archs: &'a Architectures,
    /// Networks grown together.
    pub networks: usize,
    /// Bias cells on.
    pub bias: bool,
    /// Starting weights.
    pub weight_init: WeightInit,
    /// Hidden-state layout of the rule.
    pub code: HiddenCode,
    /// Steps to draw firing flags for.
    pub steps: usize,
    /// Firing fraction.
    pub fire_fraction: f64,
}

/// The draws of one grow.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    /// The networks.
    pub topologies: Vec<Topology>,
    /// Starting state rows `[w, h..]` of every cell, networks in order.
    pub state0: Vec<f64>,
    /// `fires[t]`: firing flags of every cell at step `t`.
    pub fires: Vec<Vec<bool>>,
}

impl Episode {
    /// Draws an episode: architectures, then every network's starting state, then the firing
    /// flags step by step (networks in order, layers in order within a step).
    pub fn draw(spec: &EpisodeSpec<'_>, rng: &mut StdRng) -> crate::Result<Self> {
        let topologies = (0..spec.networks)
            .map(|_| Topology::dense(&spec.archs.sample(rng), spec.bias))
            .collect::<crate::Result<Vec<_>>>()?;
        Self::draw_for(topologies, spec, rng)
    }

    /// Draws the starting state and firing flags for given networks.
    pub fn draw_for(mut topologies: Vec<Topology>, spec: &EpisodeSpec<'_>, rng: &mut StdRng) -> crate::Result<Self> {
        let mut state0 = Vec::new();
        for t in &mut topologies {
            state0.extend(initial_state(&spec.code, spec.weight_init, t, rng)?);
        }
        let fires = draw_fires(rng, &topologies, spec.steps, spec.fire_fraction);
        Ok(Self { topologies, state0, fires })
    }

    /// The episode cut into runs of consecutive networks whose summed `cost` stays within
    /// `budget` (a network costing more is alone in its run). Each part holds its networks'
    /// starting rows (`width` per cell) and firing flags, so growing the parts one after the
    /// other grows the same networks as the whole.
    pub fn split(&self, width: usize, budget: usize, cost: impl Fn(&Topology) -> usize) -> Vec<Episode> {
        let mut parts: Vec<Episode> = Vec::new();
        let (mut used, mut start_row) = (0usize, 0usize);
        let mut offsets = vec![0usize; self.fires.len()];
        for t in &self.topologies {
            let c = cost(t);
            if parts.is_empty() || used.saturating_add(c) > budget {
                parts.push(Episode {
                    topologies: Vec::new(),
                    state0: Vec::new(),
                    fires: vec![Vec::new(); self.fires.len()],
                });
                used = 0;
            }
            used = used.saturating_add(c);
            let part = parts.last_mut().expect("pushed above");
            let cells = t.num_cells();
            part.state0.extend_from_slice(&self.state0[start_row..start_row + cells * width]);
            start_row += cells * width;
            for (step, fire) in self.fires.iter().enumerate() {
                part.fires[step].extend_from_slice(&fire[offsets[step]..offsets[step] + cells]);
                offsets[step] += cells;
            }
            part.topologies.push(t.clone());
        }
        parts
    }
}

/// The training rows each of `steps` grow steps sees (`grow.batch-size`): `batch` of the `n`
/// rows, drawn without replacement for every step (in increasing order). Empty, meaning that
/// every step sees every row, when `batch` is unset or covers all rows: then nothing is drawn.
pub fn draw_rows(batch: Option<usize>, n: usize, steps: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
    match batch {
        Some(b) if b < n => (0..steps)
            .map(|_| {
                let mut rows = rand::seq::index::sample(rng, n, b).into_vec();
                rows.sort_unstable();
                rows
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::{Stream, rng_for};

    #[test]
    fn minibatch_rows_are_distinct_seeded_and_only_drawn_when_asked() {
        let mut rng = rng_for(3, Stream::Train, 0);
        let rows = draw_rows(Some(7), 20, 4, &mut rng);
        assert_eq!(rows.len(), 4);
        for r in &rows {
            assert_eq!(r.len(), 7);
            assert!(r.windows(2).all(|w| w[0] < w[1]) && r.iter().all(|&i| i < 20), "{r:?}");
        }
        assert_eq!(rows, draw_rows(Some(7), 20, 4, &mut rng_for(3, Stream::Train, 0)));
        assert_ne!(rows[0], rows[1]);
        let (mut a, b) = (rng_for(3, Stream::Train, 0), rng_for(3, Stream::Train, 0));
        assert!(draw_rows(None, 20, 4, &mut a).is_empty());
        assert!(draw_rows(Some(20), 20, 4, &mut a).is_empty());
        let mut b = b;
        assert_eq!(rand::Rng::r#gen::<u64>(&mut a), rand::Rng::r#gen::<u64>(&mut b), "nothing drawn");
    }
}
