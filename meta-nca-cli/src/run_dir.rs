//! A run folder: `config.toml` (the resolved config), `metrics.csv` (one row per meta-epoch),
//! `best.safetensors` and `last.safetensors` (checkpoints, written atomically).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use meta_nca_rule::checkpoint::Checkpoint;
use meta_nca_rule::experiment::Experiment;
use meta_nca_rule::train::EpochMetrics;

/// Header of `metrics.csv`.
pub const METRICS_HEADER: &str = "epoch,loss_step,loss,train_acc,val_acc,grad_norm,seconds";

/// Which checkpoint of a run to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// The rule with the best mean validation accuracy of a meta-epoch.
    Best,
    /// The rule at the end of training.
    Last,
}

/// Path of a run's checkpoint.
pub fn checkpoint_path(dir: &Path, which: Which) -> PathBuf {
    dir.join(match which {
        Which::Best => "best.safetensors",
        Which::Last => "last.safetensors",
    })
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

/// One CSV row of metrics.
pub fn metrics_row(m: &EpochMetrics) -> String {
    format!(
        "{},{},{:.6},{:.4},{:.4},{:.6},{:.6}",
        m.epoch, m.loss_step, m.loss, m.train_acc, m.val_acc, m.grad_norm, m.seconds
    )
}

/// Appends lines to `metrics.csv`, creating it with its header.
pub struct MetricsWriter {
    file: std::io::BufWriter<std::fs::File>,
}

impl MetricsWriter {
    /// Opens `dir/metrics.csv`: fresh (truncated) or, when resuming, appended to.
    pub fn open(dir: &Path, append: bool) -> Result<Self> {
        let path = dir.join("metrics.csv");
        let exists = path.exists();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut w = Self { file: std::io::BufWriter::new(file) };
        if !append || !exists {
            writeln!(w.file, "{METRICS_HEADER}")?;
        }
        Ok(w)
    }

    /// Writes one row.
    pub fn write(&mut self, m: &EpochMetrics) -> Result<()> {
        writeln!(self.file, "{}", metrics_row(m))?;
        Ok(())
    }

    /// Flushes to disk.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush()?;
        Ok(())
    }
}
