//! The batched differentiable reference path: a whole grow of many task networks, unrolled
//! on one dfdx tape, so the meta-gradient of the task loss with respect to the rule's
//! parameters is exact.
//!
//! Tape discipline (see the dfdx notes): the state `[cells, 1+d]` travels between steps as one
//! tensor that carries the whole tape; inside a step its untaped value is used twice (by
//! perception and by the residual add), both of which write their gradient into the same id.
//! Every op's output feeds the next op, so no backward op is ever dropped. Perception and the
//! loss are fused ops with hand-written adjoints ([`fused`]); the finite-difference test in
//! `tests/` guards them. `activity.rs` holds the part of perception that reads the networks'
//! activity and messages, with its adjoint.

use std::sync::Arc;

use dfdx::prelude::*;

use crate::batch::{ActivityStats, Batch, Perceiver, perceive_batch};
use crate::init::{HiddenCode, RowSource, WeightInit, apply_plan, carry_plan};
use crate::perception::{Counts, Input, PerceptionSpec, perceive_adjoint};
use crate::rule::{ForwardPass, RuleNet, bound};
use crate::task::{self, Activity, ActivityGrad, DenseNet};
use crate::task_data::TaskData;
use crate::topology::Topology;
use rand::rngs::StdRng;

mod activity;

/// Firing cells perceived and passed through the rule together by [`Grower::step_plain`].
pub const STEP_CHUNK: usize = 256;

/// Firing cells from which [`Grower::step_plain`] shares a step among the machine's cores.
pub const PARALLEL_CELLS: usize = 16 * STEP_CHUNK;

/// The update of the firing cells `cells` (ascending) in `block`, the state rows of the cells
/// from `first` on: [`STEP_CHUNK`] cells at a time, perceived, passed through the rule, and
/// added to their rows.
fn update_cells(
    perceiver: &Perceiver<'_>,
    pass: &mut ForwardPass,
    cells: &[usize],
    first: usize,
    block: &mut [f64],
    s: usize,
    scale: f64,
) {
    let f = pass.input();
    let mut percept = vec![0.0; STEP_CHUNK.min(cells.len()) * f];
    let mut logits = vec![0.0; STEP_CHUNK.min(cells.len()) * s];
    for chunk in cells.chunks(STEP_CHUNK) {
        for (&c, out) in chunk.iter().zip(percept.chunks_exact_mut(f)) {
            let at = (c - first) * s;
            perceiver.cell(c, &block[at..at + s], out);
        }
        let n = chunk.len();
        pass.logits(&percept[..n * f], &mut logits[..n * s]);
        for (&c, z) in chunk.iter().zip(logits.chunks_exact(s)) {
            let at = (c - first) * s;
            for (v, &z) in block[at..at + s].iter_mut().zip(z) {
                *v += bound(scale, z).0;
            }
        }
    }
}

pub use crate::fused::Tensor2;
use crate::fused::{fused, pure, values};

/// What [`Grower::damaged_loss`] returns.
pub struct Damaged<T> {
    /// The mean of the losses before the damage and after the recovery, on the tape.
    pub loss: Tensor<(), f64, Cpu, T>,
    /// The grower of the damaged networks.
    pub grower: Grower,
    /// Their final state values.
    pub values: Vec<f64>,
}

/// Every network of `batch` must have `data`'s input and output sizes.
fn check_fit(batch: &Batch, data: &TaskData) -> crate::Result<()> {
    for (n, t) in batch.topologies().iter().enumerate() {
        let sizes = t.sizes();
        if sizes[0] != data.features || sizes[sizes.len() - 1] != data.classes {
            return Err(crate::Error::Topology(format!(
                "network {n} has sizes {sizes:?} but the data has {} features and {} classes",
                data.features, data.classes
            )));
        }
    }
    Ok(())
}

/// Everything a grow of one batch needs besides the rule: the batch, the perception and the data.
#[derive(Debug, Clone)]
pub struct Grower {
    dev: Cpu,
    batch: Arc<Batch>,
    spec: Arc<PerceptionSpec>,
    data: Arc<TaskData>,
}

impl Grower {
    /// A grower for `batch` on `data`; every network must have `data`'s input and output sizes.
    pub fn new(dev: &Cpu, batch: Batch, spec: PerceptionSpec, data: Arc<TaskData>) -> crate::Result<Self> {
        check_fit(&batch, &data)?;
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

    /// The data the networks are grown on, shared.
    pub fn data_arc(&self) -> &Arc<TaskData> {
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
    /// Without a tape this is [`Self::step_plain`] on the tensor's values.
    pub fn step<T: Tape<f64, Cpu>>(&self, rule: &RuleNet, state: Tensor2<T>, fire: &[bool]) -> Tensor2<T> {
        let (value, tape) = state.split_tape();
        if !T::OWNS_TAPE {
            let mut plain = values(&value);
            self.step_plain(rule, &mut plain, fire);
            return self.dev.tensor_from_vec(plain, *value.shape()).put_tape(tape);
        }
        let p = self.perceive(value.clone().put_tape(tape));
        self.apply(rule, rule.logits(p), value, fire)
    }

    /// [`Self::step`] without tape, in place on plain values `[cells, state width]`: the
    /// rule's logits come from a [`ForwardPass`] and are bounded with [`bound`], as the taped
    /// step bounds them, so the two agree to a few machine epsilons (the pass's hidden `tanh`,
    /// `rule/tanh.rs`, is not the C library's, and it sums in its own order). Only firing
    /// cells are perceived and passed through the rule, [`STEP_CHUNK`] at a time, each
    /// updated as soon as its chunk is through: a cell's perception reads its own row and the
    /// neuron sums taken before the first update, so no `[cells, width]` perception matrix is
    /// built and nothing but the state is copied. From [`PARALLEL_CELLS`] firing cells on, the
    /// machine's cores share the chunks.
    pub fn step_plain(&self, rule: &RuleNet, state: &mut [f64], fire: &[bool]) {
        let firing = fire.iter().filter(|f| **f).count();
        let threads =
            if firing >= PARALLEL_CELLS { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { 1 };
        self.step_plain_on(rule, state, fire, threads);
    }

    /// [`Self::step_plain`] on `threads` threads, each taking a contiguous block of cells
    /// with about the same number of firing cells. Every thread count gives the same bits.
    pub fn step_plain_on(&self, rule: &RuleNet, state: &mut [f64], fire: &[bool], threads: usize) {
        let s = self.spec.state_width();
        let (stats, _) = self.activity(state);
        let perceiver = Perceiver::new(&self.spec, &self.batch, state, &stats);
        let mut pass = rule.forward_pass();
        let scale = rule.shape.output_scale;
        let firing: Vec<usize> = fire.iter().enumerate().filter(|(_, f)| **f).map(|(c, _)| c).collect();
        let threads = threads.clamp(1, firing.len().div_ceil(STEP_CHUNK).max(1));
        if threads == 1 {
            return update_cells(&perceiver, &mut pass, &firing, 0, state, s, scale);
        }
        let (perceiver, pass) = (&perceiver, &pass);
        std::thread::scope(|scope| {
            let (mut rest, mut first) = (state, 0);
            for part in firing.chunks(firing.len().div_ceil(threads)) {
                let end = part.last().map_or(first, |c| c + 1);
                let (block, tail) = std::mem::take(&mut rest).split_at_mut((end - first) * s);
                scope.spawn(move || update_cells(perceiver, &mut pass.clone(), part, first, block, s, scale));
                (rest, first) = (tail, end);
            }
        });
    }

    /// Fused update: `state + fire ⊙ bound(logits)`. The state's gradient passes straight
    /// through; it is written to the untaped `state`'s id, which perception also writes to.
    fn apply<T: Tape<f64, Cpu>>(
        &self,
        rule: &RuleNet,
        logits: Tensor2<T>,
        state: Tensor2<NoneTape>,
        fire: &[bool],
    ) -> Tensor2<T> {
        let s = self.spec.state_width();
        let shape = (fire.len(), s);
        let state_values = values(&state);
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

    /// The grow continued on changed networks (`topologies[n]` replaces network `n`): a
    /// grower for them and the state carried over, on the tape. Surviving cells keep their
    /// rows (their gradients flow back to the old state), removed cells drop out of every
    /// neighbour's means, added cells start from the init of [`carry_plan`].
    pub fn reshape<T: Tape<f64, Cpu>>(
        &self,
        state: Tensor2<T>,
        topologies: Vec<Topology>,
        code: &HiddenCode,
        init: WeightInit,
        rng: &mut StdRng,
    ) -> crate::Result<(Grower, Tensor2<T>)> {
        self.reshape_on(state, topologies, self.data.clone(), code, init, rng)
    }

    /// [`Self::reshape`] onto new data: the grow goes on on `data` (a new phase of a changing
    /// task, as in the `continual` module), which must fit the changed networks (an output neuron
    /// added with a class arriving, for instance).
    pub fn reshape_on<T: Tape<f64, Cpu>>(
        &self,
        state: Tensor2<T>,
        topologies: Vec<Topology>,
        data: Arc<TaskData>,
        code: &HiddenCode,
        init: WeightInit,
        rng: &mut StdRng,
    ) -> crate::Result<(Grower, Tensor2<T>)> {
        if topologies.len() != self.batch.num_nets() {
            return Err(crate::Error::Topology(format!(
                "a reshape needs {} networks, got {}",
                self.batch.num_nets(),
                topologies.len()
            )));
        }
        let mut plan = Vec::new();
        for (n, new) in topologies.iter().enumerate() {
            let offset = self.batch.net_cells(n).0;
            for source in carry_plan(code, init, &self.batch.topologies()[n], new, rng)? {
                plan.push(match source {
                    RowSource::Old(r) => RowSource::Old(offset + r),
                    new_row => new_row,
                });
            }
        }
        let grower = Grower::new(&self.dev, Batch::new(topologies), (*self.spec).clone(), data)?;
        let s = self.spec.state_width();
        let (old_rows, rows) = (self.batch.num_cells(), plan.len());
        let carried = fused(&self.dev, state, (rows, s), move |old| {
            let values = apply_plan(&plan, old, s);
            let backward = move |g: &[f64]| {
                let mut d_old = vec![0.0; old_rows * s];
                for (k, source) in plan.iter().enumerate() {
                    if let RowSource::Old(r) = source {
                        for j in 0..s {
                            d_old[r * s + j] += g[k * s + j];
                        }
                    }
                }
                d_old
            };
            (values, pure(backward))
        });
        Ok((grower, carried))
    }

    /// Damage-aware loss: the loss of `state`, then the networks replaced by `damaged` (see
    /// [`Self::reshape`]), `recover` more steps on them (firing fraction `p`), and the loss
    /// again.
    #[allow(clippy::too_many_arguments)]
    pub fn damaged_loss<T: Tape<f64, Cpu>>(
        &self,
        rule: &RuleNet,
        state: Tensor2<T>,
        damaged: Vec<Topology>,
        recover: usize,
        p: f64,
        code: &HiddenCode,
        init: WeightInit,
        rng: &mut StdRng,
    ) -> crate::Result<Damaged<T>> {
        // The state feeds two ops (the loss and the reshape): its tape goes through the first
        // and on into the second, so neither loses a backward op.
        let (value, tape) = state.split_tape();
        let (before, tape) = self.loss(value.clone().put_tape(tape)).split_tape();
        let (grower, carried) = self.reshape(value.put_tape(tape), damaged, code, init, rng)?;
        let fires = crate::firing::draw_fires(rng, grower.batch().topologies(), recover, p);
        let (last, tape) = grower.unroll(rule, carried, &fires).split_tape();
        let values = values(&last);
        let after = grower.loss(last.put_tape(tape));
        Ok(Damaged { loss: (after + before) * 0.5, grower, values })
    }

    /// `fires.len()` steps from `state` and the mean of the losses after each of the last
    /// `tail` of them (`tail = 1`: the loss of the final state), with the final state's values.
    /// Step `t` sees the training rows `rows[t]` (all of them when `rows` is empty); the loss
    /// is on every row. The earlier losses' tapes travel on with the state, so no backward op
    /// is dropped.
    pub fn unroll_tail_loss<T: Tape<f64, Cpu>>(
        &self,
        rule: &RuleNet,
        state: Tensor2<T>,
        fires: &[Vec<bool>],
        rows: &[Vec<usize>],
        tail: usize,
    ) -> (Tensor<(), f64, Cpu, T>, Vec<f64>) {
        self.unroll_tail_loss_on(rule, state, fires, rows, tail, self)
    }

    /// [`Self::unroll_tail_loss`] with the losses taken on `judge`'s data instead of this
    /// grower's (the same networks; rows the grow never sees: `train.held-out`).
    pub fn unroll_tail_loss_on<T: Tape<f64, Cpu>>(
        &self,
        rule: &RuleNet,
        mut state: Tensor2<T>,
        fires: &[Vec<bool>],
        rows: &[Vec<usize>],
        tail: usize,
        judge: &Grower,
    ) -> (Tensor<(), f64, Cpu, T>, Vec<f64>) {
        let tail = tail.clamp(1, fires.len().max(1));
        let mut earlier = Vec::new();
        for (t, fire) in fires.iter().enumerate() {
            state = self.step_on(rule, state, fire, rows.get(t).map(Vec::as_slice));
            if t + tail >= fires.len() && t + 1 < fires.len() {
                let (value, tape) = state.split_tape();
                let (loss, tape) = judge.loss(value.clone().put_tape(tape)).split_tape();
                earlier.push(loss);
                state = value.put_tape(tape);
            }
        }
        let (last, tape) = state.split_tape();
        let values = values(&last);
        let loss = earlier.into_iter().fold(judge.loss(last.put_tape(tape)), |acc, l| acc + l);
        (loss / tail as f64, values)
    }

    /// `fires.len()` steps from `state`; `fires[t]` flags the cells that fire at step `t`.
    pub fn unroll<T: Tape<f64, Cpu>>(&self, rule: &RuleNet, state: Tensor2<T>, fires: &[Vec<bool>]) -> Tensor2<T> {
        self.unroll_on(rule, state, fires, &[])
    }

    /// [`Self::unroll`] with step `t` seeing the training rows `rows[t]` (every row when
    /// `rows` is empty; see [`crate::episode::draw_rows`]).
    pub fn unroll_on<T: Tape<f64, Cpu>>(
        &self,
        rule: &RuleNet,
        state: Tensor2<T>,
        fires: &[Vec<bool>],
        rows: &[Vec<usize>],
    ) -> Tensor2<T> {
        fires
            .iter()
            .enumerate()
            .fold(state, |state, (t, fire)| self.step_on(rule, state, fire, rows.get(t).map(Vec::as_slice)))
    }

    /// [`Self::step`] with the activity taken on training rows `rows` only (a minibatch).
    pub fn step_on<T: Tape<f64, Cpu>>(
        &self,
        rule: &RuleNet,
        state: Tensor2<T>,
        fire: &[bool],
        rows: Option<&[usize]>,
    ) -> Tensor2<T> {
        tracing::debug!(
            networks = self.batch.num_nets(),
            cells = fire.len(),
            fired = fire.iter().filter(|f| **f).count(),
            rows = rows.map_or(self.data.y.len(), <[usize]>::len),
            taped = T::OWNS_TAPE,
            "grow step"
        );
        match rows {
            Some(rows) => self.on_rows(rows).step(rule, state, fire),
            None => self.step(rule, state, fire),
        }
    }

    /// The same networks grown on `data` (which must fit them).
    pub fn with_data(&self, data: Arc<TaskData>) -> crate::Result<Grower> {
        check_fit(&self.batch, &data)?;
        Ok(Grower { data, ..self.clone() })
    }

    /// The same grower seeing only the training rows `rows`.
    pub fn on_rows(&self, rows: &[usize]) -> Grower {
        Grower { data: Arc::new(self.data.rows(rows)), ..self.clone() }
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
            let acts: Vec<Activity> = nets.iter().map(|n| task::forward(n, &this.data.x, Some(&this.data.y))).collect();
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn held_out_rows_are_a_stratified_disjoint_cover() {
        // Row r has features [r, -r] and class r % 3 (class 2 has one row only among 7).
        let n = 7;
        let data = TaskData {
            x: (0..n).flat_map(|r| [r as f64, -(r as f64)]).collect(),
            y: (0..n).map(|r| if r == 5 { 1 } else { r % 3 }).collect(),
            features: 2,
            classes: 3,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let (grow, held) = data.hold_out(0.3, &mut rng);
        let rows = |d: &TaskData| -> Vec<usize> { d.x.chunks(2).map(|x| x[0] as usize).collect() };
        let (g, h) = (rows(&grow), rows(&held));
        let mut all: Vec<usize> = g.iter().chain(&h).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>(), "every row once");
        for d in [&grow, &held] {
            for (x, &y) in d.x.chunks(2).zip(&d.y) {
                assert_eq!(y, data.y[x[0] as usize], "labels travel with their rows");
                assert_eq!(x[1], -x[0]);
            }
        }
        // Classes 0 (rows 0, 3, 6) and 1 (1, 4, 5) keep rows on both sides; class 2 (row 2)
        // stays in the grow.
        for c in 0..2 {
            assert!(grow.y.contains(&c) && held.y.contains(&c), "class {c}");
        }
        assert!(grow.y.contains(&2) && !held.y.contains(&2));
        assert_eq!(h.len(), 2);
        assert!(g.windows(2).all(|w| w[0] < w[1]) && h.windows(2).all(|w| w[0] < w[1]));
    }
}
