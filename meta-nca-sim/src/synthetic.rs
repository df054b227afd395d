//! Synthetic problems for benchmarks: a wide network on random data with a fresh rule, and
//! the batched reference step on it (the floor the actors are measured against).

use std::sync::Arc;
use std::time::Instant;

use dfdx::prelude::*;
use meta_nca_rule::config::{Architectures, Config};
use meta_nca_rule::episode::{Episode, EpisodeSpec};
use meta_nca_rule::init::{HiddenCode, WeightInit};
use meta_nca_rule::perception::Group;
use meta_nca_rule::reference::Grower;
use meta_nca_rule::rule::RuleNet;
use meta_nca_rule::task_data::TaskData;
use meta_nca_rule::topology::Topology;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Result;
use crate::setup::Setup;

/// Layer sizes `[k, k, 10]` with bias cells whose cell count is closest to `cells`.
pub fn wide_sizes(cells: usize) -> Vec<usize> {
    let count = |k: usize| (k + 1) * k + (k + 1) * 10;
    let mut k = 1;
    while count(k + 1) <= cells {
        k += 1;
    }
    if count(k + 1) - cells < cells.saturating_sub(count(k)) {
        k += 1;
    }
    vec![k, k, 10]
}

/// What a synthetic problem looks like besides its layer sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    /// Samples in the random grow batch.
    pub samples: usize,
    /// Grow steps (firing draws).
    pub steps: usize,
    /// Firing fraction.
    pub fire_fraction: f64,
    /// Hidden widths of the fresh rule network.
    pub rule_hidden: Vec<usize>,
    /// Seed of data, rule, starting weights and firing.
    pub seed: u64,
    /// Also the local error messages (`backward` and `alignment`, with feedback weights): the
    /// top-down message wave runs every step.
    pub messages: bool,
}

/// A network of layer sizes `sizes` (with bias cells) on random samples, the project's
/// default perception (`self, column, row, activations, feedback, hebbian`, plus `backward`
/// and `alignment` with [`SyntheticSpec::messages`]), a fresh rule, Xavier starting weights
/// and the firing draws of every step.
pub fn wide_setup(sizes: &[usize], spec: &SyntheticSpec) -> Result<Setup> {
    let SyntheticSpec { samples, steps, fire_fraction, seed, .. } = *spec;
    let mut rng = StdRng::seed_from_u64(seed);
    let features = sizes[0];
    let classes = sizes[sizes.len() - 1];
    let x: Vec<f64> = (0..samples * features).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let y: Vec<usize> = (0..samples).map(|b| b % classes).collect();
    let data = Arc::new(TaskData { x, y, features, classes });
    let topology = Topology::dense(sizes, true)?;
    let max_cells = (0..topology.num_layers()).map(|l| topology.layer(l).cells.len()).max().unwrap_or(1);
    let mut code = HiddenCode::for_family(topology.num_layers(), max_cells, true, 2);
    code.feedback = spec.messages;
    let mut cfg = Config::default();
    cfg.rule.perception =
        vec![Group::SelfState, Group::Column, Group::Row, Group::Activations, Group::Feedback, Group::Hebbian];
    if spec.messages {
        cfg.rule.perception.extend([Group::Backward, Group::Alignment]);
    }
    cfg.rule.hidden = spec.rule_hidden.clone();
    cfg.rule.output_scale = 0.5;
    cfg.rule.last_init = 0.01;
    let (spec, shape) = cfg.rule_shape(&code)?;
    let rule = RuleNet::new(&Cpu::default(), shape, &mut rng);
    let archs = Architectures::List(vec![sizes.to_vec()]);
    let ep = EpisodeSpec {
        archs: &archs,
        networks: 1,
        bias: true,
        weight_init: WeightInit::Xavier,
        code,
        steps,
        fire_fraction,
    };
    let episode = Episode::draw_for(vec![topology], &ep, &mut rng)?;
    let topology = episode.topologies[0].clone();
    Setup::from_episode(rule, spec, topology, data, episode)
}

/// Seconds the batched reference step without tape (`Grower::step_plain`) takes for every step of `setup`.
pub fn time_reference(setup: &Setup) -> Result<f64> {
    let dev = Cpu::default();
    let world = &setup.world;
    let grower = Grower::new(&dev, (*world.batch).clone(), world.ctx.spec.clone(), world.data.clone())?;
    let start = Instant::now();
    let mut state = setup.state0.clone();
    for fire in &setup.fires {
        grower.step_plain(&setup.rule, &mut state, fire);
    }
    std::hint::black_box(state);
    Ok(start.elapsed().as_secs_f64())
}
