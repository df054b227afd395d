//! Weights over meta-epochs: the same network (one architecture, one seed) grown by the rule of
//! every snapshot a run kept (`meta-nca train --snapshot-every N` writes
//! `snapshots/epoch-XXXXX.safetensors`), its final weights animated, one GIF per layer.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use meta_nca_rule::checkpoint::Checkpoint;
use meta_nca_rule::engine::ReferenceKind;
use meta_nca_rule::eval::grow_one;
use meta_nca_rule::experiment::Experiment;

use super::GifOptions;
use super::grow_file::{Grow, LayerGrid};
use super::weights::{Shot, animate};
use crate::run_dir::{Widths, layer_sizes, resolve_grow};

/// How the network of every snapshot is grown (defaults: the run's config).
#[derive(Debug, Clone, Default)]
pub struct GrowArgs {
    /// Rule steps.
    pub steps: Option<usize>,
    /// Firing fraction.
    pub fire_fraction: Option<f64>,
    /// Seed (the same network for every snapshot).
    pub seed: Option<u64>,
    /// Hidden widths (`None`: the run's first architecture).
    pub hidden: Option<Widths>,
}

/// Grows one network per snapshot and writes `<out>/epochs-layer<l>.gif`. Returns the files.
pub fn gifs(snapshots: &[(usize, PathBuf)], args: &GrowArgs, opts: &GifOptions, out: &Path) -> Result<Vec<PathBuf>> {
    let Some((_, first)) = snapshots.first() else { bail!("the run has no snapshots") };
    let ckpt = Checkpoint::load(first).with_context(|| format!("loading snapshot {}", first.display()))?;
    let exp = Experiment::new(ckpt.meta.config.clone()).context("loading the run's data")?;
    let cfg = &exp.config;
    let task = exp.primary();
    let sizes = layer_sizes(args.hidden.as_ref(), cfg, task);
    let (steps, p, seed) = resolve_grow(args.steps, args.fire_fraction, args.seed, cfg)?;
    let mut grown: Vec<(usize, Grow)> = Vec::with_capacity(snapshots.len());
    for (epoch, path) in snapshots {
        let ckpt = Checkpoint::load(path).with_context(|| format!("loading snapshot {}", path.display()))?;
        let record = grow_one(&ReferenceKind, &ckpt.rule, &ckpt.meta, task, &sizes, steps, p, seed, &[])
            .with_context(|| format!("growing with snapshot {}", path.display()))?;
        grown.push((*epoch, record));
    }
    let last_epoch = snapshots.last().map_or(0, |s| s.0);
    let mut written = Vec::new();
    for layer in 0..sizes.len() - 1 {
        let grid = LayerGrid::of(&grown[0].1, layer);
        let shots: Vec<Shot<'_>> = grown
            .iter()
            .map(|(epoch, g)| {
                let s = g.steps.last().expect("a grow record has its starting state");
                Shot {
                    values: &s.weights,
                    fired: &[],
                    title: format!("Layer {layer} weights grown by the rule of meta-epoch {epoch} of {last_epoch}"),
                    subtitle: format!(
                        "{steps} grow steps of one network (sizes {sizes:?}, seed {seed}, p = {p}) · train acc {:.3} · val acc {:.3}",
                        s.train_acc, s.val_acc
                    ),
                }
            })
            .collect();
        let path = out.join(format!("epochs-layer{layer}.gif"));
        animate(&grid, &shots, opts, &path)?;
        written.push(path);
    }
    Ok(written)
}
