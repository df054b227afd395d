//! `meta-nca plot`: pictures of a run or of a grown network, drawn in pure Rust and written
//! next to the data they come from.
//!
//! - `--run DIR`: training curves of `DIR/metrics.csv` → `DIR/plots/training.png`; and, when
//!   the run kept snapshots (`train --snapshot-every N`), one network grown from each →
//!   `DIR/plots/epochs-layer<l>.gif` (a layer's weights over meta-epochs).
//! - `--grow FILE.json` (from `meta-nca grow --save`): `FILE-layer<l>.gif` (a layer's weights
//!   over the grow steps) and `FILE-hidden.png` (hidden-state channels as small multiples).
//! - `--robustness FILE.csv` (from `meta-nca robustness`): `FILE.png`, the accuracy curves
//!   around the damage; a prune's backprop baseline (`FILE-baseline.csv`) as a second panel.
//! - `--suite FILE.json` (from `meta-nca suite`): `FILE.png`, every task's validation accuracy
//!   grown next to the baselines, and the mean over tasks against the step count.
//! - `--continual FILE.json` (`report.json` of `meta-nca continual`): `FILE.png`, per task the
//!   accuracy on every class so far, old and new classes against the step, phases marked.
//!
//! # Layout
//! - `mod.rs`: arguments, dispatch, where each picture goes.
//! - [`canvas`]: RGB pictures drawn with `plotters`, PNG and GIF files.
//! - [`text`]: the embedded font (DejaVu Sans) and text drawing.
//! - [`chart`]: a line-chart panel (axes, ticks, grid, solid/dashed lines, markers, legend).
//! - [`colormap`]: the diverging colour map and the GIF palette built around it.
//! - [`grow_file`]: reading a grow record and laying a layer's cells out as a matrix.
//! - [`table`]: numeric CSV tables (`metrics.csv`, robustness curves), read with `csv`.
//! - [`curves`]: training curves from `metrics.csv`.
//! - [`weights`]: weight-matrix heatmaps and their animations.
//! - [`hidden`]: hidden-state channels as small multiples.
//! - [`epochs`]: a network grown from every snapshot of a run, animated over meta-epochs.
//! - [`robustness`]: accuracy around the damage of `meta-nca robustness`, and the backprop
//!   baseline of a prune.
//! - [`suite`]: the learning suite, grown networks against the baselines per task and over steps.
//! - [`continual`]: a continual experiment, accuracy per class group against the step.
//!
//! Adding a picture: a module with a function that reads its data and returns a
//! [`canvas::Picture`] (line charts: [`chart::Chart`] panels as in `curves` and `robustness`;
//! matrices: `weights::draw_matrix` and `draw_colorbar`), and a branch in [`run`] that saves it
//! next to its data.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub mod canvas;
pub mod chart;
pub mod colormap;
pub mod continual;
pub mod curves;
pub mod epochs;
pub mod grow_file;
pub mod hidden;
pub mod robustness;
pub mod suite;
pub mod table;
pub mod text;
pub mod weights;

/// Arguments of `meta-nca plot`: at least one of `--run`, `--grow`, `--robustness`, `--suite`.
#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("input").args(["run", "grow", "robustness", "suite", "continual"]).required(true).multiple(true)
))]
pub struct Args {
    /// Run folder written by `meta-nca train`: training curves, and GIFs over meta-epochs if it
    /// has snapshots. Pictures go to DIR/plots/.
    #[arg(long, value_name = "DIR")]
    run: Option<PathBuf>,
    /// Grow record written by `meta-nca grow --save`: a weight GIF per layer over the grow
    /// steps and a hidden-state PNG, next to the file.
    #[arg(long, value_name = "FILE.json")]
    grow: Option<PathBuf>,
    /// Curves written by `meta-nca robustness` (robustness-prune-<mode>.csv,
    /// robustness-neurons.csv, robustness-churn.csv): FILE.png next to the file, with the
    /// backprop baseline of a prune (FILE-baseline.csv) when it is there.
    #[arg(long, value_name = "FILE.csv")]
    robustness: Option<PathBuf>,
    /// Results written by `meta-nca suite` (suite.json in a run folder): FILE.png next to the
    /// file, grown networks against backprop, equal-step Adam and logistic regression.
    #[arg(long, value_name = "FILE.json")]
    suite: Option<PathBuf>,
    /// Results written by `meta-nca continual` (report.json in its folder): FILE.png next to
    /// the file, each task's accuracy on every class so far, old and new classes over the
    /// steps, with the phase boundaries and the backprop baselines.
    #[arg(long, value_name = "FILE.json")]
    continual: Option<PathBuf>,
    /// Folder for the pictures instead of next to the data.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Colour scale ±S of the weight GIFs (default: the largest |w| of the layer over all frames).
    #[arg(long, value_name = "S")]
    scale: Option<f64>,
    /// Milliseconds per GIF frame (the last frame is held longer).
    #[arg(long, value_name = "MS", default_value_t = 250)]
    frame_ms: u32,
    /// Also write every GIF frame as a PNG into <gif>-frames/.
    #[arg(long)]
    debug_frames: bool,
    /// Meta-epoch GIFs: rule steps of each grow (default: the run's grow.steps).
    #[arg(long)]
    steps: Option<usize>,
    /// Meta-epoch GIFs: firing fraction (default: the run's grow.fire-fraction).
    #[arg(long = "p", value_name = "P")]
    fire_fraction: Option<f64>,
    /// Meta-epoch GIFs: seed of the grown network, the same for every snapshot (default: the run's seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Meta-epoch GIFs: hidden-layer widths, comma-separated, e.g. `5,5` (default: the run's first
    /// architecture; `""` = no hidden layer).
    #[arg(long, value_name = "W1,W2,..")]
    hidden: Option<crate::run_dir::Widths>,
}

/// What the GIF writers need to know.
#[derive(Debug, Clone)]
pub struct GifOptions {
    /// Fixed colour scale, or `None` for the largest magnitude over all frames.
    pub scale: Option<f64>,
    /// Milliseconds per frame.
    pub frame_ms: u32,
    /// Also write every frame as a PNG.
    pub debug_frames: bool,
}

/// Runs `meta-nca plot`.
pub fn run(args: Args) -> Result<()> {
    if let Some(s) = args.scale.filter(|s| !(s.is_finite() && *s > 0.0)) {
        bail!("--scale must be a positive number, got {s}");
    }
    let gif = GifOptions { scale: args.scale, frame_ms: args.frame_ms.max(10), debug_frames: args.debug_frames };
    let mut written = Vec::new();
    if let Some(dir) = &args.run {
        if !dir.is_dir() {
            bail!("run folder {} does not exist", dir.display());
        }
        let out = args.out.clone().unwrap_or_else(|| dir.join("plots"));
        create(&out)?;
        let metrics = dir.join("metrics.csv");
        let path = out.join("training.png");
        let title = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
        curves::draw(&curves::Metrics::load(&metrics)?, &title)?.save_png(&path)?;
        written.push(path);
        let snapshots = crate::run_dir::snapshots(dir)?;
        if !snapshots.is_empty() {
            let grow = epochs::GrowArgs {
                steps: args.steps,
                fire_fraction: args.fire_fraction,
                seed: args.seed,
                hidden: args.hidden.clone(),
            };
            written.extend(epochs::gifs(&snapshots, &grow, &gif, &out)?);
        }
    }
    if let Some(file) = &args.grow {
        let grow = grow_file::load(file)?;
        let out = match &args.out {
            Some(out) => out.clone(),
            None => file.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        };
        create(&out)?;
        let stem = file.file_stem().map_or_else(|| "grow".to_string(), |s| s.to_string_lossy().into_owned());
        written.extend(weights::grow_gifs(&grow, &out, &stem, &gif)?);
        let path = out.join(format!("{stem}-hidden.png"));
        hidden::draw(&grow)?.save_png(&path)?;
        written.push(path);
    }
    if let Some(file) = &args.robustness {
        written.push(robustness_png(file, args.out.as_deref())?);
    }
    if let Some(file) = &args.suite {
        written.push(suite_png(file, args.out.as_deref())?);
    }
    if let Some(file) = &args.continual {
        written.push(continual_png(file, args.out.as_deref())?);
    }
    for path in &written {
        writeln!(std::io::stdout(), "wrote {}", path.display())?;
    }
    Ok(())
}

/// Draws the robustness curves of `file` into `<out or its folder>/<stem>.png`.
fn robustness_png(file: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let stem = file.file_stem().map_or_else(|| "robustness".to_string(), |s| s.to_string_lossy().into_owned());
    if stem.ends_with("-baseline") {
        bail!("{} is a prune's backprop baseline: plot the curves file it belongs to", file.display());
    }
    let curves = robustness::Curves::load(file)?;
    let baseline = match robustness::baseline_path(file).filter(|p| p.is_file()) {
        Some(path) => Some(robustness::Baseline::load(&path)?),
        None => None,
    };
    let folder = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let run = std::path::absolute(folder).ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let title = match run {
        Some(run) => format!("{run}: {stem} (mean accuracy of the grown networks)"),
        None => format!("{stem} (mean accuracy of the grown networks)"),
    };
    let out = out.unwrap_or(folder);
    create(out)?;
    let path = out.join(format!("{stem}.png"));
    robustness::draw(&curves, baseline.as_ref(), &title)?.save_png(&path)?;
    Ok(path)
}

/// Draws the learning suite of `file` into `<out or its folder>/<stem>.png`.
fn suite_png(file: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let data = suite::Suite::load(file)?;
    let stem = file.file_stem().map_or_else(|| "suite".to_string(), |s| s.to_string_lossy().into_owned());
    let folder = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let run = std::path::absolute(folder).ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let out = out.unwrap_or(folder);
    create(out)?;
    let path = out.join(format!("{stem}.png"));
    suite::draw(&data, run.as_deref().unwrap_or(&stem))?.save_png(&path)?;
    Ok(path)
}

/// Draws the continual experiment of `file` into `<out or its folder>/<stem>.png`.
fn continual_png(file: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let reports = continual::load(file)?;
    let stem = file.file_stem().map_or_else(|| "report".to_string(), |s| s.to_string_lossy().into_owned());
    let folder = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = std::path::absolute(folder).ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let out = out.unwrap_or(folder);
    create(out)?;
    let path = out.join(format!("{stem}.png"));
    let title =
        format!("{}: mean accuracy of the grown networks as the data changes", name.as_deref().unwrap_or(&stem));
    continual::draw(&reports, &title)?.save_png(&path)?;
    Ok(path)
}

fn create(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}
