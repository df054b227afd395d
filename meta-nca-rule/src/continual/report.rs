//! What a continual experiment measured ([`ContinualReport`]: curves, phase ends, forgetting,
//! recovery after a drift) and its printed table.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{ContinualSpec, Run, Schedule, forgetting, mean_groups};
use crate::config::schedule::{PhaseRows, ScheduleKind};
use crate::experiment::TaskSource;

/// Accuracies of one moment of a continual grow.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Groups {
    /// On every class seen so far (validation rows, the current inputs).
    pub seen: f64,
    /// On the classes of earlier phases (class-incremental, after the first phase).
    pub old: Option<f64>,
    /// On the classes arriving in this phase (none when no class arrives).
    pub new: Option<f64>,
    /// On the first phase's data: its classes (class-incremental) or every class under the
    /// original inputs (domain-incremental).
    pub first: f64,
}

/// The grown networks' mean accuracies after a step (or right after a phase boundary, before
/// the rule has stepped on the new data: then `step` is the phase's start).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Rule steps done.
    pub step: usize,
    /// The phase the networks are in.
    pub phase: usize,
    /// [`Groups::seen`].
    pub seen: f64,
    /// [`Groups::old`].
    pub old: Option<f64>,
    /// [`Groups::new`].
    pub new: Option<f64>,
    /// [`Groups::first`].
    pub first: f64,
}

impl CurvePoint {
    /// The point of `groups` at `step` in `phase`.
    pub fn new(step: usize, phase: usize, groups: Groups) -> Self {
        Self { step, phase, seen: groups.seen, old: groups.old, new: groups.new, first: groups.first }
    }
}

/// One phase of the schedule, as run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseInfo {
    /// Its first step.
    pub start: usize,
    /// Its rule steps.
    pub steps: usize,
    /// Output neurons (classes seen so far).
    pub outputs: usize,
    /// The classes arriving at its start.
    pub arriving: Vec<usize>,
    /// Its input domain (0: the original inputs).
    pub domain: usize,
    /// Training rows it shows.
    pub train_rows: usize,
}

/// The mean accuracies at the end of a phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PhaseEnd {
    /// The phase.
    pub phase: usize,
    /// Grown networks.
    pub grown: Groups,
    /// Backprop fine-tuned phase by phase.
    pub fine_tune: Groups,
}

/// Where a method ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Final accuracy on every class (the last phase's inputs).
    pub seen: f64,
    /// Final accuracy on the first phase's data.
    pub first: f64,
    /// Mean over classes (or input domains) of the best accuracy at an earlier phase end
    /// minus the final accuracy ([`forgetting`]); none for the joint baseline.
    pub forgetting: Option<f64>,
}

/// How the grown networks came back after an input drift.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// The phase the drift starts.
    pub phase: usize,
    /// Accuracy at the end of the phase before (its own inputs).
    pub before: f64,
    /// Accuracy right after the drift, before a rule step.
    pub after_drift: f64,
    /// Rule steps until the accuracy is back within 0.02 of `before` (none: not in the phase).
    pub steps: Option<usize>,
}

/// Points within this much of the accuracy before a drift count as recovered.
pub const RECOVERED_WITHIN: f64 = 0.02;

/// Everything a continual experiment on one task measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinualReport {
    /// The task.
    pub task: String,
    /// What changes between phases.
    pub kind: ScheduleKind,
    /// Which rows a class-incremental phase shows.
    pub rows: PhaseRows,
    /// Where the grows ran.
    pub engine: String,
    /// Networks grown (and baselines trained).
    pub networks: usize,
    /// Seed.
    pub seed: u64,
    /// The phases.
    pub phases: Vec<PhaseInfo>,
    /// The grown networks' mean accuracies after every step.
    pub curve: Vec<CurvePoint>,
    /// Mean accuracies at each phase end, grown and fine-tuned.
    pub phase_ends: Vec<PhaseEnd>,
    /// Grown networks at the end.
    pub grown: Summary,
    /// Backprop fine-tuned phase by phase, at the end.
    pub fine_tune: Summary,
    /// Backprop trained on every phase's data at once (the upper bound).
    pub joint: Summary,
    /// Domain-incremental: recovery after each drift.
    pub recovery: Vec<Recovery>,
}

fn summary(runs: &[Run]) -> Summary {
    let n = runs.len().max(1) as f64;
    let last = |r: &Run| r.ends.last().copied();
    Summary {
        seen: runs.iter().filter_map(last).map(|g| g.seen).sum::<f64>() / n,
        first: runs.iter().filter_map(last).map(|g| g.first).sum::<f64>() / n,
        forgetting: Some(runs.iter().map(|r| forgetting(&r.units)).sum::<f64>() / n),
    }
}

/// What [`super::run`] measured, before it is summarised.
pub(super) struct Measured {
    /// The grown networks' mean curve.
    pub curve: Vec<CurvePoint>,
    /// Each grown network at the phase ends.
    pub grown: Vec<Run>,
    /// Each fine-tuned backprop network at the phase ends.
    pub tuned: Vec<Run>,
    /// Each jointly trained backprop network at the end.
    pub joint: Vec<Groups>,
}

/// Puts the measurements together.
pub(super) fn build(
    schedule: &Schedule,
    task: &TaskSource,
    engine: &str,
    spec: &ContinualSpec,
    measured: Measured,
) -> ContinualReport {
    let Measured { curve, grown, tuned, joint } = measured;
    let (grown, tuned) = (&grown[..], &tuned[..]);
    let phase_ends = (0..schedule.phases.len())
        .map(|p| {
            let at = |runs: &[Run]| mean_groups(&runs.iter().map(|r| r.ends[p]).collect::<Vec<_>>());
            PhaseEnd { phase: p, grown: at(grown), fine_tune: at(tuned) }
        })
        .collect();
    let joint_mean = mean_groups(&joint);
    let recovery = match schedule.kind {
        ScheduleKind::ClassIncremental => Vec::new(),
        ScheduleKind::DomainIncremental => (1..schedule.phases.len())
            .filter_map(|p| {
                let start = schedule.phases[p].start;
                let before = curve.iter().find(|c| c.phase == p - 1 && c.step == start)?.seen;
                let after_drift = curve.iter().find(|c| c.phase == p && c.step == start)?.seen;
                let steps = curve
                    .iter()
                    .filter(|c| c.phase == p && c.step > start)
                    .find(|c| c.seen >= before - RECOVERED_WITHIN)
                    .map(|c| c.step - start);
                Some(Recovery { phase: p, before, after_drift, steps })
            })
            .collect(),
    };
    ContinualReport {
        task: task.name.clone(),
        kind: schedule.kind,
        rows: spec.schedule.rows,
        engine: engine.into(),
        networks: spec.networks,
        seed: spec.seed,
        phases: schedule
            .phases
            .iter()
            .map(|p| PhaseInfo {
                start: p.start,
                steps: p.steps,
                outputs: p.outputs,
                arriving: p.arriving.clone().collect(),
                domain: p.domain,
                train_rows: p.train.y.len(),
            })
            .collect(),
        curve,
        phase_ends,
        grown: summary(grown),
        fine_tune: summary(tuned),
        joint: Summary { seen: joint_mean.seen, first: joint_mean.first, forgetting: None },
        recovery,
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

impl ContinualReport {
    /// The report as a plain-text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let what = match (self.kind, self.rows) {
            (ScheduleKind::ClassIncremental, PhaseRows::New) => "class-incremental, a phase shows only its new classes",
            (ScheduleKind::ClassIncremental, PhaseRows::Seen) => "class-incremental, a phase shows every class so far",
            (ScheduleKind::DomainIncremental, _) => "domain-incremental, the inputs drift at each phase",
        };
        let _ =
            writeln!(out, "{}: {what}; {} networks on {}; seed {}", self.task, self.networks, self.engine, self.seed);
        let _ = writeln!(
            out,
            "{:<6} {:>9} {:>8} {:>9} | {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6}",
            "phase", "steps", "outputs", "arriving", "grown", "old", "new", "tuned", "old", "new"
        );
        for (info, end) in self.phases.iter().zip(&self.phase_ends) {
            let arriving = match info.arriving.as_slice() {
                [] => format!("drift {}", info.domain),
                [one] => one.to_string(),
                [a, b] => format!("{a},{b}"),
                [a, .., b] => format!("{a}-{b}"),
            };
            let _ = writeln!(
                out,
                "{:<6} {:>9} {:>8} {:>9} | {:>6.3} {:>6} {:>6} | {:>6.3} {:>6} {:>6}",
                end.phase,
                format!("{}-{}", info.start, info.start + info.steps),
                info.outputs,
                arriving,
                end.grown.seen,
                opt(end.grown.old),
                opt(end.grown.new),
                end.fine_tune.seen,
                opt(end.fine_tune.old),
                opt(end.fine_tune.new),
            );
        }
        let _ = writeln!(out, "{:<28} {:>10} {:>12} {:>11}", "at the end", "all seen", "first phase", "forgetting");
        for (name, s) in [
            ("grown", &self.grown),
            ("backprop fine-tuned per phase", &self.fine_tune),
            ("backprop on all data", &self.joint),
        ] {
            let _ = writeln!(out, "{name:<28} {:>10.3} {:>12.3} {:>11}", s.seen, s.first, opt(s.forgetting));
        }
        for r in &self.recovery {
            let steps = r.steps.map_or_else(|| "not within the phase".into(), |s| format!("{s} steps"));
            let _ = writeln!(
                out,
                "drift at phase {}: {:.3} before, {:.3} right after, back within {RECOVERED_WITHIN} in {steps}",
                r.phase, r.before, r.after_drift
            );
        }
        out
    }
}
