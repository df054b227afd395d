//! Perception: what a cell sees before it asks the rule for an update. One definition,
//! [`perceive`], used by the batched reference path and by the actor simulation alike.
//!
//! Every group is either the cell's own state, a function of its two neurons' activity, or a
//! sum over a neuron's incoming or outgoing cells, so neurons can aggregate it ([`NeuronView`]).
//!
//! Each group declares what it needs computed ([`Group::needs`]): the batched path's
//! statistics, the neurons' summaries and the cells' context follow from that declaration.
//! Adding a group is one variant here (its width, needs and name), its arm in [`perceive`] and
//! its arm in [`perceive_adjoint`], next to each other in this file; a group that reads a new
//! statistic also adds it to [`NeuronView`] or [`CellView`], [`Input`] and [`Needs`].

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A feature group of the perception vector (SPEC "Perception").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// The cell's own `w`, `h`.
    #[serde(rename = "self")]
    SelfState,
    /// Mean `w`, `h` of the other live cells into the post-neuron.
    Column,
    /// Mean `w`, `h` of the other live cells out of the pre-neuron.
    Row,
    /// Batch mean of the pre-neuron's activation and of the post-neuron's pre-activation.
    Activations,
    /// Mean `w`, `h` of the live cells into the pre-neuron (previous layer).
    Upstream,
    /// Mean `w`, `h` of the live cells out of the post-neuron (next layer).
    Downstream,
    /// Output-layer cells: batch mean of `e_j = onehot(y)_j - softmax(z_L)_j`; 0 elsewhere.
    Feedback,
    /// Batch mean of `a_i * z_j`; output-layer cells also batch mean of `a_i * e_j` (0 elsewhere).
    Hebbian,
    /// Batch means of `a_i * δ_j` and `δ_j`: the backward message `δ` of the post-neuron,
    /// sent down through the weights (`δ_L = e`; hidden `δ = relu'(z) · Σ_k w δ_k`).
    Backward,
    /// The same through every cell's fixed random feedback weight `B` instead of `w`
    /// (feedback alignment: no weight transport).
    Alignment,
    /// `1/sqrt(n)` of the post-neuron's live incoming cells and of the pre-neuron's live
    /// outgoing cells (the cell included): how many cells' updates add up in one neuron's
    /// input, so a rule can size its steps to a neuron's fan-in (taken from the topology; no
    /// gradient flows through it).
    Fan,
}

/// What the enabled groups need computed besides each cell's own state row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Sums of the state rows of each neuron's incoming and outgoing cells.
    pub sums: bool,
    /// The task network's forward pass on the batch: every neuron's batch means of `a`, `z`, `e`.
    pub activity: bool,
    /// Per-sample activity at the cell, for the batch correlations `a_i z_j` and `a_i e_j`.
    pub hebbian: bool,
    /// Backward messages through the weights (and their batch statistics).
    pub backward: bool,
    /// Backward messages through the feedback weights `B` (and their batch statistics).
    pub alignment: bool,
}

impl Needs {
    /// What either needs.
    pub fn or(self, o: Needs) -> Needs {
        Needs {
            sums: self.sums || o.sums,
            activity: self.activity || o.activity,
            hebbian: self.hebbian || o.hebbian,
            backward: self.backward || o.backward,
            alignment: self.alignment || o.alignment,
        }
    }

    /// Whether any message wave (backward or alignment) runs.
    pub fn messages(self) -> bool {
        self.backward || self.alignment
    }
}

impl Group {
    /// Every group, in the canonical order the perception vector is laid out in.
    pub const ALL: [Group; 11] = [
        Group::SelfState,
        Group::Column,
        Group::Row,
        Group::Activations,
        Group::Upstream,
        Group::Downstream,
        Group::Feedback,
        Group::Hebbian,
        Group::Backward,
        Group::Alignment,
        Group::Fan,
    ];

    /// Width of this group for state width `s = 1 + d`.
    pub fn width(self, s: usize) -> usize {
        match self {
            Group::SelfState | Group::Column | Group::Row | Group::Upstream | Group::Downstream => s,
            Group::Activations | Group::Hebbian | Group::Backward | Group::Alignment | Group::Fan => 2,
            Group::Feedback => 1,
        }
    }

    /// What this group needs computed (its one declaration).
    pub fn needs(self) -> Needs {
        let none = Needs::default();
        let activity = Needs { activity: true, ..none };
        match self {
            Group::SelfState | Group::Fan => none,
            Group::Column | Group::Row | Group::Upstream | Group::Downstream => Needs { sums: true, ..none },
            Group::Activations | Group::Feedback => activity,
            Group::Hebbian => Needs { hebbian: true, ..activity },
            Group::Backward => Needs { backward: true, ..activity },
            Group::Alignment => Needs { alignment: true, ..activity },
        }
    }

    /// The name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            Group::SelfState => "self",
            Group::Column => "column",
            Group::Row => "row",
            Group::Activations => "activations",
            Group::Upstream => "upstream",
            Group::Downstream => "downstream",
            Group::Feedback => "feedback",
            Group::Hebbian => "hebbian",
            Group::Backward => "backward",
            Group::Alignment => "alignment",
            Group::Fan => "fan",
        }
    }
}

/// The enabled groups, in canonical order, for a given state width.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerceptionSpec {
    groups: Vec<Group>,
    state_width: usize,
}

impl PerceptionSpec {
    /// Validates and orders `groups` (no duplicates, at least one) for cells of state width `1 + d`.
    pub fn new(groups: &[Group], hidden_dim: usize) -> Result<Self> {
        let mut sorted = groups.to_vec();
        sorted.sort();
        if sorted.is_empty() {
            return Err(Error::Config { key: "perception".into(), message: "at least one group is needed".into() });
        }
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Config {
                key: "perception".into(),
                message: format!("group '{}' is listed twice", w[0].name()),
            });
        }
        Ok(Self { groups: sorted, state_width: 1 + hidden_dim })
    }

    /// The enabled groups in layout order.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// `1 + d`: a cell's state row `[w, h..]`.
    pub fn state_width(&self) -> usize {
        self.state_width
    }

    /// Length of the perception vector.
    pub fn width(&self) -> usize {
        self.groups.iter().map(|g| g.width(self.state_width)).sum()
    }

    /// What the enabled groups need computed.
    pub fn needs(&self) -> Needs {
        self.groups.iter().fold(Needs::default(), |n, g| n.or(g.needs()))
    }
}

/// What a neuron knows about its live incident cells and its own activity on the batch.
///
/// The sums are over state rows `[w, h..]`; an empty sum is all zeros with count 0.
#[derive(Debug, Clone, Copy)]
pub struct NeuronView<'a, E> {
    /// Sum of the state rows of the live cells into this neuron.
    pub in_sum: &'a [E],
    /// Number of live cells into this neuron.
    pub in_count: usize,
    /// Sum of the state rows of the live cells out of this neuron.
    pub out_sum: &'a [E],
    /// Number of live cells out of this neuron.
    pub out_count: usize,
    /// Batch mean of the neuron's activation `a` (inputs: the feature; bias: 1).
    pub act: E,
    /// Batch mean of the neuron's pre-activation `z` (0 for input and bias neurons).
    pub pre_act: E,
    /// Batch mean of the error `e = onehot(y) - softmax(z)` for output neurons, 0 elsewhere.
    pub err: E,
    /// Batch mean of the neuron's backward message `δ` through the weights (output: `e`;
    /// input and bias neurons: 0).
    pub delta: E,
    /// Batch mean of its backward message through the feedback weights `B`.
    pub delta_fa: E,
}

/// What a cell knows about itself.
#[derive(Debug, Clone, Copy)]
pub struct CellView<'a, E> {
    /// The cell's state row `[w, h..]`.
    pub state: &'a [E],
    /// Batch mean of `a_pre * z_post`.
    pub hebb_z: E,
    /// Batch mean of `a_pre * e_post` for output-layer cells, 0 elsewhere.
    pub hebb_e: E,
    /// Batch mean of `a_pre * δ_post` (backward message through the weights).
    pub back: E,
    /// Batch mean of `a_pre * δ_post` (backward message through the feedback weights).
    pub align: E,
}

/// Writes the perception vector of a cell into `out` (length [`PerceptionSpec::width`]).
///
/// Means are over live neighbours only and 0 where a group has no members; `column` and `row`
/// exclude the cell itself.
pub fn perceive<E: num_traits::Float>(
    spec: &PerceptionSpec,
    cell: CellView<'_, E>,
    pre: NeuronView<'_, E>,
    post: NeuronView<'_, E>,
    out: &mut [E],
) {
    let s = spec.state_width;
    let mut at = 0;
    let mean_into = |out: &mut [E], at: &mut usize, sum: &[E], minus: Option<&[E]>, count: usize| {
        let dst = &mut out[*at..*at + s];
        if count == 0 {
            dst.iter_mut().for_each(|v| *v = E::zero());
        } else {
            let inv = E::one() / E::from(count).unwrap_or_else(E::one);
            for k in 0..s {
                let v = sum[k] - minus.map_or(E::zero(), |m| m[k]);
                dst[k] = v * inv;
            }
        }
        *at += s;
    };
    for g in &spec.groups {
        match g {
            Group::SelfState => {
                out[at..at + s].copy_from_slice(cell.state);
                at += s;
            }
            Group::Column => mean_into(out, &mut at, post.in_sum, Some(cell.state), post.in_count.saturating_sub(1)),
            Group::Row => mean_into(out, &mut at, pre.out_sum, Some(cell.state), pre.out_count.saturating_sub(1)),
            Group::Upstream => mean_into(out, &mut at, pre.in_sum, None, pre.in_count),
            Group::Downstream => mean_into(out, &mut at, post.out_sum, None, post.out_count),
            Group::Activations => {
                out[at] = pre.act;
                out[at + 1] = post.pre_act;
                at += 2;
            }
            Group::Feedback => {
                out[at] = post.err;
                at += 1;
            }
            Group::Hebbian => {
                out[at] = cell.hebb_z;
                out[at + 1] = cell.hebb_e;
                at += 2;
            }
            Group::Backward => {
                out[at] = cell.back;
                out[at + 1] = post.delta;
                at += 2;
            }
            Group::Alignment => {
                out[at] = cell.align;
                out[at + 1] = post.delta_fa;
                at += 2;
            }
            Group::Fan => {
                let root = |n: usize| E::from(n.max(1)).map_or_else(E::one, |n| E::one() / n.sqrt());
                out[at] = root(post.in_count);
                out[at + 1] = root(pre.out_count);
                at += 2;
            }
        }
    }
    debug_assert_eq!(at, out.len());
}

/// One input of [`perceive`], for its adjoint: a component `k` of the cell's state or of one
/// of its neurons' state sums, or one statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// `cell.state[k]`.
    State(usize),
    /// `pre.in_sum[k]`.
    PreInSum(usize),
    /// `pre.out_sum[k]`.
    PreOutSum(usize),
    /// `post.in_sum[k]`.
    PostInSum(usize),
    /// `post.out_sum[k]`.
    PostOutSum(usize),
    /// `pre.act`.
    PreAct,
    /// `post.pre_act`.
    PostPreAct,
    /// `post.err`.
    PostErr,
    /// `post.delta`.
    PostDelta,
    /// `post.delta_fa`.
    PostDeltaFa,
    /// `cell.hebb_z`.
    HebbZ,
    /// `cell.hebb_e`.
    HebbE,
    /// `cell.back`.
    Back,
    /// `cell.align`.
    Align,
}

/// The live-cell counts [`perceive`] divides by (they carry no gradient).
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// `pre.in_count`.
    pub pre_in: usize,
    /// `pre.out_count`.
    pub pre_out: usize,
    /// `post.in_count`.
    pub post_in: usize,
    /// `post.out_count`.
    pub post_out: usize,
}

/// The adjoint of [`perceive`]: given `d` = d loss / d perception of one cell (length
/// [`PerceptionSpec::width`]), calls `add(input, g)` with d loss / d `input` for every input
/// the perception reads (an input may be reported more than once: the caller sums). Written
/// next to [`perceive`], group by group, so a group's formula and its adjoint live together.
pub fn perceive_adjoint(spec: &PerceptionSpec, counts: Counts, d: &[f64], mut add: impl FnMut(Input, f64)) {
    let s = spec.state_width;
    let inv = |count: usize| if count == 0 { 0.0 } else { 1.0 / count as f64 };
    let mut at = 0;
    for g in &spec.groups {
        let d = &d[at..at + g.width(s)];
        match g {
            Group::SelfState => d.iter().enumerate().for_each(|(k, d)| add(Input::State(k), *d)),
            Group::Column => {
                let w = inv(counts.post_in.saturating_sub(1));
                for (k, d) in d.iter().enumerate() {
                    add(Input::PostInSum(k), d * w);
                    add(Input::State(k), -(d * w));
                }
            }
            Group::Row => {
                let w = inv(counts.pre_out.saturating_sub(1));
                for (k, d) in d.iter().enumerate() {
                    add(Input::PreOutSum(k), d * w);
                    add(Input::State(k), -(d * w));
                }
            }
            Group::Upstream => {
                let w = inv(counts.pre_in);
                d.iter().enumerate().for_each(|(k, d)| add(Input::PreInSum(k), d * w));
            }
            Group::Downstream => {
                let w = inv(counts.post_out);
                d.iter().enumerate().for_each(|(k, d)| add(Input::PostOutSum(k), d * w));
            }
            Group::Activations => {
                add(Input::PreAct, d[0]);
                add(Input::PostPreAct, d[1]);
            }
            Group::Feedback => add(Input::PostErr, d[0]),
            Group::Hebbian => {
                add(Input::HebbZ, d[0]);
                add(Input::HebbE, d[1]);
            }
            Group::Backward => {
                add(Input::Back, d[0]);
                add(Input::PostDelta, d[1]);
            }
            Group::Alignment => {
                add(Input::Align, d[0]);
                add(Input::PostDeltaFa, d[1]);
            }
            // A function of the topology alone.
            Group::Fan => {}
        }
        at += g.width(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_orders_and_rejects_duplicates() {
        let spec = PerceptionSpec::new(&[Group::Row, Group::SelfState, Group::Hebbian], 3).expect("valid");
        assert_eq!(spec.groups(), &[Group::SelfState, Group::Row, Group::Hebbian]);
        assert_eq!(spec.width(), 4 + 4 + 2);
        assert!(PerceptionSpec::new(&[Group::Row, Group::Row], 3).is_err());
        assert!(PerceptionSpec::new(&[], 3).is_err());
    }

    #[test]
    fn column_excludes_self_and_empty_is_zero() {
        let spec = PerceptionSpec::new(&[Group::Column, Group::Upstream], 0).expect("valid");
        let lonely = NeuronView {
            in_sum: &[0.0],
            in_count: 0,
            out_sum: &[0.0],
            out_count: 0,
            act: 0.0,
            pre_act: 0.0,
            err: 0.0,
            delta: 0.0,
            delta_fa: 0.0,
        };
        let post = NeuronView { in_sum: &[6.0], in_count: 3, ..lonely };
        let cell = CellView { state: &[2.0], hebb_z: 0.0, hebb_e: 0.0, back: 0.0, align: 0.0 };
        let mut out = [9.0; 2];
        perceive(&spec, cell, lonely, post, &mut out);
        assert_eq!(out, [2.0, 0.0]);
    }
}
