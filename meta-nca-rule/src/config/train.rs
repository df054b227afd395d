//! The `[train]` section: meta-training (unroll length and where the loss is taken, Adam,
//! gradient conditioning, and the episodes that grow networks past `K`, damage them or change
//! their data) and its validation.

use serde::{Deserialize, Serialize};

use super::{GrowConfig, TasksConfig, bad, schedule};
use crate::Result;

/// Where the meta-loss is taken. A grow stops where its loss is taken, so a random loss step
/// and a random unroll length are one mechanism: see [`TrainConfig::steps_range`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LossStep {
    /// At step `K` (unless `steps-min` is set).
    #[default]
    Last,
    /// At a step drawn uniformly from `[ceil(K/2), K]` every meta-epoch (the prototype's
    /// later branch); the same as `steps-min = ceil(K/2)`.
    RandomTail,
}

/// Meta-training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Number of meta-epochs.
    pub meta_epochs: usize,
    /// Task networks grown per meta-epoch (batched into one rule call per step).
    pub num_models: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Global-norm gradient clipping threshold (0 = off).
    pub clip_norm: f64,
    /// Where the meta-loss is taken.
    pub loss_step: LossStep,
    /// The meta-loss is the mean of the losses after each of the last `loss-steps` grow steps
    /// (1: after the last step only). A tail of several steps asks the rule to reach a good
    /// network early and keep it there: growth that holds past the trained length.
    pub loss_steps: usize,
    /// Write the `last` checkpoint every this many meta-epochs (and at the end).
    pub checkpoint_every: usize,
    /// Every this many meta-epochs, grow the fixed probe networks; the rule whose probe has
    /// the lowest mean training loss is kept as `best` (validation data is never used to pick).
    pub probe_every: usize,
    /// Networks in the probe.
    pub probe_networks: usize,
    /// Rename the classes of every dataset by a fresh random permutation every meta-epoch:
    /// a rule can then only succeed by learning from the labels it sees, not by memorising.
    pub relabel_classes: bool,
    /// How the meta-gradient is conditioned before clipping.
    pub grad_normalisation: GradNormalisation,
    /// Draw the number of grow steps of each meta-epoch uniformly from
    /// `[steps-min, grow.steps]` and take the loss there (random unroll length, as Growing
    /// NCA's 64-96 steps); overrides `loss-step`.
    pub steps_min: Option<usize>,
    /// Partly grown networks kept across meta-epochs (0 = no pool).
    pub pool_size: usize,
    /// Fraction of each meta-epoch's networks taken from the pool (when it has them).
    pub pool_fraction: f64,
    /// Damage-aware training: after the grow, remove connections at random, keep growing,
    /// and take the mean of the losses before the damage and after the recovery.
    pub damage: Option<DamageConfig>,
    /// Fraction of each task's training rows held out of its grow in every meta-epoch (drawn
    /// afresh, class by class): the networks grow on the other rows and the meta-loss is taken
    /// on these, so the rule is judged by how the networks it grows generalise, not by how
    /// closely they fit (the learned-optimiser field's validation meta-objective, kept inside
    /// the training split: validation rows stay unseen). 0: the loss is on the rows grown on.
    /// Plain episodes only (not damage or continual ones).
    pub held_out: f64,
    /// Growth past the unroll (`{ fraction, steps = [min, max] }`): before the taped unroll,
    /// the networks of this fraction of a meta-epoch's tasks first grow a number of steps drawn
    /// from `[min, max]` with the current rule and no tape, so the meta-loss also judges the
    /// rule on networks already grown far past `K` (the pool's purpose, for any task: nothing
    /// is kept between meta-epochs). Unset: off.
    pub head_start: Option<HeadStart>,
    /// Continual episodes (`[[train.continual]]`, each a schedule): a task's grow is cut into
    /// phases whose data changes (classes arrive with new output neurons, inputs drift), and
    /// its meta-loss is the mean over phase ends of the loss on every class seen so far
    /// (`loss-steps`, `steps-min` and `grow.steps` shape only the other, plain episodes).
    /// Empty: off.
    pub continual: Vec<schedule::ScheduleSpec>,
    /// Fraction of the tasks of a meta-epoch grown as a continual episode (a schedule drawn
    /// from `continual`), when `continual` is set; the rest grow as usual.
    pub continual_fraction: f64,
}

/// Random damage during meta-training episodes (as Growing NCA damages its samples).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DamageConfig {
    /// Fraction of each network's live connections removed.
    pub fraction: f64,
    /// Rule steps after the damage.
    pub recover: usize,
}

/// Untaped steps before a meta-epoch's taped unroll (see [`TrainConfig::head_start`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HeadStart {
    /// Fraction of a meta-epoch's tasks whose networks get a head start.
    pub fraction: f64,
    /// Its length in steps, drawn uniformly from `[min, max]` per task.
    pub steps: [usize; 2],
}

/// How the meta-gradient is conditioned before global-norm clipping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GradNormalisation {
    /// Leave it as it is.
    #[default]
    None,
    /// Scale each parameter tensor's gradient to unit norm (Growing NCA).
    PerTensor,
}

impl TrainConfig {
    /// The range the number of grow steps of a meta-epoch is drawn from, for `K` steps.
    pub fn steps_range(&self, k: usize) -> std::ops::RangeInclusive<usize> {
        let min = self.steps_min.unwrap_or(match self.loss_step {
            LossStep::Last => k,
            LossStep::RandomTail => k.div_ceil(2),
        });
        min..=k
    }

    /// Checks the section; `grow` gives `K`, `tasks` whether the tasks change shape.
    pub(super) fn check(&self, g: &GrowConfig, ts: &TasksConfig) -> Result<()> {
        if self.meta_epochs == 0 {
            return Err(bad("train.meta-epochs", "must be >= 1"));
        }
        if self.num_models == 0 {
            return Err(bad("train.num-models", "must be >= 1"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(bad("train.lr", format!("must be positive and finite, got {}", self.lr)));
        }
        if !(self.clip_norm >= 0.0 && self.clip_norm.is_finite()) {
            return Err(bad("train.clip-norm", format!("must be >= 0 and finite, got {}", self.clip_norm)));
        }
        if self.checkpoint_every == 0 {
            return Err(bad("train.checkpoint-every", "must be >= 1"));
        }
        if self.probe_every == 0 || self.probe_networks == 0 {
            return Err(bad("train.probe-every", "probe-every and probe-networks must be >= 1"));
        }
        if let Some(min) = self.steps_min
            && (min == 0 || min > g.steps)
        {
            return Err(bad("train.steps-min", format!("must be in [1, grow.steps = {}], got {min}", g.steps)));
        }
        let shortest = self.steps_range(g.steps).start().to_owned();
        if self.loss_steps == 0 || self.loss_steps > shortest {
            return Err(bad(
                "train.loss-steps",
                format!("must be in [1, {shortest}] (the shortest grow of a meta-epoch), got {}", self.loss_steps),
            ));
        }
        if self.loss_steps > 1 && self.damage.is_some() {
            return Err(bad(
                "train.loss-steps",
                "cannot be combined with train.damage (its loss is taken around the damage)",
            ));
        }
        if let Some(d) = &self.damage
            && (!(0.0..1.0).contains(&d.fraction) || d.recover == 0)
        {
            return Err(bad(
                "train.damage",
                format!("fraction must be in [0, 1) and recover >= 1, got {} and {}", d.fraction, d.recover),
            ));
        }
        super::schedule::check_training(self)?;
        if !(0.0..=1.0).contains(&self.pool_fraction) {
            return Err(bad("train.pool-fraction", format!("must be in [0, 1], got {}", self.pool_fraction)));
        }
        if self.pool_size > 0 && (ts.generates() || ts.reshapes_datasets()) {
            return Err(bad(
                "train.pool-size",
                "a pool keeps networks of fixed shape per task; it cannot be used with generated tasks \
         (tasks.per-epoch > 0) or reshaped datasets (tasks.permute-features, tasks.subsample-features)",
            ));
        }
        if !(0.0..=0.9).contains(&self.held_out) {
            return Err(bad("train.held-out", format!("must be in [0, 0.9], got {}", self.held_out)));
        }
        if self.held_out > 0.0 && self.damage.is_some() {
            return Err(bad(
                "train.held-out",
                "cannot be combined with train.damage (its loss is taken around the damage)",
            ));
        }
        if let Some(h) = &self.head_start {
            if !(h.fraction > 0.0 && h.fraction <= 1.0) {
                return Err(bad("train.head-start", format!("fraction must be in (0, 1], got {}", h.fraction)));
            }
            if h.steps[0] > h.steps[1] || h.steps[1] == 0 {
                return Err(bad(
                    "train.head-start",
                    format!("steps must be [min, max] with min <= max and max >= 1, got {:?}", h.steps),
                ));
            }
            if self.pool_size > 0 {
                return Err(bad(
                    "train.head-start",
                    "cannot be combined with train.pool-size (both grow networks past K; use one)",
                ));
            }
        }
        Ok(())
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            meta_epochs: 1000,
            num_models: 1,
            lr: 1e-3,
            clip_norm: 1.0,
            loss_step: LossStep::Last,
            loss_steps: 1,
            checkpoint_every: 100,
            probe_every: 50,
            probe_networks: 20,
            relabel_classes: false,
            grad_normalisation: GradNormalisation::None,
            steps_min: None,
            pool_size: 0,
            pool_fraction: 0.5,
            damage: None,
            held_out: 0.0,
            head_start: None,
            continual: Vec::new(),
            continual_fraction: 1.0,
        }
    }
}
