//! Continual learning: a grow whose data changes while it runs. A [`Schedule`] cuts a grow
//! into phases; at a phase boundary classes arrive, each with a new output neuron (the output
//! layer's [`crate::topology::Change::AddNeuron`]), or the inputs drift (a fixed random rotation and shift of
//! the features). Classes arrive in label order (`0, 1, ..`): a caller that wants another order
//! relabels the task first, and output neuron `k` is then always class `k`.
//!
//! [`run`] grows networks through a schedule on either engine and measures after every step
//! the accuracy on the classes seen so far, on the old and on the newly arrived ones, and on the
//! first phase's data; at phase ends, every class's (or every input domain's) accuracy, from
//! which forgetting follows. Next to it: backprop fine-tuned phase by phase on the same data
//! (which forgets) and backprop trained on all of it at once (the upper bound). Meta-training
//! grows through the same schedules (`train.continual`, see the `train` module).

pub mod report;

use std::ops::Range;
use std::sync::Arc;

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::baseline::{BaselineSpec, fine_tune, xavier_net};
use crate::batch::Batch;
use crate::checkpoint::RuleMeta;
use crate::config::schedule::{PhaseRows, ScheduleKind, ScheduleSpec};
use crate::data::Split;
use crate::engine::EngineKind;
use crate::episode::{Episode, EpisodeSpec};
use crate::experiment::TaskSource;
use crate::firing::choose_firing;
use crate::random::normal;
use crate::random::{Stream, rng_for};
use crate::rule::RuleNet;
use crate::task::{self, DenseNet};
use crate::task_data::TaskData;
use crate::topology::Topology;
use crate::{Error, Result};

pub use report::{ContinualReport, Groups, PhaseEnd, PhaseInfo, Recovery, Summary};

/// A fixed input drift: each random pair of features rotated by an angle, then every feature
/// shifted. The identity for domain 0.
#[derive(Debug, Clone, PartialEq)]
struct Drift {
    pairs: Vec<(usize, usize)>,
    angle: f64,
    shift: Vec<f64>,
}

impl Drift {
    fn identity(features: usize) -> Self {
        Self { pairs: Vec::new(), angle: 0.0, shift: vec![0.0; features] }
    }

    fn draw(features: usize, spec: &ScheduleSpec, rng: &mut StdRng) -> Self {
        let mut order: Vec<usize> = (0..features).collect();
        order.shuffle(rng);
        let pairs = order.chunks_exact(2).map(|p| (p[0], p[1])).collect();
        let angle = if rng.r#gen::<bool>() { spec.rotation } else { -spec.rotation };
        let shift = (0..features).map(|_| spec.shift * normal(rng)).collect();
        Self { pairs, angle, shift }
    }

    fn apply(&self, x: &[f64], features: usize) -> Vec<f64> {
        let (c, s) = (self.angle.cos(), self.angle.sin());
        let mut out = x.to_vec();
        for row in out.chunks_exact_mut(features.max(1)) {
            for &(i, j) in &self.pairs {
                let (a, b) = (row[i], row[j]);
                row[i] = c * a - s * b;
                row[j] = s * a + c * b;
            }
            row.iter_mut().zip(&self.shift).for_each(|(v, d)| *v += d);
        }
        out
    }
}

/// One phase of a [`Schedule`].
#[derive(Debug, Clone)]
pub struct Phase {
    /// Its first step (steps done before it).
    pub start: usize,
    /// Its rule steps.
    pub steps: usize,
    /// Output neurons during the phase: one per class seen so far (classes `0..outputs`).
    pub outputs: usize,
    /// The classes (= output neurons) arriving at its start; every class of the first phase.
    pub arriving: Range<usize>,
    /// The input domain in effect (0: the original inputs).
    pub domain: usize,
    /// What the grow sees: the training rows the phase shows, inputs of its domain.
    pub train: Arc<TaskData>,
    /// Every seen class's training rows, inputs of its domain (a phase's meta-loss).
    pub seen_train: Arc<TaskData>,
    /// Every seen class's validation rows, inputs of its domain.
    pub val: Arc<TaskData>,
}

/// A task cut into phases.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// What changes between phases.
    pub kind: ScheduleKind,
    /// The phases, in order.
    pub phases: Vec<Phase>,
    /// Every class's validation rows under each domain's inputs (`domain_val[0]`: the original
    /// inputs; one entry for a class-incremental schedule).
    pub domain_val: Vec<Arc<TaskData>>,
    /// Every class's training rows under every domain's inputs, at once (the joint baseline).
    pub all_train: Arc<TaskData>,
}

/// The rows of `x`/`y` whose label is in `keep`, relabelled as they are, `classes` outputs.
fn rows_where(x: &[f64], y: &[usize], features: usize, classes: usize, keep: impl Fn(usize) -> bool) -> TaskData {
    let rows: Vec<usize> = (0..y.len()).filter(|&r| keep(y[r])).collect();
    TaskData {
        x: rows.iter().flat_map(|&r| x[r * features..(r + 1) * features].iter().copied()).collect(),
        y: rows.iter().map(|&r| y[r]).collect(),
        features,
        classes,
    }
}

impl Schedule {
    /// Cuts `split` into phases as `spec` says; drifts are drawn from `rng`.
    pub fn new(spec: &ScheduleSpec, split: &Split, rng: &mut StdRng) -> Result<Self> {
        spec.check("schedule")?;
        spec.check_classes(&split.name, split.num_classes)?;
        let (f, c) = (split.num_features, split.num_classes);
        let (outputs, arriving, drifts): (Vec<usize>, Vec<Range<usize>>, Vec<Drift>) = match spec.kind {
            ScheduleKind::ClassIncremental => {
                let mut outs = vec![spec.first_classes];
                while outs[outs.len() - 1] < c {
                    let last = outs[outs.len() - 1];
                    outs.push((last + spec.classes_per_phase).min(c));
                }
                let arriving =
                    outs.iter().enumerate().map(|(p, &o)| if p == 0 { 0..o } else { outs[p - 1]..o }).collect();
                (outs, arriving, vec![Drift::identity(f)])
            }
            ScheduleKind::DomainIncremental => {
                let phases = spec.drifts + 1;
                let mut drifts = vec![Drift::identity(f)];
                drifts.extend((0..spec.drifts).map(|_| Drift::draw(f, spec, rng)));
                let arriving = (0..phases).map(|p| if p == 0 { 0..c } else { c..c }).collect();
                (vec![c; phases], arriving, drifts)
            }
        };
        let domains: Vec<(Vec<f64>, Vec<f64>)> =
            drifts.iter().map(|d| (d.apply(&split.train_x, f), d.apply(&split.val_x, f))).collect();
        let phases = outputs
            .iter()
            .zip(arriving)
            .enumerate()
            .map(|(p, (&outputs, arriving))| {
                let domain = if spec.kind == ScheduleKind::DomainIncremental { p } else { 0 };
                let (tx, vx) = &domains[domain];
                let shown = arriving.clone();
                let train = match (spec.kind, spec.rows) {
                    (ScheduleKind::ClassIncremental, PhaseRows::New) => {
                        rows_where(tx, &split.train_y, f, outputs, |y| shown.contains(&y))
                    }
                    _ => rows_where(tx, &split.train_y, f, outputs, |y| y < outputs),
                };
                Phase {
                    start: p * spec.phase_steps,
                    steps: spec.phase_steps,
                    outputs,
                    arriving,
                    domain,
                    train: Arc::new(train),
                    seen_train: Arc::new(rows_where(tx, &split.train_y, f, outputs, |y| y < outputs)),
                    val: Arc::new(rows_where(vx, &split.val_y, f, outputs, |y| y < outputs)),
                }
            })
            .collect();
        let domain_val = domains.iter().map(|(_, vx)| Arc::new(rows_where(vx, &split.val_y, f, c, |_| true))).collect();
        let all_train = TaskData {
            x: domains.iter().flat_map(|(tx, _)| tx.iter().copied()).collect(),
            y: domains.iter().flat_map(|_| split.train_y.iter().copied()).collect(),
            features: f,
            classes: c,
        };
        Ok(Self { kind: spec.kind, phases, domain_val, all_train: Arc::new(all_train) })
    }

    /// Rule steps of the whole schedule.
    pub fn total_steps(&self) -> usize {
        self.phases.iter().map(|p| p.steps).sum()
    }

    /// `topologies` (networks of the phase before `phase`) with an output neuron added for
    /// every class arriving at `phase`.
    pub fn entering(&self, phase: usize, topologies: &[Topology]) -> Result<Vec<Topology>> {
        let arriving = self.phases[phase].arriving.len();
        topologies
            .iter()
            .map(|t| {
                let mut t = t.clone();
                let last = t.sizes().len() - 1;
                for _ in 0..arriving {
                    t.add_neuron(last)?;
                }
                Ok(t)
            })
            .collect()
    }

    /// Layer sizes `sizes` of the full task, with the first phase's output neurons.
    pub fn first_sizes(&self, sizes: &[usize]) -> Vec<usize> {
        let mut s = sizes.to_vec();
        if let Some(last) = s.last_mut() {
            *last = self.phases[0].outputs;
        }
        s
    }

    /// Accuracy units whose forgetting is measured: classes (class-incremental) or input
    /// domains (domain-incremental).
    fn units(&self) -> usize {
        match self.kind {
            ScheduleKind::ClassIncremental => self.domain_val[0].classes,
            ScheduleKind::DomainIncremental => self.domain_val.len(),
        }
    }

    /// Accuracy of `net` (in `phase`) on the classes seen so far, the old and the arriving
    /// ones, and the first phase's data.
    fn groups(&self, net: &DenseNet<f64>, phase: usize) -> Groups {
        let ph = &self.phases[phase];
        let hits = correct(net, &ph.val);
        let acc = |keep: &dyn Fn(usize) -> bool| hit_rate(&ph.val.y, &hits, keep);
        let first_outputs = self.phases[0].outputs;
        let first = match self.kind {
            ScheduleKind::ClassIncremental => acc(&|y| y < first_outputs),
            ScheduleKind::DomainIncremental => Some(accuracy(net, &self.domain_val[0])),
        };
        Groups {
            seen: acc(&|_| true).unwrap_or(0.0),
            old: match self.kind {
                ScheduleKind::ClassIncremental if phase > 0 => acc(&|y| y < ph.arriving.start),
                _ => None,
            },
            new: if ph.arriving.is_empty() { None } else { acc(&|y| ph.arriving.contains(&y)) },
            first: first.unwrap_or(0.0),
        }
    }

    /// Accuracy of `net` (at the end of `phase`) on every unit there is so far.
    fn unit_accuracy(&self, net: &DenseNet<f64>, phase: usize) -> Vec<Option<f64>> {
        match self.kind {
            ScheduleKind::ClassIncremental => {
                let data = &self.domain_val[0];
                let outputs = self.phases[phase].outputs;
                let seen = rows_where(&data.x, &data.y, data.features, outputs, |y| y < outputs);
                let hits = correct(net, &seen);
                (0..self.units())
                    .map(|c| if c < outputs { hit_rate(&seen.y, &hits, &|y| y == c) } else { None })
                    .collect()
            }
            ScheduleKind::DomainIncremental => (0..self.units())
                .map(|d| (d <= self.phases[phase].domain).then(|| accuracy(net, &self.domain_val[d])))
                .collect(),
        }
    }
}

/// Per row of `data`: whether `net` predicts its label ([`task::argmax`] of the logits, as
/// every other accuracy of the project).
fn correct(net: &DenseNet<f64>, data: &TaskData) -> Vec<bool> {
    let act = task::forward(net, &data.x, None);
    let logits = &act.pre[act.pre.len() - 1];
    let mut z = vec![0.0; net.classes()];
    (0..data.y.len())
        .map(|b| {
            z.iter_mut().enumerate().for_each(|(j, v)| *v = logits[j * act.batch + b]);
            task::argmax(&z) == data.y[b]
        })
        .collect()
}

/// The fraction of the rows whose label `keep` picks that are `hits`; none without such rows.
fn hit_rate(labels: &[usize], hits: &[bool], keep: &dyn Fn(usize) -> bool) -> Option<f64> {
    let (n, k) =
        labels.iter().zip(hits).filter(|(y, _)| keep(**y)).fold((0, 0), |(n, k), (_, &h)| (n + 1, k + usize::from(h)));
    (n > 0).then(|| k as f64 / n as f64)
}

fn accuracy(net: &DenseNet<f64>, data: &TaskData) -> f64 {
    hit_rate(&data.y, &correct(net, data), &|_| true).unwrap_or(0.0)
}

/// Forgetting from unit accuracies at each phase end (`acc[phase][unit]`): over the units
/// there before the last phase, the mean of their best accuracy at an earlier phase end minus
/// their final accuracy (Chaudhry et al. 2018). 0 with a single phase.
pub fn forgetting(acc: &[Vec<Option<f64>>]) -> f64 {
    let Some((last, earlier)) = acc.split_last() else { return 0.0 };
    let drops: Vec<f64> = (0..last.len())
        .filter_map(|u| {
            let best = earlier.iter().filter_map(|p| p[u]).reduce(f64::max)?;
            Some(best - last[u]?)
        })
        .collect();
    if drops.is_empty() { 0.0 } else { drops.iter().sum::<f64>() / drops.len() as f64 }
}

/// A continual experiment on one task.
#[derive(Debug, Clone, PartialEq)]
pub struct ContinualSpec {
    /// The phases.
    pub schedule: ScheduleSpec,
    /// Networks grown (and backprop networks fine-tuned).
    pub networks: usize,
    /// Firing fraction.
    pub fire_fraction: f64,
    /// Seed of the grows, the drifts and the baselines.
    pub seed: u64,
    /// Full-batch Adam epochs per phase of the fine-tuned baseline, and its rate (the joint
    /// baseline trains `epochs` times the number of phases).
    pub baseline: BaselineSpec,
}

/// The networks' mean of [`Groups`].
fn mean_groups(all: &[Groups]) -> Groups {
    let n = all.len().max(1) as f64;
    let mean_opt = |f: &dyn Fn(&Groups) -> Option<f64>| {
        let v: Vec<f64> = all.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    Groups {
        seen: all.iter().map(|g| g.seen).sum::<f64>() / n,
        old: mean_opt(&|g| g.old),
        new: mean_opt(&|g| g.new),
        first: all.iter().map(|g| g.first).sum::<f64>() / n,
    }
}

/// `net` with `k` more output neurons, their incoming weights drawn Xavier-uniform for the
/// grown layer (old weights kept).
fn with_outputs(net: &DenseNet<f64>, k: usize, rng: &mut StdRng) -> Result<DenseNet<f64>> {
    let mut sizes = net.sizes.clone();
    let last = sizes.len() - 1;
    sizes[last] += k;
    let mut out = xavier_net(&sizes, net.bias, rng)?;
    for (l, w) in net.weights.iter().enumerate() {
        let (old_cols, cols) = (net.cols(l), out.cols(l));
        for r in 0..net.rows(l) {
            out.weights[l][r * cols..r * cols + old_cols].copy_from_slice(&w[r * old_cols..(r + 1) * old_cols]);
        }
    }
    Ok(out)
}

/// Backprop through the same schedule: a Xavier network trained `epochs` full-batch Adam
/// steps on each phase's training rows in turn (fresh optimiser state per phase; new output
/// neurons start Xavier). Its groups and unit accuracies at each phase end.
fn fine_tune_run(
    schedule: &Schedule,
    sizes: &[usize],
    bias: bool,
    spec: BaselineSpec,
    rng: &mut StdRng,
) -> Result<Run> {
    let mut net = xavier_net(&schedule.first_sizes(sizes), bias, rng)?;
    let mut run = Run::default();
    for (p, phase) in schedule.phases.iter().enumerate() {
        if !phase.arriving.is_empty() && p > 0 {
            net = with_outputs(&net, phase.arriving.len(), rng)?;
        }
        fine_tune(&mut net, None, &phase.train, spec.epochs, spec.lr);
        run.ends.push(schedule.groups(&net, p));
        run.units.push(schedule.unit_accuracy(&net, p));
    }
    Ok(run)
}

/// What one network (grown or trained) did at each phase end.
#[derive(Debug, Clone, Default)]
struct Run {
    ends: Vec<Groups>,
    units: Vec<Vec<Option<f64>>>,
}

/// Grows `spec.networks` networks through `task`'s schedule with `rule` on `engine`, and runs
/// the backprop baselines on the same schedule.
pub fn run(
    rule: &RuleNet,
    meta: &RuleMeta,
    engine: &dyn EngineKind,
    task: &TaskSource,
    spec: &ContinualSpec,
) -> Result<ContinualReport> {
    if spec.networks == 0 {
        return Err(Error::Config { key: "networks".into(), message: "must be at least 1".into() });
    }
    let cfg = &meta.config;
    let mut rng = rng_for(spec.seed, Stream::Continual, 0);
    let schedule = Schedule::new(&spec.schedule, &task.split, &mut rng)?;
    let width = meta.perception.state_width();
    let episode_spec = EpisodeSpec {
        archs: &task.archs,
        networks: spec.networks,
        bias: cfg.task.bias,
        weight_init: cfg.task.weight_init,
        code: meta.code,
        steps: 0,
        fire_fraction: spec.fire_fraction,
    };
    let full_sizes: Vec<Vec<usize>> = (0..spec.networks).map(|_| task.archs.sample(&mut rng)).collect();
    let topologies = full_sizes
        .iter()
        .map(|s| Topology::dense(&schedule.first_sizes(s), cfg.task.bias))
        .collect::<Result<Vec<_>>>()?;
    let episode = Episode::draw_for(topologies, &episode_spec, &mut rng)?;
    let phase0 = &schedule.phases[0];
    let mut grow = engine.start(rule, &meta.perception, &phase0.train, episode.topologies, episode.state0)?;
    let nets_of = |grow: &mut Box<dyn crate::engine::Engine>| -> Result<Vec<DenseNet<f64>>> {
        let state = grow.state()?;
        let batch = Batch::new(grow.topologies().to_vec());
        Ok((0..batch.num_nets()).map(|n| batch.dense_net(n, &state, width)).collect())
    };
    let point = |step: usize, phase: usize, nets: &[DenseNet<f64>]| {
        let groups: Vec<Groups> = nets.iter().map(|n| schedule.groups(n, phase)).collect();
        report::CurvePoint::new(step, phase, mean_groups(&groups))
    };
    let mut nets = nets_of(&mut grow)?;
    let mut curve = vec![point(0, 0, &nets)];
    let mut grown: Vec<Run> = vec![Run::default(); spec.networks];
    for (p, phase) in schedule.phases.iter().enumerate() {
        if p > 0 {
            let next = schedule.entering(p, grow.topologies())?;
            grow.reshape_on(next, phase.train.clone(), &meta.code, cfg.task.weight_init, &mut rng)?;
            // The changed networks before the rule has taken a step on the new data.
            nets = nets_of(&mut grow)?;
            curve.push(point(phase.start, p, &nets));
        }
        for s in 0..phase.steps {
            let fire: Vec<bool> =
                grow.topologies().iter().flat_map(|t| choose_firing(&mut rng, t, spec.fire_fraction)).collect();
            grow.step(&fire)?;
            nets = nets_of(&mut grow)?;
            curve.push(point(phase.start + s + 1, p, &nets));
        }
        for (run, net) in grown.iter_mut().zip(&nets) {
            run.ends.push(schedule.groups(net, p));
            run.units.push(schedule.unit_accuracy(net, p));
        }
    }
    let tuned = (0..spec.networks)
        .map(|n| {
            let mut rng = rng_for(spec.seed, Stream::Continual, 1 + n as u64);
            fine_tune_run(&schedule, &full_sizes[n], cfg.task.bias, spec.baseline, &mut rng)
        })
        .collect::<Result<Vec<_>>>()?;
    let joint: Vec<Groups> = (0..spec.networks)
        .map(|n| {
            let mut rng = rng_for(spec.seed, Stream::Continual, 1 + (spec.networks + n) as u64);
            let mut net = xavier_net(&full_sizes[n], cfg.task.bias, &mut rng)?;
            let epochs = spec.baseline.epochs * schedule.phases.len();
            fine_tune(&mut net, None, &schedule.all_train, epochs, spec.baseline.lr);
            Ok(schedule.groups(&net, schedule.phases.len() - 1))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(report::build(&schedule, task, &engine.name(), spec, report::Measured { curve, grown, tuned, joint }))
}
