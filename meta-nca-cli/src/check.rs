//! `meta-nca check`: the actor simulation against the batched reference path on the same rule
//! and seed. Lockstep, under both executors: the largest weight difference after every step
//! (it must stay within `--tol`). Async, under `--executor`: accuracy next to lockstep and
//! how far the grown networks diverge, over `--runs` seeds. `--json` prints a [`CheckReport`].

use std::io::Write;

use anyhow::{Result, bail};
use meta_nca_rule::eval::Stats;
use meta_nca_rule::task::argmax;
use meta_nca_sim::RunStats;
use meta_nca_sim::rule_service::RuleStats;
use meta_nca_sim::world::World;
use serde::Serialize;

use crate::actors::{ExecutorArg, Loaded, ModeArg, SimArgs, scores, setup};
use crate::run_dir::{GrowFlags, Widths, layer_sizes, load_run};

/// Arguments of `meta-nca check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run, and how to grow with its rule (`--seed`: the lockstep grow's and the first
    /// async run's).
    #[command(flatten)]
    grow: GrowFlags,
    /// Hidden-layer widths, comma-separated, e.g. `5,5` (default: the run's first architecture;
    /// `""` = no hidden layer).
    #[arg(long, value_name = "W1,W2,..")]
    hidden: Option<Widths>,
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
    /// Print one JSON object instead of the tables (a lockstep difference above `--tol` still
    /// fails, after printing).
    #[arg(long)]
    json: bool,
}

fn weights(world: &World, state: &[f64]) -> Vec<f64> {
    state.chunks(world.ctx.spec.state_width()).map(|r| r[0]).collect()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
}

/// What `meta-nca check` finds (`--json` prints it; the tables show it).
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// Layer sizes of the network grown.
    pub sizes: Vec<usize>,
    /// Its cells (connections).
    pub cells: usize,
    /// Grow steps.
    pub steps: usize,
    /// Firing fraction (lockstep) and rate (async).
    #[serde(rename = "p")]
    pub fire_fraction: f64,
    /// Seed of the lockstep grow and of the first async run.
    pub seed: u64,
    /// The rule's perception groups.
    pub perception: Vec<String>,
    /// Whether every step also runs a top-down message wave (the rule perceives local errors).
    pub messages: bool,
    /// Largest allowed lockstep difference (`--tol`).
    pub tol: f64,
    /// Lockstep under each executor against the reference path.
    pub lockstep: LockstepCheck,
    /// Async against lockstep (null with `--runs 0`, or when lockstep failed).
    #[serde(rename = "async")]
    pub async_runs: Option<AsyncCheck>,
}

/// Lockstep grows under both executors next to the reference path, same rule and seed.
#[derive(Debug, Serialize)]
pub struct LockstepCheck {
    /// Training accuracy of the reference path's network at the end.
    pub reference_train_acc: f64,
    /// Its validation accuracy.
    pub reference_val_acc: f64,
    /// One per executor: tasks, then shards.
    pub executors: Vec<LockstepRun>,
    /// The largest difference of all (steps and final states, both executors).
    pub worst: f64,
    /// Whether `worst` is within `--tol` (when not, the command fails after printing).
    pub ok: bool,
}

/// One executor's lockstep grow against the reference path.
#[derive(Debug, Serialize)]
pub struct LockstepRun {
    /// The executor.
    pub executor: ExecutorArg,
    /// Largest `|w_actors - w_reference|` over the cells after each step (`max_dw[t]`: step
    /// `t + 1`).
    pub max_dw: Vec<f64>,
    /// Largest difference of the final state rows (weights and hidden states).
    pub final_diff: f64,
    /// Training accuracy of its network at the end.
    pub train_acc: f64,
    /// Its validation accuracy.
    pub val_acc: f64,
}

/// Async grows against lockstep ones (the reference path's) of the same seeds; `Stats` are
/// over the runs.
#[derive(Debug, Serialize)]
pub struct AsyncCheck {
    /// Runs, seeds `seed..seed + runs`.
    pub runs: usize,
    /// The async executor (`--executor`).
    pub executor: ExecutorArg,
    /// How many rounds older than its own a summary a cell may use (`--staleness`).
    pub staleness: u32,
    /// Yields before each tick, at most (`--jitter`).
    pub jitter: u32,
    /// Training accuracy of the lockstep networks.
    pub lockstep_train_acc: Stats,
    /// Training accuracy of the async networks.
    pub async_train_acc: Stats,
    /// Validation accuracy of the lockstep networks.
    pub lockstep_val_acc: Stats,
    /// Validation accuracy of the async networks.
    pub async_val_acc: Stats,
    /// `|async val acc - lockstep val acc|` per run.
    pub val_acc_diff: Stats,
    /// Mean over the cells of `|w_async - w_lockstep|`, per run.
    pub weight_diff_mean: Stats,
    /// Largest `|w_async - w_lockstep|`, per run.
    pub weight_diff_max: Stats,
    /// Fraction of validation samples on which the two networks predict the same class, per run.
    pub agreement: Stats,
    /// Fraction of cell-steps fired in lockstep.
    pub fired_lockstep: f64,
    /// Fraction of cell-steps fired in async (updates over cell-steps).
    pub fired_async: f64,
    /// Mean `|dw|` of an async update.
    pub mean_abs_dw: f64,
    /// `staleness_share[k]`: the fraction of async cell-steps that used summaries `k` rounds old.
    pub staleness_share: Vec<f64>,
    /// The async rule service's counts, summed over the runs (`max_batch`: the largest).
    pub rule: RuleStats,
    /// Whether the mean async validation accuracy is within 2 points of lockstep's.
    pub within_two_points: bool,
}

/// Runs `meta-nca check`.
pub fn run(args: Args) -> Result<()> {
    let (ckpt, exp) = load_run(&args.grow.run, args.grow.checkpoint)?;
    let (steps, p, seed) = args.grow.resolve(&exp.config)?;
    let sizes = layer_sizes(args.hidden.as_ref(), &exp.config, exp.primary());
    let topology = meta_nca_rule::topology::Topology::dense(&sizes, exp.config.task.bias)?;
    args.sim.check_trace(&topology, &[], None)?;
    let loaded = Loaded::new(ckpt, &exp);
    let setup0 = setup(&loaded, &sizes, steps, p, seed)?;
    let reference = setup0.reference_states()?;
    let mut executors = Vec::new();
    for executor in [ExecutorArg::Tasks, ExecutorArg::Shards] {
        let (spec, _) = args.sim.spec(executor, ModeArg::Lockstep, p, seed)?;
        let out = meta_nca_sim::run(&setup0, &spec)?;
        let recorded = out.weights();
        let max_dw =
            (0..steps).map(|t| max_abs_diff(&recorded[t], &weights(&setup0.world, &reference[t + 1]))).collect();
        let (train, val) = scores(&setup0.world, &loaded, &out.state);
        let final_diff = max_abs_diff(&out.state, &reference[steps]);
        executors.push(LockstepRun { executor, max_dw, final_diff, train_acc: train.acc, val_acc: val.acc });
    }
    let (rtrain, rval) = scores(&setup0.world, &loaded, &reference[steps]);
    let worst = executors.iter().flat_map(|e| e.max_dw.iter().chain([&e.final_diff])).copied().fold(0.0, f64::max);
    let ok = !worst.is_nan() && worst <= args.tol;
    let mut report = CheckReport {
        sizes,
        cells: setup0.world.num_cells(),
        steps,
        fire_fraction: p,
        seed,
        perception: setup0.world.ctx.spec.groups().iter().map(|g| g.name().to_string()).collect(),
        messages: setup0.world.ctx.needs.messages(),
        tol: args.tol,
        lockstep: LockstepCheck { reference_train_acc: rtrain.acc, reference_val_acc: rval.acc, executors, worst, ok },
        async_runs: None,
    };
    // Unlocked: the async runs happen between the writes.
    let mut stdout = std::io::stdout();
    if !args.json {
        write_lockstep(&mut stdout, &report)?;
    }
    if ok && args.runs > 0 {
        report.async_runs = Some(check_async(&args, &loaded, &report.sizes, steps, p, seed)?);
    }
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
    } else if let Some(a) = &report.async_runs {
        write_async(&mut stdout, &report, a)?;
    }
    if !ok {
        bail!("lockstep differs from the reference path by {worst:.3e} (> --tol {:.1e})", args.tol);
    }
    Ok(())
}

/// Writes the lockstep comparison (and `lockstep OK` when it passed).
fn write_lockstep(out: &mut impl Write, r: &CheckReport) -> std::io::Result<()> {
    writeln!(
        out,
        "lockstep vs reference: sizes {:?}, {} cells, steps {}, p {}, seed {}",
        r.sizes, r.cells, r.steps, r.fire_fraction, r.seed
    )?;
    let wave = if r.messages { " (a top-down message wave every step)" } else { "" };
    writeln!(out, "perception: {}{wave}", r.perception.join(", "))?;
    let l = &r.lockstep;
    let [tasks, shards] = &l.executors[..] else {
        return Ok(());
    };
    writeln!(out, "{:>6}{:>18}{:>18}", "step", "max |dw| tasks", "max |dw| shards")?;
    for (t, (a, b)) in tasks.max_dw.iter().zip(&shards.max_dw).enumerate() {
        writeln!(out, "{:>6}{:>18.3e}{:>18.3e}", t + 1, a, b)?;
    }
    writeln!(out, "final state (w and h): max diff tasks {:.3e}, shards {:.3e}", tasks.final_diff, shards.final_diff)?;
    writeln!(
        out,
        "accuracy train/val: reference {:.4}/{:.4}, tasks {:.4}/{:.4}, shards {:.4}/{:.4}",
        l.reference_train_acc, l.reference_val_acc, tasks.train_acc, tasks.val_acc, shards.train_acc, shards.val_acc
    )?;
    if l.ok {
        writeln!(out, "lockstep OK: within {:.1e}", r.tol)?;
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

fn check_async(args: &Args, loaded: &Loaded, sizes: &[usize], steps: usize, p: f64, seed: u64) -> Result<AsyncCheck> {
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
    let st = &acc.stats;
    let per_run: Vec<f64> = acc.val.iter().zip(&acc.ref_val).map(|(a, b)| (a - b).abs()).collect();
    let total: u64 = st.staleness.iter().sum();
    let (lockstep_val_acc, async_val_acc) = (Stats::of(&acc.ref_val), Stats::of(&acc.val));
    Ok(AsyncCheck {
        runs: args.runs,
        executor: args.sim.executor,
        staleness: args.sim.staleness,
        jitter: args.sim.jitter,
        lockstep_train_acc: Stats::of(&acc.ref_train),
        async_train_acc: Stats::of(&acc.train),
        lockstep_val_acc,
        async_val_acc,
        val_acc_diff: Stats::of(&per_run),
        weight_diff_mean: Stats::of(&acc.w_mean),
        weight_diff_max: Stats::of(&acc.w_max),
        agreement: Stats::of(&acc.agree),
        fired_lockstep: acc.fired_ref as f64 / st.cell_steps.max(1) as f64,
        fired_async: st.updates as f64 / st.cell_steps.max(1) as f64,
        mean_abs_dw: st.sum_abs_dw / st.updates.max(1) as f64,
        staleness_share: st.staleness.iter().map(|&c| c as f64 / total.max(1) as f64).collect(),
        rule: st.rule,
        within_two_points: (async_val_acc.mean - lockstep_val_acc.mean).abs() <= 0.02,
    })
}

/// Writes the async comparison.
fn write_async(out: &mut impl Write, r: &CheckReport, a: &AsyncCheck) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "async vs lockstep over {} runs (seeds {}..{}): executor {:?}, staleness <= {}, jitter {}, rate {}",
        a.runs,
        r.seed,
        r.seed + a.runs as u64 - 1,
        a.executor,
        a.staleness,
        a.jitter,
        r.fire_fraction
    )?;
    writeln!(out, "{:<28}{:>10}{:>10}{:>10}", "", "lockstep", "async", "diff")?;
    for (name, lockstep, asynchronous) in [
        ("train acc (mean)", &a.lockstep_train_acc, &a.async_train_acc),
        ("val acc (mean)", &a.lockstep_val_acc, &a.async_val_acc),
    ] {
        let (l, s) = (lockstep.mean, asynchronous.mean);
        writeln!(out, "{name:<28}{l:>10.4}{s:>10.4}{:>+10.4}", s - l)?;
    }
    writeln!(out, "{:<28}{:>10.4}{:>10.4}", "val acc (min)", a.lockstep_val_acc.min, a.async_val_acc.min)?;
    writeln!(out, "per-run |val acc diff|: mean {:.4}, max {:.4}", a.val_acc_diff.mean, a.val_acc_diff.max)?;
    writeln!(
        out,
        "weight divergence |w_async - w_lockstep|: mean {:.4}, max-per-run mean {:.4}, max {:.4}",
        a.weight_diff_mean.mean, a.weight_diff_max.mean, a.weight_diff_max.max
    )?;
    writeln!(out, "validation predictions that agree: mean {:.4}, min {:.4}", a.agreement.mean, a.agreement.min)?;
    writeln!(
        out,
        "fired: lockstep {:.3} of cell-steps, async {:.3}; mean |dw| per update {:.5}",
        a.fired_lockstep, a.fired_async, a.mean_abs_dw
    )?;
    let hist: Vec<String> = a.staleness_share.iter().enumerate().map(|(k, f)| format!("{k}: {f:.3}")).collect();
    writeln!(out, "staleness (rounds old: fraction of cell-steps): {}", hist.join(", "))?;
    writeln!(
        out,
        "rule service: {} batches, mean {:.1} rows, max {}",
        a.rule.batches,
        a.rule.mean_batch(),
        a.rule.max_batch
    )?;
    writeln!(
        out,
        "async within 2 points of lockstep (val, mean over runs): {}",
        if a.within_two_points { "yes" } else { "NO" }
    )?;
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
