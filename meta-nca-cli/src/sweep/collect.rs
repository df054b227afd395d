//! `meta-nca sweep --collect DIR`: the report of a sweep whose seeds were trained elsewhere (by
//! the lines of a `--plan`), from the finished runs in `DIR/seed-*/`; nothing is trained.
//!
//! The seeds expected are those `sweep-plan.toml` lists (without it, the seed folders found).
//! The columns come from the sweep's `config.toml` (without it, the first seed's); each seed is
//! evaluated with its own run's `config.toml`, exactly as a sweep on one machine evaluates it.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use meta_nca_rule::checkpoint::{Checkpoint, config_mismatches};
use meta_nca_rule::config::Config;
use meta_nca_rule::experiment::Experiment;

use super::report::columns;
use super::{Args, SweepReport, evaluate_seed, finish, for_each_seed, seed_dir};
use crate::run_dir::{Which, checkpoint_path};

/// Runs `meta-nca sweep --collect dir`.
pub fn run(dir: &Path, args: &Args) -> Result<()> {
    if !dir.is_dir() {
        bail!("sweep folder {} does not exist", dir.display());
    }
    let found = seed_folders(dir)?;
    let seeds: Vec<u64> = match super::plan::read_manifest(dir)? {
        Some(manifest) => {
            let strays: Vec<String> = found.difference(&manifest.seeds).map(|s| format!("seed-{s}")).collect();
            if !strays.is_empty() {
                eprintln!("note: ignoring {} in {}: not in its sweep-plan.toml", strays.join(", "), dir.display());
            }
            manifest.seeds.into_iter().collect()
        }
        None => found.into_iter().collect(),
    };
    if seeds.is_empty() {
        bail!("no seeds to collect in {}: no sweep-plan.toml and no seed-N/ folders", dir.display());
    }
    let config = sweep_config(dir, &seeds)?;
    let exp = Experiment::new(config.clone()).context("preparing the experiment")?;
    let cols = columns(&exp, &args.eval_datasets)?;
    if !args.json {
        writeln!(
            std::io::stdout(),
            "collecting {} seeds ({} jobs), {} networks per evaluation, folder {}",
            seeds.len(),
            args.jobs,
            args.networks,
            dir.display()
        )?;
    }
    let (results, failures) = for_each_seed(&seeds, args.jobs, |seed| {
        let run = seed_dir(dir, seed);
        let (run_config, seconds) = finished_run(&run, seed, &config)?;
        evaluate_seed(&run, &run_config, &cols, args.networks, seconds)
    });
    let report = SweepReport::new(dir.to_path_buf(), &cols, results, failures);
    finish(&report, args.json)?;
    if !report.failures.is_empty() {
        bail!(
            "{} of {} seed(s) have no finished run (run their lines of the plan, or `train --out <folder>/seed-N --resume` an interrupted one, then collect again):\n  {}",
            report.failures.len(),
            seeds.len(),
            report.failures.join("\n  ")
        );
    }
    Ok(())
}

/// The seeds of the `seed-N` folders in `dir`.
fn seed_folders(dir: &Path) -> Result<BTreeSet<u64>> {
    let mut seeds = BTreeSet::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading sweep folder {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading sweep folder {}", dir.display()))?;
        let name = entry.file_name();
        let seed = name.to_str().and_then(|n| n.strip_prefix("seed-")).and_then(|n| n.parse::<u64>().ok());
        if let Some(seed) = seed.filter(|_| entry.path().is_dir()) {
            seeds.insert(seed);
        }
    }
    Ok(seeds)
}

/// Reads and parses a config file.
fn read_config(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Config::from_toml(&text).with_context(|| format!("in {}", path.display()))
}

/// The config the columns are built from: the sweep's `config.toml` (written by `--plan`), or
/// else the first seed's run config.
fn sweep_config(dir: &Path, seeds: &[u64]) -> Result<Config> {
    let path = dir.join("config.toml");
    if path.exists() {
        return read_config(&path);
    }
    for &seed in seeds {
        let path = seed_dir(dir, seed).join("config.toml");
        if path.exists() {
            return read_config(&path);
        }
    }
    bail!("no config.toml in {} or any of its seed folders: nothing to evaluate the rules on", dir.display())
}

/// The config and training seconds of the finished run in `run`; an error saying why when it
/// is missing, unfinished, or not a run of this sweep.
fn finished_run(run: &Path, seed: u64, sweep: &Config) -> Result<(Config, f64)> {
    if !run.is_dir() {
        bail!("missing: no run folder {}", run.display());
    }
    let config_path = run.join("config.toml");
    if !config_path.exists() {
        bail!("missing: {} has no config.toml (its training has not started)", run.display());
    }
    let config = read_config(&config_path)?;
    if config.seed != seed {
        bail!("{} is a run of seed {}, not {seed}", config_path.display(), config.seed);
    }
    let mismatches = config_mismatches(&config, sweep);
    if !mismatches.is_empty() {
        bail!("{} is not a run of this sweep's config:\n    {}", run.display(), mismatches.join("\n    "));
    }
    let total = config.train.meta_epochs;
    let last = checkpoint_path(run, Which::Last);
    if !last.exists() {
        bail!("unfinished: no checkpoint yet in {} (0 of {total} meta-epochs saved)", run.display());
    }
    let done = Checkpoint::load(&last).with_context(|| format!("loading the last checkpoint of {}", run.display()))?;
    if done.meta.meta_epoch < total {
        bail!("unfinished: {} of {total} meta-epochs in {}", done.meta.meta_epoch, run.display());
    }
    if !checkpoint_path(run, Which::Best).exists() {
        bail!("unfinished: no best checkpoint in {}", run.display());
    }
    Ok((config, metrics_seconds(run)?))
}

/// The sum of the `seconds` column of a run's `metrics.csv`.
fn metrics_seconds(run: &Path) -> Result<f64> {
    #[derive(serde::Deserialize)]
    struct Seconds {
        seconds: f64,
    }
    let rows: Vec<Seconds> = crate::run_dir::read_metrics(&run.join("metrics.csv"))?;
    Ok(rows.iter().map(|r| r.seconds).sum())
}
