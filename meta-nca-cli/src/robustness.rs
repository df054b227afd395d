//! `meta-nca robustness`: remove connections from grown networks, keep applying the rule, and
//! compare with a backprop-trained network pruned alike.

use anyhow::{Result, bail};
use meta_nca_rule::checkpoint::write_atomic;
use meta_nca_rule::checkpoint::Checkpoint;
use meta_nca_rule::experiment::Task;
use meta_nca_rule::robustness::{
    ChurnSpec, NeuronSpec, PruneMode, PruneSpec, add_neurons_experiment, churn_experiment, prune_experiment,
};

use crate::run_dir::{GrowFlags, load_run};

/// What is done to the grown networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Experiment {
    /// Remove a fraction of the connections (`--fractions`, `--mode`).
    Prune,
    /// Add hidden neurons to the first hidden layer (`--neurons`).
    Neurons,
    /// Replace a fraction of the connections at every step (`--rates`, `--recover` steps).
    Churn,
}

/// Which connections go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Uniformly at random.
    Random,
    /// The smallest |w| first.
    Magnitude,
}

/// Arguments of `meta-nca robustness`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run, and how to grow with its rule (`--steps`: grow steps before the damage).
    #[command(flatten)]
    grow: GrowFlags,
    /// The experiment.
    #[arg(long, value_enum, default_value_t = Experiment::Prune)]
    experiment: Experiment,
    /// Fractions of each network's connections to remove, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.2,0.3,0.5")]
    fractions: Vec<f64>,
    /// Which connections are removed.
    #[arg(long, value_enum, default_value_t = ModeArg::Random)]
    mode: ModeArg,
    /// Neurons experiment: numbers of hidden neurons added, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    neurons: Vec<usize>,
    /// Churn experiment: fractions of the live connections replaced per step, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.02,0.05,0.1")]
    rates: Vec<f64>,
    /// Rule steps after the damage (churn: churned steps).
    #[arg(long, default_value_t = 10)]
    recover: usize,
    /// Networks grown.
    #[arg(long, default_value_t = 100)]
    networks: usize,
    /// Adam epochs of the backprop baseline's fine-tune after pruning.
    #[arg(long, default_value_t = 20)]
    fine_tune: usize,
}

/// Writes accuracy curves as CSV (`<key>,step,grown_train_acc,grown_val_acc`); the first
/// point of each curve is step `first_step` (-1: before the damage, 0: right after it).
fn write_curves<'a>(
    path: &std::path::Path,
    key: &str,
    curves: impl Iterator<Item = (f64, &'a [f64], &'a [f64])>,
    first_step: i64,
) -> Result<()> {
    let mut csv = format!("{key},step,grown_train_acc,grown_val_acc\n");
    for (label, train, val) in curves {
        for (k, (t, v)) in train.iter().zip(val).enumerate() {
            csv.push_str(&format!("{label},{},{t:.4},{v:.4}\n", k as i64 + first_step));
        }
    }
    write_atomic(path, csv.as_bytes())?;
    Ok(())
}

/// Runs `meta-nca robustness`.
pub fn run(args: Args) -> Result<()> {
    if args.networks == 0 || args.fractions.is_empty() {
        bail!("--networks must be at least 1 and --fractions must name at least one fraction");
    }
    if let Some(q) = args.fractions.iter().find(|q| !(0.0..=1.0).contains(*q)) {
        bail!("--fractions: {q} is not in [0, 1]");
    }
    let (ckpt, exp) = load_run(&args.grow.run, args.grow.checkpoint)?;
    let (at, p, seed) = args.grow.resolve(&exp.config)?;
    match args.experiment {
        Experiment::Neurons => return neurons(&args, &ckpt, exp.primary(), at, p, seed),
        Experiment::Churn => return churn(&args, &ckpt, exp.primary(), at, p, seed),
        Experiment::Prune => {}
    }
    let mode = match args.mode {
        ModeArg::Random => PruneMode::Random,
        ModeArg::Magnitude => PruneMode::Magnitude,
    };
    let spec = PruneSpec {
        fractions: args.fractions.clone(),
        mode,
        at,
        recover: args.recover,
        networks: args.networks,
        fire_fraction: p,
        seed,
        fine_tune_epochs: args.fine_tune,
    };
    let curves = prune_experiment(&ckpt.rule, &ckpt.meta, exp.primary(), &spec)?;
    let name = match args.mode {
        ModeArg::Random => "random",
        ModeArg::Magnitude => "magnitude",
    };
    let path = args.grow.run.join(format!("robustness-prune-{name}.csv"));
    let rows = curves.iter().map(|c| (c.fraction, &c.grown_train[..], &c.grown_val[..]));
    write_curves(&path, "fraction", rows, -1)?;
    println!(
        "prune ({name}) after {at} grow steps, {} networks, p {p}, seed {seed}; {} recovery steps; curves in {}",
        args.networks,
        args.recover,
        path.display()
    );
    println!(
        "{:<9}{:>9}{:>9}{:>11}{:>10} {:>13}{:>12}{:>13}",
        "removed", "before", "after", "recovered", "(best)", "backprop", "pruned", "fine-tuned"
    );
    for c in &curves {
        let last = c.grown_val.last().copied().unwrap_or(f64::NAN);
        let best = c.grown_val[1..].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "{:<9}{:>9.4}{:>9.4}{:>11.4}{:>10.4} {:>13.4}{:>12.4}{:>13.4}",
            format!("{:.0}%", 100.0 * c.fraction),
            c.grown_val[0],
            c.grown_val[1],
            last,
            best,
            c.baseline_val[0],
            c.baseline_val[1],
            c.baseline_val[2]
        );
    }
    println!("(validation accuracy; grown: mean over the networks; backprop: before, pruned alike, fine-tuned {} epochs)", args.fine_tune);
    Ok(())
}

fn neurons(args: &Args, ckpt: &Checkpoint, task: &Task, at: usize, p: f64, seed: u64) -> Result<()> {
    if args.neurons.is_empty() || args.neurons.contains(&0) {
        bail!("--neurons must name at least one count, each >= 1");
    }
    let spec = NeuronSpec {
        counts: args.neurons.clone(),
        at,
        recover: args.recover,
        networks: args.networks,
        fire_fraction: p,
        seed,
    };
    let curves = add_neurons_experiment(&ckpt.rule, &ckpt.meta, task, &spec)?;
    let path = args.grow.run.join("robustness-neurons.csv");
    let rows = curves.iter().map(|c| (c.added as f64, &c.grown_train[..], &c.grown_val[..]));
    write_curves(&path, "added", rows, -1)?;
    println!(
        "hidden neurons added after {at} grow steps, {} networks, p {p}, seed {seed}; curves in {}",
        args.networks,
        path.display()
    );
    let mut shown: Vec<usize> = [1, 5, args.recover].into_iter().filter(|&k| k <= args.recover).collect();
    shown.dedup();
    print!("{:<8}{:>9}{:>9}", "added", "before", "after");
    for k in &shown {
        print!("{:>12}", format!("+{k} steps"));
    }
    println!();
    for c in &curves {
        print!("{:<8}{:>9.4}{:>9.4}", c.added, c.grown_val[0], c.grown_val[1]);
        for &k in &shown {
            print!("{:>12.4}", c.grown_val[1 + k]);
        }
        println!();
    }
    println!("(validation accuracy, mean over the networks)");
    Ok(())
}

fn churn(args: &Args, ckpt: &Checkpoint, task: &Task, at: usize, p: f64, seed: u64) -> Result<()> {
    if args.rates.is_empty() {
        bail!("--rates must name at least one rate");
    }
    if let Some(r) = args.rates.iter().find(|r| !(0.0..=1.0).contains(*r)) {
        bail!("--rates: {r} is not in [0, 1]");
    }
    let spec = ChurnSpec {
        rates: args.rates.clone(),
        at,
        steps: args.recover,
        networks: args.networks,
        fire_fraction: p,
        seed,
    };
    let curves = churn_experiment(&ckpt.rule, &ckpt.meta, task, &spec)?;
    let path = args.grow.run.join("robustness-churn.csv");
    let rows = curves.iter().map(|c| (c.rate, &c.grown_train[..], &c.grown_val[..]));
    write_curves(&path, "rate", rows, 0)?;
    println!(
        "churn after {at} grow steps, {} steps, {} networks, p {p}, seed {seed}; curves in {}",
        args.recover,
        args.networks,
        path.display()
    );
    println!("{:<8}{:>9}{:>12}{:>10}", "rate", "before", "last step", "lowest");
    for c in &curves {
        let lowest = c.grown_val.iter().copied().fold(f64::INFINITY, f64::min);
        let last = c.grown_val.last().copied().unwrap_or(f64::NAN);
        println!("{:<8}{:>9.4}{:>12.4}{:>10.4}", format!("{:.0}%", 100.0 * c.rate), c.grown_val[0], last, lowest);
    }
    println!("(validation accuracy, mean over the networks)");
    Ok(())
}
