//! A run folder: `config.toml` (the resolved config), `metrics.csv` (one row per meta-epoch),
//! `best.safetensors` and `last.safetensors` (checkpoints, written atomically), and with
//! `--snapshot-every` the rule every N meta-epochs in `snapshots/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use meta_nca_rule::checkpoint::{Checkpoint, write_atomic};
use meta_nca_rule::config::Config;
use meta_nca_rule::experiment::{Experiment, TaskSource};
use meta_nca_rule::train::EpochMetrics;

/// Header of `metrics.csv`.
pub const METRICS_HEADER: &str = "epoch,loss_step,loss,train_acc,val_acc,grad_norm,seconds";

/// Which checkpoint of a run to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Which {
    /// The rule whose fixed probe networks had the lowest mean training loss (validation data
    /// never picks a rule).
    Best,
    /// The rule at the end of training.
    Last,
}

/// The flags `eval`, `grow` and `check` share: which rule to load and how to grow with it.
#[derive(Debug, Clone, clap::Args)]
pub struct GrowFlags {
    /// Run folder written by `meta-nca train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Which checkpoint of the run.
    #[arg(long, value_enum, default_value_t = Which::Best)]
    pub checkpoint: Which,
    /// Rule steps per grow (default: the run's grow.steps).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Firing fraction; in async actor runs, each cell's firing rate (default: the run's
    /// grow.fire-fraction).
    #[arg(long = "p", value_name = "P")]
    pub fire_fraction: Option<f64>,
    /// Seed of the grows (default: the run's seed).
    #[arg(long)]
    pub seed: Option<u64>,
}

impl GrowFlags {
    /// Steps, firing fraction and seed: the flags, or the run's config where a flag is absent.
    pub fn resolve(&self, cfg: &Config) -> Result<(usize, f64, u64)> {
        resolve_grow(self.steps, self.fire_fraction, self.seed, cfg)
    }
}

/// `--steps`, `--p` and `--seed`, or the config's values where a flag is absent; checked.
pub fn resolve_grow(
    steps: Option<usize>,
    p: Option<f64>,
    seed: Option<u64>,
    cfg: &Config,
) -> Result<(usize, f64, u64)> {
    let steps = steps.unwrap_or(cfg.grow.steps);
    let p = p.unwrap_or(cfg.grow.fire_fraction);
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    if !(p > 0.0 && p <= 1.0) {
        bail!("--p must be in (0, 1], got {p}");
    }
    Ok((steps, p, seed.unwrap_or(cfg.seed)))
}

/// Hidden-layer widths as `--hidden` spells them: comma-separated positive numbers (`5,5`),
/// or `""` for no hidden layer at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Widths(pub Vec<usize>);

impl std::str::FromStr for Widths {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self(Vec::new()));
        }
        let widths = text
            .split(',')
            .map(|w| match w.trim().parse::<usize>() {
                Ok(0) => Err("a hidden layer has width 0".to_string()),
                Ok(w) => Ok(w),
                Err(_) => Err(format!("'{w}' is not a width")),
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(Self(widths))
    }
}

impl std::fmt::Display for Widths {
    /// As the flag spells it (`5,5`; `""` for none).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// Layer sizes of a network on `task` with the hidden widths of `--hidden` (absent: the
/// config's first architecture).
pub fn layer_sizes(hidden: Option<&Widths>, cfg: &Config, task: &TaskSource) -> Vec<usize> {
    let hidden = hidden.map_or_else(|| cfg.task.hidden.first().cloned().unwrap_or_default(), |w| w.0.clone());
    let mut sizes = vec![task.train.features];
    sizes.extend(hidden);
    sizes.push(task.train.classes);
    sizes
}

/// Path of a run's checkpoint.
pub fn checkpoint_path(dir: &Path, which: Which) -> PathBuf {
    dir.join(match which {
        Which::Best => "best.safetensors",
        Which::Last => "last.safetensors",
    })
}

/// What `train` does with its run folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new run: the folder must not exist or be empty.
    New,
    /// A new run replacing a previous one: the folder (a run folder) is cleared first.
    Replace,
    /// Continue the run in the folder from its last checkpoint.
    Resume,
}

/// Files that make a folder a run folder.
const RUN_FILES: [&str; 4] = ["config.toml", "metrics.csv", "last.safetensors", "best.safetensors"];

/// Whether `dir` exists and holds anything.
fn is_nonempty(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading run folder {}", dir.display())),
    }
}

/// Checks, before anything is written, that a new run may go into `dir`: it must not exist or
/// be empty; with `force`, it may hold a previous run (it is cleared by [`prepare_folder`]),
/// but a folder that does not look like a run folder is never cleared.
pub fn check_new_folder(dir: &Path, force: bool) -> Result<()> {
    if !is_nonempty(dir)? {
        return Ok(());
    }
    let is_run = RUN_FILES.iter().any(|f| dir.join(f).exists());
    match (force, is_run) {
        (false, true) => bail!(
            "run folder {} already holds a run: continue it with --resume, replace it with --force \
             (deletes everything in it), or pick another --out",
            dir.display()
        ),
        (false, false) => {
            bail!("run folder {} is not empty (and holds no run): pick an empty or new --out", dir.display())
        }
        (true, false) => bail!(
            "--force: {} is not a run folder (no config.toml, metrics.csv or checkpoint), so it is not \
             cleared; pick an empty or new --out",
            dir.display()
        ),
        (true, true) => Ok(()),
    }
}

/// Makes `dir` ready for a run started as `start` (creating it; clearing it for
/// [`Start::Replace`]); call after everything that can refuse the run has been checked.
pub fn prepare_folder(dir: &Path, start: Start) -> Result<()> {
    if start == Start::Replace && is_nonempty(dir)? {
        check_new_folder(dir, true)?;
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing run folder {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating run folder {}", dir.display()))
}

/// Loads a run's checkpoint and its experiment (config and data).
pub fn load_run(dir: &Path, which: Which) -> Result<(Checkpoint, Experiment)> {
    if !dir.is_dir() {
        bail!("run folder {} does not exist", dir.display());
    }
    let path = checkpoint_path(dir, which);
    let ckpt = Checkpoint::load(&path).with_context(|| format!("loading the rule of run {}", dir.display()))?;
    let exp = Experiment::new(ckpt.meta.config.clone()).context("loading the run's data")?;
    Ok((ckpt, exp))
}

/// A meta-epoch's metrics as `metrics.csv` keeps them: losses, gradient norms and seconds to 6
/// decimals, accuracies to 4.
fn rounded(m: &EpochMetrics) -> EpochMetrics {
    EpochMetrics {
        loss: round_to(m.loss, 6),
        train_acc: round_to(m.train_acc, 4),
        val_acc: round_to(m.val_acc, 4),
        grad_norm: round_to(m.grad_norm, 6),
        seconds: round_to(m.seconds, 6),
        ..*m
    }
}

/// The rows of a `metrics.csv` (read with its header; `T` may take only some columns).
pub fn read_metrics<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    reader
        .deserialize()
        .enumerate()
        .map(|(k, row)| row.with_context(|| format!("{} row {}", path.display(), k + 1)))
        .collect()
}

/// Writes `rows` as the CSV file `path`, atomically: with `header` as its first record when
/// given (rows are then tuples or sequences), else with the rows' field names.
pub fn write_csv<T: serde::Serialize>(
    path: &Path,
    header: Option<&[&str]>,
    rows: impl IntoIterator<Item = T>,
) -> Result<()> {
    let name = || format!("writing {}", path.display());
    let mut w = csv::WriterBuilder::new().has_headers(header.is_none()).from_writer(Vec::new());
    if let Some(header) = header {
        w.write_record(header).with_context(name)?;
    }
    for row in rows {
        w.serialize(row).with_context(name)?;
    }
    write_atomic(path, &w.into_inner().with_context(name)?)?;
    Ok(())
}

/// `x` rounded to `digits` decimals (what a CSV keeps of an accuracy or a loss).
pub fn round_to(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// Appends rows to `metrics.csv`, creating it with its header.
pub struct MetricsWriter {
    csv: csv::Writer<std::fs::File>,
}

impl MetricsWriter {
    /// Opens `dir/metrics.csv`. Fresh runs (`resume_from = None`) start it anew; a resumed
    /// run keeps only the rows of meta-epochs before `resume_from` (rows written after the
    /// checkpoint it resumes from are dropped, so no epoch appears twice) and appends.
    pub fn open(dir: &Path, resume_from: Option<usize>) -> Result<Self> {
        let path = dir.join("metrics.csv");
        let kept: Vec<EpochMetrics> = match resume_from {
            Some(first) if path.exists() => {
                read_metrics::<EpochMetrics>(&path)?.into_iter().filter(|r| r.epoch < first).collect()
            }
            _ => Vec::new(),
        };
        let mut fresh = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
        fresh.write_record(METRICS_HEADER.split(','))?;
        for row in &kept {
            fresh.serialize(row)?;
        }
        write_atomic(&path, &fresh.into_inner().context("writing metrics.csv")?)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { csv: csv::WriterBuilder::new().has_headers(false).from_writer(file) })
    }

    /// Writes one row.
    pub fn write(&mut self, m: &EpochMetrics) -> Result<()> {
        self.csv.serialize(rounded(m))?;
        Ok(())
    }

    /// Flushes to disk.
    pub fn flush(&mut self) -> Result<()> {
        self.csv.flush()?;
        Ok(())
    }
}

/// Folder of a run's snapshots.
pub const SNAPSHOTS: &str = "snapshots";

/// Saves `ckpt` as the snapshot of meta-epoch `epoch` of run `dir`.
pub fn save_snapshot(ckpt: &Checkpoint, dir: &Path, epoch: usize) -> Result<()> {
    let folder = dir.join(SNAPSHOTS);
    std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
    ckpt.save(&folder.join(format!("epoch-{epoch:05}.safetensors")))?;
    Ok(())
}

/// The snapshots of run `dir`, sorted by meta-epoch (none if it has no snapshot folder).
pub fn snapshots(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let folder = dir.join(SNAPSHOTS);
    if !folder.is_dir() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&folder).with_context(|| format!("listing {}", folder.display()))? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let epoch = name.strip_prefix("epoch-").and_then(|r| r.strip_suffix(".safetensors"));
        if let Some(Ok(epoch)) = epoch.map(str::parse::<usize>) {
            found.push((epoch, path));
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_parse_lists_and_the_empty_string() {
        assert_eq!("5,5".parse(), Ok(Widths(vec![5, 5])));
        assert_eq!(" 3 , 4 ".parse(), Ok(Widths(vec![3, 4])));
        assert_eq!("".parse(), Ok(Widths(Vec::new())));
        assert_eq!("3,0".parse::<Widths>(), Err("a hidden layer has width 0".to_string()));
        assert_eq!("3,x".parse::<Widths>(), Err("'x' is not a width".to_string()));
        assert_eq!("3,".parse::<Widths>(), Err("'' is not a width".to_string()));
    }
}
