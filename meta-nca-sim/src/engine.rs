//! The actor simulation as a [`meta_nca_rule::engine::Engine`]: one lockstep [`Simulation`]
//! per network, all on one tokio runtime and one rule service (the networks are stepped one
//! after another), so that an experiment written against the engine trait (the robustness
//! experiments) runs on the actors exactly as on the reference path.

use std::sync::Arc;

use meta_nca_rule::engine::{Engine, EngineKind};
use meta_nca_rule::episode::Episode;
use meta_nca_rule::init::{HiddenCode, WeightInit};
use meta_nca_rule::perception::PerceptionSpec;
use meta_nca_rule::rule::RuleNet;
use meta_nca_rule::task_data::TaskData;
use meta_nca_rule::topology::Topology;
use rand::rngs::StdRng;

use crate::host::Host;
use crate::setup::Setup;
use crate::simulation::{Mode, SimSpec, Simulation};

/// Starts actor simulations (lockstep; `spec` chooses the executor and workers).
#[derive(Debug, Clone)]
pub struct ActorKind {
    /// How each network's simulation runs; its mode must be lockstep.
    pub spec: SimSpec,
}

/// Networks grown by actor simulations, one per network, on one runtime and rule service.
pub struct ActorEngine {
    /// Declared before `_host`: the simulations stop before the host that started the runtime
    /// and the rule service lets go of them (and joins the service).
    sims: Vec<Simulation>,
    _host: Host,
    topologies: Vec<Topology>,
    data: Arc<TaskData>,
}

/// A simulation error as the rule library's error.
fn lift(engine: &str, e: crate::Error) -> meta_nca_rule::Error {
    match e {
        crate::Error::Rule(e) => e,
        e => meta_nca_rule::Error::Engine { engine: engine.into(), message: e.to_string() },
    }
}

impl EngineKind for ActorKind {
    fn name(&self) -> String {
        match self.spec.executor {
            crate::Executor::Tasks => "actors (task per cell)".into(),
            crate::Executor::Shards { shards } => format!("actors ({shards} shards)"),
        }
    }

    fn start(
        &self,
        rule: &RuleNet,
        spec: &PerceptionSpec,
        data: &Arc<TaskData>,
        topologies: Vec<Topology>,
        state: Vec<f64>,
    ) -> meta_nca_rule::Result<Box<dyn Engine>> {
        if self.spec.mode != Mode::Lockstep {
            let message = "topology changes need lockstep mode".into();
            return Err(meta_nca_rule::Error::Engine { engine: self.name(), message });
        }
        let width = spec.state_width();
        let total: usize = topologies.iter().map(Topology::num_cells).sum();
        if state.len() != total * width {
            return Err(meta_nca_rule::Error::Config {
                key: "state".into(),
                message: format!("{} values for {} cells of width {width}", state.len(), total),
            });
        }
        let lift = |e| lift(&self.name(), e);
        self.spec.validate().map_err(lift)?;
        let host = Host::new(rule, self.spec.workers, self.spec.batching()).map_err(lift)?;
        let mut sims = Vec::with_capacity(topologies.len());
        let mut rows = state.chunks_exact(width.max(1));
        for t in &topologies {
            let state0: Vec<f64> = rows.by_ref().take(t.num_cells()).flatten().copied().collect();
            let episode = Episode { topologies: vec![t.clone()], state0, fires: Vec::new() };
            let setup =
                Setup::from_episode(rule.clone(), spec.clone(), t.clone(), data.clone(), episode).map_err(lift)?;
            sims.push(Simulation::start_on(&setup, &self.spec, host.share()).map_err(lift)?);
        }
        Ok(Box::new(ActorEngine { sims, _host: host, topologies, data: data.clone() }))
    }
}

impl Engine for ActorEngine {
    fn topologies(&self) -> &[Topology] {
        &self.topologies
    }

    fn state(&mut self) -> meta_nca_rule::Result<Vec<f64>> {
        let mut out = Vec::new();
        for sim in &mut self.sims {
            out.extend(sim.snapshot().map_err(|e| lift("actors", e))?.state);
        }
        Ok(out)
    }

    fn step(&mut self, fire: &[bool]) -> meta_nca_rule::Result<()> {
        let total: usize = self.topologies.iter().map(Topology::num_cells).sum();
        if fire.len() != total {
            return Err(meta_nca_rule::Error::Config {
                key: "fire".into(),
                message: format!("{} firing flags for {total} cells", fire.len()),
            });
        }
        let mut at = 0;
        for sim in &mut self.sims {
            let n = sim.topology().num_cells();
            sim.step(&fire[at..at + n]).map_err(|e| lift("actors", e))?;
            at += n;
        }
        Ok(())
    }

    fn reshape_on(
        &mut self,
        topologies: Vec<Topology>,
        data: Arc<TaskData>,
        code: &HiddenCode,
        init: WeightInit,
        rng: &mut StdRng,
    ) -> meta_nca_rule::Result<()> {
        if topologies.len() != self.sims.len() {
            return Err(meta_nca_rule::Error::Topology(format!(
                "a reshape needs {} networks, got {}",
                self.sims.len(),
                topologies.len()
            )));
        }
        // Network by network, drawing new cells from `rng` in the reference path's order. A
        // refused change (an encoding overflow, networks that do not fit the data) would stop
        // this midway, so every network's change is tried first (on a copy of the rng: whether
        // it fits does not depend on the draws): an error changes nothing.
        let mut probe = rng.clone();
        for (old, new) in self.topologies.iter().zip(&topologies) {
            meta_nca_rule::init::carry_plan(code, init, old, new, &mut probe)?;
            let sizes = new.sizes();
            if sizes[0] != data.features || sizes[sizes.len() - 1] != data.classes {
                return Err(meta_nca_rule::Error::Topology(format!(
                    "a network of sizes {sizes:?} does not fit data with {} features and {} classes",
                    data.features, data.classes
                )));
            }
        }
        for (sim, t) in self.sims.iter_mut().zip(&topologies) {
            sim.reshape_on(t.clone(), data.clone(), code, init, rng).map_err(|e| lift("actors", e))?;
        }
        self.topologies = topologies;
        self.data = data;
        Ok(())
    }

    fn data(&self) -> &Arc<TaskData> {
        &self.data
    }
}
