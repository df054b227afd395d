//! `meta-nca train`: meta-train a rule and keep its run folder up to date.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use meta_nca_rule::checkpoint::{Checkpoint, write_atomic};
use meta_nca_rule::config::Config;
use meta_nca_rule::eval::{EvalSpec, evaluate};
use meta_nca_rule::experiment::Experiment;
use meta_nca_rule::train::{EpochMetrics, Trainer};
use tracing::info;

use crate::eval::print_report;
use crate::plot::epochs::save_snapshot;
use crate::run_dir::{MetricsWriter, Which, checkpoint_path};

/// Arguments of `meta-nca train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The experiment config and its overrides.
    #[command(flatten)]
    config: ConfigFlags,
    /// Run folder (default: runs/<config name>-seed<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in --out (or this folder) from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Networks grown by the final evaluation of the best rule (0 skips it).
    #[arg(long, default_value_t = 100)]
    eval_networks: usize,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Also keep the rule every N meta-epochs (and before the first) as
    /// snapshots/epoch-XXXXX.safetensors: `meta-nca plot --run` animates them.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_every: Option<u64>,
}

/// `--config FILE` and `--set KEY=VALUE`: the flags `train` and `sweep` share.
#[derive(Debug, clap::Args)]
pub struct ConfigFlags {
    /// Experiment config (TOML). Without it, the built-in default (the prototype's README
    /// configuration on the embedded Iris data) is used.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Override a config value, e.g. `--set seed=3 --set train.lr=0.003` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

impl ConfigFlags {
    /// Reads the config file (or the built-in default) and applies the `--set` overrides;
    /// returns it with a name for its run folder.
    pub fn load(&self) -> Result<(Config, String)> {
        let (mut config, name) = self.read()?;
        for o in &self.overrides {
            config = config.with_override(o).with_context(|| format!("in --set {o}"))?;
        }
        config.check()?;
        Ok((config, name))
    }

    fn read(&self) -> Result<(Config, String)> {
        Ok(match &self.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
                let config = Config::from_toml(&text).with_context(|| format!("in config {}", path.display()))?;
                let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
                (config, name)
            }
            None => (Config::default(), "default".to_string()),
        })
    }
}

/// What a finished training run reports.
pub struct RunSummary {
    /// Meta-epochs completed in total.
    pub epochs: usize,
    /// Meta-epochs run by this call.
    pub ran: usize,
    /// Wall-clock seconds of this call (probes and checkpoint writes included).
    pub seconds: f64,
    /// The last (up to 50) meta-epochs' metrics.
    pub recent: Vec<EpochMetrics>,
    /// Lowest probe loss (what picked `best`).
    pub best_probe_loss: Option<f64>,
}

/// Trains `config` in run folder `out` (fresh, or continuing its last checkpoint), writing
/// `config.toml`, `metrics.csv` and the `best`/`last` checkpoints as it goes; with
/// `snapshot_every`, also the rule every that many meta-epochs (and before the first) into
/// `out/snapshots/`.
pub fn train_run(
    config: &Config,
    out: &Path,
    resume: bool,
    bar: &ProgressBar,
    snapshot_every: Option<usize>,
) -> Result<RunSummary> {
    let exp = Experiment::new(config.clone()).context("preparing the experiment")?;
    let mut trainer = if resume {
        let path = checkpoint_path(out, Which::Last);
        let ckpt = Checkpoint::load(&path).context("resuming")?;
        Trainer::resume(ckpt, exp, &path)?
    } else {
        Trainer::new(exp)?
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating run folder {}", out.display()))?;
    write_atomic(&out.join("config.toml"), config.to_toml().as_bytes())?;
    let total = config.train.meta_epochs;
    let mut metrics = MetricsWriter::open(out, resume.then_some(trainer.epoch))?;
    bar.set_length(total as u64);
    bar.set_position(trainer.epoch as u64);
    let started = Instant::now();
    let first = trainer.epoch;
    let mut recent = Vec::new();
    if snapshot_every.is_some() && trainer.epoch == 0 {
        save_snapshot(&trainer.checkpoint(), out, 0)?;
    }
    while trainer.epoch < total {
        let m = match trainer.meta_epoch() {
            Ok(m) => m,
            Err(e) => {
                metrics.flush()?;
                bar.abandon();
                return Err(e).context(format!(
                    "training stopped; the checkpoints in {} are from before the failure",
                    out.display()
                ));
            }
        };
        metrics.write(&m)?;
        recent.push(m);
        if recent.len() > 50 {
            recent.remove(0);
        }
        if trainer.epoch % config.train.probe_every == 0 || trainer.epoch == total {
            let probe = trainer.probe()?;
            info!(epoch = probe.epoch, loss = probe.train_loss, val_acc = probe.val_acc, best = probe.best, "probe");
            if probe.best {
                trainer.checkpoint().save(&checkpoint_path(out, Which::Best))?;
            }
        }
        if trainer.epoch % config.train.checkpoint_every == 0 || trainer.epoch == total {
            metrics.flush()?;
            trainer.checkpoint().save(&checkpoint_path(out, Which::Last))?;
        }
        if snapshot_every.is_some_and(|n| trainer.epoch % n == 0) {
            save_snapshot(&trainer.checkpoint(), out, trainer.epoch)?;
        }
        info!(
            epoch = m.epoch,
            loss = m.loss,
            train_acc = m.train_acc,
            val_acc = m.val_acc,
            grad_norm = m.grad_norm,
            "meta-epoch"
        );
        bar.set_message(format!("loss {:.4} val {:.3} |g| {:.2e}", m.loss, m.val_acc, m.grad_norm));
        bar.inc(1);
    }
    metrics.flush()?;
    // A resumed run that was already complete still gets a last checkpoint.
    trainer.checkpoint().save(&checkpoint_path(out, Which::Last))?;
    Ok(RunSummary {
        epochs: trainer.epoch,
        ran: trainer.epoch - first,
        seconds: started.elapsed().as_secs_f64(),
        recent,
        best_probe_loss: trainer.best_probe_loss,
    })
}

/// A progress bar on stderr (hidden when `quiet`).
pub fn progress_bar(quiet: bool) -> ProgressBar {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Runs `meta-nca train`.
pub fn run(args: Args) -> Result<()> {
    let (config, name) = args.config.load()?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("runs/{name}-seed{}", config.seed)));
    let mut data: Vec<String> = if config.tasks.include_datasets {
        std::iter::once(&config.data.dataset).chain(&config.data.extra_datasets).cloned().collect()
    } else {
        Vec::new()
    };
    if config.tasks.generates() {
        data.push(format!("{} generated tasks per meta-epoch", config.tasks.per_epoch));
    }
    println!("seed {}  dataset {}  run folder {}", config.seed, data.join("+"), out.display());
    let bar = progress_bar(args.quiet);
    let snapshot_every = args.snapshot_every.map(|n| n as usize);
    let summary = train_run(&config, &out, args.resume, &bar, snapshot_every)?;
    bar.finish_and_clear();
    let recent = &summary.recent;
    let n = recent.len().max(1) as f64;
    println!();
    println!("meta-epochs         {} ({} this invocation)", summary.epochs, summary.ran);
    println!(
        "time                {:.2} s ({:.3} ms per meta-epoch, probes and checkpoints included)",
        summary.seconds,
        1e3 * summary.seconds / summary.ran.max(1) as f64
    );
    if !recent.is_empty() {
        println!(
            "last {:>3} epochs     loss {:.4}  train acc {:.3}  val acc {:.3}",
            recent.len(),
            recent.iter().map(|m| m.loss).sum::<f64>() / n,
            recent.iter().map(|m| m.train_acc).sum::<f64>() / n,
            recent.iter().map(|m| m.val_acc).sum::<f64>() / n
        );
    }
    if let Some(b) = summary.best_probe_loss {
        println!(
            "best probe loss     {b:.4} (mean train loss of {} fixed fresh networks)",
            config.train.probe_networks
        );
    }
    if args.eval_networks > 0 {
        evaluate_best(&out, &config, args.eval_networks)?;
    }
    Ok(())
}

fn evaluate_best(out: &Path, config: &Config, networks: usize) -> Result<()> {
    let (ckpt, exp) = crate::run_dir::load_run(out, Which::Best)?;
    let spec =
        EvalSpec { networks, steps: config.grow.steps, fire_fraction: config.grow.fire_fraction, seed: config.seed };
    let report = evaluate(&ckpt.rule, &ckpt.meta, exp.primary(), spec)?;
    println!();
    println!("best rule, {networks} fresh networks:");
    print_report(&report);
    Ok(())
}
