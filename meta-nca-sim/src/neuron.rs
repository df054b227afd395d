//! A neuron: the aggregator of its incident cells. It owns no weights; per round it sums the
//! state rows its cells report, runs its part of the forward pass (activation from the
//! drives of its incoming cells; output neurons share logits to form the softmax error), its
//! part of the top-down message wave when the perception needs it (an output neuron's message
//! is its error; a hidden neuron's is `relu'(z)` times the sum of its outgoing cells' backward
//! parts) and answers every cell with one [`NeuronSummary`]. Like a cell it is a plain state machine
//! driven by messages; an executor schedules it.

use std::sync::Arc;

use crate::protocol::{CellMsg, Fan, NeuronMsg, NeuronSummary, Outbox, Partial};
use crate::world::{Ctx, World};

/// What kind of neuron, with what it knows that no message tells it.
#[derive(Debug, Clone)]
pub enum NeuronKind {
    /// An input neuron: its activation is one feature column of the data.
    Input(Arc<[f64]>),
    /// A constant-1 bias neuron.
    Bias(Arc<[f64]>),
    /// A hidden neuron: `a = relu(z)`.
    Hidden,
    /// An output neuron: logits `z`; knows the labels to form `e = onehot(y) - softmax(z)`.
    Output {
        /// Its class.
        class: u32,
        /// Number of classes (output neurons).
        classes: u32,
        /// Global index of the output neuron of class 0 (peers are contiguous).
        first: u32,
        /// The labels of the batch.
        labels: Arc<[usize]>,
        /// Per class: the output neuron has no incoming cell, so its logits are 0 and it
        /// sends none (nothing ever wakes it); peers count them as known.
        silent: Arc<[bool]>,
    },
}

impl NeuronKind {
    /// What neuron `g` of `world` is.
    pub fn of(world: &World, g: u32) -> Self {
        let sizes = world.topology.sizes();
        let last = sizes.len() - 1;
        let (k, idx) = world.neuron_place(g);
        let b = world.ctx.samples;
        if idx == sizes[k] {
            NeuronKind::Bias(vec![1.0; b].into())
        } else if k == 0 {
            let col: Vec<f64> = (0..b).map(|s| world.data.x[s * sizes[0] + idx]).collect();
            NeuronKind::Input(col.into())
        } else if k == last {
            NeuronKind::Output {
                class: idx as u32,
                classes: sizes[last] as u32,
                first: world.batch.neuron(0, last, 0) as u32,
                labels: world.data.y.clone().into(),
                silent: (0..sizes[last]).map(|j| world.in_cells[world.batch.neuron(0, last, j)].is_empty()).collect(),
            }
        } else {
            NeuronKind::Hidden
        }
    }
}

/// What a neuron has gathered of one round so far.
#[derive(Debug)]
struct RoundAcc {
    round: u32,
    in_sum: Vec<f64>,
    in_seen: usize,
    out_sum: Vec<f64>,
    out_seen: usize,
    drive: Vec<f64>,
    drive_seen: usize,
    act_sent: bool,
    a: Option<Arc<[f64]>>,
    z: Option<Arc<[f64]>>,
    logits: Vec<Option<Arc<[f64]>>>,
    logits_seen: usize,
    e: Option<Arc<[f64]>>,
    /// Sum of the outgoing cells' backward parts (`[Σ w δ | Σ B δ]`, the halves that are on).
    back: Vec<f64>,
    back_seen: usize,
    /// The backward messages are known (`d`, `d_fa` hold them when their group is on).
    messages_done: bool,
    d: Option<Arc<[f64]>>,
    d_fa: Option<Arc<[f64]>>,
}

/// A neuron actor's state.
#[derive(Debug)]
pub struct Neuron {
    /// Global neuron index.
    pub index: u32,
    kind: NeuronKind,
    in_count: usize,
    out_count: usize,
    width: usize,
    /// Open rounds (more than one only in async mode), oldest first.
    rounds: Vec<RoundAcc>,
    /// The summary of the last round it finished.
    last: Option<Arc<NeuronSummary>>,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

impl Neuron {
    /// Neuron `g` of `world`.
    pub fn new(world: &World, g: u32) -> Self {
        let (in_count, out_count) = (world.in_cells[g as usize].len(), world.out_cells[g as usize].len());
        let (kind, width) = (NeuronKind::of(world, g), world.ctx.spec.state_width());
        Self { index: g, kind, in_count, out_count, width, rounds: Vec::new(), last: None }
    }

    /// Every neuron of `world`, in the batch's neuron order.
    pub fn all(world: &World) -> Vec<Neuron> {
        (0..world.num_neurons() as u32).map(|g| Neuron::new(world, g)).collect()
    }

    /// The summary of the last round it finished (what its cells perceived).
    pub fn last_summary(&self) -> Option<&Arc<NeuronSummary>> {
        self.last.as_ref()
    }

    /// Moves the neuron to index `g` of `world` after a topology change between rounds: its
    /// new index, kind (an output neuron's peers move when hidden neurons come and go) and
    /// fan sizes. Nothing of a round may be open.
    pub fn place(&mut self, world: &World, g: u32) {
        debug_assert!(self.rounds.is_empty(), "neuron {} rewired in the middle of a round", self.index);
        self.index = g;
        self.kind = NeuronKind::of(world, g);
        self.in_count = world.in_cells[g as usize].len();
        self.out_count = world.out_cells[g as usize].len();
    }

    fn acc(&mut self, round: u32, samples: usize) -> usize {
        if let Some(k) = self.rounds.iter().position(|a| a.round == round) {
            return k;
        }
        let (mut logits, mut logits_seen) = (Vec::new(), 0);
        if let NeuronKind::Output { silent, .. } = &self.kind {
            let zeros: Arc<[f64]> = vec![0.0; samples].into();
            logits = silent.iter().map(|&s| s.then(|| zeros.clone())).collect();
            logits_seen = silent.iter().filter(|&&s| s).count();
        }
        self.rounds.push(RoundAcc {
            round,
            in_sum: vec![0.0; self.width],
            in_seen: 0,
            out_sum: vec![0.0; self.width],
            out_seen: 0,
            drive: Vec::new(),
            drive_seen: 0,
            act_sent: false,
            a: None,
            z: None,
            logits,
            logits_seen,
            e: None,
            back: Vec::new(),
            back_seen: 0,
            messages_done: false,
            d: None,
            d_fa: None,
        });
        self.rounds.len() - 1
    }

    /// Handles one message.
    pub fn handle(&mut self, msg: NeuronMsg, ctx: &Ctx, out: &mut impl Outbox) {
        let (round, k) = match msg {
            NeuronMsg::Report { round, fan, part } => {
                let k = self.acc(round, ctx.samples);
                let acc = &mut self.rounds[k];
                let (sum, seen) = match fan {
                    Fan::In => (&mut acc.in_sum, &mut acc.in_seen),
                    Fan::Out => (&mut acc.out_sum, &mut acc.out_seen),
                };
                sum.iter_mut().zip(&part.sum).for_each(|(a, b)| *a += b);
                *seen += part.count as usize;
                (round, k)
            }
            NeuronMsg::Drive { round, part } => {
                let k = self.acc(round, ctx.samples);
                let acc = &mut self.rounds[k];
                add_partial(&mut acc.drive, &part);
                acc.drive_seen += part.count as usize;
                (round, k)
            }
            NeuronMsg::Back { round, part } => {
                let k = self.acc(round, ctx.samples);
                let acc = &mut self.rounds[k];
                add_partial(&mut acc.back, &part);
                acc.back_seen += part.count as usize;
                (round, k)
            }
            NeuronMsg::Logit { round, class, z } => {
                let k = self.acc(round, ctx.samples);
                let acc = &mut self.rounds[k];
                if let Some(slot) = acc.logits.get_mut(class as usize) {
                    if slot.is_none() {
                        acc.logits_seen += 1;
                    }
                    *slot = Some(z);
                }
                (round, k)
            }
        };
        self.progress(round, k, ctx, out);
    }

    /// Moves round `round` (at position `k`) as far as its inputs allow.
    fn progress(&mut self, round: u32, k: usize, ctx: &Ctx, out: &mut impl Outbox) {
        let index = self.index;
        let in_count = self.in_count;
        let needs = ctx.needs;
        let acc = &mut self.rounds[k];
        if needs.activity && !acc.act_sent {
            match &self.kind {
                NeuronKind::Input(a) | NeuronKind::Bias(a) => {
                    acc.a = Some(a.clone());
                    out.broadcast(index, Fan::Out, CellMsg::Act { round, a: a.clone() });
                    acc.act_sent = true;
                }
                NeuronKind::Hidden if acc.drive_seen >= in_count => {
                    let z = take_drive(&mut acc.drive, ctx.samples);
                    let a: Arc<[f64]> = z.iter().map(|&v| v.max(0.0)).collect::<Vec<_>>().into();
                    acc.z = Some(z.into());
                    acc.a = Some(a.clone());
                    out.broadcast(index, Fan::Out, CellMsg::Act { round, a });
                    acc.act_sent = true;
                }
                NeuronKind::Output { class, classes, first, silent, .. } if acc.drive_seen >= in_count => {
                    let z: Arc<[f64]> = take_drive(&mut acc.drive, ctx.samples).into();
                    for peer in 0..*classes {
                        if peer != *class && !silent[peer as usize] {
                            out.to_neuron(first + peer, NeuronMsg::Logit { round, class: *class, z: z.clone() });
                        }
                    }
                    if acc.logits[*class as usize].is_none() {
                        acc.logits_seen += 1;
                    }
                    acc.logits[*class as usize] = Some(z.clone());
                    acc.z = Some(z);
                    acc.act_sent = true;
                }
                _ => {}
            }
        }
        let activity_done = !needs.activity
            || match &self.kind {
                NeuronKind::Output { class, classes, labels, .. } => {
                    if acc.act_sent && acc.e.is_none() && acc.logits_seen == *classes as usize {
                        acc.e = Some(softmax_error(&acc.logits, *class as usize, labels).into());
                    }
                    acc.e.is_some()
                }
                _ => acc.act_sent,
            };
        if needs.messages() && activity_done && !acc.messages_done {
            acc.messages_done = match &self.kind {
                NeuronKind::Input(_) | NeuronKind::Bias(_) => true,
                // δ_L = e, through the weights and through B alike.
                NeuronKind::Output { .. } => {
                    (acc.d, acc.d_fa) = (
                        needs.backward.then(|| acc.e.clone()).flatten(),
                        needs.alignment.then(|| acc.e.clone()).flatten(),
                    );
                    true
                }
                NeuronKind::Hidden if acc.back_seen >= self.out_count => {
                    let z = acc.z.as_deref().unwrap_or(&[]);
                    let halves = usize::from(needs.backward) + usize::from(needs.alignment);
                    let (d, d_fa) = hidden_messages(z, &acc.back, halves, needs.backward);
                    (acc.d, acc.d_fa) = (d, d_fa);
                    true
                }
                NeuronKind::Hidden => false,
            };
        }
        let messages_done = !needs.messages() || acc.messages_done;
        if !(activity_done && messages_done && acc.in_seen >= self.in_count && acc.out_seen >= self.out_count) {
            return;
        }
        let acc = self.rounds.remove(k);
        let is_output = matches!(self.kind, NeuronKind::Output { .. });
        let (act, pre_act, err) = if needs.activity {
            (
                if is_output { 0.0 } else { acc.a.as_deref().map_or(0.0, mean) },
                acc.z.as_deref().map_or(0.0, mean),
                acc.e.as_deref().map_or(0.0, mean),
            )
        } else {
            (0.0, 0.0, 0.0)
        };
        let keep = |v: Option<Arc<[f64]>>| if needs.hebbian { v } else { None };
        // Cells perceive `a_pre · δ_post`: the activation travels with the messages too.
        let keep_a = |v: Option<Arc<[f64]>>| if needs.hebbian || needs.messages() { v } else { None };
        let view = Arc::new(NeuronSummary {
            round,
            in_sum: acc.in_sum,
            in_count: self.in_count,
            out_sum: acc.out_sum,
            out_count: self.out_count,
            act,
            pre_act,
            err,
            delta: acc.d.as_deref().map_or(0.0, mean),
            delta_fa: acc.d_fa.as_deref().map_or(0.0, mean),
            a: keep_a(if is_output { None } else { acc.a }),
            z: keep(acc.z),
            e: keep(acc.e),
            d: acc.d,
            d_fa: acc.d_fa,
        });
        if self.in_count > 0 {
            out.broadcast(index, Fan::In, CellMsg::Summary { side: Fan::In.side(), view: view.clone() });
        }
        if self.out_count > 0 {
            out.broadcast(index, Fan::Out, CellMsg::Summary { side: Fan::Out.side(), view: view.clone() });
        }
        self.last = Some(view);
    }
}

fn add_partial(into: &mut Vec<f64>, part: &Partial) {
    if into.is_empty() {
        into.extend_from_slice(&part.sum);
    } else {
        into.iter_mut().zip(&part.sum).for_each(|(a, b)| *a += b);
    }
}

/// A neuron's per-sample backward messages through the weights and through the feedback
/// weights (each `None` when its group is off).
type Messages = (Option<Arc<[f64]>>, Option<Arc<[f64]>>);

/// A hidden neuron's backward messages from the sum of its outgoing cells' parts `back`
/// (`halves` blocks of one value per sample: `Σ w δ` first when `backward` is on, then `Σ B δ`):
/// `δ = relu'(z) ⊙ sum` per block (`relu'(0) = 0`; no outgoing cells: zeros).
fn hidden_messages(z: &[f64], back: &[f64], halves: usize, backward: bool) -> Messages {
    let b = z.len();
    let block = |h: usize| -> Arc<[f64]> {
        let sum = back.get(h * b..(h + 1) * b);
        (0..b).map(|s| if z[s] > 0.0 { sum.map_or(0.0, |v| v[s]) } else { 0.0 }).collect::<Vec<_>>().into()
    };
    match (halves, backward) {
        (2, _) => (Some(block(0)), Some(block(1))),
        (1, true) => (Some(block(0)), None),
        (1, false) => (None, Some(block(0))),
        _ => (None, None),
    }
}

/// The summed drive, or zeros when the neuron has no incoming cells.
fn take_drive(drive: &mut Vec<f64>, samples: usize) -> Vec<f64> {
    let mut z = std::mem::take(drive);
    if z.is_empty() {
        z = vec![0.0; samples];
    }
    z
}

/// `e_class[b] = onehot(y_b)_class - softmax(z[:, b])_class`, the same arithmetic as
/// `meta_nca_rule::task::forward`.
fn softmax_error(logits: &[Option<Arc<[f64]>>], class: usize, labels: &[usize]) -> Vec<f64> {
    let zs: Vec<&[f64]> = logits.iter().map(|z| z.as_deref().unwrap_or(&[])).collect();
    (0..labels.len())
        .map(|b| {
            let at = |z: &[f64]| z.get(b).copied().unwrap_or(0.0);
            let m = zs.iter().fold(f64::NEG_INFINITY, |m, z| m.max(at(z)));
            let sum: f64 = zs.iter().map(|z| (at(z) - m).exp()).sum();
            let p = (at(zs[class]) - m).exp() / sum;
            let mut e = -p;
            if labels[b] == class {
                e += 1.0;
            }
            e
        })
        .collect()
}
