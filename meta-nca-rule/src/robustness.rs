//! Robustness on either engine (the reference path, or the actor simulation through
//! [`crate::engine::EngineKind`]): grow networks, remove a fraction of their connections, add
//! neurons or replace connections, keep applying the rule, and watch the accuracy recover; next
//! to a backprop-trained network pruned alike, without and with a short fine-tune.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::index::sample;
use serde::Serialize;

use crate::baseline::{BaselineSpec, fine_tune, train_baseline_net};
use crate::batch::Batch;
use crate::checkpoint::RuleMeta;
use crate::engine::{Engine, EngineKind};
use crate::episode::{Episode, EpisodeSpec};
use crate::experiment::TaskSource;
use crate::firing::choose_firing;
use crate::random::{Stream, rng_for};
use crate::rule::RuleNet;
use crate::task::DenseNet;
use crate::task_data::score;
use crate::topology::Topology;
use crate::{Error, Result};

/// Which connections are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PruneMode {
    /// Uniformly at random.
    Random,
    /// The smallest `|w|` first.
    Magnitude,
}

/// A prune experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneSpec {
    /// Fractions of each network's live connections to remove (each from the same grown state).
    pub fractions: Vec<f64>,
    /// Which connections.
    pub mode: PruneMode,
    /// Grow steps before the damage.
    pub at: usize,
    /// Rule steps after the damage.
    pub recover: usize,
    /// Networks grown.
    pub networks: usize,
    /// Firing fraction.
    pub fire_fraction: f64,
    /// Seed of the grows and of the damage.
    pub seed: u64,
    /// Adam epochs of the baseline's fine-tune after pruning.
    pub fine_tune_epochs: usize,
}

/// The accuracy curve of one damage fraction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PruneCurve {
    /// Fraction of connections removed.
    pub fraction: f64,
    /// Mean validation accuracy of the grown networks: before the damage, right after it,
    /// then after each recovery step.
    pub grown_val: Vec<f64>,
    /// The same on the training set.
    pub grown_train: Vec<f64>,
    /// Backprop baseline's mean validation accuracy: before, pruned alike without retraining,
    /// after the fine-tune.
    pub baseline_val: [f64; 3],
}

/// Indices (into `weights`) of the connections a `fraction` prune removes.
pub fn choose_pruned(weights: &[f64], fraction: f64, mode: PruneMode, rng: &mut StdRng) -> Vec<usize> {
    let k = ((fraction * weights.len() as f64).round() as usize).min(weights.len());
    match mode {
        PruneMode::Random => sample(rng, weights.len(), k).into_vec(),
        PruneMode::Magnitude => {
            let mut order: Vec<usize> = (0..weights.len()).collect();
            order.sort_by(|&a, &b| weights[a].abs().total_cmp(&weights[b].abs()));
            order.truncate(k);
            order
        }
    }
}

/// Mean train and validation accuracy of `topologies` in state `state`.
fn mean_scores(topologies: &[Topology], state: &[f64], width: usize, task: &TaskSource) -> (f64, f64) {
    let batch = Batch::new(topologies.to_vec());
    let nets: Vec<_> = (0..batch.num_nets()).map(|n| batch.dense_net(n, state, width)).collect();
    let n = nets.len().max(1) as f64;
    let train = nets.iter().map(|net| score(net, &task.train).acc).sum::<f64>() / n;
    let val = nets.iter().map(|net| score(net, &task.val).acc).sum::<f64>() / n;
    (train, val)
}

/// Every network of `topologies` with `fraction` of its live connections removed (`mode`
/// chooses which), read from the state rows `state` of width `width`.
pub fn prune_batch(
    topologies: &[Topology],
    state: &[f64],
    width: usize,
    fraction: f64,
    mode: PruneMode,
    rng: &mut StdRng,
) -> Result<Vec<Topology>> {
    let batch = Batch::new(topologies.to_vec());
    let mut out = Vec::with_capacity(batch.num_nets());
    for (n, t) in batch.topologies().iter().enumerate() {
        let (start, end) = batch.net_cells(n);
        let weights: Vec<f64> = state[start * width..end * width].chunks(width).map(|r| r[0]).collect();
        let cells: Vec<_> = t.cells().copied().collect();
        let mut damaged = t.clone();
        for k in choose_pruned(&weights, fraction, mode, rng) {
            damaged.remove_connection(cells[k].layer, cells[k].pre, cells[k].post)?;
        }
        out.push(damaged);
    }
    Ok(out)
}

/// Networks grown for `at` steps, ready to be damaged.
struct Grown {
    topologies: Vec<Topology>,
    values: Vec<f64>,
    before: (f64, f64),
}

/// What every experiment needs: the rule and its run, the task, and where the grows run.
pub struct Bench<'a> {
    /// The rule.
    pub rule: &'a RuleNet,
    /// Its run's metadata (perception, encoding, config).
    pub meta: &'a RuleMeta,
    /// The task grown on (train) and scored on (train and validation).
    pub task: &'a TaskSource,
    /// The engine the grows run on.
    pub engine: &'a dyn EngineKind,
}

impl Bench<'_> {
    fn width(&self) -> usize {
        self.meta.perception.state_width()
    }

    /// An engine on `topologies` in state `state`.
    fn start(&self, topologies: Vec<Topology>, state: Vec<f64>) -> Result<Box<dyn Engine>> {
        self.engine.start(self.rule, &self.meta.perception, &self.task.train, topologies, state)
    }

    fn scores(&self, engine: &mut dyn Engine) -> Result<(f64, f64)> {
        let state = engine.state()?;
        Ok(mean_scores(engine.topologies(), &state, self.width(), self.task))
    }

    fn grow_to(&self, networks: usize, at: usize, p: f64, seed: u64) -> Result<Grown> {
        let cfg = &self.meta.config;
        let episode_spec = EpisodeSpec {
            archs: &self.task.archs,
            networks,
            bias: cfg.task.bias,
            weight_init: cfg.task.weight_init,
            code: self.meta.code,
            steps: at,
            fire_fraction: p,
        };
        let mut rng = rng_for(seed, Stream::Eval, 1);
        let episode = Episode::draw(&episode_spec, &mut rng)?;
        let mut engine = self.start(episode.topologies, episode.state0)?;
        for fire in &episode.fires {
            engine.step(fire)?;
        }
        let before = self.scores(engine.as_mut())?;
        Ok(Grown { topologies: engine.topologies().to_vec(), values: engine.state()?, before })
    }

    /// The accuracy curve after `damaged` replaced the grown networks: right after, then
    /// after each of `recover` rule steps; `before` first.
    fn recovery(
        &self,
        grown: &Grown,
        damaged: Vec<Topology>,
        recover: usize,
        p: f64,
        rng: &mut StdRng,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let mut engine = self.start(grown.topologies.clone(), grown.values.clone())?;
        engine.reshape(damaged, &self.meta.code, self.meta.config.task.weight_init, rng)?;
        let (mut train, mut val) = (vec![grown.before.0], vec![grown.before.1]);
        for step in 0..=recover {
            if step > 0 {
                let fire: Vec<bool> = engine.topologies().iter().flat_map(|t| choose_firing(rng, t, p)).collect();
                engine.step(&fire)?;
            }
            let s = self.scores(engine.as_mut())?;
            train.push(s.0);
            val.push(s.1);
        }
        Ok((train, val))
    }
}

/// Runs the prune experiment with `rule` on `task`.
pub fn prune_experiment(bench: &Bench<'_>, spec: &PruneSpec) -> Result<Vec<PruneCurve>> {
    let (meta, task) = (bench.meta, bench.task);
    if let Some(q) = spec.fractions.iter().find(|q| !(0.0..=1.0).contains(*q)) {
        return Err(Error::Config { key: "fractions".into(), message: format!("{q} is not in [0, 1]") });
    }
    let grown = bench.grow_to(spec.networks, spec.at, spec.fire_fraction, spec.seed)?;
    let baselines = baselines(&grown.topologies, task, meta.config.task.bias)?;
    let mut curves = Vec::new();
    for &q in &spec.fractions {
        // The damage depends on the fraction, not on its place in the list.
        let key = (q * 1e6).round() as u64;
        let mut rng = rng_for(spec.seed, Stream::Eval, 1_000_000 + key);
        let damaged = prune_batch(&grown.topologies, &grown.values, bench.width(), q, spec.mode, &mut rng)?;
        let (train, val) = bench.recovery(&grown, damaged, spec.recover, spec.fire_fraction, &mut rng)?;
        let baseline_val = baseline_curve(&baselines, &grown.topologies, task, q, spec, key)?;
        curves.push(PruneCurve { fraction: q, grown_val: val, grown_train: train, baseline_val });
    }
    Ok(curves)
}

/// Adding hidden neurons mid-grow.
#[derive(Debug, Clone, PartialEq)]
pub struct NeuronSpec {
    /// Numbers of neurons added to the first hidden layer (each from the same grown state).
    pub counts: Vec<usize>,
    /// Grow steps before the neurons are added.
    pub at: usize,
    /// Rule steps after.
    pub recover: usize,
    /// Networks grown.
    pub networks: usize,
    /// Firing fraction.
    pub fire_fraction: f64,
    /// Seed of the grows.
    pub seed: u64,
}

/// The accuracy curve after adding neurons.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NeuronCurve {
    /// Neurons added to the first hidden layer of every network.
    pub added: usize,
    /// Mean validation accuracy: before, right after, then after each rule step.
    pub grown_val: Vec<f64>,
    /// The same on the training set.
    pub grown_train: Vec<f64>,
}

/// Grows networks, adds hidden neurons (connected to every neuron of the adjacent layers,
/// starting from the init of new cells), keeps applying the rule.
pub fn add_neurons_experiment(bench: &Bench<'_>, spec: &NeuronSpec) -> Result<Vec<NeuronCurve>> {
    let grown = bench.grow_to(spec.networks, spec.at, spec.fire_fraction, spec.seed)?;
    let mut curves = Vec::new();
    for &count in &spec.counts {
        let mut rng = rng_for(spec.seed, Stream::Eval, 2_000_000 + count as u64);
        let mut damaged = Vec::new();
        for t in &grown.topologies {
            let mut t = t.clone();
            for _ in 0..count {
                t.add_neuron(1)?;
            }
            damaged.push(t);
        }
        let (train, val) = bench.recovery(&grown, damaged, spec.recover, spec.fire_fraction, &mut rng)?;
        curves.push(NeuronCurve { added: count, grown_val: val, grown_train: train });
    }
    Ok(curves)
}

/// One backprop-trained network per distinct architecture in the batch.
fn baselines(topologies: &[Topology], task: &TaskSource, bias: bool) -> Result<BTreeMap<Vec<usize>, DenseNet<f64>>> {
    let mut out = BTreeMap::new();
    for t in topologies {
        if !out.contains_key(t.sizes()) {
            out.insert(t.sizes().to_vec(), train_baseline_net(t.sizes(), bias, &task.train, BaselineSpec::default())?);
        }
    }
    Ok(out)
}

/// The baseline's mean validation accuracy (over the batch's architectures): before, pruned
/// by the same rule of choice, and after a masked fine-tune.
fn baseline_curve(
    nets: &BTreeMap<Vec<usize>, DenseNet<f64>>,
    topologies: &[Topology],
    task: &TaskSource,
    q: f64,
    spec: &PruneSpec,
    key: u64,
) -> Result<[f64; 3]> {
    let mut rng = rng_for(spec.seed, Stream::Eval, 3_000_000 + key);
    let mut sums = [0.0; 3];
    for t in topologies {
        let net = &nets[t.sizes()];
        let flat: Vec<f64> = net.weights.iter().flatten().copied().collect();
        let mut mask: Vec<Vec<bool>> = net.weights.iter().map(|w| vec![true; w.len()]).collect();
        for k in choose_pruned(&flat, q, spec.mode, &mut rng) {
            let (mut layer, mut at) = (0, k);
            while at >= mask[layer].len() {
                at -= mask[layer].len();
                layer += 1;
            }
            mask[layer][at] = false;
        }
        let mut pruned = net.clone();
        for (w, m) in pruned.weights.iter_mut().zip(&mask) {
            w.iter_mut().zip(m).filter(|(_, live)| !**live).for_each(|(w, _)| *w = 0.0);
        }
        let before = score(net, &task.val).acc;
        let cut = score(&pruned, &task.val).acc;
        fine_tune(&mut pruned, Some(&mask), &task.train, spec.fine_tune_epochs, BaselineSpec::default().lr);
        let tuned = score(&pruned, &task.val).acc;
        sums[0] += before;
        sums[1] += cut;
        sums[2] += tuned;
    }
    let n = topologies.len().max(1) as f64;
    Ok(sums.map(|v| v / n))
}

/// Connection churn: every step, some connections die and as many new ones appear.
#[derive(Debug, Clone, PartialEq)]
pub struct ChurnSpec {
    /// Fractions of each network's live connections replaced at every step.
    pub rates: Vec<f64>,
    /// Grow steps before the churn starts.
    pub at: usize,
    /// Churned steps.
    pub steps: usize,
    /// Networks grown.
    pub networks: usize,
    /// Firing fraction.
    pub fire_fraction: f64,
    /// Seed of the grows and of the churn.
    pub seed: u64,
}

/// The accuracy curve of one churn rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChurnCurve {
    /// Fraction of live connections replaced per step.
    pub rate: f64,
    /// Mean validation accuracy: before the churn, then after each churned step.
    pub grown_val: Vec<f64>,
    /// The same on the training set.
    pub grown_train: Vec<f64>,
}

/// `t` with `round(rate · live)` random live connections removed and as many random dead
/// ones added (as new cells).
fn churn_once(t: &Topology, rate: f64, rng: &mut StdRng) -> Result<Topology> {
    let live: Vec<_> = t.cells().copied().collect();
    let k = ((rate * live.len() as f64).round() as usize).min(live.len());
    let mut dead = Vec::new();
    for l in 0..t.num_layers() {
        let mask = t.mask(l);
        for (at, &m) in mask.iter().enumerate() {
            if !m {
                dead.push((l, at / t.cols(l), at % t.cols(l)));
            }
        }
    }
    let mut out = t.clone();
    for i in sample(rng, live.len(), k) {
        out.remove_connection(live[i].layer, live[i].pre, live[i].post)?;
    }
    for i in sample(rng, dead.len(), k.min(dead.len())) {
        let (l, pre, post) = dead[i];
        out.add_connection(l, pre, post)?;
    }
    Ok(out)
}

/// Grows networks, then every step replaces a fraction of their connections and applies the
/// rule once.
pub fn churn_experiment(bench: &Bench<'_>, spec: &ChurnSpec) -> Result<Vec<ChurnCurve>> {
    if let Some(r) = spec.rates.iter().find(|r| !(0.0..=1.0).contains(*r)) {
        return Err(Error::Config { key: "rates".into(), message: format!("{r} is not in [0, 1]") });
    }
    let grown = bench.grow_to(spec.networks, spec.at, spec.fire_fraction, spec.seed)?;
    let (code, init) = (&bench.meta.code, bench.meta.config.task.weight_init);
    let mut curves = Vec::new();
    for &rate in &spec.rates {
        let mut rng = rng_for(spec.seed, Stream::Eval, 4_000_000 + (rate * 1e6).round() as u64);
        let (mut train, mut val) = (vec![grown.before.0], vec![grown.before.1]);
        let mut engine = bench.start(grown.topologies.clone(), grown.values.clone())?;
        for _ in 0..spec.steps {
            let churned =
                engine.topologies().iter().map(|t| churn_once(t, rate, &mut rng)).collect::<Result<Vec<_>>>()?;
            engine.reshape(churned, code, init, &mut rng)?;
            let fire: Vec<bool> =
                engine.topologies().iter().flat_map(|t| choose_firing(&mut rng, t, spec.fire_fraction)).collect();
            engine.step(&fire)?;
            let s = bench.scores(engine.as_mut())?;
            train.push(s.0);
            val.push(s.1);
        }
        curves.push(ChurnCurve { rate, grown_val: val, grown_train: train });
    }
    Ok(curves)
}
