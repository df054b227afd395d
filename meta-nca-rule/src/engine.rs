//! Where a grow runs. An [`Engine`] steps networks with given firing flags and changes their
//! topology between steps; the batched reference path is one ([`ReferenceEngine`]), the actor
//! simulation of `meta-nca-sim` another. Both carry the state over a topology change the same
//! way ([`crate::init::carry_plan`], new cells drawn from the caller's rng network by
//! network), so an experiment written against [`Engine`] gives the same numbers on either.

use std::sync::Arc;

use dfdx::prelude::*;
use rand::rngs::StdRng;

use crate::Result;
use crate::batch::Batch;
use crate::fused::values;
use crate::init::{HiddenCode, WeightInit};
use crate::perception::PerceptionSpec;
use crate::reference::Grower;
use crate::rule::RuleNet;
use crate::task_data::TaskData;
use crate::topology::Topology;

/// Networks being grown by a rule, one step at a time.
pub trait Engine {
    /// The networks as they are now.
    fn topologies(&self) -> &[Topology];
    /// State rows `[cells, 1+d]` of every network, networks in order.
    fn state(&mut self) -> Result<Vec<f64>>;
    /// One step; `fire` flags every cell, networks in order.
    fn step(&mut self, fire: &[bool]) -> Result<()>;
    /// Continues on `topologies` (one per network): surviving cells keep their rows, removed
    /// ones drop out, new ones start as [`crate::init::carry_plan`] draws them from `rng`,
    /// network by network. An error changes nothing.
    fn reshape(
        &mut self,
        topologies: Vec<Topology>,
        code: &HiddenCode,
        init: WeightInit,
        rng: &mut StdRng,
    ) -> Result<()> {
        let data = self.data().clone();
        self.reshape_on(topologies, data, code, init, rng)
    }

    /// [`Self::reshape`], and every later step sees `data` (a new phase of a changing task);
    /// `data` must fit the changed networks. An error changes nothing.
    fn reshape_on(
        &mut self,
        topologies: Vec<Topology>,
        data: Arc<TaskData>,
        code: &HiddenCode,
        init: WeightInit,
        rng: &mut StdRng,
    ) -> Result<()>;

    /// The data the steps see.
    fn data(&self) -> &Arc<TaskData>;
}

/// Starts engines of one kind on given networks and states.
pub trait EngineKind {
    /// Its name, as printed.
    fn name(&self) -> String;
    /// Networks `topologies` in state `state` (rows of every network, in order), grown by
    /// `rule` with perception `spec` on `data`.
    fn start(
        &self,
        rule: &RuleNet,
        spec: &PerceptionSpec,
        data: &Arc<TaskData>,
        topologies: Vec<Topology>,
        state: Vec<f64>,
    ) -> Result<Box<dyn Engine>>;
}

/// The batched reference path ([`Grower`]) as an [`Engine`], without a tape.
pub struct ReferenceEngine {
    grower: Grower,
    rule: RuleNet,
    state: Vec<f64>,
}

impl Engine for ReferenceEngine {
    fn topologies(&self) -> &[Topology] {
        self.grower.batch().topologies()
    }

    fn state(&mut self) -> Result<Vec<f64>> {
        Ok(self.state.clone())
    }

    fn step(&mut self, fire: &[bool]) -> Result<()> {
        self.grower.step_plain(&self.rule, &mut self.state, fire);
        Ok(())
    }

    fn reshape_on(
        &mut self,
        topologies: Vec<Topology>,
        data: Arc<TaskData>,
        code: &HiddenCode,
        init: WeightInit,
        rng: &mut StdRng,
    ) -> Result<()> {
        let state = self.grower.state_tensor(self.state.clone());
        let (grower, state) = self.grower.reshape_on(state, topologies, data, code, init, rng)?;
        self.state = values(&state);
        self.grower = grower;
        Ok(())
    }

    fn data(&self) -> &Arc<TaskData> {
        self.grower.data_arc()
    }
}

/// Starts [`ReferenceEngine`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReferenceKind;

impl EngineKind for ReferenceKind {
    fn name(&self) -> String {
        "reference".into()
    }

    fn start(
        &self,
        rule: &RuleNet,
        spec: &PerceptionSpec,
        data: &Arc<TaskData>,
        topologies: Vec<Topology>,
        state: Vec<f64>,
    ) -> Result<Box<dyn Engine>> {
        let grower = Grower::new(&Cpu::default(), Batch::new(topologies), spec.clone(), data.clone())?;
        let rows = grower.batch().num_cells() * spec.state_width();
        if state.len() != rows {
            return Err(crate::Error::Config {
                key: "state".into(),
                message: format!("{} values for {rows} state entries", state.len()),
            });
        }
        Ok(Box::new(ReferenceEngine { grower, rule: rule.clone(), state }))
    }
}
