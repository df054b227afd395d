//! A size guard: the memory a config needs, estimated before anything is allocated, against
//! the memory the machine has available (`MemAvailable` in `/proc/meminfo`; where that cannot
//! be read, the guard is skipped).
//!
//! Meta-training keeps the whole unrolled grow on the dfdx tape until the backward pass, so
//! its memory grows with networks × steps × (cells × the floats the rule computes per cell +
//! training rows × neurons × the floats the task network's forward pass keeps per neuron).
//! [`TAPE_FACTOR`] turns that count of `f64`s into bytes actually used; it was measured, not
//! derived (see its doc). Grows without a tape on the reference path (`eval`, the suite,
//! probes) cut their networks into groups of bounded size (`meta_nca_rule::eval::GROW_FLOATS`)
//! and need no guard; the actor simulation keeps every cell of a network alive at once and is
//! checked with [`check_actors`].

use anyhow::{Context, Result, bail};
use meta_nca_rule::config::{Architectures, Config};
use meta_nca_rule::experiment::Experiment;

use crate::actors::{EngineArg, ExecutorArg};

/// Bytes of resident memory per counted tape float (the count is [`Estimate::floats`]).
///
/// Measured on the 2-core development machine with
/// `/usr/bin/time -v meta-nca train --config configs/smoke.toml --set train.meta-epochs=2
/// --set train.probe-networks=1 --eval-networks 0 --quiet --set 'task.hidden=[[W]]'`
/// (maximum resident set size, minus the 7.7 MB of W = 3, divided by the counted floats):
///
/// | variant | counted floats | max RSS | bytes per float |
/// | --- | --- | --- | --- |
/// | W = 2000 | 20.9 M | 264 MB | 12.6 |
/// | W = 4000 | 43.0 M | 518 MB | 12.2 |
/// | W = 8000 | 88.6 M | 1081 MB | 12.4 |
/// | W = 2000, `data.dataset=breast-cancer` | 89.3 M | 1113 MB | 12.7 |
/// | W = 2000, `train.num-models=8` | 83.6 M | 1004 MB | 12.2 |
///
/// So about 12.5 bytes per counted float; 16 leaves a margin. With it, the issue's
/// `--set 'task.hidden=[[100000]]'` on the default config (which grew to 24 GB before the
/// kernel killed it) is estimated at 27 GB.
pub const TAPE_FACTOR: f64 = 16.0;

/// Floats the task network's forward and reverse passes keep per training row and neuron at a
/// step (pre-activation, activation, error, the activity statistics).
const FLOATS_PER_NEURON_ROW: usize = 4;

/// Resident memory a process needs besides the tape (binary, data, rule, probes): the
/// baseline of the measurement above was 7.7 MB.
const BASE_BYTES: f64 = 32.0 * 1024.0 * 1024.0;

/// What a meta-epoch of a config keeps in memory at its largest.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Networks grown per meta-epoch over all tasks.
    pub networks: usize,
    /// The largest network's cells (connections, bias cells included).
    pub cells: usize,
    /// Rule steps on the tape (grow steps plus damage recovery).
    pub steps: usize,
    /// Counted tape floats of a meta-epoch.
    pub floats: f64,
    /// Estimated bytes.
    pub bytes: f64,
}

/// Cells and neurons of the largest network an architecture list or family can draw.
fn largest(archs: &Architectures, bias: bool) -> (usize, usize) {
    let b = usize::from(bias);
    let count = |sizes: &[usize]| {
        let cells: usize = sizes.windows(2).map(|w| (w[0] + b) * w[1]).sum();
        let neurons: usize = sizes.iter().sum::<usize>() + b * sizes.len().saturating_sub(1);
        (cells, neurons)
    };
    match archs {
        Architectures::List(list) => list.iter().map(|s| count(s)).fold((0, 0), |a, c| (a.0.max(c.0), a.1.max(c.1))),
        Architectures::Family { features, classes, depths, widths } => {
            let depth = depths.iter().copied().max().unwrap_or(1);
            let width = widths.iter().copied().max().unwrap_or(1);
            let mut sizes = vec![*features];
            sizes.extend(std::iter::repeat_n(width, depth.saturating_sub(1)));
            sizes.push(*classes);
            count(&sizes)
        }
    }
}

/// The memory one meta-epoch of `exp` needs, at its largest networks.
pub fn estimate_training(exp: &Experiment) -> Result<Estimate> {
    let cfg = &exp.config;
    let code = cfg.hidden_code(exp.extent());
    let (spec, shape) = cfg.rule_shape(&code)?;
    // Per cell and step: the perception, every hidden layer of the rule, its output and the new state.
    let per_cell = spec.width() + shape.hidden.iter().sum::<usize>() + 2 * spec.state_width();
    let steps = cfg.grow.steps + cfg.train.damage.as_ref().map_or(0, |d| d.recover);
    let models = cfg.train.num_models;
    // (cells, neurons, rows) of every task of a meta-epoch.
    let mut tasks: Vec<(usize, usize, usize)> = Vec::new();
    if cfg.tasks.include_datasets {
        for t in &exp.tasks {
            let (cells, neurons) = largest(&t.archs, cfg.task.bias);
            tasks.push((cells, neurons, t.train.y.len()));
        }
    }
    if cfg.tasks.generates() {
        let archs = cfg.architectures(cfg.tasks.features[1], cfg.tasks.classes[1]);
        let (cells, neurons) = largest(&archs, cfg.task.bias);
        let rows = (cfg.tasks.rows[1] as f64 * cfg.data.train_fraction).ceil() as usize;
        tasks.extend(std::iter::repeat_n((cells, neurons, rows), cfg.tasks.per_epoch));
    }
    let floats: f64 = tasks
        .iter()
        .map(|&(cells, neurons, rows)| {
            let rows = cfg.grow.batch_size.map_or(rows, |b| b.min(rows)).max(1);
            (models * steps) as f64 * (cells * per_cell + rows * neurons * FLOATS_PER_NEURON_ROW) as f64
        })
        .sum();
    Ok(Estimate {
        networks: models * tasks.len(),
        cells: tasks.iter().map(|t| t.0).max().unwrap_or(0),
        steps,
        floats,
        bytes: BASE_BYTES + TAPE_FACTOR * floats,
    })
}

/// `MemAvailable` of `/proc/meminfo` in bytes, or `None` where it cannot be read.
pub fn available_bytes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: f64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => Some(value * 1024.0),
        _ => None,
    }
}

/// Gigabytes, for messages.
fn gb(bytes: f64) -> String {
    format!("{:.2} GB", bytes / 1e9)
}

/// Refuses a training config whose estimate, times `parallel` runs at once, exceeds the memory
/// available (`--no-memory-check` skips this).
pub fn check_training(config: &Config, parallel: usize) -> Result<()> {
    let Some(available) = available_bytes() else {
        tracing::info!("MemAvailable not readable: no memory check");
        return Ok(());
    };
    let exp = Experiment::new(config.clone()).context("preparing the experiment")?;
    let e = estimate_training(&exp)?;
    let bytes = e.bytes * parallel.max(1) as f64;
    tracing::info!(floats = e.floats, bytes, available, "memory estimate");
    if bytes > available {
        let runs = if parallel > 1 { format!(" ({parallel} runs at once)") } else { String::new() };
        bail!(
            "this config needs about {}{runs} to meta-train ({} networks per meta-epoch, up to {} cells each, {} steps \
             on the tape), but only {} is available; make the networks smaller (task.hidden), grow fewer \
             (train.num-models, tasks.per-epoch) or for fewer steps (grow.steps), or pass --no-memory-check to try anyway",
            gb(bytes),
            e.networks,
            e.cells,
            e.steps,
            gb(available)
        );
    }
    Ok(())
}

/// Resident bytes per cell of a running actor simulation, as `bench-actors` measured them at
/// 1M cells (README, "Speed of the actors"): about 5.2 KB with one task per cell and under
/// 0.8 KB in shards.
fn actor_bytes_per_cell(executor: ExecutorArg) -> f64 {
    match executor {
        ExecutorArg::Tasks => 5200.0,
        ExecutorArg::Shards => 800.0,
    }
}

/// Refuses an actor simulation of `cells` cells that needs more memory than is available.
pub fn check_actors(cells: usize, executor: ExecutorArg) -> Result<()> {
    let Some(available) = available_bytes() else {
        return Ok(());
    };
    let bytes = BASE_BYTES + cells as f64 * actor_bytes_per_cell(executor);
    if bytes > available {
        let hint = match executor {
            ExecutorArg::Tasks => " (--executor shards needs about a seventh of it)",
            ExecutorArg::Shards => "",
        };
        bail!(
            "an actor simulation of {cells} cells needs about {}{hint}, but only {} is available; grow a smaller network",
            gb(bytes),
            gb(available)
        );
    }
    Ok(())
}

/// [`check_actors`] for the largest network `archs` can draw, when `engine` is the actors.
pub fn check_actors_for(archs: &Architectures, bias: bool, engine: EngineArg, executor: ExecutorArg) -> Result<()> {
    match engine {
        EngineArg::Reference => Ok(()),
        EngineArg::Actors => check_actors(largest(archs, bias).0, executor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_network_of_a_list_and_a_family() {
        let list = Architectures::List(vec![vec![4, 3], vec![4, 5, 3]]);
        // [4,5,3] with bias: 5·5 + 6·3 = 43 cells; 4 + 5 + 3 + 2 bias neurons.
        assert_eq!(largest(&list, true), (43, 14));
        let family = Architectures::Family { features: 4, classes: 3, depths: vec![1, 2], widths: vec![2, 5] };
        assert_eq!(largest(&family, false), (4 * 5 + 5 * 3, 12));
    }

    #[test]
    fn the_estimate_grows_with_the_network() {
        let small = Experiment::new(Config::default()).expect("default config");
        let big = Config::default().with_override("task.hidden=[[100000]]").expect("override");
        let big = Experiment::new(big).expect("big config");
        let (s, b) = (estimate_training(&small).expect("small"), estimate_training(&big).expect("big"));
        assert!(s.bytes < 1e9, "{s:?}");
        assert!(b.bytes > 24e9, "the issue's config grew past 24 GB: {b:?}");
        assert!(available_bytes().is_none_or(|a| a > 0.0));
    }
}
