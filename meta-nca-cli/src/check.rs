//! `meta-nca check`: the actor simulation against the batched reference path on the same rule
//! and seed. Lockstep, under both executors: the largest weight difference after every step
//! (it must stay within `--tol`). Async, under `--executor`: accuracy next to lockstep and
//! how far the grown networks diverge, over `--runs` seeds.

use anyhow::{Result, bail};
use meta_nca_rule::task::argmax;
use meta_nca_sim::RunStats;
use meta_nca_sim::world::World;

use crate::actors::{ExecutorArg, Loaded, ModeArg, SimArgs, scores, setup};
use crate::run_dir::{GrowFlags, layer_sizes, load_run};

/// Arguments of `meta-nca check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run, and how to grow with its rule (`--seed`: the lockstep grow's and the first
    /// async run's).
    #[command(flatten)]
    grow: GrowFlags,
    /// Hidden-layer widths, comma-separated (default: the run's first architecture; "" = none).
    #[arg(long)]
    hidden: Option<String>,
    /// Largest allowed lockstep weight difference.
    #[arg(long, default_value_t = 1e-5, value_parser = crate::positive, allow_negative_numbers = true)]
    tol: f64,
    /// Async runs (seeds `seed..seed+runs`); 0 skips the async comparison.
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// Simulation settings (`--executor` picks the async executor; `--mode` is not used:
    /// check always runs lockstep, then async).
    #[command(flatten)]
    sim: SimArgs,
}

fn weights(world: &World, state: &[f64]) -> Vec<f64> {
    state.chunks(world.ctx.spec.state_width()).map(|r| r[0]).collect()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
}

/// Runs `meta-nca check`.
pub fn run(args: Args) -> Result<()> {
    let (ckpt, exp) = load_run(&args.grow.run, args.grow.checkpoint)?;
    let (steps, p, seed) = args.grow.resolve(&exp.config)?;
    let sizes = layer_sizes(args.hidden.as_deref(), &exp.config, exp.primary())?;
    let topology = meta_nca_rule::topology::Topology::dense(&sizes, exp.config.task.bias)?;
    args.sim.check_trace(&topology, &[], None)?;
    let loaded = Loaded::new(ckpt, &exp);
    let setup0 = setup(&loaded, &sizes, steps, p, seed)?;
    let reference = setup0.reference_states()?;
    println!(
        "lockstep vs reference: sizes {sizes:?}, {} cells, steps {steps}, p {p}, seed {seed}",
        setup0.world.num_cells()
    );
    let groups: Vec<&str> = setup0.world.ctx.spec.groups().iter().map(|g| g.name()).collect();
    let needs = setup0.world.ctx.needs;
    let wave = if needs.messages() { " (a top-down message wave every step)" } else { "" };
    println!("perception: {}{wave}", groups.join(", "));
    let mut per_step = Vec::new();
    let mut finals = Vec::new();
    for executor in [ExecutorArg::Tasks, ExecutorArg::Shards] {
        let (spec, _) = args.sim.spec(executor, ModeArg::Lockstep, p, seed)?;
        let out = meta_nca_sim::run(&setup0, &spec)?;
        let diffs: Vec<f64> =
            (0..steps).map(|t| max_abs_diff(&out.weights[t], &weights(&setup0.world, &reference[t + 1]))).collect();
        per_step.push(diffs);
        finals.push((max_abs_diff(&out.state, &reference[steps]), scores(&setup0.world, &loaded, &out.state)));
    }
    println!("{:>6}{:>18}{:>18}", "step", "max |dw| tasks", "max |dw| shards");
    for (t, (a, b)) in per_step[0].iter().zip(&per_step[1]).enumerate() {
        println!("{:>6}{:>18.3e}{:>18.3e}", t + 1, a, b);
    }
    let (rtrain, rval) = scores(&setup0.world, &loaded, &reference[steps]);
    println!("final state (w and h): max diff tasks {:.3e}, shards {:.3e}", finals[0].0, finals[1].0);
    println!(
        "accuracy train/val: reference {:.4}/{:.4}, tasks {:.4}/{:.4}, shards {:.4}/{:.4}",
        rtrain.acc, rval.acc, finals[0].1.0.acc, finals[0].1.1.acc, finals[1].1.0.acc, finals[1].1.1.acc
    );
    let worst = per_step.iter().flatten().chain(finals.iter().map(|f| &f.0)).copied().fold(0.0, f64::max);
    if worst.is_nan() || worst > args.tol {
        bail!("lockstep differs from the reference path by {worst:.3e} (> --tol {:.1e})", args.tol);
    }
    println!("lockstep OK: within {:.1e}", args.tol);
    if args.runs > 0 {
        check_async(&args, &loaded, &sizes, steps, p, seed)?;
    }
    Ok(())
}

#[derive(Default)]
struct Acc {
    ref_train: Vec<f64>,
    ref_val: Vec<f64>,
    train: Vec<f64>,
    val: Vec<f64>,
    w_max: Vec<f64>,
    w_mean: Vec<f64>,
    agree: Vec<f64>,
    stats: RunStats,
    fired_ref: u64,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn check_async(args: &Args, loaded: &Loaded, sizes: &[usize], steps: usize, p: f64, seed: u64) -> Result<()> {
    let mut acc = Acc::default();
    for k in 0..args.runs as u64 {
        let s = setup(loaded, sizes, steps, p, seed + k)?;
        let reference = s.reference_states()?;
        let last = &reference[steps];
        let (spec, _) = args.sim.spec(args.sim.executor, ModeArg::Async, p, seed + k)?;
        let out = meta_nca_sim::run(&s, &spec)?;
        let (rt, rv) = scores(&s.world, loaded, last);
        let (at, av) = scores(&s.world, loaded, &out.state);
        acc.ref_train.push(rt.acc);
        acc.ref_val.push(rv.acc);
        acc.train.push(at.acc);
        acc.val.push(av.acc);
        let (wr, wa) = (weights(&s.world, last), weights(&s.world, &out.state));
        acc.w_max.push(max_abs_diff(&wr, &wa));
        acc.w_mean.push(wr.iter().zip(&wa).map(|(a, b)| (a - b).abs()).sum::<f64>() / wr.len().max(1) as f64);
        acc.agree.push(agreement(&s.world, loaded, last, &out.state));
        acc.fired_ref += s.fires.iter().flatten().filter(|&&f| f).count() as u64;
        acc.stats.merge(&out.stats);
    }
    let n = args.runs;
    let st = &acc.stats;
    println!();
    println!(
        "async vs lockstep over {n} runs (seeds {seed}..{}): executor {:?}, staleness <= {}, jitter {}, rate {p}",
        seed + n as u64 - 1,
        args.sim.executor,
        args.sim.staleness,
        args.sim.jitter
    );
    println!("{:<28}{:>10}{:>10}{:>10}", "", "lockstep", "async", "diff");
    let row = |name: &str, a: &[f64], b: &[f64]| {
        println!("{name:<28}{:>10.4}{:>10.4}{:>+10.4}", mean(a), mean(b), mean(b) - mean(a));
    };
    row("train acc (mean)", &acc.ref_train, &acc.train);
    row("val acc (mean)", &acc.ref_val, &acc.val);
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    println!("{:<28}{:>10.4}{:>10.4}", "val acc (min)", min(&acc.ref_val), min(&acc.val));
    let per_run: Vec<f64> = acc.val.iter().zip(&acc.ref_val).map(|(a, b)| (a - b).abs()).collect();
    println!(
        "per-run |val acc diff|: mean {:.4}, max {:.4}",
        mean(&per_run),
        per_run.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "weight divergence |w_async - w_lockstep|: mean {:.4}, max-per-run mean {:.4}, max {:.4}",
        mean(&acc.w_mean),
        mean(&acc.w_max),
        acc.w_max.iter().copied().fold(0.0, f64::max)
    );
    println!("validation predictions that agree: mean {:.4}, min {:.4}", mean(&acc.agree), min(&acc.agree));
    println!(
        "fired: lockstep {:.3} of cell-steps, async {:.3}; mean |dw| per update {:.5}",
        acc.fired_ref as f64 / st.cell_steps.max(1) as f64,
        st.updates as f64 / st.cell_steps.max(1) as f64,
        st.sum_abs_dw / st.updates.max(1) as f64
    );
    let total: u64 = st.staleness.iter().sum();
    let hist: Vec<String> =
        st.staleness.iter().enumerate().map(|(k, c)| format!("{k}: {:.3}", *c as f64 / total.max(1) as f64)).collect();
    println!("staleness (rounds old: fraction of cell-steps): {}", hist.join(", "));
    println!(
        "rule service: {} batches, mean {:.1} rows, max {}",
        st.rule.batches,
        st.rule.mean_batch(),
        st.rule.max_batch
    );
    let gap = (mean(&acc.val) - mean(&acc.ref_val)).abs();
    println!("async within 2 points of lockstep (val, mean over runs): {}", if gap <= 0.02 { "yes" } else { "NO" });
    Ok(())
}

/// Fraction of validation samples on which the two networks predict the same class.
fn agreement(world: &World, loaded: &Loaded, a: &[f64], b: &[f64]) -> f64 {
    let fa = meta_nca_rule::task::forward(&world.dense_net(a), &loaded.val.x, None);
    let fb = meta_nca_rule::task::forward(&world.dense_net(b), &loaded.val.x, None);
    let (za, zb) = (&fa.pre[fa.pre.len() - 1], &fb.pre[fb.pre.len() - 1]);
    let batch = fa.batch;
    let classes = za.len() / batch.max(1);
    let pick = |z: &[f64], s: usize| argmax(&(0..classes).map(|c| z[c * batch + s]).collect::<Vec<_>>());
    (0..batch).filter(|&s| pick(za, s) == pick(zb, s)).count() as f64 / batch.max(1) as f64
}
