//! What to grow: a network with its starting state, the firing draws of every step and the
//! rule; drawn from a seed exactly as the reference path draws it, and the reference path's
//! own states on it (what lockstep mode must reproduce).

use std::sync::Arc;

use meta_nca_rule::episode::{Episode, EpisodeSpec};
use meta_nca_rule::init::{HiddenCode, WeightInit};
use meta_nca_rule::perception::PerceptionSpec;
use meta_nca_rule::random::{Stream, rng_for};
use meta_nca_rule::reference::Grower;
use meta_nca_rule::rule::RuleNet;
use meta_nca_rule::task_data::TaskData;
use meta_nca_rule::topology::Topology;

use crate::world::{Ctx, World};
use crate::{Error, Result};

/// What to grow: a network, its starting state, the firing draws, the rule.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The network and shared context.
    pub world: Arc<World>,
    /// Starting state rows `[cells, 1+d]`.
    pub state0: Vec<f64>,
    /// Lockstep firing flags per step (their count is the number of steps).
    pub fires: Vec<Vec<bool>>,
    /// The rule.
    pub rule: RuleNet,
}

impl Setup {
    /// The setup of the episode `meta_nca_rule::eval::grow_one` grows: the same seed gives
    /// the same starting state and firing draws as the reference path.
    #[allow(clippy::too_many_arguments)]
    pub fn grow_episode(
        rule: RuleNet,
        spec: PerceptionSpec,
        code: HiddenCode,
        weight_init: WeightInit,
        topology: Topology,
        data: Arc<TaskData>,
        steps: usize,
        fire_fraction: f64,
        seed: u64,
    ) -> Result<Self> {
        let archs = meta_nca_rule::config::Architectures::List(vec![topology.sizes().to_vec()]);
        let ep_spec =
            EpisodeSpec { archs: &archs, networks: 1, bias: topology.bias(), weight_init, code, steps, fire_fraction };
        let mut rng = rng_for(seed, Stream::Grow, 0);
        let episode = Episode::draw_for(vec![topology], &ep_spec, &mut rng)?;
        // The episode's network: drawing it may have given it feedback weights.
        let topology = episode.topologies[0].clone();
        Self::from_episode(rule, spec, topology, data, episode)
    }

    /// The setup of a drawn single-network episode; `topology` must be the episode's network
    /// (the one its starting state was drawn for, feedback weights included).
    pub fn from_episode(
        rule: RuleNet,
        spec: PerceptionSpec,
        topology: Topology,
        data: Arc<TaskData>,
        episode: Episode,
    ) -> Result<Self> {
        if rule.shape.input != spec.width() || rule.shape.output != spec.state_width() {
            return Err(Error::Config {
                key: "rule",
                message: format!(
                    "rule maps {} -> {} but the perception has {} features and state width {}",
                    rule.shape.input,
                    rule.shape.output,
                    spec.width(),
                    spec.state_width()
                ),
            });
        }
        if episode.topologies.first().is_some_and(|t| *t != topology) {
            return Err(Error::Config {
                key: "topology",
                message: "the network differs from the episode's (drawing the episode may have given it \
                          feedback weights: use the episode's)"
                    .into(),
            });
        }
        let ctx = Ctx {
            spec: spec.clone(),
            needs: Default::default(),
            samples: 0,
            rounds: episode.fires.len() as u32,
            max_staleness: 0,
            async_mode: false,
            fire_fraction: 0.0,
            record: false,
        };
        let world = World::new(topology, data, spec, ctx)?;
        Ok(Self { world: Arc::new(world), state0: episode.state0, fires: episode.fires, rule })
    }
}

impl Setup {
    /// The reference path ([`Grower::step`]) on this setup: the state after every step,
    /// `[0]` being the start. What lockstep mode must reproduce.
    pub fn reference_states(&self) -> Result<Vec<Vec<f64>>> {
        let dev = dfdx::prelude::Cpu::default();
        let world = &self.world;
        let batch = (*world.batch).clone();
        let grower = Grower::new(&dev, batch, world.ctx.spec.clone(), world.data.clone())?;
        let mut states = vec![self.state0.clone()];
        for fire in &self.fires {
            let last = states.last().cloned().unwrap_or_default();
            states.push(grower.step(&self.rule, grower.state_tensor(last), fire).as_vec());
        }
        Ok(states)
    }
}
