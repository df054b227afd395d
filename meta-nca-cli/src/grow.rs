//! `meta-nca grow`: grow one network with a trained rule and save every step.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use meta_nca_rule::checkpoint::write_atomic;
use meta_nca_rule::eval::grow_one;

use crate::run_dir::{Which, load_run};

/// Arguments of `meta-nca grow`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run folder written by `meta-nca train`.
    #[arg(long)]
    run: PathBuf,
    /// Which checkpoint of the run.
    #[arg(long, value_enum, default_value_t = Which::Best)]
    checkpoint: Which,
    /// Rule steps (default: the run's grow.steps).
    #[arg(long)]
    steps: Option<usize>,
    /// Firing fraction (default: the run's grow.fire-fraction).
    #[arg(long)]
    p: Option<f64>,
    /// Seed of the grow (default: the run's seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Hidden-layer widths, comma-separated (default: the run's first architecture; "" = none).
    #[arg(long)]
    hidden: Option<String>,
    /// JSON file to write: every step's weights, hidden states, firing flags and accuracy.
    #[arg(long)]
    save: PathBuf,
    /// Engine (reference or actors) and the actor simulation's settings.
    #[command(flatten)]
    engine: crate::actors::EngineArgs,
}

/// Runs `meta-nca grow`.
pub fn run(args: Args) -> Result<()> {
    let (ckpt, exp) = load_run(&args.run, args.checkpoint)?;
    let cfg = &exp.config;
    let hidden: Vec<usize> = match &args.hidden {
        Some(text) if text.trim().is_empty() => Vec::new(),
        Some(text) => text
            .split(',')
            .map(|w| w.trim().parse::<usize>().with_context(|| format!("--hidden: '{w}' is not a width")))
            .collect::<Result<_>>()?,
        None => cfg.task.hidden.first().cloned().unwrap_or_default(),
    };
    if hidden.contains(&0) {
        bail!("--hidden: a hidden layer has width 0");
    }
    let task = exp.primary();
    let mut sizes = vec![task.train.features];
    sizes.extend(&hidden);
    sizes.push(task.train.classes);
    let steps = args.steps.unwrap_or(cfg.grow.steps);
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    let p = args.p.unwrap_or(cfg.grow.fire_fraction);
    if !(p > 0.0 && p <= 1.0) {
        bail!("--p must be in (0, 1], got {p}");
    }
    let seed = args.seed.unwrap_or(cfg.seed);
    if args.engine.is_actors() {
        let plan = crate::actors::Plan { sizes: sizes.clone(), steps, p, seed };
        return crate::actors::grow(&args.engine, args.checkpoint, &args.run, plan, &args.save);
    }
    let record = grow_one(&ckpt.rule, &ckpt.meta, task, &sizes, steps, p, seed)?;
    let json = serde_json::to_vec(&record)?;
    write_atomic(&args.save, &json).with_context(|| format!("saving {}", args.save.display()))?;
    let last = record.steps.last().context("a grow has at least its starting state")?;
    println!(
        "seed {seed}  sizes {sizes:?}  steps {steps}  p {p}  final train acc {:.4}  val acc {:.4}  saved {}",
        last.train_acc,
        last.val_acc,
        args.save.display()
    );
    Ok(())
}
