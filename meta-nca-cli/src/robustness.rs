//! `meta-nca robustness`: remove connections from grown networks (or add hidden neurons, or
//! replace connections at every step), keep applying the rule, and compare with a
//! backprop-trained network pruned alike. The experiment comes from `--config FILE.toml` and
//! flags ([`crate::robustness_config`]); the curves, a prune's backprop baseline and the
//! resolved experiment are written into the run folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use meta_nca_rule::checkpoint::write_atomic;
use meta_nca_rule::robustness::{
    Bench, ChurnCurve, ChurnSpec, NeuronCurve, NeuronSpec, PruneCurve, PruneMode, PruneSpec, add_neurons_experiment,
    churn_experiment, prune_experiment,
};
use serde::Serialize;

use crate::robustness_config::{Damage, Plan, PruneModeArg, RobustnessConfig};
use crate::run_dir::{Which, load_run, round_to, write_csv};

/// Arguments of `meta-nca robustness`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run folder written by `meta-nca train`; the curves and the resolved experiment config
    /// are written into it.
    #[arg(long)]
    run: PathBuf,
    /// Experiment config (TOML, e.g. configs/robustness-prune.toml); the flags below override
    /// its keys.
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// The experiment's keys as flags.
    #[command(flatten)]
    flags: RobustnessConfig,
    /// Name the output files `robustness-NAME.csv`/`.toml` instead of after the experiment
    /// (`robustness-prune-<mode>`, ...), to keep them beside an earlier experiment's.
    #[arg(long, value_name = "NAME", value_parser = file_name_part)]
    name: Option<String>,
    /// Replace the outputs of a different earlier experiment of the same name (rerunning the
    /// same experiment replaces them without it).
    #[arg(long)]
    force: bool,
    /// Print one JSON object instead of the table (the files are written all the same).
    #[arg(long)]
    json: bool,
}

/// A `--name`: letters, digits, `-`, `_` and `.` (it becomes part of a file name).
fn file_name_part(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && !text.starts_with('.')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(text.to_string()) } else { Err("use letters, digits, '-', '_' and '.' only".into()) }
}

/// The files an experiment writes into its run folder, named once from its file stem.
struct Outputs {
    /// `<stem>.csv`: the accuracy curves.
    curves: PathBuf,
    /// `<stem>-baseline.csv`: prune's backprop baseline (only a prune writes it).
    baseline: PathBuf,
    /// `<stem>.toml`: the resolved experiment.
    config: PathBuf,
}

impl Outputs {
    fn new(run: &Path, stem: &str) -> Self {
        Self {
            curves: run.join(format!("{stem}.csv")),
            baseline: run.join(format!("{stem}-baseline.csv")),
            config: run.join(format!("{stem}.toml")),
        }
    }

    /// Refuses to overwrite the outputs of a different experiment: if any of them exists, the
    /// `.toml` must be `plan_toml` (the same experiment again), unless `force`.
    fn check(&self, run: &Path, plan_toml: &str, force: bool) -> Result<()> {
        let Some(existing) = [&self.curves, &self.config, &self.baseline].into_iter().find(|f| f.exists()) else {
            return Ok(());
        };
        let recorded = std::fs::read_to_string(&self.config).ok();
        // Compared as tables: the header comment names the run folder as it was spelled.
        let table = |text: &str| toml::from_str::<toml::Table>(text).ok();
        if force || recorded.as_deref().and_then(table).is_some_and(|t| Some(t) == table(plan_toml)) {
            return Ok(());
        }
        let file_name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let what = if recorded.is_some() {
            format!("a different experiment (see {})", file_name(&self.config))
        } else {
            "an experiment without its .toml".to_string()
        };
        bail!(
            "{} in {} holds the results of {what}; pass --name NAME to write robustness-NAME.* beside it, or \
             --force to replace it",
            file_name(existing),
            run.display()
        )
    }
}

/// Writes accuracy curves as CSV (`<key>,step,grown_train_acc,grown_val_acc`); the first
/// point of each curve is step `first_step` (-1: before the damage, 0: right after it).
fn write_curves<'a>(
    path: &Path,
    key: &str,
    curves: impl Iterator<Item = (f64, &'a [f64], &'a [f64])>,
    first_step: i64,
) -> Result<()> {
    let rows = curves.flat_map(|(label, train, val)| {
        train
            .iter()
            .zip(val)
            .enumerate()
            .map(move |(k, (t, v))| (label, k as i64 + first_step, round_to(*t, 4), round_to(*v, 4)))
    });
    write_csv(path, Some(&[key, "step", "grown_train_acc", "grown_val_acc"]), rows)
}

/// What `meta-nca robustness --json` prints: the resolved experiment, where its files went,
/// and its accuracy curves, in full (the table shows points of them; see [`Curves`]).
#[derive(Debug, Serialize)]
pub struct RobustnessReport {
    /// The resolved experiment: the keys of [`Plan`] that it uses, as in the `.toml` copy in
    /// the run folder (kebab-case, as in the config file).
    pub plan: toml::Table,
    /// The engine the grows ran on (the table's first line).
    pub engine: String,
    /// The curves as CSV, in the run folder.
    pub curves_file: PathBuf,
    /// Prune: the backprop baseline as CSV, in the run folder (null for the other experiments).
    pub baseline_file: Option<PathBuf>,
    /// The resolved experiment as TOML, in the run folder (rerun it with `--config`).
    pub config_file: PathBuf,
    /// One curve per fraction, neuron count or rate, in the plan's order.
    pub curves: Curves,
}

/// The curves of one experiment: one JSON array, whose entries are told apart by their first
/// key (`fraction`, `added` or `rate`). Accuracies are means over the grown networks; the
/// table's columns are points of `grown_val`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Curves {
    /// Prune: `grown_val` is before the damage, right after it, then after each recovery step
    /// (the table's before = `[0]`, after = `[1]`, recovered = the last, (best) = the highest
    /// from `[1]` on); `baseline_val` is backprop before, pruned alike, and fine-tuned.
    Prune(Vec<PruneCurve>),
    /// Neurons: `grown_val` is before, right after the neurons are added, then after each rule
    /// step (the table's `+k steps` = `[1 + k]`).
    Neurons(Vec<NeuronCurve>),
    /// Churn: `grown_val` is before the churn, then after each churned step (the table's last
    /// step = the last, lowest = the lowest of all).
    Churn(Vec<ChurnCurve>),
}

/// Runs `meta-nca robustness`.
pub fn run(args: Args) -> Result<()> {
    let file = match &args.config {
        Some(path) => RobustnessConfig::load(path)?,
        None => RobustnessConfig::default(),
    };
    let config = args.flags.over(file);
    config.check()?;
    let (ckpt, exp) = load_run(&args.run, config.checkpoint.unwrap_or(Which::Best))?;
    let plan = config.resolve(&exp.config)?;
    let task = exp.primary();
    let stem = args.name.as_ref().map_or_else(|| plan.file_stem(), |n| format!("robustness-{n}"));
    let plan_toml = plan.to_toml(&args.run)?;
    let outputs = Outputs::new(&args.run, &stem);
    outputs.check(&args.run, &plan_toml, args.force)?;
    crate::memory::check_actors_for(&task.archs, exp.config.task.bias, plan.engine, plan.executor)?;
    let engine = plan.engine_kind();
    // Unlocked: the experiment runs between the writes.
    let mut out = std::io::stdout();
    if !args.json {
        writeln!(out, "engine: {}", engine.name())?;
    }
    let bench = Bench { rule: &ckpt.rule, meta: &ckpt.meta, task, engine: engine.as_ref() };
    let Outputs { curves: curves_file, baseline, config: config_file } = outputs;
    let (curves, baseline_file) = match plan.experiment {
        Damage::Prune => (Curves::Prune(prune(&plan, &bench, &curves_file, &baseline)?), Some(baseline)),
        Damage::Neurons => (Curves::Neurons(neurons(&plan, &bench, &curves_file)?), None),
        Damage::Churn => (Curves::Churn(churn(&plan, &bench, &curves_file)?), None),
    };
    write_atomic(&config_file, plan_toml.as_bytes())?;
    let report =
        RobustnessReport { plan: plan.keys()?, engine: engine.name(), curves_file, baseline_file, config_file, curves };
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        write_report(&mut out, &plan, &report)?;
    }
    Ok(())
}

/// Writes a robustness experiment as a table.
fn write_report(out: &mut impl Write, plan: &Plan, report: &RobustnessReport) -> std::io::Result<()> {
    let (at, p, seed, networks) = (plan.steps, plan.fire_fraction, plan.seed, plan.networks);
    let path = report.curves_file.display();
    match &report.curves {
        Curves::Prune(curves) => {
            let baseline = report.baseline_file.as_deref().unwrap_or(Path::new("-")).display();
            writeln!(
                out,
                "prune ({}) after {at} grow steps, {networks} networks, p {p}, seed {seed}; {} recovery steps; curves in \
                 {path}, backprop in {baseline}",
                plan.mode.name(),
                plan.recover
            )?;
            write_prune(out, plan, curves)?;
        }
        Curves::Neurons(curves) => {
            writeln!(
                out,
                "hidden neurons added after {at} grow steps, {networks} networks, p {p}, seed {seed}; curves in {path}"
            )?;
            write_neurons(out, plan, curves)?;
        }
        Curves::Churn(curves) => {
            writeln!(
                out,
                "churn after {at} grow steps, {} steps, {networks} networks, p {p}, seed {seed}; curves in {path}",
                plan.recover
            )?;
            write_churn(out, curves)?;
        }
    }
    writeln!(out, "experiment config (seed {seed}) in {}", report.config_file.display())?;
    Ok(())
}

/// Writes the backprop baseline of a prune as CSV
/// (`fraction,fine_tune_epochs,before_val_acc,pruned_val_acc,fine_tuned_val_acc`).
fn write_baseline(path: &Path, curves: &[PruneCurve], fine_tune: usize) -> Result<()> {
    let header = ["fraction", "fine_tune_epochs", "before_val_acc", "pruned_val_acc", "fine_tuned_val_acc"];
    let rows = curves.iter().map(|c| {
        let [before, pruned, tuned] = c.baseline_val.map(|a| round_to(a, 4));
        (c.fraction, fine_tune, before, pruned, tuned)
    });
    write_csv(path, Some(&header), rows)
}

/// Runs a prune and writes its curves and backprop baseline.
fn prune(plan: &Plan, bench: &Bench<'_>, path: &Path, baseline: &Path) -> Result<Vec<PruneCurve>> {
    let spec = PruneSpec {
        fractions: plan.fractions.clone(),
        mode: match plan.mode {
            PruneModeArg::Random => PruneMode::Random,
            PruneModeArg::Magnitude => PruneMode::Magnitude,
        },
        at: plan.steps,
        recover: plan.recover,
        networks: plan.networks,
        fire_fraction: plan.fire_fraction,
        seed: plan.seed,
        fine_tune_epochs: plan.fine_tune,
    };
    let curves = prune_experiment(bench, &spec)?;
    let rows = curves.iter().map(|c| (c.fraction, &c.grown_train[..], &c.grown_val[..]));
    write_curves(path, "fraction", rows, -1)?;
    write_baseline(baseline, &curves, plan.fine_tune)?;
    Ok(curves)
}

/// Writes a prune's table (after its header line).
fn write_prune(out: &mut impl Write, plan: &Plan, curves: &[PruneCurve]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<9}{:>9}{:>9}{:>11}{:>10} {:>13}{:>12}{:>13}",
        "removed", "before", "after", "recovered", "(best)", "backprop", "pruned", "fine-tuned"
    )?;
    for c in curves {
        let last = c.grown_val.last().copied().unwrap_or(f64::NAN);
        let best = c.grown_val[1..].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        writeln!(
            out,
            "{:<9}{:>9.4}{:>9.4}{:>11.4}{:>10.4} {:>13.4}{:>12.4}{:>13.4}",
            format!("{:.0}%", 100.0 * c.fraction),
            c.grown_val[0],
            c.grown_val[1],
            last,
            best,
            c.baseline_val[0],
            c.baseline_val[1],
            c.baseline_val[2]
        )?;
    }
    writeln!(
        out,
        "(validation accuracy; grown: mean over the networks; backprop: before, pruned alike, fine-tuned {} epochs)",
        plan.fine_tune
    )?;
    Ok(())
}

/// Runs an added-neurons experiment and writes its curves.
fn neurons(plan: &Plan, bench: &Bench<'_>, path: &Path) -> Result<Vec<NeuronCurve>> {
    let spec = NeuronSpec {
        counts: plan.neurons.clone(),
        at: plan.steps,
        recover: plan.recover,
        networks: plan.networks,
        fire_fraction: plan.fire_fraction,
        seed: plan.seed,
    };
    let curves = add_neurons_experiment(bench, &spec)?;
    let rows = curves.iter().map(|c| (c.added as f64, &c.grown_train[..], &c.grown_val[..]));
    write_curves(path, "added", rows, -1)?;
    Ok(curves)
}

/// Writes an added-neurons experiment's table (after its header line).
fn write_neurons(out: &mut impl Write, plan: &Plan, curves: &[NeuronCurve]) -> std::io::Result<()> {
    let mut shown: Vec<usize> = [1, 5, plan.recover].into_iter().filter(|&k| k <= plan.recover).collect();
    shown.dedup();
    write!(out, "{:<8}{:>9}{:>9}", "added", "before", "after")?;
    for k in &shown {
        write!(out, "{:>12}", format!("+{k} steps"))?;
    }
    writeln!(out)?;
    for c in curves {
        write!(out, "{:<8}{:>9.4}{:>9.4}", c.added, c.grown_val[0], c.grown_val[1])?;
        for &k in &shown {
            write!(out, "{:>12.4}", c.grown_val[1 + k])?;
        }
        writeln!(out)?;
    }
    writeln!(out, "(validation accuracy, mean over the networks)")?;
    Ok(())
}

/// Runs a churn experiment and writes its curves.
fn churn(plan: &Plan, bench: &Bench<'_>, path: &Path) -> Result<Vec<ChurnCurve>> {
    let spec = ChurnSpec {
        rates: plan.rates.clone(),
        at: plan.steps,
        steps: plan.recover,
        networks: plan.networks,
        fire_fraction: plan.fire_fraction,
        seed: plan.seed,
    };
    let curves = churn_experiment(bench, &spec)?;
    let rows = curves.iter().map(|c| (c.rate, &c.grown_train[..], &c.grown_val[..]));
    write_curves(path, "rate", rows, 0)?;
    Ok(curves)
}

/// Writes a churn experiment's table (after its header line).
fn write_churn(out: &mut impl Write, curves: &[ChurnCurve]) -> std::io::Result<()> {
    writeln!(out, "{:<8}{:>9}{:>12}{:>10}", "rate", "before", "last step", "lowest")?;
    for c in curves {
        let lowest = c.grown_val.iter().copied().fold(f64::INFINITY, f64::min);
        let last = c.grown_val.last().copied().unwrap_or(f64::NAN);
        writeln!(out, "{:<8}{:>9.4}{:>12.4}{:>10.4}", format!("{:.0}%", 100.0 * c.rate), c.grown_val[0], last, lowest)?;
    }
    writeln!(out, "(validation accuracy, mean over the networks)")?;
    Ok(())
}
