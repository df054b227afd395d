//! `meta-nca eval`: grow many fresh networks with a trained rule, next to backprop.

use std::io::Write;

use anyhow::{Context, Result, bail};
use meta_nca_rule::eval::{EvalReport, EvalSpec, Stats, evaluate_at};
use meta_nca_rule::experiment::Experiment;

use crate::run_dir::{GrowFlags, load_run};
use crate::suite::parse_horizons;

/// Arguments of `meta-nca eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run, and how to grow with its rule.
    #[command(flatten)]
    grow: GrowFlags,
    /// Fresh networks to grow.
    #[arg(long, default_value_t = 100)]
    networks: usize,
    /// Grow on this dataset instead of the run's (`iris`, `wine`, `breast-cancer` or a CSV
    /// path): how a rule transfers to data it never saw.
    #[arg(long)]
    dataset: Option<String>,
    /// Rename every class k to (k+1) mod C (train and validation alike): a rule that learned
    /// to learn still works, one that memorised a network does not.
    #[arg(long)]
    permute_labels: bool,
    /// Also score the same grows after each of these step counts, comma-separated (`K` is the
    /// run's grow.steps: `K,2K,5K` shows growth past the trained K); the grows last the largest.
    /// Not with --steps.
    #[arg(long, value_name = "K,2K,..")]
    horizons: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Writes an evaluation as a table.
pub fn write_report(out: &mut impl Write, r: &EvalReport) -> std::io::Result<()> {
    writeln!(
        out,
        "dataset {}  grown networks {}  steps {}  p {}  seed {}",
        r.dataset, r.networks, r.steps, r.fire_fraction, r.seed
    )?;
    writeln!(out, "{:<22}{:>8}{:>8}{:>8}", "", "mean", "min", "max")?;
    writeln!(
        out,
        "{:<22}{:>8.4}{:>8.4}{:>8.4}",
        "grown train acc", r.train_acc.mean, r.train_acc.min, r.train_acc.max
    )?;
    writeln!(out, "{:<22}{:>8.4}{:>8.4}{:>8.4}", "grown val acc", r.val_acc.mean, r.val_acc.min, r.val_acc.max)?;
    writeln!(out, "{:<22}{:>8.4}", "backprop train acc", r.baseline.train_acc)?;
    writeln!(out, "{:<22}{:>8.4}", "backprop val acc", r.baseline.val_acc)?;
    if let Some(h) = r.hidden_redundancy {
        writeln!(out, "{:<22}{:>8.4}  (mean pairwise cosine of hidden units' input weights)", "hidden redundancy", h)?;
    }
    if r.horizons.len() > 1 {
        writeln!(out, "growth past K: grown networks' accuracy (mean, min-max) after each step count")?;
        writeln!(out, "{:>8}  {:<26}{:<26}", "steps", "train acc", "val acc")?;
        for h in &r.horizons {
            let cell = |s: &Stats| format!("{:.4} ({:.4}-{:.4})", s.mean, s.min, s.max);
            writeln!(out, "{:>8}  {:<26}{:<26}", h.steps, cell(&h.train_acc), cell(&h.val_acc))?;
        }
    }
    Ok(())
}

/// Runs `meta-nca eval`.
pub fn run(args: Args) -> Result<()> {
    if args.networks == 0 {
        bail!("--networks must be at least 1");
    }
    let (ckpt, exp) = load_run(&args.grow.run, args.grow.checkpoint)?;
    let (steps, fire_fraction, seed) = args.grow.resolve(&exp.config)?;
    let horizons = match &args.horizons {
        Some(_) if args.grow.steps.is_some() => {
            bail!("--horizons and --steps: give one (the grows last the largest horizon)")
        }
        Some(text) => parse_horizons(text, exp.config.grow.steps)?,
        None => vec![steps],
    };
    let steps = horizons.last().copied().unwrap_or(steps);
    let spec = EvalSpec { networks: args.networks, steps, fire_fraction, seed };
    let exp = match &args.dataset {
        Some(name) => Experiment::with_dataset(&exp.config, name).with_context(|| format!("loading dataset {name}"))?,
        None => exp,
    };
    let mut task = exp.primary().clone();
    if args.permute_labels {
        let c = task.split.num_classes;
        let perm: Vec<usize> = (0..c).map(|k| (k + 1) % c).collect();
        task = task.permuted(&exp.config, &perm)?;
    }
    let report = evaluate_at(&ckpt.rule, &ckpt.meta, &task, spec, &horizons)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        write_report(&mut out, &report)?;
    }
    Ok(())
}
