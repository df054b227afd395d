//! `meta-nca bench-actors`: cell-steps per second of the actor simulation (each executor,
//! lockstep and async) on wide synthetic networks, next to the batched reference step on the
//! same network (the floor), with the memory each run adds per cell. Every case runs in its
//! own process so that its peak memory is its own. `--json` prints a [`BenchActorsReport`].

use std::io::Write;
use std::process::Command;

use crate::actors::ExecutorArg;
use anyhow::{Context, Result, bail};

use crate::limit;
use crate::run_dir::Widths;
use meta_nca_sim::synthetic::{SyntheticSpec, time_reference, wide_setup, wide_sizes};
use meta_nca_sim::{AsyncSpec, Executor, Mode, SimSpec};
use serde::{Deserialize, Serialize};

/// Arguments of `meta-nca bench-actors`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Approximate cell counts (networks `[k, k, 10]` with bias cells).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    cells: Vec<usize>,
    /// Grow steps per run.
    #[arg(long, default_value_t = 10, value_parser = crate::at_least_one)]
    steps: usize,
    /// Samples in the (random) grow batch.
    #[arg(long, default_value_t = 8)]
    samples: usize,
    /// Firing fraction (lockstep) and rate (async).
    #[arg(long = "p", value_name = "P", default_value_t = 0.8)]
    fire_fraction: f64,
    /// tokio worker threads.
    #[arg(long, default_value_t = 2, value_parser = crate::at_least_one)]
    workers: usize,
    /// Shards of the shard executor.
    #[arg(long, default_value_t = 8)]
    shards: usize,
    /// Hidden widths of the synthetic rule network, comma-separated ("" = none: a linear rule,
    /// which shows the executors' own cost).
    #[arg(long, default_value = "16", value_name = "W1,W2,..")]
    rule_hidden: Widths,
    /// Async: the rule service runs when this many queries wait...
    #[arg(long, default_value_t = 256, value_parser = crate::at_least_one)]
    batch_rows: usize,
    /// ...or this many microseconds after the oldest one.
    #[arg(long, default_value_t = 200)]
    deadline_us: u64,
    /// Perceive the local error messages too (`backward` and `alignment`): every step then
    /// also runs the top-down message wave.
    #[arg(long)]
    messages: bool,
    /// Leave the task-per-cell executor out above this many cells.
    #[arg(long, default_value_t = usize::MAX)]
    max_task_cells: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Internal: run one case (`floor`, `tasks-lockstep`, ...) in this process; print JSON.
    #[arg(long, hide = true)]
    one: Option<String>,
}

/// One case at one network size: a row of the table. A case runs in its own process, which
/// prints this as JSON for the parent to read.
#[derive(Debug, Serialize, Deserialize)]
pub struct CaseResult {
    /// The case: `floor` (the batched reference step) or `<executor>-<mode>` (the table's
    /// engine column).
    pub case: String,
    /// Cells of the network (`[k, k, 10]` with bias cells).
    pub cells: usize,
    /// Seconds of the run.
    pub seconds: f64,
    /// Cell-steps done (cells × steps).
    pub cell_steps: u64,
    /// Cell-steps per second (the table's "vs floor" is this over the floor's at the same
    /// size, its "vs limit" this over [`BenchActorsReport::limit`]'s `limit`).
    pub rate: f64,
    /// Peak resident memory growth during the run, per cell.
    pub bytes_per_cell: f64,
    /// Mean rows of a rule pass (the floor: every cell in one pass).
    pub mean_batch: f64,
    /// Seconds in the rule's forward passes (the rule service's thread; -1 for the floor,
    /// which has no service). The table's "rule time" is this over `seconds`.
    pub rule_seconds: f64,
    /// Rows the rule service answered (0 for the floor). The table's "rule/limit" is this per
    /// `rule_seconds`, over the limit.
    pub rule_rows: u64,
}

/// What `meta-nca bench-actors` measures (`--json` prints it; the table shows it).
#[derive(Debug, Serialize)]
pub struct BenchActorsReport {
    /// Grow steps per run.
    pub steps: usize,
    /// Samples in the random grow batch.
    pub samples: usize,
    /// Firing fraction (lockstep) and rate (async).
    #[serde(rename = "p")]
    pub fire_fraction: f64,
    /// tokio worker threads.
    pub workers: usize,
    /// Shards of the shard executor.
    pub shards: usize,
    /// Async: the rule service runs at this many waiting queries...
    pub batch_rows: usize,
    /// ...or this many microseconds after the oldest one.
    pub deadline_us: u64,
    /// Whether the cells perceive the local error messages (a message wave every step).
    pub messages: bool,
    /// Bytes of one cell's struct (its state row is on the heap besides).
    pub cell_struct_bytes: usize,
    /// The synthetic rule's layer widths (perception width, hidden widths, state width).
    pub rule_shapes: Vec<usize>,
    /// Rows per second of the rule's shapes on one thread: the bare matrix-product chain (the
    /// limit), the rule's forward pass, and the same on a tape.
    pub limit: limit::Rates,
    /// One per case and size, in the table's order (sizes as asked, each case in turn).
    pub rows: Vec<CaseResult>,
}

fn status_kb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(f64::NAN)
}

const CASES: [&str; 5] = ["floor", "tasks-lockstep", "tasks-async", "shards-lockstep", "shards-async"];

fn synthetic_spec(args: &Args) -> Result<SyntheticSpec> {
    let rule_hidden = args.rule_hidden.0.clone();
    Ok(SyntheticSpec {
        samples: args.samples,
        steps: args.steps,
        fire_fraction: args.fire_fraction,
        rule_hidden,
        seed: 1,
        messages: args.messages,
    })
}

fn run_one(args: &Args, case: &str, cells: usize) -> Result<CaseResult> {
    crate::memory::check_actors(
        cells,
        if case.starts_with("tasks") { ExecutorArg::Tasks } else { ExecutorArg::Shards },
    )?;
    let sizes = wide_sizes(cells);
    let spec = synthetic_spec(args)?;
    let setup = wide_setup(&sizes, &spec)?;
    let n = setup.world.num_cells();
    let before = status_kb("VmRSS:");
    let (seconds, cell_steps, mean_batch, rule_seconds, rule_rows) = if case == "floor" {
        let s = time_reference(&setup)?;
        (s, (n * args.steps) as u64, n as f64, -1.0, 0)
    } else {
        let executor =
            if case.starts_with("tasks") { Executor::Tasks } else { Executor::Shards { shards: args.shards } };
        let mode = if case.ends_with("async") {
            Mode::Async(AsyncSpec {
                fire_fraction: args.fire_fraction,
                max_staleness: 1,
                jitter: 0,
                batch_rows: args.batch_rows,
                deadline: std::time::Duration::from_micros(args.deadline_us),
            })
        } else {
            Mode::Lockstep
        };
        let spec = SimSpec { executor, mode, workers: args.workers, ..SimSpec::default() };
        let out = meta_nca_sim::run(&setup, &spec)?;
        let rule = out.stats.rule;
        (out.stats.seconds, out.stats.cell_steps, rule.mean_batch(), rule.forward_seconds, rule.rows)
    };
    let peak = status_kb("VmHWM:");
    Ok(CaseResult {
        case: case.to_string(),
        cells: n,
        seconds,
        cell_steps,
        rate: cell_steps as f64 / seconds.max(1e-12),
        bytes_per_cell: (peak - before).max(0.0) * 1024.0 / n as f64,
        mean_batch,
        rule_seconds,
        rule_rows,
    })
}

/// Runs `meta-nca bench-actors`.
pub fn run(args: Args) -> Result<()> {
    if let Some(one) = &args.one {
        let (case, cells) = one.split_once(':').context("--one CASE:CELLS")?;
        let cells: usize = cells.parse().context("--one CASE:CELLS")?;
        writeln!(std::io::stdout(), "{}", serde_json::to_string(&run_one(&args, case, cells)?)?)?;
        return Ok(());
    }
    for &cells in &args.cells {
        crate::memory::check_actors(cells, ExecutorArg::Shards)?;
    }
    let exe = std::env::current_exe().context("finding the meta-nca binary")?;
    let spec = synthetic_spec(&args)?;
    let setup = wide_setup(&wide_sizes(args.cells.first().copied().unwrap_or(10_000)), &spec)?;
    let rates = limit::measure(&setup.rule, 2.0);
    let mut report = BenchActorsReport {
        steps: args.steps,
        samples: args.samples,
        fire_fraction: args.fire_fraction,
        workers: args.workers,
        shards: args.shards,
        batch_rows: args.batch_rows,
        deadline_us: args.deadline_us,
        messages: args.messages,
        cell_struct_bytes: std::mem::size_of::<meta_nca_sim::cell::Cell>(),
        rule_shapes: setup.rule.shape.dims(),
        limit: rates,
        rows: Vec::new(),
    };
    if !args.json {
        write_header(&mut std::io::stdout(), &args, &report)?;
    }
    for &cells in &args.cells {
        let mut floor = f64::NAN;
        for case in CASES {
            if case.starts_with("tasks") && cells > args.max_task_cells {
                continue;
            }
            let out = Command::new(&exe)
                .args(["bench-actors", "--one", &format!("{case}:{cells}")])
                .args(["--steps", &args.steps.to_string(), "--samples", &args.samples.to_string()])
                .args(["--p", &args.fire_fraction.to_string(), "--workers", &args.workers.to_string()])
                .args(["--shards", &args.shards.to_string(), "--rule-hidden", &args.rule_hidden.to_string()])
                .args(["--batch-rows", &args.batch_rows.to_string(), "--deadline-us", &args.deadline_us.to_string()])
                .args(args.messages.then_some("--messages"))
                .output()
                .with_context(|| format!("running case {case} at {cells} cells"))?;
            if !out.status.success() {
                bail!("case {case} at {cells} cells failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let r: CaseResult = serde_json::from_slice(&out.stdout).context("reading a case's result")?;
            if case == "floor" {
                floor = r.rate;
            }
            if !args.json {
                write_row(&mut std::io::stdout(), &r, floor, &rates)?;
            }
            report.rows.push(r);
        }
    }
    if args.json {
        writeln!(std::io::stdout(), "{}", serde_json::to_string(&report)?)?;
    }
    Ok(())
}

/// Writes the settings, the limit and the table's header.
fn write_header(out: &mut impl Write, args: &Args, r: &BenchActorsReport) -> std::io::Result<()> {
    writeln!(
        out,
        "networks [k, k, 10] with bias cells; {} steps, p {}, {} random samples; rule hidden [{}]; {} tokio workers, {} shards; rule forward on its own thread",
        r.steps, r.fire_fraction, r.samples, args.rule_hidden, r.workers, r.shards
    )?;
    writeln!(out, "resident state of one cell: {} B (struct) + its state row on the heap", r.cell_struct_bytes)?;
    if r.messages {
        writeln!(out, "perception: self, column, row, activations, feedback, hebbian, backward, alignment")?;
    } else {
        writeln!(
            out,
            "perception: self, column, row, activations, feedback, hebbian (--messages adds backward, alignment)"
        )?;
    }
    writeln!(out, "async: staleness <= 1, no jitter, rule passes at {} rows or {} us", r.batch_rows, r.deadline_us)?;
    writeln!(
        out,
        "floor = the batched reference step without tape (perception + rule for every firing cell, in place), on every core from {} firing cells on",
        meta_nca_rule::reference::PARALLEL_CELLS
    )?;
    writeln!(
        out,
        "memory = peak RSS growth during the run / cells; rule time = share of the run in the rule's forward passes"
    )?;
    let rates = &r.limit;
    writeln!(
        out,
        "rule shapes {:?}, {}-row chunks, 1 thread, rows/s: bare matrix-product chain (the limit) {}; rule forward pass without tape {} ({:.2} of the limit); the same MLP through dfdx's ops on a tape {} ({:.2})",
        r.rule_shapes,
        limit::CHUNK,
        limit::millions(rates.limit),
        limit::millions(rates.forward),
        rates.forward / rates.limit,
        limit::millions(rates.taped),
        rates.taped / rates.limit,
    )?;
    writeln!(
        out,
        "vs limit = cell-steps/s over the limit's rows/s (a cell-step asks at most one rule row); rule/limit = rule service rows per second of forward pass over the limit"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:>9}  {:<16}{:>14}{:>10}{:>10}{:>9}{:>12}{:>12}{:>12}",
        "cells", "engine", "cell-steps/s", "vs floor", "vs limit", "B/cell", "rule batch", "rule time", "rule/limit"
    )?;
    Ok(())
}

/// Writes one row of the table; `floor` is the floor's rate at the same size.
fn write_row(out: &mut impl Write, r: &CaseResult, floor: f64, rates: &limit::Rates) -> std::io::Result<()> {
    let service = r.rule_seconds >= 0.0;
    writeln!(
        out,
        "{:>9}  {:<16}{:>14.0}{:>10.2}{:>10.3}{:>9.0}{:>12.1}{:>12}{:>12}",
        r.cells,
        r.case,
        r.rate,
        r.rate / floor,
        r.rate / rates.limit,
        r.bytes_per_cell,
        r.mean_batch,
        if service { format!("{:.0}%", 100.0 * r.rule_seconds / r.seconds) } else { "-".to_string() },
        if service {
            format!("{:.2}", r.rule_rows as f64 / r.rule_seconds.max(1e-12) / rates.limit)
        } else {
            "-".to_string()
        }
    )?;
    Ok(())
}
