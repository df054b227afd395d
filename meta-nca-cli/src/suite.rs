//! `meta-nca suite`: the learning suite of a trained rule (held-out generated tasks and the
//! embedded datasets, next to backprop, equal-step Adam and logistic regression); prints a
//! table (or JSON) and writes `suite.csv` and `suite.json` into the run folder.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use meta_nca_rule::checkpoint::write_atomic;
use meta_nca_rule::suite::{SuiteReport, SuiteRow, SuiteSpec, held_out_datasets, run_suite};

use crate::run_dir::{Which, load_run, write_csv};
use crate::train::progress_bar;

/// Arguments of `meta-nca suite`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run folder written by `meta-nca train`; suite.csv and suite.json (see --name) are written into it.
    #[arg(long)]
    run: std::path::PathBuf,
    /// Which checkpoint of the run.
    #[arg(long, value_enum, default_value_t = Which::Best)]
    checkpoint: Which,
    /// Networks grown per task and labelling (default: 100; 10 with --quick).
    #[arg(long)]
    networks: Option<usize>,
    /// Held-out generated tasks (default: 12; 3 small ones with --quick).
    #[arg(long)]
    tasks: Option<usize>,
    /// Feature counts of the held-out generated tasks, `LO,HI` (default: 2,64; spread on a log
    /// scale). Wider than the rule was trained on: how it extrapolates to wide inputs.
    #[arg(long, value_name = "LO,HI", value_parser = parse_range)]
    features: Option<[usize; 2]>,
    /// Class counts of the held-out generated tasks, `LO,HI` (default: 2,10).
    #[arg(long, value_name = "LO,HI", value_parser = parse_range)]
    classes: Option<[usize; 2]>,
    /// Row counts of the held-out generated tasks, `LO,HI` (default: 100,2000).
    #[arg(long, value_name = "LO,HI", value_parser = parse_range)]
    rows: Option<[usize; 2]>,
    /// Share of the held-out generated tasks whose features mix a few latent dimensions plus
    /// noise (correlated features, as in images or spectra; default 0). Their kind reads
    /// `KIND/D`, D latent dimensions.
    #[arg(long, value_name = "SHARE")]
    latent: Option<f64>,
    /// Stem of the files written into the run folder (`NAME.csv`, `NAME.json`), so that suites
    /// over other ranges sit next to the standard one.
    #[arg(long, default_value = "suite", value_parser = parse_name)]
    name: String,
    /// Datasets besides the generated tasks, comma-separated (embedded names or CSV paths;
    /// default: iris,wine,breast-cancer; iris with --quick; "" = none).
    #[arg(long, value_name = "A,B,..")]
    datasets: Option<String>,
    /// Step counts to score at, comma-separated; K is the run's grow.steps (`K,2K,5K`: growth
    /// past the trained K).
    #[arg(long, default_value = "K,2K,5K", value_name = "K,2K,..")]
    horizons: String,
    /// Seed of the suite's tasks and grows (keep it fixed to compare rules).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A seconds-long suite for tests: 10 networks, 3 small generated tasks, Iris, a 2-point
    /// learning-rate grid.
    #[arg(long)]
    quick: bool,
    /// Also write the held-out generated tasks into this folder as CSV files (`<task>.csv`:
    /// the feature columns, then `label`; the rows the suite splits), to look at one or grow on
    /// it alone with `meta-nca eval --dataset`.
    #[arg(long, value_name = "DIR")]
    export_tasks: Option<std::path::PathBuf>,
    /// Overwrite the suite's files if the run already has them.
    #[arg(long)]
    force: bool,
    /// Print the report as one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Parses `K,2K,5K`-style step counts (`K` = `k`); sorted, without repeats.
pub fn parse_horizons(text: &str, k: usize) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for token in text.split(',').map(str::trim) {
        let lower = token.to_ascii_lowercase();
        let steps = match lower.strip_suffix('k') {
            Some("") => Some(k),
            Some(m) => m.parse::<usize>().ok().map(|m| m * k),
            None => lower.parse::<usize>().ok(),
        };
        match steps {
            Some(s) if s > 0 => out.push(s),
            _ => bail!("--horizons: '{token}' is not a step count (a number, or a multiple of K such as 2K)"),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Parses `LO,HI` (two counts, LO <= HI).
fn parse_range(text: &str) -> Result<[usize; 2], String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let [lo, hi] = parts[..] else {
        return Err(format!("'{text}' is not LO,HI (two counts separated by a comma)"));
    };
    let count = |s: &str| s.parse::<usize>().map_err(|_| format!("'{s}' is not a count"));
    let (lo, hi) = (count(lo)?, count(hi)?);
    if lo > hi {
        return Err(format!("LO ({lo}) is above HI ({hi})"));
    }
    Ok([lo, hi])
}

/// A file stem: letters, digits, '-' and '_' only (it names files inside the run folder).
fn parse_name(text: &str) -> Result<String, String> {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        Ok(text.to_string())
    } else {
        Err(format!("'{text}' is not a file stem (letters, digits, '-' and '_')"))
    }
}

/// Runs `meta-nca suite`.
pub fn run(args: Args) -> Result<()> {
    let (csv_path, json_path) =
        (args.run.join(format!("{}.csv", args.name)), args.run.join(format!("{}.json", args.name)));
    if !args.force
        && let Some(p) = [&csv_path, &json_path].into_iter().find(|p| p.exists())
    {
        bail!("{} exists; pass --force to overwrite it", p.display());
    }
    let (ckpt, _) = load_run(&args.run, args.checkpoint)?;
    let k = ckpt.meta.config.grow.steps;
    let horizons = parse_horizons(&args.horizons, k)?;
    let mut spec = if args.quick { SuiteSpec::quick(horizons) } else { SuiteSpec::standard(horizons) };
    spec.seed = args.seed;
    if let Some(n) = args.networks {
        spec.networks = n;
    }
    if let Some(n) = args.tasks {
        spec.generated = n;
    }
    if let Some(f) = args.features {
        spec.ranges.features = f;
    }
    if let Some(c) = args.classes {
        spec.ranges.classes = c;
    }
    if let Some(r) = args.rows {
        spec.ranges.rows = r;
    }
    if let Some(l) = args.latent {
        spec.ranges.latent = l;
    }
    spec.ranges.check().context("the suite's task ranges (--features, --classes, --rows, --latent)")?;
    if let Some(d) = &args.datasets {
        spec.datasets = d.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    }
    if spec.networks == 0 {
        bail!("--networks must be at least 1");
    }
    if let Some(dir) = &args.export_tasks {
        export_tasks(&spec, dir)?;
    }
    let bar = progress_bar(args.quiet);
    bar.set_length((spec.generated + spec.datasets.len()) as u64);
    let report = run_suite(&ckpt.rule, &ckpt.meta, &spec, |t| {
        bar.set_message(match t {
            Ok(t) => t.name.clone(),
            Err(s) => format!("skipped {}", s.name),
        });
        bar.inc(1);
    })
    .with_context(|| format!("running the suite on the rule of {}", args.run.display()))?;
    bar.finish_and_clear();
    write_files(&report, &csv_path, &json_path)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        write_report(&mut out, &report, &args.run)?;
    }
    Ok(())
}

/// Writes the held-out generated tasks of `spec` into `dir` as CSV files.
fn export_tasks(spec: &SuiteSpec, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for d in held_out_datasets(spec) {
        let header: Vec<&str> = d.feature_names.iter().map(String::as_str).chain(["label"]).collect();
        let rows =
            d.x.iter().zip(&d.y).map(|(x, &y)| {
                x.iter().map(|v| v.to_string()).chain([d.class_names[y].clone()]).collect::<Vec<String>>()
            });
        write_csv(&dir.join(format!("{}.csv", d.name)), Some(&header), rows)?;
    }
    Ok(())
}

fn write_files(report: &SuiteReport, csv_path: &Path, json_path: &Path) -> Result<()> {
    write_csv(csv_path, None, report.rows().iter().chain(&report.mean))?;
    write_atomic(json_path, serde_json::to_string_pretty(report)?.as_bytes())?;
    Ok(())
}

fn write_row(out: &mut impl Write, r: &SuiteRow) -> std::io::Result<()> {
    let shape = if r.features > 0 { format!("{}x{}", r.features, r.classes) } else { String::new() };
    let seen = if r.seen { "*" } else { "" };
    writeln!(
        out,
        "{:<16}{:<11}{:>8}{:>7}{:>9.4}{:>8.4}{:>8.4}{:>9.4}{:>8.4}{:>8.4}{:>9.4}{:>9.4}{:>9.4}{:>9.4}{:>9.4}",
        format!("{}{seen}", r.task),
        r.kind,
        shape,
        if r.train_rows > 0 { (r.train_rows + r.val_rows).to_string() } else { String::new() },
        r.grown_train,
        r.grown_val,
        r.grown_val_min,
        r.permuted_val,
        r.adam_val,
        r.adam_xavier_val,
        r.backprop_train,
        r.backprop_val,
        r.logistic_val,
        r.grown_train_loss,
        r.backprop_train_loss
    )
}

/// Writes the report: validation accuracy of every task at K, then growth past K.
pub fn write_report(out: &mut impl Write, report: &SuiteReport, run: &Path) -> std::io::Result<()> {
    let steps: Vec<usize> = report.mean.iter().map(|m| m.steps).collect();
    let Some(&k) = steps.first() else {
        return writeln!(out, "no task ran");
    };
    writeln!(
        out,
        "learning suite of {}: {} tasks, {} grown networks each, rule trained for K = {} steps; Adam lr {} from \
         the grown networks' starts ('adam'), {} from Xavier weights ('adam xv'), both chosen on training-stream tasks",
        run.display(),
        report.tasks.len(),
        report.networks,
        report.trained_steps,
        report.adam_lr,
        report.adam_xavier_lr
    )?;
    writeln!(
        out,
        "accuracy after {k} steps: validation unless marked 'tr' or 'train' (* = a dataset the rule was \
         meta-trained on; min = the worst grown network); 'CE': mean cross-entropy on the training split"
    )?;
    writeln!(
        out,
        "{:<16}{:<11}{:>8}{:>7}{:>9}{:>8}{:>8}{:>9}{:>8}{:>8}{:>9}{:>9}{:>9}{:>9}{:>9}",
        "task",
        "kind",
        "f x c",
        "rows",
        "grown tr",
        "grown",
        "min",
        "permuted",
        "adam",
        "adam xv",
        "bp train",
        "backprop",
        "logistic",
        "grown CE",
        "bp CE"
    )?;
    let rows = report.rows();
    for r in rows.iter().chain(&report.mean).filter(|r| r.steps == k) {
        write_row(out, r)?;
    }
    if steps.len() > 1 {
        writeln!(out)?;
        writeln!(out, "growth past K: grown (adam, adam xv) validation accuracy at each step count")?;
        write!(out, "{:<16}", "task")?;
        for s in &steps {
            write!(out, "{s:>26}")?;
        }
        writeln!(out)?;
        for chunk in rows.chunk_by(|a, b| a.task == b.task).chain(std::iter::once(&report.mean[..])) {
            write!(out, "{:<16}", chunk[0].task)?;
            for r in chunk {
                write!(out, "{:>26}", format!("{:.4} ({:.4}, {:.4})", r.grown_val, r.adam_val, r.adam_xavier_val))?;
            }
            writeln!(out)?;
        }
    }
    for s in &report.skipped {
        writeln!(out, "skipped {}: {}", s.name, s.reason)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_horizons;

    #[test]
    fn horizons() {
        assert_eq!(parse_horizons("K,2K,5K", 10).expect("valid"), vec![10, 20, 50]);
        assert_eq!(parse_horizons("30, k, 7", 10).expect("valid"), vec![7, 10, 30]);
        for bad in ["", "0", "x", "2x", "-1"] {
            assert!(parse_horizons(bad, 10).is_err(), "{bad}");
        }
    }
}
