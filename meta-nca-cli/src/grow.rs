//! `meta-nca grow`: grow one network with a trained rule and save every step.

use std::path::PathBuf;

use anyhow::{Context, Result};
use meta_nca_rule::checkpoint::write_atomic;
use meta_nca_rule::eval::grow_one;

use crate::actors::Loaded;
use crate::run_dir::{GrowFlags, layer_sizes, load_run};

/// Arguments of `meta-nca grow`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run, and how to grow with its rule.
    #[command(flatten)]
    grow: GrowFlags,
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
    let (ckpt, exp) = load_run(&args.grow.run, args.grow.checkpoint)?;
    let (steps, p, seed) = args.grow.resolve(&exp.config)?;
    let task = exp.primary();
    let sizes = layer_sizes(args.hidden.as_deref(), &exp.config, task)?;
    if args.engine.is_actors() {
        let plan = crate::actors::Plan { sizes, steps, p, seed };
        return crate::actors::grow(&args.engine, &Loaded::new(ckpt, &exp), plan, &args.save);
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
