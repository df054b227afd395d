//! Probes: the fixed probe networks grown with the rule as it is at a meta-epoch and scored,
//! which pick the run's best rule; a probe is a job that may run on another thread.

use crate::Result;
use crate::config::Config;
use crate::eval::{EvalSpec, grow_nets, score_nets};
use crate::experiment::TaskSource;
use crate::init::HiddenCode;
use crate::perception::PerceptionSpec;
use crate::random::Stream;
use crate::rule::RuleNet;

use super::Trainer;

/// What a probe of the current rule measured.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ProbeResult {
    /// Meta-epochs completed when probed.
    pub epoch: usize,
    /// Mean training loss of the probe networks.
    pub train_loss: f64,
    /// Mean training accuracy.
    pub train_acc: f64,
    /// Mean validation accuracy (reported, never used to pick).
    pub val_acc: f64,
    /// Whether this is the lowest probe loss so far.
    pub best: bool,
}

/// A probe of the rule as it was at one meta-epoch: everything needed to grow and score the
/// probe networks, owned, so it can run on another thread.
#[derive(Debug, Clone)]
pub struct ProbeJob {
    epoch: usize,
    rule: RuleNet,
    spec: PerceptionSpec,
    code: HiddenCode,
    config: Config,
    task: TaskSource,
}

/// What a probe measured, before it is compared with the probes before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeMeasure {
    /// Meta-epochs completed when probed.
    pub epoch: usize,
    /// Mean training loss of the probe networks.
    pub train_loss: f64,
    /// Mean training accuracy.
    pub train_acc: f64,
    /// Mean validation accuracy.
    pub val_acc: f64,
}

impl ProbeJob {
    /// The meta-epoch the probed rule is from.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// Grows the probe networks (no tape) and scores them.
    pub fn run(self) -> Result<ProbeMeasure> {
        let cfg = &self.config;
        let spec = EvalSpec {
            networks: cfg.train.probe_networks,
            steps: cfg.grow.steps,
            fire_fraction: cfg.grow.fire_fraction,
            seed: cfg.seed,
        };
        let nets = grow_nets(&self.rule, &self.spec, self.code, cfg, &self.task, spec, Stream::Probe, &[spec.steps])?
            .pop()
            .unwrap_or_default();
        let grown = score_nets(&nets, &self.task);
        let n = grown.len().max(1) as f64;
        Ok(ProbeMeasure {
            epoch: self.epoch,
            train_loss: grown.iter().map(|g| g.1.loss).sum::<f64>() / n,
            train_acc: grown.iter().map(|g| g.1.acc).sum::<f64>() / n,
            val_acc: grown.iter().map(|g| g.2.acc).sum::<f64>() / n,
        })
    }
}

impl Trainer {
    /// Grows the fixed probe networks (`train.probe-networks`, the same draws every time)
    /// with the current rule and scores them; records a new best probe loss and says whether
    /// this rule is the best so far.
    pub fn probe(&mut self) -> Result<ProbeResult> {
        let measured = self.probe_job().run()?;
        Ok(self.record_probe(measured))
    }

    /// The probe of the current rule as a job that may run on another thread while training
    /// goes on ([`ProbeJob::run`]); [`Trainer::record_probe`] takes its result back. Probes
    /// recorded in the order they were taken give the same best rule as [`Trainer::probe`].
    pub fn probe_job(&self) -> ProbeJob {
        ProbeJob {
            epoch: self.epoch,
            rule: self.rule.clone(),
            spec: self.spec.clone(),
            code: self.code,
            config: self.exp.config.clone(),
            task: self.exp.primary().clone(),
        }
    }

    /// Records what a probe measured: a new best probe loss when it is lower than every
    /// probe recorded before.
    pub fn record_probe(&mut self, measured: ProbeMeasure) -> ProbeResult {
        let best = self.best_probe_loss.is_none_or(|b| measured.train_loss < b);
        if best {
            self.best_probe_loss = Some(measured.train_loss);
        }
        ProbeResult {
            epoch: measured.epoch,
            train_loss: measured.train_loss,
            train_acc: measured.train_acc,
            val_acc: measured.val_acc,
            best,
        }
    }
}
