//! The pool of partly grown networks (Growing NCA's "persistent" training): networks carried
//! across meta-epochs so the rule learns to keep a grown network working, not only to grow
//! one from scratch in exactly K steps.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::index::sample;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::episode::{Episode, EpisodeSpec};
use crate::topology::Topology;

/// One pooled network: which task it grows on, its topology and its state rows `[w, h..]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolEntry {
    /// Index of the task (dataset) in the experiment.
    pub task: usize,
    /// The network.
    pub topology: Topology,
    /// Its state rows, in [`Topology::cells`] order.
    pub state: Vec<f64>,
}

/// Partly grown networks, per task; empty unless `train.pool-size > 0`. Saved in checkpoints
/// so a resumed run continues exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    /// The pooled networks.
    pub entries: Vec<PoolEntry>,
}

impl Pool {
    /// Removes and returns the pooled networks of `task` that this meta-epoch continues:
    /// `round(pool-fraction · num-models)` of them (fewer while the pool is filling up).
    pub fn take(&mut self, task: usize, cfg: &TrainConfig, rng: &mut StdRng) -> Vec<PoolEntry> {
        if cfg.pool_size == 0 {
            return Vec::new();
        }
        let mine: Vec<usize> = (0..self.entries.len()).filter(|&i| self.entries[i].task == task).collect();
        let want = ((cfg.pool_fraction * cfg.num_models as f64).round() as usize).min(cfg.num_models);
        let mut chosen: Vec<usize> =
            sample(rng, mine.len(), want.min(mine.len())).into_iter().map(|k| mine[k]).collect();
        chosen.sort_unstable_by(|a, b| b.cmp(a));
        let mut out: Vec<PoolEntry> = chosen.into_iter().map(|i| self.entries.swap_remove(i)).collect();
        out.reverse();
        out
    }

    /// An episode whose first networks continue from `pooled` states and whose others are
    /// `fresh`; firing flags are drawn for all of them.
    pub fn join(
        pooled: Vec<PoolEntry>,
        fresh: Episode,
        spec: &EpisodeSpec<'_>,
        rng: &mut StdRng,
    ) -> crate::Result<Episode> {
        if pooled.is_empty() {
            return Ok(fresh);
        }
        let mut topologies: Vec<Topology> = pooled.iter().map(|p| p.topology.clone()).collect();
        topologies.extend(fresh.topologies);
        let mut episode = Episode::draw_for(topologies, spec, rng)?;
        let mut state0: Vec<f64> = pooled.into_iter().flat_map(|p| p.state).collect();
        state0.extend(fresh.state0);
        episode.state0 = state0;
        Ok(episode)
    }

    /// Puts the networks grown on `task` back: while the pool holds fewer than `pool-size`
    /// networks every one is kept, then each replaces a random pooled network of any task.
    pub fn put(
        &mut self,
        task: usize,
        topologies: &[Topology],
        state: &[f64],
        width: usize,
        cfg: &TrainConfig,
        rng: &mut StdRng,
    ) {
        if cfg.pool_size == 0 {
            return;
        }
        let mut at = 0;
        for t in topologies {
            let rows = t.num_cells() * width;
            let entry = PoolEntry { task, topology: t.clone(), state: state[at..at + rows].to_vec() };
            at += rows;
            if self.entries.len() < cfg.pool_size {
                self.entries.push(entry);
            } else {
                let i = rng.gen_range(0..self.entries.len());
                self.entries[i] = entry;
            }
        }
    }
}
