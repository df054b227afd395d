//! `meta-nca bench`: median milliseconds per meta-epoch (forward, backward and Adam) of
//! standard configurations, measured side by side in one run.

use std::time::Instant;

use anyhow::Result;

use crate::limit;
use meta_nca_rule::config::{Config, FamilyConfig};
use meta_nca_rule::experiment::Experiment;
use meta_nca_rule::perception::Group;
use meta_nca_rule::train::Trainer;

/// Arguments of `meta-nca bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Timed meta-epochs per configuration (after 10 untimed ones).
    #[arg(long, default_value_t = 200, value_parser = crate::at_least_one)]
    epochs: usize,
    /// Override a config value in every configuration, e.g. `--set rule.hidden=[16]`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Only the configurations whose name contains this text.
    #[arg(long)]
    only: Option<String>,
}

fn cases() -> Vec<(&'static str, Config)> {
    let base = Config::default();
    let with = |f: &dyn Fn(&mut Config)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };
    vec![
        ("prototype README: [4,3], 1 net", base.clone()),
        ("3 layers hidden 5: [4,5,5,3], 1 net", with(&|c| c.task.hidden = vec![vec![5, 5]])),
        (
            "[4,5,5,3], 32 nets",
            with(&|c| {
                c.task.hidden = vec![vec![5, 5]];
                c.train.num_models = 32;
            }),
        ),
        (
            "sampled 1-5 layers x hidden 2/5/10, 8 nets",
            with(&|c| {
                c.task.family = Some(FamilyConfig { depths: vec![1, 2, 3, 4, 5], widths: vec![2, 5, 10] });
                c.train.num_models = 8;
            }),
        ),
        ("[4,5,5,3], 8 nets, default groups", messages(&base, &[])),
        ("[4,5,5,3], 8 nets, + backward", messages(&base, &[Group::Backward])),
        ("[4,5,5,3], 8 nets, + alignment", messages(&base, &[Group::Alignment])),
        ("[4,5,5,3], 8 nets, + backward + alignment", messages(&base, &[Group::Backward, Group::Alignment])),
    ]
}

/// `[4,5,5,3]`, 8 networks, the default perception plus `extra`: what the local error messages
/// cost, next to the same config without them.
fn messages(base: &Config, extra: &[Group]) -> Config {
    let mut c = base.clone();
    c.task.hidden = vec![vec![5, 5]];
    c.train.num_models = 8;
    c.rule.perception.extend_from_slice(extra);
    c
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// Runs `meta-nca bench`.
pub fn run(args: Args) -> Result<()> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "machine: {} ({cores} cores available), dfdx matmul threads: {}",
        cpu_model(),
        rayon::current_num_threads()
    );
    println!(
        "each row: 10 untimed meta-epochs, then {} timed; K = 10, p = 0.8, full Iris train set (120 rows)",
        args.epochs
    );
    let cases: Vec<_> =
        cases().into_iter().filter(|(name, _)| args.only.as_deref().is_none_or(|o| name.contains(o))).collect();
    if !cases.is_empty() {
        println!();
        println!("{:<44}{:>8}{:>10}{:>10}{:>10}", "configuration", "cells", "median ms", "p10 ms", "p90 ms");
    }
    for (name, mut config) in cases {
        for o in &args.overrides {
            config = config.with_override(o)?;
        }
        let mut trainer = Trainer::new(Experiment::new(config)?)?;
        for _ in 0..10 {
            trainer.meta_epoch()?;
        }
        let mut times = Vec::with_capacity(args.epochs);
        for _ in 0..args.epochs.max(1) {
            let t = Instant::now();
            trainer.meta_epoch()?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let q = |f: f64| times[((times.len() - 1) as f64 * f).round() as usize];
        let cells = cells_of(&trainer);
        println!("{name:<44}{cells:>8}{:>10.3}{:>10.3}{:>10.3}", q(0.5), q(0.1), q(0.9));
    }
    if args.only.as_deref().is_none_or(|o| "grow step rows".contains(o)) {
        grow_step_rows(args.epochs)?;
    }
    if args.only.as_deref().is_none_or(|o| "rule passes".contains(o)) {
        rule_passes(&args.overrides)?;
    }
    Ok(())
}

/// Rows per second of the default configuration's rule (with the `--set` overrides) next to
/// the limit: a bare chain of matrix products of its shapes ([`limit`]).
fn rule_passes(overrides: &[String]) -> Result<()> {
    use meta_nca_rule::rule::RuleNet;
    use meta_nca_rule::topology::Topology;

    let mut config = Config::default();
    for o in overrides {
        config = config.with_override(o)?;
    }
    let topology = Topology::dense(&[4, 3], true)?;
    let code = config.hidden_code((1, topology.num_cells()));
    let (_, shape) = config.rule_shape(&code)?;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let rule = RuleNet::new(&dfdx::prelude::Cpu::default(), shape, &mut rng);
    let rates = limit::measure(&rule, 2.0);
    println!();
    println!(
        "rule passes: shapes {:?} (the default config's rule), {}-row chunks, 1 thread, median of 7",
        rule.shape.dims(),
        limit::CHUNK
    );
    println!("{:<52}{:>12}{:>10}", "what", "rows/s", "of limit");
    for (name, rate) in [
        ("bare matrix-product chain (the limit)", rates.limit),
        ("rule forward pass without tape", rates.forward),
        ("the same MLP through dfdx's ops on a tape", rates.taped),
    ] {
        println!("{name:<52}{:>12}{:>10.2}", limit::millions(rate), rate / rates.limit);
    }
    Ok(())
}

/// Median milliseconds of one grow step (perception, rule, update; no tape) of a `[784, 10]`
/// network on a generated 784-feature task of `rows` rows, on the whole training split or on
/// a minibatch of 128 rows (`grow.batch-size`): the minibatch step costs the same whatever
/// the row count.
fn grow_step_rows(epochs: usize) -> Result<()> {
    use meta_nca_rule::batch::Batch;
    use meta_nca_rule::config::TasksConfig;
    use meta_nca_rule::data::Split;
    use meta_nca_rule::episode::{Stream, draw_rows, rng_for};
    use meta_nca_rule::generate::{Kind, Shape, generate};
    use meta_nca_rule::init::{WeightInit, initial_state};
    use meta_nca_rule::reference::{Grower, TaskData};
    use meta_nca_rule::rule::RuleNet;
    use meta_nca_rule::topology::Topology;

    println!();
    println!("one grow step (no tape) of a [784,10] network on a generated task, 784 features, 10 classes");
    println!("{:<44}{:>8}{:>10}{:>10}{:>10}", "rows seen per step", "cells", "median ms", "p10 ms", "p90 ms");
    let config = Config::default();
    let dev = dfdx::prelude::Cpu::default();
    for rows in [1000, 5000] {
        let mut rng = rng_for(0, Stream::Eval, rows as u64);
        let shape = Shape { features: 784, classes: 10, rows };
        let data = generate(Kind::Teacher, shape, &TasksConfig::default(), "bench", &mut rng).dataset;
        let split = Split::stratified(&data, 0.8, 0)?;
        let n = split.train_y.len();
        let train = std::sync::Arc::new(TaskData { x: split.train_x, y: split.train_y, features: 784, classes: 10 });
        let mut topology = Topology::dense(&[784, 10], true)?;
        let code = config.hidden_code((1, topology.num_cells()));
        let (spec, shape) = config.rule_shape(&code)?;
        let rule = RuleNet::new(&dev, shape, &mut rng);
        let state0 = initial_state(&code, WeightInit::Xavier, &mut topology, &mut rng)?;
        let fire = vec![true; topology.num_cells()];
        let cells = topology.num_cells();
        let grower = Grower::new(&dev, Batch::new(vec![topology]), spec, train)?;
        for batch in [None, Some(128)] {
            let mut times = Vec::new();
            for _ in 0..epochs.clamp(3, 20) {
                let picked = draw_rows(batch, n, 1, &mut rng);
                let state = grower.state_tensor(state0.clone());
                let t = Instant::now();
                let _ = grower.step_on(&rule, state, &fire, picked.first().map(Vec::as_slice));
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            let q = |f: f64| times[((times.len() - 1) as f64 * f).round() as usize];
            let name = match batch {
                None => format!("all {n} training rows"),
                Some(b) => format!("batch-size {b} of {n} training rows"),
            };
            println!("{name:<44}{cells:>8}{:>10.3}{:>10.3}{:>10.3}", q(0.5), q(0.1), q(0.9));
        }
    }
    Ok(())
}

fn cells_of(trainer: &Trainer) -> String {
    let c = trainer.config();
    if c.task.family.is_some() {
        "varies".to_string()
    } else {
        let bias = usize::from(c.task.bias);
        let task = trainer.exp.primary();
        let mut sizes = vec![task.train.features];
        sizes.extend(&c.task.hidden[0]);
        sizes.push(task.train.classes);
        let per_net: usize = sizes.windows(2).map(|w| (w[0] + bias) * w[1]).sum();
        (per_net * c.train.num_models).to_string()
    }
}
