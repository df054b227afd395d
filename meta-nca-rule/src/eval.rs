//! Evaluation: grow many fresh networks with a trained rule (no tape) and score them next to
//! the backprop baseline; and single grows recorded step by step.

use std::collections::BTreeMap;
use std::sync::Arc;

use dfdx::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::baseline::{BaselineSpec, train_baseline};
use crate::batch::Batch;
use crate::checkpoint::RuleMeta;
use crate::config::Config;
use crate::engine::EngineKind;
use crate::episode::{Episode, EpisodeSpec, draw_rows};
use crate::experiment::TaskSource;
use crate::firing::choose_firing;
use crate::fused::values;
use crate::init::HiddenCode;
use crate::init::{carry_plan, initial_state};
use crate::perception::PerceptionSpec;
use crate::random::{Stream, rng_for};
use crate::reference::Grower;
use crate::rule::RuleNet;
use crate::task::DenseNet;
use crate::task_data::{Score, TaskData, score};
use crate::topology::{CellId, Scheduled, Topology};

/// Mean, min and max of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    /// Mean.
    pub mean: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

impl Stats {
    /// Stats of `v` (NaN for an empty sample).
    pub fn of(v: &[f64]) -> Self {
        if v.is_empty() {
            return Self { mean: f64::NAN, min: f64::NAN, max: f64::NAN };
        }
        Self {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Backprop baseline accuracies, averaged over the grown networks' architectures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BaselineAcc {
    /// Training accuracy.
    pub train_acc: f64,
    /// Validation accuracy.
    pub val_acc: f64,
}

/// What `meta-nca eval` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// The dataset grown on.
    pub dataset: String,
    /// Networks grown.
    pub networks: usize,
    /// Rule steps per grow.
    pub steps: usize,
    /// Firing fraction.
    pub fire_fraction: f64,
    /// Seed of the grows.
    pub seed: u64,
    /// Training accuracy of the grown networks.
    pub train_acc: Stats,
    /// Validation accuracy of the grown networks.
    pub val_acc: Stats,
    /// Mean training loss of the grown networks.
    pub train_loss: f64,
    /// The backprop baseline on the same split.
    pub baseline: BaselineAcc,
    /// Mean over the grown networks of [`hidden_redundancy`] (`None` without hidden layers).
    pub hidden_redundancy: Option<f64>,
    /// Accuracy of the same grows after each step count asked for, ascending, the last being
    /// `steps` (`eval --horizons`; only `steps` without it).
    pub horizons: Vec<HorizonAcc>,
}

/// Accuracy of grown networks after a number of steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HorizonAcc {
    /// Rule steps grown.
    pub steps: usize,
    /// Training accuracy of the grown networks.
    pub train_acc: Stats,
    /// Validation accuracy of the grown networks.
    pub val_acc: Stats,
}

/// How to evaluate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalSpec {
    /// Networks to grow.
    pub networks: usize,
    /// Rule steps per grow.
    pub steps: usize,
    /// Firing fraction.
    pub fire_fraction: f64,
    /// Seed of the grows.
    pub seed: u64,
}

/// The layer sizes and scores (train, validation) of freshly grown networks.
pub type Grown = Vec<(Vec<usize>, Score, Score)>;

/// The layer sizes and scores (train, validation) of grown networks `nets` on `task`.
pub fn score_nets(nets: &[DenseNet<f64>], task: &TaskSource) -> Grown {
    nets.iter().map(|n| (n.sizes.clone(), score(n, &task.train), score(n, &task.val))).collect()
}

/// Grows `spec.networks` fresh networks in one batch (architectures drawn as in training,
/// from `stream`): their dense weights after each of `horizons` steps (ascending, the last
/// `spec.steps`; step `t` fires the same cells whatever the grow's length).
#[allow(clippy::too_many_arguments)]
pub fn grow_nets(
    rule: &RuleNet,
    perception: &PerceptionSpec,
    code: HiddenCode,
    cfg: &Config,
    task: &TaskSource,
    spec: EvalSpec,
    stream: Stream,
    horizons: &[usize],
) -> Result<Vec<Vec<DenseNet<f64>>>> {
    let mut rng = rng_for(spec.seed, stream, 0);
    let episode_spec = EpisodeSpec {
        archs: &task.archs,
        networks: spec.networks,
        bias: cfg.task.bias,
        weight_init: cfg.task.weight_init,
        code,
        steps: spec.steps,
        fire_fraction: spec.fire_fraction,
    };
    let episode = Episode::draw(&episode_spec, &mut rng)?;
    let rows = draw_rows(cfg.grow.batch_size, task.train.y.len(), spec.steps, &mut rng);
    let mut nets: Vec<Vec<DenseNet<f64>>> = horizons.iter().map(|_| Vec::with_capacity(spec.networks)).collect();
    grow_at(rule, perception, &task.train, &episode, &rows, horizons, |i, grown| nets[i].extend(grown))?;
    Ok(nets)
}

/// Grows `episode` on `data` without tape, its networks in groups within [`GROW_FLOATS`], step
/// `t` seeing the training rows `rows[t]` (every row when `rows` is empty), and hands each
/// group's dense networks after `horizons[i]` steps (ascending, at most the episode's
/// length) to `at(i, networks)`.
pub fn grow_at(
    rule: &RuleNet,
    perception: &PerceptionSpec,
    data: &Arc<TaskData>,
    episode: &Episode,
    rows: &[Vec<usize>],
    horizons: &[usize],
    mut at: impl FnMut(usize, Vec<DenseNet<f64>>),
) -> Result<()> {
    let dev = Cpu::default();
    let per_step = rows.first().map_or(data.y.len(), Vec::len);
    for part in in_groups(episode, rule, per_step, GROW_FLOATS) {
        let grower = Grower::new(&dev, Batch::new(part.topologies), perception.clone(), data.clone())?;
        let mut state = grower.state_tensor(part.state0);
        let mut done = 0;
        for (i, &h) in horizons.iter().enumerate() {
            let h = h.min(part.fires.len());
            let rows_now = if rows.is_empty() { rows } else { &rows[done..h] };
            state = grower.unroll_on(rule, state, &part.fires[done..h], rows_now);
            done = h;
            at(i, grower.dense_nets(&values(&state)));
        }
    }
    Ok(())
}

/// Floats an untaped grow may hold at a step, summed over its networks (2^27: 1 GiB of
/// `f64`). `eval`, the training probes and the suite grow their networks in groups under it,
/// so many networks on a big dataset need no more memory than a few.
pub const GROW_FLOATS: usize = 1 << 27;

/// Floats one network holds during an untaped step that sees `rows` rows: per cell its
/// perception, the rule's hidden activations, its output and new state; per row and neuron
/// the forward pass, the activity statistics and the messages (6 in all, rounded up).
pub fn step_floats(topology: &Topology, rule: &RuleNet, rows: usize) -> usize {
    let shape = &rule.shape;
    let per_cell = shape.input + shape.hidden.iter().sum::<usize>() + 2 * shape.output;
    let neurons: usize = topology.sizes().iter().sum::<usize>() + topology.num_layers();
    topology.num_cells() * per_cell + rows * neurons * 6
}

/// `episode` cut into groups of networks that each stay within `budget` floats at a step
/// ([`step_floats`]), to be grown one group after the other by `rule` (whose output is a
/// cell's state row, so its width is the episode's state width).
pub fn in_groups(episode: &Episode, rule: &RuleNet, rows: usize, budget: usize) -> Vec<Episode> {
    episode.split(rule.shape.output, budget, |t| step_floats(t, rule, rows))
}

/// How alike a network's hidden units are: the mean pairwise cosine similarity of their
/// input weight vectors (bias weight included), over every hidden layer; `None` without a
/// hidden layer of two or more units. Near 1: the units compute the same feature (symmetry
/// was never broken); near 0: they differ.
pub fn hidden_redundancy(net: &DenseNet<f64>) -> Option<f64> {
    let (mut sum, mut pairs) = (0.0, 0usize);
    for l in 1..net.num_layers() {
        let (rows, cols) = (net.rows(l - 1), net.cols(l - 1));
        let w = &net.weights[l - 1];
        let unit = |j: usize| (0..rows).map(move |r| w[r * cols + j]);
        let norm = |j: usize| unit(j).map(|v| v * v).sum::<f64>().sqrt();
        for a in 0..cols {
            for b in a + 1..cols {
                let (na, nb) = (norm(a), norm(b));
                let cos = if na == 0.0 || nb == 0.0 {
                    f64::from(u8::from(na == nb))
                } else {
                    unit(a).zip(unit(b)).map(|(x, y)| x * y).sum::<f64>() / (na * nb)
                };
                sum += cos;
                pairs += 1;
            }
        }
    }
    (pairs > 0).then(|| sum / pairs as f64)
}

/// Grows `spec.networks` fresh networks on `task` and scores them next to the backprop
/// baseline. The task need not be one the rule was trained on.
pub fn evaluate(rule: &RuleNet, meta: &RuleMeta, task: &TaskSource, spec: EvalSpec) -> Result<EvalReport> {
    evaluate_at(rule, meta, task, spec, &[spec.steps])
}

/// [`evaluate`], also scoring the same grows after each of `horizons` steps (growth past K:
/// `eval --horizons K,2K,5K`). The grows last `spec.steps`, which must be the largest horizon;
/// the report's main scores are at `spec.steps`.
pub fn evaluate_at(
    rule: &RuleNet,
    meta: &RuleMeta,
    task: &TaskSource,
    spec: EvalSpec,
    horizons: &[usize],
) -> Result<EvalReport> {
    let cfg = &meta.config;
    let mut horizons: Vec<usize> = horizons.iter().copied().filter(|&h| h > 0 && h < spec.steps).collect();
    horizons.sort_unstable();
    horizons.dedup();
    horizons.push(spec.steps);
    let mut at = grow_nets(rule, &meta.perception, meta.code, cfg, task, spec, Stream::Eval, &horizons)?;
    let nets = at.pop().unwrap_or_default();
    let accs = |nets: &[DenseNet<f64>]| {
        let grown = score_nets(nets, task);
        let train: Vec<f64> = grown.iter().map(|g| g.1.acc).collect();
        let val: Vec<f64> = grown.iter().map(|g| g.2.acc).collect();
        (grown, Stats::of(&train), Stats::of(&val))
    };
    let mut past: Vec<HorizonAcc> = horizons
        .iter()
        .zip(&at)
        .map(|(&steps, nets)| {
            let (_, train_acc, val_acc) = accs(nets);
            HorizonAcc { steps, train_acc, val_acc }
        })
        .collect();
    let redundancy: Vec<f64> = nets.iter().filter_map(hidden_redundancy).collect();
    let (grown, train_acc, val_acc) = accs(&nets);
    past.push(HorizonAcc { steps: spec.steps, train_acc, val_acc });
    let mut baselines = BTreeMap::new();
    for (s, _, _) in &grown {
        if !baselines.contains_key(s) {
            let b = train_baseline(s, cfg.task.bias, &task.train, &task.val, BaselineSpec::default())?;
            baselines.insert(s.clone(), b);
        }
    }
    let k = grown.len().max(1) as f64;
    let baseline = BaselineAcc {
        train_acc: grown.iter().map(|(s, _, _)| baselines[s].train.acc).sum::<f64>() / k,
        val_acc: grown.iter().map(|(s, _, _)| baselines[s].val.acc).sum::<f64>() / k,
    };
    Ok(EvalReport {
        dataset: task.name.clone(),
        networks: spec.networks,
        steps: spec.steps,
        fire_fraction: spec.fire_fraction,
        seed: spec.seed,
        train_acc,
        val_acc,
        train_loss: grown.iter().map(|g| g.1.loss).sum::<f64>() / k,
        baseline,
        hidden_redundancy: (!redundancy.is_empty()).then(|| redundancy.iter().sum::<f64>() / redundancy.len() as f64),
        horizons: past,
    })
}

/// One step of a recorded grow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrowStep {
    /// Steps applied so far (0 = the starting state).
    pub step: usize,
    /// Weight of every cell, in `cells` order.
    pub weights: Vec<f64>,
    /// Hidden state of every cell, in `cells` order.
    pub hidden: Vec<Vec<f64>>,
    /// Which cells fired to reach this state (empty at step 0).
    #[serde(default)]
    pub fired: Vec<bool>,
    /// Training loss of the network in this state.
    pub train_loss: f64,
    /// Training accuracy.
    pub train_acc: f64,
    /// Validation accuracy.
    pub val_acc: f64,
    /// The network of this state, when a change made it differ from the last state's (the
    /// order of `weights`, `hidden` and `fired` from here on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
}

impl GrowStep {
    /// Step `step` of a grow in state `values` (rows `[w, h..]` of `width`, in `cells` order),
    /// reached by firing `fired`, scoring `train` and `val`; `topology`: the network, when a
    /// change made it differ from the last step's.
    pub fn new(
        step: usize,
        values: &[f64],
        width: usize,
        fired: Vec<bool>,
        (train, val): (Score, Score),
        topology: Option<Topology>,
    ) -> Self {
        Self {
            step,
            weights: values.chunks(width).map(|r| r[0]).collect(),
            hidden: values.chunks(width).map(|r| r[1..].to_vec()).collect(),
            fired,
            train_loss: train.loss,
            train_acc: train.acc,
            val_acc: val.acc,
            topology,
        }
    }
}

/// A recorded grow of one network (what `meta-nca grow --save` writes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrowRecord {
    /// Layer sizes.
    pub sizes: Vec<usize>,
    /// Bias cells on.
    pub bias: bool,
    /// Seed of the grow.
    pub seed: u64,
    /// Firing fraction.
    pub fire_fraction: f64,
    /// The live cells at the start, in state-row order.
    pub cells: Vec<CellId>,
    /// The starting state and the state after every step.
    pub steps: Vec<GrowStep>,
    /// Where it grew (`reference`, or the actor simulation).
    #[serde(default)]
    pub engine: String,
    /// Topology changes between steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Scheduled>,
    /// The fixed feedback weight `B` of every starting cell, in `cells` order (empty when the
    /// rule draws none; cells added later carry theirs in the step's `topology`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feedback: Vec<f64>,
}

impl GrowRecord {
    /// Checks that every step, cell and hidden state fits the layer sizes (a record read
    /// from a file may not).
    pub fn check(&self) -> Result<()> {
        let bad = |message: String| Err(crate::Error::Config { key: "grow record".into(), message });
        if self.sizes.len() < 2 {
            return bad(format!("sizes {:?} has no weight matrix", self.sizes));
        }
        if self.steps.is_empty() {
            return bad("no steps recorded".into());
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.cells {
            if c.layer + 1 >= self.sizes.len() {
                return bad(format!("cell {c} is beyond the last layer of sizes {:?}", self.sizes));
            }
            let rows = self.sizes[c.layer] + usize::from(self.bias);
            if c.pre >= rows || c.post >= self.sizes[c.layer + 1] {
                return bad(format!("cell {c} is outside its layer's matrix"));
            }
            if !seen.insert((c.layer, c.pre, c.post)) {
                return bad(format!("cell {c} appears twice"));
            }
        }
        let (mut n, width) = (self.cells.len(), self.hidden_width());
        for s in &self.steps {
            if let Some(t) = &s.topology {
                n = t.num_cells();
            }
            if s.weights.len() != n || s.hidden.len() != n || !(s.fired.is_empty() || s.fired.len() == n) {
                return bad(format!(
                    "step {} has {} weights, {} hidden states and {} firing flags for {n} cells",
                    s.step,
                    s.weights.len(),
                    s.hidden.len(),
                    s.fired.len()
                ));
            }
            if let Some(h) = s.hidden.iter().find(|h| h.len() != width) {
                return bad(format!("step {} has a hidden state of width {} (expected {width})", s.step, h.len()));
            }
        }
        Ok(())
    }

    /// Number of weight matrices.
    pub fn layers(&self) -> usize {
        self.sizes.len().saturating_sub(1)
    }

    /// Hidden channels per cell.
    pub fn hidden_width(&self) -> usize {
        self.steps.first().and_then(|s| s.hidden.first()).map_or(0, Vec::len)
    }

    /// Rule steps of the grow (the last recorded step).
    pub fn total_steps(&self) -> usize {
        self.steps.last().map_or(0, |s| s.step)
    }
}

/// Grows one network of layer sizes `sizes` for `steps` steps on `engine`, applying
/// `changes` between steps, and records every state. The draws are those of an episode
/// ([`Episode::draw_for`]: the starting state, then each step's firing flags), with a
/// change's new cells drawn where it happens; without changes, the reference engine grows
/// exactly [`Episode::draw_for`]'s episode. Every change is checked (it names something that
/// exists, its new cells fit the encoding, it comes before the last step) before the grow
/// starts.
#[allow(clippy::too_many_arguments)]
pub fn grow_one(
    engine: &dyn EngineKind,
    rule: &RuleNet,
    meta: &RuleMeta,
    task: &TaskSource,
    sizes: &[usize],
    steps: usize,
    fire_fraction: f64,
    seed: u64,
    changes: &[Scheduled],
) -> Result<GrowRecord> {
    let cfg = &meta.config;
    let (code, init) = (&meta.code, cfg.task.weight_init);
    let mut start = Topology::dense(sizes, cfg.task.bias)?;
    let mut changes = changes.to_vec();
    changes.sort_by_key(|c| c.after);
    let mut probe = start.clone();
    for c in &changes {
        if c.after >= steps {
            return Err(crate::Error::Topology(format!(
                "{c}: a change must come before the last of the {steps} steps"
            )));
        }
        let before = probe.clone();
        probe.apply(&c.change).map_err(|e| match e {
            crate::Error::Topology(why) => crate::Error::Topology(format!("{c}: {why}")),
            other => other,
        })?;
        carry_plan(code, init, &before, &probe, &mut rng_for(seed, Stream::Grow, 1))?;
    }
    let cells: Vec<CellId> = start.cells().copied().collect();
    let mut rng = rng_for(seed, Stream::Grow, 0);
    let state0 = initial_state(code, init, &mut start, &mut rng)?;
    let feedback = if start.feedback_seed().is_some() { start.feedback().collect() } else { Vec::new() };
    let mut grow = engine.start(rule, &meta.perception, &task.train, vec![start.clone()], state0)?;
    let width = meta.perception.state_width();
    let record = |step: usize, topology: &Topology, values: &[f64], fired: Vec<bool>, changed: bool| {
        let net = Batch::new(vec![topology.clone()]).dense_net(0, values, width);
        let scores = (score(&net, &task.train), score(&net, &task.val));
        GrowStep::new(step, values, width, fired, scores, changed.then(|| topology.clone()))
    };
    let mut topology = start;
    let mut out = vec![record(0, &topology, &grow.state()?, Vec::new(), false)];
    for t in 0..steps {
        let due: Vec<&Scheduled> = changes.iter().filter(|c| c.after == t).collect();
        if !due.is_empty() {
            for c in &due {
                topology.apply(&c.change)?;
            }
            grow.reshape(vec![topology.clone()], code, init, &mut rng)?;
        }
        let fire = choose_firing(&mut rng, &topology, fire_fraction);
        grow.step(&fire)?;
        out.push(record(t + 1, &topology, &grow.state()?, fire, !due.is_empty()));
    }
    Ok(GrowRecord {
        sizes: sizes.to_vec(),
        bias: cfg.task.bias,
        seed,
        fire_fraction,
        cells,
        steps: out,
        engine: engine.name(),
        changes,
        feedback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_in_groups_grows_the_same_networks() {
        let mut cfg = Config::default();
        cfg.task.hidden = vec![vec![3], vec![]];
        cfg.rule.hidden = vec![8];
        cfg.rule.last_init = 0.3;
        let exp = crate::experiment::Experiment::new(cfg.clone()).expect("iris");
        let task = exp.primary();
        let code = cfg.hidden_code(exp.extent());
        let (perception, shape) = cfg.rule_shape(&code).expect("shape");
        let mut rng = rng_for(3, Stream::Eval, 0);
        let rule = RuleNet::new(&Cpu::default(), shape, &mut rng);
        let spec = EpisodeSpec {
            archs: &task.archs,
            networks: 7,
            bias: true,
            weight_init: cfg.task.weight_init,
            code,
            steps: 5,
            fire_fraction: 0.6,
        };
        let episode = Episode::draw(&spec, &mut rng).expect("episode");
        let grow = |budget: usize| {
            let groups = in_groups(&episode, &rule, task.train.y.len(), budget);
            let n = groups.len();
            let nets: Vec<DenseNet<f64>> = groups
                .into_iter()
                .flat_map(|part| {
                    let grower = Grower::new(
                        &Cpu::default(),
                        Batch::new(part.topologies),
                        perception.clone(),
                        task.train.clone(),
                    )
                    .expect("grower");
                    let last = values(&grower.unroll(&rule, grower.state_tensor(part.state0), &part.fires));
                    grower.dense_nets(&last)
                })
                .collect();
            (n, nets)
        };
        let (one, whole) = grow(usize::MAX);
        let (three, grouped) = grow(2 * step_floats(&episode.topologies[0], &rule, task.train.y.len()) + 1);
        let (seven, alone) = grow(1);
        assert_eq!((one, seven), (1, 7));
        assert!(three > 1 && three < 7, "{three} groups");
        for nets in [&grouped, &alone] {
            assert_eq!(nets.len(), 7);
            for (a, b) in whole.iter().zip(nets.iter()) {
                assert_eq!(a.sizes, b.sizes);
                for (x, y) in a.weights.iter().flatten().zip(b.weights.iter().flatten()) {
                    assert!((x - y).abs() <= 1e-12, "{x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn redundancy_of_identical_and_orthogonal_units() {
        // [2, 2, 1] without bias: W_0 is [2 rows, 2 cols]; units are columns.
        let mut net = DenseNet::zeros(&[2, 2, 1], false);
        net.weights[0] = vec![1.0, 2.0, 0.5, 1.0];
        assert!((hidden_redundancy(&net).expect("a hidden layer") - 1.0).abs() < 1e-12);
        net.weights[0] = vec![1.0, 0.0, 0.0, 3.0];
        assert!(hidden_redundancy(&net).expect("a hidden layer").abs() < 1e-12);
        net.weights[0] = vec![1.0, -1.0, 0.0, 0.0];
        assert!((hidden_redundancy(&net).expect("a hidden layer") + 1.0).abs() < 1e-12);
        assert_eq!(hidden_redundancy(&DenseNet::zeros(&[2, 3], true)), None);
    }
}
