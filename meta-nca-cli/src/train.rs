//! `meta-nca train`: meta-train a rule and keep its run folder up to date.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use meta_nca_rule::checkpoint::{Checkpoint, write_atomic};
use meta_nca_rule::config::Config;
use meta_nca_rule::eval::{EvalSpec, evaluate};
use meta_nca_rule::experiment::Experiment;
use meta_nca_rule::train::{EpochMetrics, ProbeMeasure, Trainer};
use tracing::info;

use crate::eval::write_report;
use crate::run_dir::{MetricsWriter, Start, Which, check_new_folder, checkpoint_path, prepare_folder, save_snapshot};

/// Arguments of `meta-nca train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The experiment config and its overrides.
    #[command(flatten)]
    config: ConfigFlags,
    /// Run folder (default: runs/<config name>-seed<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint, with the config recorded in its
    /// config.toml; `--set` (or a `--config`) may change only `train.*` and `grow.*` keys, e.g.
    /// `--set train.meta-epochs=2000` to train longer.
    #[arg(long, conflicts_with = "force")]
    resume: bool,
    /// Replace the run already in --out: everything in the folder is deleted first (only a
    /// folder holding a run's config.toml, metrics.csv or checkpoints is ever cleared).
    #[arg(long)]
    force: bool,
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
    /// Skip the estimate of the memory the config needs (training is refused when it exceeds
    /// the memory available).
    #[arg(long)]
    no_memory_check: bool,
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

    /// Whether `--config` or any `--set` was given.
    pub fn given(&self) -> bool {
        self.config.is_some() || !self.overrides.is_empty()
    }

    /// The config of a run being resumed: `recorded` (its config.toml) with the `--set`
    /// overrides, or the `--config` file with them.
    fn load_over(&self, recorded: &Config) -> Result<Config> {
        if self.config.is_some() {
            return Ok(self.load()?.0);
        }
        let mut config = recorded.clone();
        for o in &self.overrides {
            config = config.with_override(o).with_context(|| format!("in --set {o}"))?;
        }
        config.check()?;
        Ok(config)
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
    /// Of those, the seconds spent in the meta-epochs themselves (what `bench` times).
    pub epoch_seconds: f64,
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
    start: Start,
    bar: &ProgressBar,
    snapshot_every: Option<usize>,
) -> Result<RunSummary> {
    let resume = start == Start::Resume;
    let exp = Experiment::new(config.clone()).context("preparing the experiment")?;
    let mut trainer = if resume {
        let path = checkpoint_path(out, Which::Last);
        let ckpt = Checkpoint::load(&path).context("resuming")?;
        Trainer::resume(ckpt, exp, &path)?
    } else {
        Trainer::new(exp)?
    };
    let total = config.train.meta_epochs;
    if trainer.epoch > total {
        bail!(
            "train.meta-epochs = {total} is below the {} meta-epochs run {} has already trained",
            trainer.epoch,
            out.display()
        );
    }
    if resume && trainer.epoch == total {
        eprintln!(
            "note: run {} already has all {total} meta-epochs; --set train.meta-epochs=N trains it longer",
            out.display()
        );
    }
    prepare_folder(out, start)?;
    write_atomic(&out.join("config.toml"), config.to_toml().as_bytes())?;
    let mut metrics = MetricsWriter::open(out, resume.then_some(trainer.epoch))?;
    // What is on disk, for the message when training stops early.
    let mut last_saved = resume.then_some(trainer.epoch);
    let mut best_saved = resume && checkpoint_path(out, Which::Best).exists();
    bar.set_length(total as u64);
    bar.set_position(trainer.epoch as u64);
    let started = Instant::now();
    let first = trainer.epoch;
    let mut recent = Vec::new();
    let mut epoch_seconds = 0.0;
    if snapshot_every.is_some() && trainer.epoch == 0 {
        save_snapshot(&trainer.checkpoint(), out, 0)?;
    }
    // The probe runs on a second thread while training goes on; at most one is in flight.
    let mut probes = ProbeRunner::default();
    while trainer.epoch < total {
        let m = match trainer.meta_epoch() {
            Ok(m) => m,
            Err(e) => {
                metrics.flush()?;
                bar.abandon();
                // A probe still running may yet save the best (and a last) checkpoint.
                let collected = probes.collect(&mut trainer, out);
                if let Ok(saved) = &collected {
                    best_saved |= saved.best;
                    last_saved = saved.last.or(last_saved);
                }
                let saved = match last_saved {
                    Some(epoch) => format!(
                        "last.safetensors in {} is from meta-epoch {epoch}{}",
                        out.display(),
                        if best_saved { ", best.safetensors the best probe before the failure" } else { "" }
                    ),
                    None if best_saved => format!(
                        "no last checkpoint was written yet; best.safetensors in {} is the best probe before the failure",
                        out.display()
                    ),
                    None => "no checkpoint was written before the failure".to_string(),
                };
                collected.context("the probe running when training stopped")?;
                return Err(e).context(format!("training stopped ({saved})"));
            }
        };
        metrics.write(&m)?;
        epoch_seconds += m.seconds;
        recent.push(m);
        if recent.len() > 50 {
            recent.remove(0);
        }
        let probe_now = trainer.epoch % config.train.probe_every == 0 || trainer.epoch == total;
        let last_now = trainer.epoch % config.train.checkpoint_every == 0 || trainer.epoch == total;
        if last_now {
            metrics.flush()?;
        }
        // Probes are recorded in the order they were taken, and a last checkpoint holds every
        // probe up to its meta-epoch, exactly as if each probe ran in place.
        if probes.finished() || probe_now || last_now {
            let saved = probes.collect(&mut trainer, out)?;
            best_saved |= saved.best;
            last_saved = saved.last.or(last_saved);
        }
        if probe_now {
            probes.start(&trainer, last_now);
        } else if last_now {
            trainer.checkpoint().save(&checkpoint_path(out, Which::Last))?;
            last_saved = Some(trainer.epoch);
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
    probes.collect(&mut trainer, out)?;
    metrics.flush()?;
    // A resumed run that was already complete still gets a last checkpoint.
    trainer.checkpoint().save(&checkpoint_path(out, Which::Last))?;
    Ok(RunSummary {
        epochs: trainer.epoch,
        ran: trainer.epoch - first,
        seconds: started.elapsed().as_secs_f64(),
        epoch_seconds,
        recent,
        best_probe_loss: trainer.best_probe_loss,
    })
}

/// The probe of the rule taken at one meta-epoch, running on its own thread, with that
/// meta-epoch's checkpoint: saved as `best` if the probe is the best so far, and as `last` when
/// a last checkpoint falls on the probe's meta-epoch (written once the probe's loss is known).
struct Pending {
    job: std::thread::JoinHandle<meta_nca_rule::Result<ProbeMeasure>>,
    checkpoint: Checkpoint,
    last: bool,
}

/// Runs training probes beside the meta-epochs, one at a time.
#[derive(Default)]
struct ProbeRunner {
    pending: Option<Pending>,
}

/// Which checkpoints collecting a probe wrote.
#[derive(Default)]
struct Saved {
    best: bool,
    /// The meta-epoch of a last checkpoint written.
    last: Option<usize>,
}

impl ProbeRunner {
    /// Starts probing the trainer's current rule; `last`: also save it as the last checkpoint.
    fn start(&mut self, trainer: &Trainer, last: bool) {
        let probe = trainer.probe_job();
        let job = std::thread::spawn(move || probe.run());
        self.pending = Some(Pending { job, checkpoint: trainer.checkpoint(), last });
    }

    /// Whether a probe has finished and waits to be collected.
    fn finished(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| p.job.is_finished())
    }

    /// Waits for the probe in flight (if any), records it and saves its checkpoints.
    fn collect(&mut self, trainer: &mut Trainer, out: &Path) -> Result<Saved> {
        let Some(Pending { job, mut checkpoint, last }) = self.pending.take() else {
            return Ok(Saved::default());
        };
        let measured = job.join().map_err(|_| anyhow::anyhow!("the probe thread panicked"))??;
        let probe = trainer.record_probe(measured);
        info!(epoch = probe.epoch, loss = probe.train_loss, val_acc = probe.val_acc, best = probe.best, "probe");
        checkpoint.meta.best_probe_loss = trainer.best_probe_loss;
        let mut saved = Saved::default();
        if probe.best {
            checkpoint.save(&checkpoint_path(out, Which::Best))?;
            saved.best = true;
        }
        if last {
            checkpoint.save(&checkpoint_path(out, Which::Last))?;
            saved.last = Some(checkpoint.meta.meta_epoch);
        }
        Ok(saved)
    }
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
    let (config, out) = if args.resume {
        resume_config(&args)?
    } else {
        let (config, name) = args.config.load()?;
        let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("runs/{name}-seed{}", config.seed)));
        check_new_folder(&out, args.force)?;
        (config, out)
    };
    if !args.no_memory_check {
        crate::memory::check_training(&config, 1)?;
    }
    let start = match (args.resume, args.force) {
        (true, _) => Start::Resume,
        (false, true) => Start::Replace,
        (false, false) => Start::New,
    };
    let mut data: Vec<String> = if config.tasks.include_datasets {
        std::iter::once(&config.data.dataset).chain(&config.data.extra_datasets).cloned().collect()
    } else {
        Vec::new()
    };
    if config.tasks.generates() {
        data.push(format!("{} generated tasks per meta-epoch", config.tasks.per_epoch));
    }
    writeln!(std::io::stdout(), "seed {}  dataset {}  run folder {}", config.seed, data.join("+"), out.display())?;
    let bar = progress_bar(args.quiet);
    let snapshot_every = args.snapshot_every.map(|n| n as usize);
    let summary = train_run(&config, &out, start, &bar, snapshot_every)?;
    bar.finish_and_clear();
    let recent = &summary.recent;
    let n = recent.len().max(1) as f64;
    writeln!(std::io::stdout())?;
    writeln!(std::io::stdout(), "meta-epochs         {} ({} this invocation)", summary.epochs, summary.ran)?;
    let ran = summary.ran.max(1) as f64;
    writeln!(
        std::io::stdout(),
        "time                {:.2} s ({:.3} ms per meta-epoch, probes and checkpoints included; {:.3} ms in the \
         meta-epochs themselves, so {:.2}x for the rest)",
        summary.seconds,
        1e3 * summary.seconds / ran,
        1e3 * summary.epoch_seconds / ran,
        summary.seconds / summary.epoch_seconds.max(f64::MIN_POSITIVE)
    )?;
    if !recent.is_empty() {
        writeln!(
            std::io::stdout(),
            "last {:>3} epochs     loss {:.4}  train acc {:.3}  val acc {:.3}",
            recent.len(),
            recent.iter().map(|m| m.loss).sum::<f64>() / n,
            recent.iter().map(|m| m.train_acc).sum::<f64>() / n,
            recent.iter().map(|m| m.val_acc).sum::<f64>() / n
        )?;
    }
    if let Some(b) = summary.best_probe_loss {
        writeln!(
            std::io::stdout(),
            "best probe loss     {b:.4} (mean train loss of {} fixed fresh networks)",
            config.train.probe_networks
        )?;
    }
    if args.eval_networks > 0 {
        evaluate_best(&out, &config, args.eval_networks)?;
    }
    Ok(())
}

/// The config and folder of `train --resume`: the run's own config.toml (or, without it, its
/// last checkpoint's config) with `--set`, or `--config`; refused when they change anything
/// but `train.*` and `grow.*` keys. The changes allowed are printed.
fn resume_config(args: &Args) -> Result<(Config, PathBuf)> {
    let out = match &args.out {
        Some(out) => out.clone(),
        None if args.config.config.is_some() => {
            let (config, name) = args.config.load()?;
            PathBuf::from(format!("runs/{name}-seed{}", config.seed))
        }
        None => bail!("--resume needs --out DIR: the run folder to continue"),
    };
    let recorded_path = out.join("config.toml");
    let recorded = match std::fs::read_to_string(&recorded_path) {
        Ok(text) => {
            Config::from_toml(&text).with_context(|| format!("in the run's config {}", recorded_path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let last = checkpoint_path(&out, Which::Last);
            Checkpoint::load(&last)
                .with_context(|| format!("no run to resume in {} (no config.toml)", out.display()))?
                .meta
                .config
        }
        Err(e) => return Err(e).with_context(|| format!("reading the run's config {}", recorded_path.display())),
    };
    let given = if args.config.given() { args.config.load_over(&recorded)? } else { recorded.clone() };
    let (allowed, refused): (Vec<_>, Vec<_>) = config_changes(&recorded, &given)
        .into_iter()
        .partition(|c| c.key.starts_with("train.") || c.key.starts_with("grow."));
    if !refused.is_empty() {
        let lines: Vec<String> = refused.iter().map(ToString::to_string).collect();
        bail!(
            "cannot resume run {} with a different config (only train.* and grow.* keys may change):\n  {}",
            out.display(),
            lines.join("\n  ")
        );
    }
    for c in &allowed {
        writeln!(std::io::stdout(), "resuming with a changed {c}")?;
    }
    Ok((given, out))
}

/// One key whose value differs between two configs.
struct Change {
    /// Dotted kebab-case key (`train.meta-epochs`).
    key: String,
    /// The run's value (`None`: unset).
    old: Option<toml::Value>,
    /// The given value.
    new: Option<toml::Value>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<toml::Value>| v.as_ref().map_or("(unset)".to_string(), ToString::to_string);
        write!(f, "{}: the run has {}, given {}", self.key, show(&self.old), show(&self.new))
    }
}

/// Every key (tables walked down to their values) where `given` differs from `recorded`.
fn config_changes(recorded: &Config, given: &Config) -> Vec<Change> {
    fn walk(prefix: &str, a: Option<&toml::Value>, b: Option<&toml::Value>, out: &mut Vec<Change>) {
        match (a, b) {
            (Some(toml::Value::Table(ta)), Some(toml::Value::Table(tb))) => {
                let mut keys: Vec<&String> = ta.keys().chain(tb.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, ta.get(k), tb.get(k), out);
                }
            }
            _ if a != b => out.push(Change { key: prefix.to_string(), old: a.cloned(), new: b.cloned() }),
            _ => {}
        }
    }
    let value = |c: &Config| toml::Value::try_from(c).ok();
    let mut out = Vec::new();
    walk("", value(recorded).as_ref(), value(given).as_ref(), &mut out);
    out
}

fn evaluate_best(out: &Path, config: &Config, networks: usize) -> Result<()> {
    let (ckpt, exp) = crate::run_dir::load_run(out, Which::Best)?;
    let spec =
        EvalSpec { networks, steps: config.grow.steps, fire_fraction: config.grow.fire_fraction, seed: config.seed };
    let report = evaluate(&ckpt.rule, &ckpt.meta, exp.primary(), spec)?;
    writeln!(std::io::stdout())?;
    writeln!(std::io::stdout(), "best rule, {networks} fresh networks:")?;
    write_report(&mut std::io::stdout(), &report)?;
    Ok(())
}
