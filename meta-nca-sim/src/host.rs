//! What simulations run on: a tokio runtime and a rule service. A [`Simulation`] starts its own;
//! a batch of lockstep simulations stepped one after another (the engine's networks) can
//! share one, since each step announces its rows and waits for them before the next begins.
//!
//! [`Simulation`]: crate::Simulation

use std::sync::Arc;
use std::thread::JoinHandle;

use meta_nca_rule::rule::RuleNet;
use tokio::runtime::Runtime;

use crate::rule_service::{Batching, RuleHandle, RuleStats};
use crate::{Error, Result};

/// A tokio runtime and a handle to the rule service whose answers it completes. The host that
/// started the service joins it when it stops; hosts made by [`Host::share`] only let go.
pub(crate) struct Host {
    /// `None` once stopped.
    runtime: Option<Arc<Runtime>>,
    rule: Option<RuleHandle>,
    /// The rule service's thread (the starting host only).
    service: Option<JoinHandle<RuleStats>>,
}

impl Host {
    /// A runtime of `workers` worker threads and a rule service for `rule` batching as
    /// `batching` says.
    pub(crate) fn new(rule: &RuleNet, workers: usize, batching: Batching) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .enable_time()
            .build()
            .map_err(Error::Runtime)?;
        let (rule, service) =
            RuleHandle::spawn(rule.clone(), batching, runtime.handle().clone()).map_err(Error::Runtime)?;
        Ok(Self { runtime: Some(Arc::new(runtime)), rule: Some(rule), service: Some(service) })
    }

    /// The same runtime and rule service, for another simulation.
    pub(crate) fn share(&self) -> Self {
        Self { runtime: self.runtime.clone(), rule: self.rule.clone(), service: None }
    }

    /// The runtime (`None` once stopped).
    pub(crate) fn runtime(&self) -> Option<&Runtime> {
        self.runtime.as_deref()
    }

    /// A handle to the rule service (`None` once stopped).
    pub(crate) fn rule(&self) -> Option<&RuleHandle> {
        self.rule.as_ref()
    }

    /// Lets go of the runtime (the last host drops it, and whatever is left on it goes, so no
    /// rule handle outlives it) and of the rule service, which ends with its last handle; the
    /// starting host then joins it for its counts (a shared host reports none).
    pub(crate) fn stop(&mut self) -> Result<RuleStats> {
        drop(self.rule.take());
        drop(self.runtime.take());
        match self.service.take() {
            Some(service) => service
                .join()
                .map_err(|_| Error::ActorFailed { actor: "rule service".into(), message: "panicked".into() }),
            None => Ok(RuleStats::default()),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
