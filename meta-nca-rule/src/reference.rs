//! The batched differentiable reference path: a whole grow of many task networks, unrolled
//! on one dfdx tape, so the meta-gradient of the task loss with respect to the rule's
//! parameters is exact.
//!
//! Tape discipline (see the dfdx notes): the state `[cells, 1+d]` travels between steps as one
//! tensor that carries the whole tape; inside a step its untaped value is used twice (by
//! perception and by the residual add), both of which write their gradient into the same id.
//! Every op's output feeds the next op, so no backward op is ever dropped. Perception and the
//! loss are fused ops with hand-written adjoints ([`fused`]); the finite-difference test in
//! `tests/` guards them.

use std::sync::Arc;

use dfdx::prelude::*;

use crate::batch::{ActivityStats, Batch, perceive_batch};
use crate::perception::{Group, PerceptionSpec};
use crate::rule::{RuleNet, bound};
use crate::task::{self, Activity, ActivityGrad, DenseNet};

/// A dfdx tensor of rows × columns.
pub type Tensor2<T> = Tensor<(usize, usize), f64, Cpu, T>;

/// The data a batch is grown on: standardised features and labels (the "batch" of SPEC).
#[derive(Debug, Clone)]
pub struct TaskData {
    /// Features, row-major `[B, n0]`.
    pub x: Vec<f64>,
    /// Labels `0..classes`.
    pub y: Vec<usize>,
    /// `n0`.
    pub features: usize,
    /// `nL`.
    pub classes: usize,
}

/// Loss and accuracy of one network on one set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction of correct argmax predictions.
    pub acc: f64,
}

/// Scores `net` on `data`.
pub fn score(net: &DenseNet<f64>, data: &TaskData) -> Score {
    let act = task::forward(net, &data.x, Some(&data.y));
    let (loss, correct) = task::loss_and_correct(&act, &data.y);
    Score { loss, acc: correct as f64 / data.y.len().max(1) as f64 }
}

/// Everything a grow of one batch needs besides the rule: the batch, the perception and the data.
#[derive(Debug, Clone)]
pub struct Grower {
    dev: Cpu,
    batch: Arc<Batch>,
    spec: Arc<PerceptionSpec>,
    data: Arc<TaskData>,
}

/// Maps an op's output gradient to its input gradient; may also add to other gradients
/// (an untaped operand's) through the store it is given.
type Backward = Box<dyn FnOnce(&[f64], &mut Gradients<f64, Cpu>) -> Result<Vec<f64>, CpuError>>;

fn pure(f: impl FnOnce(&[f64]) -> Vec<f64> + 'static) -> Backward {
    Box::new(move |g, _| Ok(f(g)))
}

/// A fused op on the tape: `forward` maps the input's values to the output's values and a
/// closure that maps the output's gradient to the input's gradient.
pub fn fused<T: Tape<f64, Cpu>, S: Shape>(
    dev: &Cpu,
    x: Tensor2<T>,
    out_shape: S,
    forward: impl FnOnce(&[f64]) -> (Vec<f64>, Backward),
) -> Tensor<S, f64, Cpu, T> {
    let (x, mut tape) = x.split_tape();
    let (values, backward) = forward(&x.as_vec());
    let out = dev.tensor_from_vec(values, out_shape);
    if T::OWNS_TAPE {
        let (x_ghost, out_ghost) = (x.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let g_out: Vec<f64> = grads.get_or_alloc_mut(&out_ghost)?.to_vec();
            let g_x = backward(&g_out, grads)?;
            for (a, b) in grads.get_or_alloc_mut(&x_ghost)?.iter_mut().zip(&g_x) {
                *a += b;
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}

impl Grower {
    /// A grower for `batch` on `data`; every network must have `data`'s input and output sizes.
    pub fn new(dev: &Cpu, batch: Batch, spec: PerceptionSpec, data: Arc<TaskData>) -> crate::Result<Self> {
        for (n, t) in batch.topologies().iter().enumerate() {
            let sizes = t.sizes();
            if sizes[0] != data.features || sizes[sizes.len() - 1] != data.classes {
                return Err(crate::Error::Topology(format!(
                    "network {n} has sizes {sizes:?} but the data has {} features and {} classes",
                    data.features, data.classes
                )));
            }
        }
        Ok(Self { dev: dev.clone(), batch: Arc::new(batch), spec: Arc::new(spec), data })
    }

    /// The batch being grown.
    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// The perception in use.
    pub fn spec(&self) -> &PerceptionSpec {
        &self.spec
    }

    /// The data the networks are grown on.
    pub fn data(&self) -> &TaskData {
        &self.data
    }

    /// A state tensor from row-major values `[cells, 1+d]`.
    pub fn state_tensor(&self, values: Vec<f64>) -> Tensor2<NoneTape> {
        let shape = (self.batch.num_cells(), self.spec.state_width());
        self.dev.tensor_from_vec(values, shape)
    }

    /// The dense weights of every network in `state`.
    pub fn dense_nets(&self, state: &[f64]) -> Vec<DenseNet<f64>> {
        let s = self.spec.state_width();
        (0..self.batch.num_nets()).map(|n| self.batch.dense_net(n, state, s)).collect()
    }

    /// One step: every cell perceives the same state, the firing cells add the rule's update.
    pub fn step<T: Tape<f64, Cpu>>(&self, rule: &RuleNet, state: Tensor2<T>, fire: &[bool]) -> Tensor2<T> {
        let (value, tape) = state.split_tape();
        let p = self.perceive(value.clone().put_tape(tape));
        self.apply(rule, rule.logits(p), value, fire)
    }

    /// Fused update: `state + fire ⊙ bound(logits)`. The state's gradient passes straight
    /// through; it is written to the untaped `state`'s id, which perception also writes to.
    fn apply<T: Tape<f64, Cpu>>(&self, rule: &RuleNet, logits: Tensor2<T>, state: Tensor2<NoneTape>, fire: &[bool]) -> Tensor2<T> {
        let s = self.spec.state_width();
        let shape = (fire.len(), s);
        let state_values = state.as_vec();
        let fire = fire.to_vec();
        let scale = rule.shape.output_scale;
        let state_ghost = state.ghost();
        fused(&self.dev, logits, shape, move |logits| {
            let mut next = state_values;
            let mut slope = vec![0.0; logits.len()];
            for (c, &f) in fire.iter().enumerate() {
                if f {
                    for k in c * s..(c + 1) * s {
                        let (d, ds) = bound(scale, logits[k]);
                        next[k] += d;
                        slope[k] = ds;
                    }
                }
            }
            let backward = move |g: &[f64], grads: &mut Gradients<f64, Cpu>| -> Result<Vec<f64>, CpuError> {
                for (a, b) in grads.get_or_alloc_mut(&state_ghost)?.iter_mut().zip(g) {
                    *a += b;
                }
                Ok(g.iter().zip(&slope).map(|(g, s)| g * s).collect())
            };
            (next, Box::new(backward))
        })
    }

    /// `fires.len()` steps from `state`; `fires[t]` flags the cells that fire at step `t`.
    pub fn unroll<T: Tape<f64, Cpu>>(&self, rule: &RuleNet, state: Tensor2<T>, fires: &[Vec<bool>]) -> Tensor2<T> {
        fires.iter().fold(state, |state, fire| self.step(rule, state, fire))
    }

    /// Fused perception of every cell: `[cells, 1+d]` → `[cells, width]`.
    pub fn perceive<T: Tape<f64, Cpu>>(&self, state: Tensor2<T>) -> Tensor2<T> {
        let this = self.clone();
        let shape = (self.batch.num_cells(), self.spec.width());
        fused(&self.dev, state, shape, move |state| {
            let (stats, acts) = this.activity(state);
            let p = perceive_batch(&this.spec, &this.batch, state, &stats);
            (p, pure(move |dp| this.perceive_adjoint(&acts, dp)))
        })
    }

    /// Mean over networks of the cross-entropy on the grow data, as a scalar on the tape.
    pub fn loss<T: Tape<f64, Cpu>>(&self, state: Tensor2<T>) -> Tensor<(), f64, Cpu, T> {
        let this = self.clone();
        fused(&self.dev, state, (), move |state| {
            let nets = self.dense_nets(state);
            let acts: Vec<Activity<f64>> =
                nets.iter().map(|n| task::forward(n, &this.data.x, Some(&this.data.y))).collect();
            let k = 1.0 / nets.len().max(1) as f64;
            let loss = acts.iter().map(|a| task::loss_and_correct(a, &this.data.y).0).sum::<f64>() * k;
            let backward = move |g: &[f64]| {
                let s = this.spec.state_width();
                let mut ds = vec![0.0; this.batch.num_cells() * s];
                for (n, (net, act)) in nets.iter().zip(&acts).enumerate() {
                    let grad = ActivityGrad::cross_entropy(act, &this.data.y, g[0] * k);
                    this.scatter_weight_grad(n, &task::backward(net, act, grad), &mut ds);
                }
                ds
            };
            (vec![loss], pure(backward))
        })
    }

    /// Activity statistics of every network in `state` (zeros when the perception needs none),
    /// and the networks with their activity for the adjoint.
    fn activity(&self, state: &[f64]) -> (ActivityStats, Vec<(DenseNet<f64>, Activity<f64>)>) {
        let mut stats = ActivityStats::zeros(&self.batch);
        if !self.spec.needs_activity() {
            return (stats, Vec::new());
        }
        let hebbian = self.spec.groups().contains(&Group::Hebbian);
        let mut out = Vec::with_capacity(self.batch.num_nets());
        for (n, net) in self.dense_nets(state).into_iter().enumerate() {
            let act = task::forward(&net, &self.data.x, Some(&self.data.y));
            let b = act.batch;
            let inv = 1.0 / b.max(1) as f64;
            let nl = net.num_layers();
            for k in 0..nl {
                let (rows, cols) = (net.rows(k), net.cols(k));
                for r in 0..rows {
                    stats.act[self.batch.neuron(n, k, r)] = (0..b).map(|i| act.acts[k][i * rows + r]).sum::<f64>() * inv;
                }
                for j in 0..cols {
                    stats.pre_act[self.batch.neuron(n, k + 1, j)] =
                        (0..b).map(|i| act.pre[k][i * cols + j]).sum::<f64>() * inv;
                }
            }
            let c = net.classes();
            for j in 0..c {
                stats.err[self.batch.neuron(n, nl, j)] = (0..b).map(|i| act.err[i * c + j]).sum::<f64>() * inv;
            }
            if hebbian {
                let (start, end) = self.batch.net_cells(n);
                for cell in start..end {
                    let id = self.batch.cells()[cell].id;
                    let (rows, cols) = (net.rows(id.layer), net.cols(id.layer));
                    let a = &act.acts[id.layer];
                    let z = &act.pre[id.layer];
                    stats.hebb_z[cell] = (0..b).map(|i| a[i * rows + id.pre] * z[i * cols + id.post]).sum::<f64>() * inv;
                    if id.layer + 1 == nl {
                        stats.hebb_e[cell] =
                            (0..b).map(|i| a[i * rows + id.pre] * act.err[i * cols + id.post]).sum::<f64>() * inv;
                    }
                }
            }
            out.push((net, act));
        }
        (stats, out)
    }

    /// Adds the dense weight gradient `dw` of network `n` to the `w` column of `ds`.
    fn scatter_weight_grad(&self, n: usize, dw: &[Vec<f64>], ds: &mut [f64]) {
        let s = self.spec.state_width();
        let (start, end) = self.batch.net_cells(n);
        let t = &self.batch.topologies()[n];
        for cell in start..end {
            let id = self.batch.cells()[cell].id;
            ds[cell * s] += dw[id.layer][id.pre * t.cols(id.layer) + id.post];
        }
    }

    /// The adjoint of [`Self::perceive`]: d loss / d state from d loss / d perception.
    fn perceive_adjoint(&self, acts: &[(DenseNet<f64>, Activity<f64>)], dp: &[f64]) -> Vec<f64> {
        let s = self.spec.state_width();
        let f = self.spec.width();
        let nn = self.batch.num_neurons();
        let nc = self.batch.num_cells();
        let (in_count, out_count) = self.batch.counts();
        let mut ds = vec![0.0; nc * s];
        // Gradient to broadcast to every cell into (gin) / out of (gout) a neuron.
        let mut gin = vec![0.0; nn * s];
        let mut gout = vec![0.0; nn * s];
        let mut g = ActivityStats::zeros(&self.batch);
        let inv = |count: usize| if count == 0 { 0.0 } else { 1.0 / count as f64 };
        for (c, slot) in self.batch.cells().iter().enumerate() {
            let d = &dp[c * f..(c + 1) * f];
            let own = c * s;
            let mut at = 0;
            for group in self.spec.groups() {
                match group {
                    Group::SelfState => (0..s).for_each(|k| ds[own + k] += d[at + k]),
                    Group::Column => {
                        let w = inv(in_count[slot.post].saturating_sub(1));
                        for k in 0..s {
                            gin[slot.post * s + k] += d[at + k] * w;
                            ds[own + k] -= d[at + k] * w;
                        }
                    }
                    Group::Row => {
                        let w = inv(out_count[slot.pre].saturating_sub(1));
                        for k in 0..s {
                            gout[slot.pre * s + k] += d[at + k] * w;
                            ds[own + k] -= d[at + k] * w;
                        }
                    }
                    Group::Upstream => {
                        let w = inv(in_count[slot.pre]);
                        (0..s).for_each(|k| gin[slot.pre * s + k] += d[at + k] * w);
                    }
                    Group::Downstream => {
                        let w = inv(out_count[slot.post]);
                        (0..s).for_each(|k| gout[slot.post * s + k] += d[at + k] * w);
                    }
                    Group::Activations => {
                        g.act[slot.pre] += d[at];
                        g.pre_act[slot.post] += d[at + 1];
                    }
                    Group::Feedback => g.err[slot.post] += d[at],
                    Group::Hebbian => {
                        g.hebb_z[c] += d[at];
                        g.hebb_e[c] += d[at + 1];
                    }
                }
                at += group.width(s);
            }
        }
        for (c, slot) in self.batch.cells().iter().enumerate() {
            for k in 0..s {
                ds[c * s + k] += gin[slot.post * s + k] + gout[slot.pre * s + k];
            }
        }
        for (n, (net, act)) in acts.iter().enumerate() {
            let grad = self.activity_grad(n, net, act, &g);
            let dw = task::backward(net, act, grad);
            self.scatter_weight_grad(n, &dw, &mut ds);
        }
        ds
    }

    /// Per-sample gradients of network `n`'s activity from gradients `g` of its statistics.
    fn activity_grad(&self, n: usize, net: &DenseNet<f64>, act: &Activity<f64>, g: &ActivityStats) -> ActivityGrad<f64> {
        let mut grad = ActivityGrad::zeros_like(act);
        let b = act.batch;
        let inv = 1.0 / b.max(1) as f64;
        let nl = net.num_layers();
        for k in 0..nl {
            let (rows, cols) = (net.rows(k), net.cols(k));
            if k > 0 {
                for r in 0..net.sizes[k] {
                    let v = g.act[self.batch.neuron(n, k, r)] * inv;
                    (0..b).for_each(|i| grad.d_acts[k][i * rows + r] += v);
                }
            }
            for j in 0..cols {
                let v = g.pre_act[self.batch.neuron(n, k + 1, j)] * inv;
                (0..b).for_each(|i| grad.d_pre[k][i * cols + j] += v);
            }
        }
        let c = net.classes();
        for j in 0..c {
            let v = g.err[self.batch.neuron(n, nl, j)] * inv;
            (0..b).for_each(|i| grad.d_err[i * c + j] += v);
        }
        let (start, end) = self.batch.net_cells(n);
        for cell in start..end {
            let id = self.batch.cells()[cell].id;
            let (gz, ge) = (g.hebb_z[cell] * inv, g.hebb_e[cell] * inv);
            let (rows, cols) = (net.rows(id.layer), net.cols(id.layer));
            let l = id.layer;
            for i in 0..b {
                let a = act.acts[l][i * rows + id.pre];
                let z = act.pre[l][i * cols + id.post];
                grad.d_acts[l][i * rows + id.pre] += gz * z;
                grad.d_pre[l][i * cols + id.post] += gz * a;
                if l + 1 == nl {
                    let e = act.err[i * cols + id.post];
                    grad.d_acts[l][i * rows + id.pre] += ge * e;
                    grad.d_err[i * cols + id.post] += ge * a;
                }
            }
        }
        grad
    }
}
