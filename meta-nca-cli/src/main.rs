//! `meta-nca`: meta-learn a local rule that grows neural networks weight by weight.
//!
//! A thin layer over `meta-nca-rule`: argument parsing, progress, files and tables.
//!
//! # Layout
//! Listed bottom-up: a module uses only modules listed before it (there are no import cycles).
//! - `main.rs`: the command line and logging set-up.
//! - [`run_dir`]: a run folder (resolved config, metrics, checkpoints) and the grow flags.
//! - [`limit`]: the machine's limit for rule passes (a bare chain of matrix products), for the benches.
//! - [`trace`]: the JSON-lines cell trace that `--trace-json` writes.
//! - [`actors`]: the actor engine's flags, a run's rule and data, and a grow with the actor simulation.
//! - [`inspect`]: `meta-nca inspect`, a summary of a cell trace.
//! - [`memory`]: the memory a config needs, checked before it starts.
//! - [`robustness_config`]: a robustness experiment (its [`robustness_config::Damage`]) from a
//!   TOML file and flags.
//! - [`plot`]: `meta-nca plot`, pictures of runs, grows, robustness curves and the suite.
//! - [`eval`], [`grow`], [`bench`], [`bench_actors`], [`check`], [`robustness`], [`continual`],
//!   [`train`], [`suite`], [`sweep`]: one module per subcommand of that name.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod actors;
mod bench;
mod bench_actors;
mod check;
mod continual;
mod eval;
mod grow;
mod inspect;
mod limit;
mod memory;
mod plot;
mod robustness;
mod robustness_config;
mod run_dir;
mod suite;
mod sweep;
mod trace;
mod train;

/// Meta-learn a local rule network that grows a working neural network weight by weight.
#[derive(Debug, Parser)]
#[command(name = "meta-nca", version, about, long_about = None)]
struct Cli {
    /// More logging on stderr (-v: info, -vv: debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Threads for dfdx's matrix products (1 is fastest at these sizes).
    #[arg(long, default_value_t = 1, global = true)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Meta-train a rule; writes config, metrics.csv and checkpoints into the run folder.
    Train(train::Args),
    /// Grow many fresh networks with a trained rule and compare with backprop.
    Eval(eval::Args),
    /// Grow one network with a trained rule and save every step as JSON.
    Grow(grow::Args),
    /// Time meta-epochs of standard configurations and print a table.
    Bench(bench::Args),
    /// Train one config under many seeds; tabulate validation accuracy across seeds.
    Sweep(sweep::Args),
    /// Remove connections from grown networks, keep growing, compare with pruned backprop.
    Robustness(robustness::Args),
    /// Cell-steps per second of the actor simulation next to the batched reference step.
    BenchActors(bench_actors::Args),
    /// Compare the actor simulation with the reference path: lockstep per step, async over many runs.
    Check(check::Args),
    /// Summarise a cell trace written by `--trace-json`: updates per cell, mean |dw|, staleness.
    Inspect(inspect::Args),
    /// The learning suite: held-out generated tasks and the embedded datasets, grown by a run's
    /// rule next to backprop, equal-step Adam and logistic regression; writes suite.csv/json.
    Suite(suite::Args),
    /// Keep learning: grow through a schedule whose data changes (classes arrive with new output
    /// neurons, inputs drift), next to backprop fine-tuned per phase and backprop on all data.
    Continual(continual::Args),
    /// Draw pictures: training curves of a run, weight GIFs of a grown network, robustness curves,
    /// the learning suite.
    Plot(plot::Args),
}

/// A flag value that must be a whole number >= 1 (clap `value_parser`).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number ({e})")),
    }
}

/// A flag value that must be a finite number > 0 (clap `value_parser`).
fn positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        Ok(v) => Err(format!("must be positive and finite, got {v}")),
        Err(e) => Err(format!("not a number ({e})")),
    }
}

/// Logs to stderr: `-v`/`-vv` pick the default filter, `RUST_LOG` overrides it (an invalid
/// `RUST_LOG` is reported, not silently ignored); colours only on a terminal.
fn init_logging(verbose: u8) {
    use std::io::IsTerminal;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => tracing_subscriber::EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("warning: ignoring RUST_LOG={spec:?} ({e}); using {default}");
            tracing_subscriber::EnvFilter::new(default)
        }),
        _ => tracing_subscriber::EnvFilter::new(default),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// The status of a program killed by SIGPIPE (128 + 13), what a shell reports for a writer
/// whose reader stopped early.
const BROKEN_PIPE_STATUS: u8 = 141;

/// Whether `e` comes from writing to a closed pipe (`meta-nca inspect trace.jsonl | head`):
/// the commands write their results with `writeln!`, so a reader that stopped early reaches
/// `main` as an [`std::io::ErrorKind::BrokenPipe`] somewhere in the error chain.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // dfdx's CPU matmul runs on rayon's global pool; pin it before the first tensor op.
    let _ = rayon::ThreadPoolBuilder::new().num_threads(cli.threads.max(1)).build_global();
    let result = match cli.command {
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Grow(args) => grow::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Robustness(args) => robustness::run(args),
        Command::BenchActors(args) => bench_actors::run(args),
        Command::Check(args) => check::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Suite(args) => suite::run(args),
        Command::Continual(args) => continual::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::from(BROKEN_PIPE_STATUS),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
