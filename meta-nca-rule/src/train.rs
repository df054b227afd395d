//! Meta-training: each meta-epoch grows fresh task networks with the rule on the tape, takes
//! the cross-entropy at the loss step, and moves only the rule (Adam, global-norm clipping).

use std::sync::Arc;
use std::time::Instant;

use dfdx::prelude::*;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::batch::Batch;
use crate::checkpoint::{Checkpoint, FORMAT, RuleMeta, config_mismatches};
use crate::config::schedule::ScheduleSpec;
use crate::config::{Config, GradNormalisation, HeadStart};
use crate::continual::Schedule;
use crate::episode::{Episode, EpisodeSpec, draw_rows};
use crate::experiment::{Experiment, TaskSource};
use crate::firing::draw_fires;
use crate::fused::values;
use crate::init::HiddenCode;
use crate::optim::{Adam, clip_global_norm, global_norm, normalise_per_tensor};
use crate::perception::PerceptionSpec;
use crate::pool::Pool;
use crate::random::{Stream, rng_for};
use crate::reference::Grower;
use crate::robustness::{PruneMode, prune_batch};
use crate::rule::RuleNet;
use crate::task_data::{TaskData, score};
use crate::topology::Topology;
use crate::{Error, Result};

mod probe;
pub use probe::{ProbeJob, ProbeMeasure, ProbeResult};

/// What gets a config off the dead saddle, among the settings it does not already have
/// (`"; use ..."`, or nothing).
fn saddle_hint(cfg: &Config) -> String {
    let mut fixes = Vec::new();
    if !cfg.task.bias {
        fixes.push("bias cells (task.bias = true)");
    }
    if cfg.task.weight_init == crate::init::WeightInit::Zeros {
        fixes.push("xavier weights (task.weight-init = \"xavier\")");
    }
    if cfg.rule.last_init == 0.0 {
        fixes.push("rule.last-init > 0");
    }
    if fixes.is_empty() { String::new() } else { format!("; use {}", fixes.join(", ")) }
}

/// What one meta-epoch measured (a row of a run's `metrics.csv`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// A meta-loss on the tape.
type Loss = Tensor<(), f64, Cpu, OwnedTape<f64, Cpu>>;

/// Networks grown in a meta-epoch, with the data they are scored on.
struct Grown {
    /// The task's index in the meta-epoch, for the pool (none: a continual episode, which
    /// the pool does not keep).
    task: Option<usize>,
    train: Arc<TaskData>,
    val: Arc<TaskData>,
    grower: Grower,
    values: Vec<f64>,
}

impl Grown {
    fn of(t: usize, task: &TaskSource, grower: Grower, values: Vec<f64>) -> Self {
        Self { task: Some(t), train: task.train.clone(), val: task.val.clone(), grower, values }
    }
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
    /// Partly grown networks carried across meta-epochs (`train.pool-size`).
    pub pool: Pool,
    dev: Cpu,
}

impl Trainer {
    /// A fresh rule for `exp`; refuses configs that start on the dead saddle.
    pub fn new(exp: Experiment) -> Result<Self> {
        let (layers, cells) = exp.extent();
        if let Some(why) = exp.config.dead_saddle(layers) {
            return Err(Error::Config { key: "task".into(), message: why });
        }
        let code = exp.config.hidden_code((layers, cells));
        code.check_fits(layers, cells)?;
        let (spec, shape) = exp.config.rule_shape(&code)?;
        let dev = Cpu::default();
        let mut rng = rng_for(exp.config.seed, Stream::Train, u64::MAX);
        let rule = RuleNet::new(&dev, shape, &mut rng);
        let adam = Adam::new(exp.config.train.lr, &rule.params_flat().into_iter().map(|(_, v)| v).collect::<Vec<_>>());
        Ok(Self { exp, code, spec, rule, adam, epoch: 0, best_probe_loss: None, pool: Pool::default(), dev })
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
            pool: ckpt.meta.pool,
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
                pool: self.pool.clone(),
            },
            rule: self.rule.clone(),
            adam: self.adam.clone(),
        }
    }

    /// The config being trained.
    pub fn config(&self) -> &Config {
        &self.exp.config
    }

    /// A continual episode on `task` (see [`crate::continual`]): `num-models` fresh networks
    /// with the first phase's output neurons grow phase by phase on the tape, output neurons
    /// added as classes arrive; the loss is the mean over phase ends of the cross-entropy on
    /// every class seen so far (training rows). Returns the loss, the final grower and state
    /// values, and the schedule.
    fn continual_episode(
        &self,
        task: &TaskSource,
        spec: &ScheduleSpec,
        rng: &mut StdRng,
    ) -> Result<(Loss, Grower, Vec<f64>, Schedule)> {
        let cfg = &self.exp.config;
        let schedule = Schedule::new(&spec.for_classes(task.split.num_classes), &task.split, rng)?;
        let topologies = (0..cfg.train.num_models)
            .map(|_| Topology::dense(&schedule.first_sizes(&task.archs.sample(rng)), cfg.task.bias))
            .collect::<Result<Vec<_>>>()?;
        let episode_spec = EpisodeSpec {
            archs: &task.archs,
            networks: cfg.train.num_models,
            bias: cfg.task.bias,
            weight_init: cfg.task.weight_init,
            code: self.code,
            steps: 0,
            fire_fraction: cfg.grow.fire_fraction,
        };
        let episode = Episode::draw_for(topologies, &episode_spec, rng)?;
        let first = &schedule.phases[0];
        let mut grower =
            Grower::new(&self.dev, Batch::new(episode.topologies), self.spec.clone(), first.train.clone())?;
        let mut state = grower.state_tensor(episode.state0).put_tape(OwnedTape::default());
        let mut losses = Vec::new();
        let last = schedule.phases.len() - 1;
        for (p, phase) in schedule.phases.iter().enumerate() {
            if p > 0 {
                let next = schedule.entering(p, grower.batch().topologies())?;
                (grower, state) =
                    grower.reshape_on(state, next, phase.train.clone(), &self.code, cfg.task.weight_init, rng)?;
            }
            let fires = draw_fires(rng, grower.batch().topologies(), phase.steps, cfg.grow.fire_fraction);
            let rows = draw_rows(cfg.grow.batch_size, phase.train.y.len(), phase.steps, rng);
            state = grower.unroll_on(&self.rule, state, &fires, &rows);
            if p < last {
                // The phase's loss; its tape travels on with the state (see `unroll_tail_loss`).
                let (value, tape) = state.split_tape();
                let (loss, tape) =
                    grower.with_data(phase.seen_train.clone())?.loss(value.clone().put_tape(tape)).split_tape();
                losses.push(loss);
                state = value.put_tape(tape);
            }
        }
        let (value, tape) = state.split_tape();
        let values = values(&value);
        let final_loss = grower.with_data(schedule.phases[last].seen_train.clone())?.loss(value.put_tape(tape));
        let n = (losses.len() + 1) as f64;
        let loss = losses.into_iter().fold(final_loss, |acc, l| acc + l) / n;
        Ok((loss, grower, values, schedule))
    }

    /// `state0` grown for a head start ([`HeadStart`]): a number of steps drawn from its
    /// range, with the current rule, its own firing flags and minibatches, and no tape (the
    /// meta-gradient does not reach back into it).
    fn head_start(&self, grower: &Grower, state0: Vec<f64>, head: &HeadStart, rng: &mut StdRng) -> Vec<f64> {
        let cfg = &self.exp.config;
        let steps = rng.gen_range(head.steps[0]..=head.steps[1]);
        let fires = draw_fires(rng, grower.batch().topologies(), steps, cfg.grow.fire_fraction);
        let rows = draw_rows(cfg.grow.batch_size, grower.data().y.len(), steps, rng);
        values(&grower.unroll_on(&self.rule, grower.state_tensor(state0), &fires, &rows))
    }

    /// One meta-epoch: on every task, `num-models` networks (fresh, partly grown ones from the
    /// pool, or after a head start) grow for the episode's steps; the meta-loss is the mean
    /// cross-entropy over all networks (on held-out training rows with `train.held-out`). On a
    /// zero or non-finite meta-gradient the rule is left untouched and an error says why.
    pub fn meta_epoch(&mut self) -> Result<EpochMetrics> {
        let start = Instant::now();
        let cfg = self.exp.config.clone();
        let epoch = self.epoch;
        let mut rng = rng_for(cfg.seed, Stream::Train, epoch as u64);
        let range = cfg.train.steps_range(cfg.grow.steps);
        let steps = if range.start() < range.end() { rng.gen_range(range) } else { *range.end() };
        let mut losses = Vec::new();
        let mut dead_losses = Vec::new();
        let mut grown: Vec<Grown> = Vec::new();
        let mut steps_done = None;
        let tasks = crate::mixture::epoch_tasks(&self.exp, epoch, &mut rng)?;
        for (t, base) in tasks.into_iter().enumerate() {
            let task = if cfg.train.relabel_classes {
                let mut perm: Vec<usize> = (0..base.split.num_classes).collect();
                perm.shuffle(&mut rng);
                base.permuted(&cfg, &perm)?
            } else {
                base
            };
            dead_losses.push((task.split.num_classes as f64).ln());
            if !cfg.train.continual.is_empty() && rng.r#gen::<f64>() < cfg.train.continual_fraction {
                let schedule = &cfg.train.continual[rng.gen_range(0..cfg.train.continual.len())];
                let (loss, grower, values, schedule) = self.continual_episode(&task, schedule, &mut rng)?;
                steps_done = Some(schedule.total_steps());
                losses.push(loss);
                let last = &schedule.phases[schedule.phases.len() - 1];
                grown.push(Grown { task: None, train: last.seen_train.clone(), val: last.val.clone(), grower, values });
                continue;
            }
            let from_pool = self.pool.take(t, &cfg.train, &mut rng);
            let spec = EpisodeSpec {
                archs: &task.archs,
                networks: cfg.train.num_models - from_pool.len(),
                bias: cfg.task.bias,
                weight_init: cfg.task.weight_init,
                code: self.code,
                steps,
                fire_fraction: cfg.grow.fire_fraction,
            };
            let fresh = Episode::draw(&spec, &mut rng)?;
            let episode = Pool::join(from_pool, fresh, &spec, &mut rng)?;
            let (grow_data, held_out) = if cfg.train.held_out > 0.0 {
                let (grow, held) = task.train.hold_out(cfg.train.held_out, &mut rng);
                (Arc::new(grow), Some(Arc::new(held)))
            } else {
                (task.train.clone(), None)
            };
            let rows = draw_rows(cfg.grow.batch_size, grow_data.y.len(), steps, &mut rng);
            let grower = Grower::new(&self.dev, Batch::new(episode.topologies), self.spec.clone(), grow_data)?;
            let state0 = match &cfg.train.head_start {
                Some(head) if rng.r#gen::<f64>() < head.fraction => {
                    self.head_start(&grower, episode.state0, head, &mut rng)
                }
                _ => episode.state0,
            };
            let state = grower.state_tensor(state0).put_tape(OwnedTape::default());
            match &cfg.train.damage {
                None => {
                    let judge = held_out.map(|d| grower.with_data(d)).transpose()?;
                    let (loss, last_values) = grower.unroll_tail_loss_on(
                        &self.rule,
                        state,
                        &episode.fires,
                        &rows,
                        cfg.train.loss_steps,
                        judge.as_ref().unwrap_or(&grower),
                    );
                    losses.push(loss);
                    grown.push(Grown::of(t, &task, grower, last_values));
                }
                Some(damage) => {
                    let (value, tape) = grower.unroll_on(&self.rule, state, &episode.fires, &rows).split_tape();
                    let width = self.spec.state_width();
                    let topologies = grower.batch().topologies();
                    let pruned =
                        prune_batch(topologies, &values(&value), width, damage.fraction, PruneMode::Random, &mut rng)?;
                    let damaged = grower.damaged_loss(
                        &self.rule,
                        value.put_tape(tape),
                        pruned,
                        damage.recover,
                        cfg.grow.fire_fraction,
                        &self.code,
                        cfg.task.weight_init,
                        &mut rng,
                    )?;
                    losses.push(damaged.loss);
                    grown.push(Grown::of(t, &task, damaged.grower, damaged.values));
                }
            }
        }
        let n_tasks = losses.len() as f64;
        let mut losses = losses.into_iter();
        let first = losses.next().ok_or_else(|| Error::Training { epoch, message: "no task to train on".into() })?;
        let loss = losses.fold(first, |acc, l| acc + l) / n_tasks;
        let loss_value = loss.array();
        let grads = loss.backward();
        let mut g = self.rule.grads_flat(&grads);
        let grad_norm = global_norm(&g);
        let stop = |message: String| Err(Error::Training { epoch, message });
        if !loss_value.is_finite() || !grad_norm.is_finite() {
            return stop(format!(
                "diverged: the meta-loss is {loss_value} and the meta-gradient norm {grad_norm} (not finite); \
                 lower train.lr (now {}){}",
                cfg.train.lr,
                if cfg.train.clip_norm == 0.0 { " or clip the gradient (train.clip-norm > 0)" } else { "" }
            ));
        }
        if grad_norm == 0.0 {
            // A network that predicts nothing (all logits equal) has loss exactly ln C.
            let dead = dead_losses.iter().sum::<f64>() / dead_losses.len().max(1) as f64;
            if (loss_value - dead).abs() <= 1e-9 * dead.max(1.0) {
                return stop(format!(
                    "the meta-gradient is exactly zero and the meta-loss is {loss_value:.6} = ln C, the loss of a \
                     network that predicts nothing: the grown networks are dead (the dead saddle), so the rule \
                     cannot learn{}",
                    saddle_hint(&cfg)
                ));
            }
            return stop(format!(
                "diverged: the meta-gradient is exactly zero although the meta-loss is {loss_value:.6}, not the \
                 {dead:.6} (ln C) of dead networks: the rule's outputs have saturated, which is what too large a \
                 step does; lower train.lr (now {})",
                cfg.train.lr
            ));
        }
        if cfg.train.grad_normalisation == GradNormalisation::PerTensor {
            normalise_per_tensor(&mut g);
        }
        clip_global_norm(&mut g, cfg.train.clip_norm);
        let mut params: Vec<Vec<f64>> = self.rule.params_flat().into_iter().map(|(_, v)| v).collect();
        self.adam.step(&mut params, &g);
        self.rule.set_params_flat(&params);
        let (mut train_acc, mut val_acc, mut n) = (0.0, 0.0, 0.0);
        for g in grown {
            for net in g.grower.dense_nets(&g.values) {
                train_acc += score(&net, &g.train).acc;
                val_acc += score(&net, &g.val).acc;
                n += 1.0;
            }
            if let Some(t) = g.task {
                self.pool.put(
                    t,
                    g.grower.batch().topologies(),
                    &g.values,
                    self.spec.state_width(),
                    &cfg.train,
                    &mut rng,
                );
            }
        }
        self.epoch += 1;
        let metrics = EpochMetrics {
            epoch,
            loss_step: steps_done.unwrap_or(steps),
            loss: loss_value,
            train_acc: train_acc / n,
            val_acc: val_acc / n,
            grad_norm,
            seconds: start.elapsed().as_secs_f64(),
        };
        tracing::debug!(
            epoch,
            networks = n,
            loss_step = metrics.loss_step,
            loss = metrics.loss,
            grad_norm,
            seconds = metrics.seconds,
            "meta-epoch"
        );
        Ok(metrics)
    }
}
