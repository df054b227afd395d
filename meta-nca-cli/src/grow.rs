//! `meta-nca grow`: grow one network with a trained rule and save every step.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use meta_nca_rule::checkpoint::write_atomic;
use meta_nca_rule::config::Architectures;
use meta_nca_rule::engine::{EngineKind, ReferenceKind};
use meta_nca_rule::eval::grow_one;
use meta_nca_rule::topology::{Change, Scheduled, Topology};
use meta_nca_sim::SimSpec;
use meta_nca_sim::engine::ActorKind;

use crate::actors::{EngineArg, Loaded, ModeArg};
use crate::run_dir::{GrowFlags, Widths, layer_sizes, load_run};

/// Arguments of `meta-nca grow`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run, and how to grow with its rule.
    #[command(flatten)]
    grow: GrowFlags,
    /// Hidden-layer widths, comma-separated, e.g. `5,5` (default: the run's first architecture;
    /// `""` = no hidden layer).
    #[arg(long, value_name = "W1,W2,..")]
    hidden: Option<Widths>,
    /// JSON file to write: every step's weights, hidden states, firing flags and accuracy.
    #[arg(long)]
    save: PathBuf,
    /// A topology change between steps, `AFTER@CHANGE` (repeatable): after AFTER rule steps,
    /// `remove:L:I:J` / `add:L:I:J` (connection I -> J of weight matrix L), `remove-neuron:L:I`
    /// or `add-neuron:L` (hidden layer L; output neurons, classes arriving, are `meta-nca
    /// continual`'s). Lockstep only on the actors.
    #[arg(long = "change", value_name = "AFTER@CHANGE")]
    changes: Vec<Scheduled>,
    /// Engine (reference or actors) and the actor simulation's settings.
    #[command(flatten)]
    engine: crate::actors::EngineArgs,
}

/// Runs `meta-nca grow`.
pub fn run(args: Args) -> Result<()> {
    let (ckpt, exp) = load_run(&args.grow.run, args.grow.checkpoint)?;
    let (steps, p, seed) = args.grow.resolve(&exp.config)?;
    let task = exp.primary();
    let sizes = layer_sizes(args.hidden.as_ref(), &exp.config, task);
    let output = sizes.len() - 1;
    if let Some(c) = args.changes.iter().find(
        |c| matches!(c.change, Change::AddNeuron { layer } | Change::RemoveNeuron { layer, .. } if layer == output),
    ) {
        bail!(
            "--change {c}: layer {output} is the output layer; its neurons are the data's classes, fixed in a grow (`meta-nca continual` grows through classes arriving)"
        );
    }
    let sim = &args.engine.sim;
    match args.engine.engine {
        EngineArg::Reference if sim.traces() => bail!(
            "--trace-cells and --trace-json trace the actor simulation's cells; the reference engine has none \
             (add --engine actors)"
        ),
        EngineArg::Reference => {}
        EngineArg::Actors => {
            let archs = Architectures::List(vec![sizes.clone()]);
            crate::memory::check_actors_for(&archs, exp.config.task.bias, EngineArg::Actors, sim.executor)?;
            let topology = Topology::dense(&sizes, exp.config.task.bias)?;
            sim.check_trace(&topology, &args.changes, Some(&args.save))?;
        }
    }
    let (engine, trace): (Box<dyn EngineKind>, _) = match (args.engine.engine, sim.mode) {
        (EngineArg::Reference, _) => (Box::new(ReferenceKind), None),
        (EngineArg::Actors, ModeArg::Lockstep) => {
            let (spec, trace) = sim.spec(sim.executor, sim.mode, p, seed)?;
            // The record reads every step's state through snapshots: no per-round weight reports
            // (they would also take the cells off the barrier's cheap count).
            (Box::new(ActorKind { spec: SimSpec { record_rounds: false, ..spec } }), trace)
        }
        (EngineArg::Actors, ModeArg::Async) => {
            if let Some(c) = args.changes.first() {
                bail!("--change {c}: topology changes need lockstep mode (async cells have no common step)");
            }
            let plan = crate::actors::Plan { sizes, steps, fire_fraction: p, seed };
            return crate::actors::grow(&args.engine, &Loaded::new(ckpt, &exp), plan, &args.save);
        }
    };
    let record = grow_one(engine.as_ref(), &ckpt.rule, &ckpt.meta, task, &sizes, steps, p, seed, &args.changes)?;
    if let Some(t) = trace {
        t.lock().map_err(|_| anyhow::anyhow!("trace writer poisoned"))?.flush()?;
    }
    let json = serde_json::to_vec(&record)?;
    write_atomic(&args.save, &json).with_context(|| format!("saving {}", args.save.display()))?;
    let last = record.steps.last().context("a grow has at least its starting state")?;
    writeln!(
        std::io::stdout(),
        "{}  seed {seed}  sizes {sizes:?}  steps {steps}  p {p}  final train acc {:.4}  val acc {:.4}  saved {}",
        record.engine,
        last.train_acc,
        last.val_acc,
        args.save.display()
    )?;
    for c in &record.changes {
        let (before, next) = (&record.steps[c.after], &record.steps[c.after + 1]);
        writeln!(
            std::io::stdout(),
            "  {:<24} val acc {:.4} before, {:.4} one step later, {:.4} at the end",
            c.to_string(),
            before.val_acc,
            next.val_acc,
            last.val_acc
        )?;
    }
    Ok(())
}
