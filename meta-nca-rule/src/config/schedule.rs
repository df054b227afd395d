//! `[schedule]` of a continual config and `[[train.continual]]` of a training config: how a
//! grow is cut into phases whose data changes (the `continual` module runs them).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What changes at a phase boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// Classes arrive a few at a time, each with a new output neuron.
    #[default]
    ClassIncremental,
    /// Every class from the start; the inputs drift at each boundary.
    DomainIncremental,
}

/// Which training rows a class-incremental phase shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseRows {
    /// Only the rows of the classes arriving in the phase (the standard, hard case: old
    /// classes are never seen again).
    #[default]
    New,
    /// The rows of every class seen so far.
    Seen,
}

/// How a grow is cut into phases (`[schedule]` of a continual config, `train.continual` of a
/// training config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ScheduleSpec {
    /// What changes between phases.
    pub kind: ScheduleKind,
    /// Rule steps of each phase.
    pub phase_steps: usize,
    /// Class-incremental: classes (and output neurons) of the first phase.
    pub first_classes: usize,
    /// Class-incremental: classes arriving at each later phase.
    pub classes_per_phase: usize,
    /// Class-incremental: which training rows a phase shows.
    pub rows: PhaseRows,
    /// Domain-incremental: number of drifts (phases after the first).
    pub drifts: usize,
    /// Domain-incremental: rotation angle (radians) of each random pair of features.
    pub rotation: f64,
    /// Domain-incremental: standard deviation of each feature's shift (the features are
    /// standardised, so 1 is one standard deviation).
    pub shift: f64,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::ClassIncremental,
            phase_steps: 10,
            first_classes: 2,
            classes_per_phase: 1,
            rows: PhaseRows::New,
            drifts: 2,
            rotation: 0.6,
            shift: 0.5,
        }
    }
}

impl ScheduleSpec {
    /// Checks the values; `key` names the section in errors.
    pub fn check(&self, key: &str) -> Result<()> {
        let bad = |field: &str, message: String| Err(Error::Config { key: format!("{key}.{field}"), message });
        if self.phase_steps == 0 {
            return bad("phase-steps", "must be at least 1".into());
        }
        if self.first_classes == 0 {
            return bad("first-classes", "must be at least 1".into());
        }
        if self.classes_per_phase == 0 {
            return bad("classes-per-phase", "must be at least 1".into());
        }
        if self.kind == ScheduleKind::DomainIncremental && self.drifts == 0 {
            return bad("drifts", "must be at least 1 (a domain-incremental schedule needs a drift)".into());
        }
        for (field, v) in [("rotation", self.rotation), ("shift", self.shift)] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(field, format!("must be finite and >= 0, got {v}"));
            }
        }
        Ok(())
    }

    /// The schedule for meta-training on a task with `classes` classes: at most `classes - 1`
    /// classes in the first phase, so that one always arrives later (a 2-class task starts
    /// with one output neuron).
    pub fn for_classes(&self, classes: usize) -> Self {
        Self { first_classes: self.first_classes.min(classes.saturating_sub(1)).max(1), ..self.clone() }
    }

    /// Checks that a task with `classes` classes can follow the schedule.
    pub fn check_classes(&self, task: &str, classes: usize) -> Result<()> {
        if self.kind == ScheduleKind::ClassIncremental && self.first_classes >= classes {
            return Err(Error::Config {
                key: "schedule.first-classes".into(),
                message: format!(
                    "{task} has {classes} classes, so first-classes = {} leaves none to arrive later",
                    self.first_classes
                ),
            });
        }
        Ok(())
    }
}

/// Checks `[[train.continual]]` against the rest of `[train]`: its episodes take their loss at
/// phase ends on fixed-length phases, so they do not combine with a pool or damage
/// (`loss-steps` and `steps-min` shape the other, plain episodes only).
pub fn check_training(tr: &super::TrainConfig) -> Result<()> {
    if tr.continual.is_empty() {
        return Ok(());
    }
    for (i, spec) in tr.continual.iter().enumerate() {
        spec.check(&format!("train.continual[{i}]"))?;
    }
    let bad = |key: &str, message: &str| Err(Error::Config { key: key.into(), message: message.into() });
    if !(0.0..=1.0).contains(&tr.continual_fraction) {
        return bad("train.continual-fraction", "must be in [0, 1]");
    }
    if tr.pool_size > 0 {
        return bad("train.pool-size", "a pool cannot be combined with train.continual episodes");
    }
    if tr.damage.is_some() {
        return bad("train.damage", "damage cannot be combined with train.continual episodes");
    }
    Ok(())
}
