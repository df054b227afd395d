//! Meta-training: each meta-epoch grows fresh task networks with the rule on the tape, takes
//! the cross-entropy at the loss step, and moves only the rule (Adam, global-norm clipping).

use std::time::Instant;

use dfdx::prelude::*;
use rand::Rng;

use crate::batch::Batch;
use crate::checkpoint::{Checkpoint, RuleMeta, FORMAT, config_mismatches};
use crate::config::{Config, LossStep};
use crate::episode::{Episode, EpisodeSpec, Stream, rng_for};
use crate::eval::{EvalSpec, grow_and_score};
use crate::experiment::Experiment;
use crate::init::HiddenCode;
use crate::optim::{Adam, clip_global_norm, global_norm};
use crate::perception::PerceptionSpec;
use crate::reference::{Grower, score};
use crate::rule::RuleNet;
use crate::{Error, Result};

/// What one meta-epoch measured.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EpochMetrics {
    /// Meta-epoch number (0-based).
    pub epoch: usize,
    /// The step at which the loss was taken.
    pub loss_step: usize,
    /// Meta-loss: mean cross-entropy of the grown networks on the training set.
    pub loss: f64,
    /// Mean training accuracy of the grown networks.
    pub train_acc: f64,
    /// Mean validation accuracy of the grown networks.
    pub val_acc: f64,
    /// Global norm of the meta-gradient before clipping.
    pub grad_norm: f64,
    /// Wall-clock seconds of the meta-epoch.
    pub seconds: f64,
}

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

/// A rule being meta-trained, with everything needed to continue or checkpoint it.
#[derive(Debug)]
pub struct Trainer {
    /// Config and data.
    pub exp: Experiment,
    /// Hidden-state layout of the rule.
    pub code: HiddenCode,
    /// The rule's perception.
    pub spec: PerceptionSpec,
    /// The rule.
    pub rule: RuleNet,
    /// Optimiser state.
    pub adam: Adam,
    /// Meta-epochs completed.
    pub epoch: usize,
    /// Lowest mean training loss of the probe networks so far.
    pub best_probe_loss: Option<f64>,
    dev: Cpu,
}

impl Trainer {
    /// A fresh rule for `exp`; refuses configs that start on the dead saddle.
    pub fn new(exp: Experiment) -> Result<Self> {
        if let Some(why) = exp.config.dead_saddle(&exp.archs) {
            return Err(Error::Config { key: "task".into(), message: why });
        }
        let code = exp.config.hidden_code(&exp.archs);
        let (layers, cells) = exp.archs.extent(exp.config.task.bias);
        code.check_fits(layers, cells)?;
        let (spec, shape) = exp.config.rule_shape(&code)?;
        let dev = Cpu::default();
        let mut rng = rng_for(exp.config.seed, Stream::Train, u64::MAX);
        let rule = RuleNet::new(&dev, shape, &mut rng);
        let adam = Adam::new(exp.config.train.lr, &rule.params_flat().into_iter().map(|(_, v)| v).collect::<Vec<_>>());
        Ok(Self { exp, code, spec, rule, adam, epoch: 0, best_probe_loss: None, dev })
    }

    /// Continues from a checkpoint. `exp` must agree with the checkpoint's config on every
    /// `[rule]`, `[task]` and `[data]` key (training length, rate and seed may differ).
    pub fn resume(ckpt: Checkpoint, exp: Experiment, path: &std::path::Path) -> Result<Self> {
        let mismatches = config_mismatches(&ckpt.meta.config, &exp.config);
        if !mismatches.is_empty() {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!("cannot resume with a different config:\n  {}", mismatches.join("\n  ")),
            });
        }
        let mut adam = ckpt.adam;
        adam.lr = exp.config.train.lr;
        Ok(Self {
            exp,
            code: ckpt.meta.code,
            spec: ckpt.meta.perception,
            rule: ckpt.rule,
            adam,
            epoch: ckpt.meta.meta_epoch,
            best_probe_loss: ckpt.meta.best_probe_loss,
            dev: Cpu::default(),
        })
    }

    /// The current state as a checkpoint.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            meta: RuleMeta {
                format: FORMAT,
                perception: self.spec.clone(),
                code: self.code,
                shape: self.rule.shape.clone(),
                config: self.exp.config.clone(),
                meta_epoch: self.epoch,
                best_probe_loss: self.best_probe_loss,
            },
            rule: self.rule.clone(),
            adam: self.adam.clone(),
        }
    }

    /// Grows the fixed probe networks (`train.probe-networks`, the same draws every time)
    /// with the current rule and scores them; records a new best probe loss and says whether
    /// this rule is the best so far.
    pub fn probe(&mut self) -> Result<ProbeResult> {
        let cfg = &self.exp.config;
        let spec = EvalSpec {
            networks: cfg.train.probe_networks,
            steps: cfg.grow.steps,
            fire_fraction: cfg.grow.fire_fraction,
            seed: cfg.seed,
        };
        let grown = grow_and_score(&self.rule, &self.spec, self.code, &self.exp, spec, Stream::Probe)?;
        let n = grown.len().max(1) as f64;
        let result = ProbeResult {
            epoch: self.epoch,
            train_loss: grown.iter().map(|g| g.1.loss).sum::<f64>() / n,
            train_acc: grown.iter().map(|g| g.1.acc).sum::<f64>() / n,
            val_acc: grown.iter().map(|g| g.2.acc).sum::<f64>() / n,
            best: self.best_probe_loss.is_none_or(|b| grown.iter().map(|g| g.1.loss).sum::<f64>() / n < b),
        };
        if result.best {
            self.best_probe_loss = Some(result.train_loss);
        }
        Ok(result)
    }

    /// The config being trained.
    pub fn config(&self) -> &Config {
        &self.exp.config
    }

    /// One meta-epoch. On a zero or non-finite meta-gradient the rule is left untouched and
    /// an error says why.
    pub fn meta_epoch(&mut self) -> Result<EpochMetrics> {
        let start = Instant::now();
        let cfg = &self.exp.config;
        let epoch = self.epoch;
        let mut rng = rng_for(cfg.seed, Stream::Train, epoch as u64);
        let k = cfg.grow.steps;
        let steps = match cfg.train.loss_step {
            LossStep::Last => k,
            LossStep::RandomTail => rng.gen_range(k.div_ceil(2)..=k),
        };
        let spec = EpisodeSpec {
            archs: &self.exp.archs,
            networks: cfg.train.num_models,
            bias: cfg.task.bias,
            weight_init: cfg.task.weight_init,
            code: self.code,
            steps,
            fire_fraction: cfg.grow.fire_fraction,
        };
        let episode = Episode::draw(&spec, &mut rng)?;
        let grower = Grower::new(&self.dev, Batch::new(episode.topologies), self.spec.clone(), self.exp.train.clone())?;
        let state = grower.state_tensor(episode.state0).put_tape(OwnedTape::default());
        let (last, tape) = grower.unroll(&self.rule, state, &episode.fires).split_tape();
        let last_values = last.as_vec();
        let loss = grower.loss(last.put_tape(tape));
        let loss_value = loss.array();
        let grads = loss.backward();
        let mut g = self.rule.grads_flat(&grads);
        let grad_norm = global_norm(&g);
        let stop = |message: String| Err(Error::Training { epoch, message });
        if !loss_value.is_finite() || !grad_norm.is_finite() {
            return stop(format!("non-finite meta-loss ({loss_value}) or meta-gradient norm ({grad_norm})"));
        }
        if grad_norm == 0.0 {
            let chance = (grower.data().classes as f64).ln();
            return stop(format!(
                "the meta-gradient is exactly zero (meta-loss {loss_value:.6}, ln C = {chance:.6}): the grown \
                 networks are dead, so the rule cannot learn; use bias cells, xavier weights or rule.last-init > 0"
            ));
        }
        clip_global_norm(&mut g, cfg.train.clip_norm);
        let mut params: Vec<Vec<f64>> = self.rule.params_flat().into_iter().map(|(_, v)| v).collect();
        self.adam.step(&mut params, &g);
        self.rule.set_params_flat(&params);
        let nets = grower.dense_nets(&last_values);
        let n = nets.len() as f64;
        let train_acc = nets.iter().map(|net| score(net, &self.exp.train).acc).sum::<f64>() / n;
        let val_acc = nets.iter().map(|net| score(net, &self.exp.val).acc).sum::<f64>() / n;
        self.epoch += 1;
        Ok(EpochMetrics {
            epoch,
            loss_step: steps,
            loss: loss_value,
            train_acc,
            val_acc,
            grad_norm,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}
