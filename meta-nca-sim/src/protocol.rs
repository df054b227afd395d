//! The messages of the cell protocol and the [`Outbox`] through which cells and neurons send
//! them. The protocol knows nothing about scheduling: an executor decides how (and how
//! batched) a message reaches its destination.
//!
//! One round `r` of a cell (a step of the grow):
//! 1. the cell reports its state row to its pre-neuron (as an outgoing cell) and to its
//!    post-neuron (as an incoming cell): [`NeuronMsg::Report`];
//! 2. when the perception needs activity, the pre-neuron sends its per-sample activation
//!    ([`CellMsg::Act`]) and the cell answers its post-neuron with `w · a` ([`NeuronMsg::Drive`]);
//!    output neurons exchange logits ([`NeuronMsg::Logit`]) to form the softmax error;
//! 3. when the perception needs local error messages (`backward`, `alignment`), a top-down
//!    wave follows: an output neuron's message is its per-sample error `e`, carried by its
//!    summary to its incoming cells; a cell answers its pre-neuron (when that is a hidden
//!    neuron) with `w · δ` and `B · δ` per sample ([`NeuronMsg::Back`]); a hidden neuron,
//!    once it has every outgoing cell's part, applies its own `relu'(z)` and sends its `δ`
//!    down in its summary the same way;
//! 4. each neuron, once it has every report (and its activity and message) of round `r`, sends one
//!    [`NeuronSummary`] to all its cells ([`CellMsg::Summary`]);
//! 5. a firing cell perceives (the one [`meta_nca_rule::perception::perceive`]), queries the
//!    rule service, applies the update ([`CellMsg::Update`]) and reports [`CellDone`].

use std::sync::Arc;

/// Which of a cell's two neurons a summary comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The pre-synaptic neuron (the cell is one of its outgoing cells).
    Pre,
    /// The post-synaptic neuron (the cell is one of its incoming cells).
    Post,
}

/// A neuron's incident cells on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fan {
    /// Cells into the neuron (the neuron is their post-neuron).
    In,
    /// Cells out of the neuron (the neuron is their pre-neuron).
    Out,
}

impl Fan {
    /// The side a cell of this fan sees the neuron on.
    pub fn side(self) -> Side {
        match self {
            Fan::In => Side::Post,
            Fan::Out => Side::Pre,
        }
    }
}

/// A sum over some cells and how many cells it covers. Contributions to the same neuron are
/// added on the way (both executors do), since every aggregate is a sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Partial {
    /// The sum.
    pub sum: Vec<f64>,
    /// Cells in the sum.
    pub count: u32,
}

impl Partial {
    /// A sum of one cell's contribution.
    pub fn of(part: &Contribution<'_>) -> Self {
        let sum = match *part {
            Contribution::Report { row, .. } => row.to_vec(),
            Contribution::Drive { w, a } => a.iter().map(|&v| w * v).collect(),
            Contribution::Back { w, d, fb, d_fa } => back_terms(w, d, fb, d_fa).collect(),
        };
        Self { sum, count: 1 }
    }

    /// Adds one cell's contribution into `self`.
    pub fn add(&mut self, part: &Contribution<'_>) {
        match *part {
            Contribution::Report { row, .. } => self.sum.iter_mut().zip(row).for_each(|(s, v)| *s += v),
            Contribution::Drive { w, a } => self.sum.iter_mut().zip(a.iter()).for_each(|(s, v)| *s += w * v),
            Contribution::Back { w, d, fb, d_fa } => {
                self.sum.iter_mut().zip(back_terms(w, d, fb, d_fa)).for_each(|(s, v)| *s += v)
            }
        }
        self.count += 1;
    }
}

/// A cell's backward parts, per sample: `w · δ` (when `d` is sent), then `B · δ_fa` (when
/// `d_fa` is sent).
fn back_terms<'a>(w: f64, d: Option<&'a [f64]>, fb: f64, d_fa: Option<&'a [f64]>) -> impl Iterator<Item = f64> + 'a {
    let through_w = d.into_iter().flatten().map(move |&v| w * v);
    through_w.chain(d_fa.into_iter().flatten().map(move |&v| fb * v))
}

/// One cell's part of a neuron's sum of a round, lent to the executor, which adds it to the
/// sum it is collecting (no allocation per cell) and delivers the sum as a [`NeuronMsg`].
#[derive(Debug, Clone, Copy)]
pub enum Contribution<'a> {
    /// The cell's state row, as a cell on the `fan` side of the neuron.
    Report {
        /// Incoming or outgoing.
        fan: Fan,
        /// `[w, h..]`.
        row: &'a [f64],
    },
    /// The cell's drive `w · a_pre`, per sample.
    Drive {
        /// The cell's weight.
        w: f64,
        /// The pre-neuron's activation.
        a: &'a [f64],
    },
    /// The cell's part of its (hidden) pre-neuron's backward messages, per sample: `w · δ_post`
    /// (`backward`), then `B · δ_post` through its fixed feedback weight (`alignment`).
    Back {
        /// The cell's weight at the start of the round (the one the forward pass used).
        w: f64,
        /// The post-neuron's message through the weights (`None`: `backward` is off).
        d: Option<&'a [f64]>,
        /// The cell's fixed feedback weight `B`.
        fb: f64,
        /// The post-neuron's message through the feedback weights (`None`: `alignment` is off).
        d_fa: Option<&'a [f64]>,
    },
}

impl Contribution<'_> {
    /// Which sum it belongs to: 0/1 the reports of the in/out fan, 2 the drives, 3 the
    /// backward parts.
    pub fn slot(&self) -> u8 {
        match self {
            Contribution::Report { fan: Fan::In, .. } => 0,
            Contribution::Report { fan: Fan::Out, .. } => 1,
            Contribution::Drive { .. } => 2,
            Contribution::Back { .. } => 3,
        }
    }

    /// The fan whose cells all contribute to this sum.
    pub fn fan(&self) -> Fan {
        match self {
            Contribution::Report { fan, .. } => *fan,
            Contribution::Drive { .. } => Fan::In,
            Contribution::Back { .. } => Fan::Out,
        }
    }

    /// The message that delivers `sum`, a sum of contributions like this one, for `round`.
    pub fn message(&self, round: u32, sum: Partial) -> NeuronMsg {
        match *self {
            Contribution::Report { fan, .. } => NeuronMsg::Report { round, fan, part: sum },
            Contribution::Drive { .. } => NeuronMsg::Drive { round, part: sum },
            Contribution::Back { .. } => NeuronMsg::Back { round, part: sum },
        }
    }
}

/// What a neuron tells its cells at the end of a round: the sums and counts of its incident
/// cells' state rows, its batch statistics, its per-sample activity (for the Hebbian group and
/// the local error messages) and its backward messages (for `backward` and `alignment`).
#[derive(Debug, Clone, PartialEq)]
pub struct NeuronSummary {
    /// Round (grow step) this summary describes.
    pub round: u32,
    /// Sum of the state rows of the cells into the neuron.
    pub in_sum: Vec<f64>,
    /// Cells into the neuron.
    pub in_count: usize,
    /// Sum of the state rows of the cells out of the neuron.
    pub out_sum: Vec<f64>,
    /// Cells out of the neuron.
    pub out_count: usize,
    /// Batch mean of the activation (0 for output neurons).
    pub act: f64,
    /// Batch mean of the pre-activation (0 for input and bias neurons).
    pub pre_act: f64,
    /// Batch mean of the error (output neurons; 0 elsewhere).
    pub err: f64,
    /// Batch mean of the backward message through the weights (hidden and output neurons
    /// when `backward` is on; 0 elsewhere).
    pub delta: f64,
    /// Batch mean of the backward message through the feedback weights (`alignment`).
    pub delta_fa: f64,
    /// Per-sample activation (sent when the Hebbian group or a message group is on;
    /// non-output neurons).
    pub a: Option<Arc<[f64]>>,
    /// Per-sample pre-activation (Hebbian; hidden and output neurons).
    pub z: Option<Arc<[f64]>>,
    /// Per-sample error (Hebbian; output neurons).
    pub e: Option<Arc<[f64]>>,
    /// Per-sample backward message `δ` through the weights (`backward`; hidden and output
    /// neurons): its incoming cells perceive `a_pre · δ` and send `w · δ` on down.
    pub d: Option<Arc<[f64]>>,
    /// Per-sample backward message through the feedback weights (`alignment`).
    pub d_fa: Option<Arc<[f64]>>,
}

impl NeuronSummary {
    /// The summary as the perception reads it.
    pub fn view(&self) -> meta_nca_rule::perception::NeuronView<'_, f64> {
        meta_nca_rule::perception::NeuronView {
            in_sum: &self.in_sum,
            in_count: self.in_count,
            out_sum: &self.out_sum,
            out_count: self.out_count,
            act: self.act,
            pre_act: self.pre_act,
            err: self.err,
            delta: self.delta,
            delta_fa: self.delta_fa,
        }
    }
}

/// A message to a cell.
#[derive(Debug, Clone)]
pub enum CellMsg {
    /// Lockstep: start round `round`; `fire` comes from the episode's draws.
    Begin {
        /// The round.
        round: u32,
        /// Whether the cell fires this round.
        fire: bool,
    },
    /// Async: the cell's own clock ticked; it starts its next round and draws its firing.
    Tick,
    /// The pre-neuron's per-sample activation of a round, for the forward pass.
    Act {
        /// The round.
        round: u32,
        /// `a[b]` for every sample `b`.
        a: Arc<[f64]>,
    },
    /// A neuron's summary of a round.
    Summary {
        /// Which neuron of the cell sent it.
        side: Side,
        /// The summary (shared by all the neuron's cells).
        view: Arc<NeuronSummary>,
    },
    /// The rule service's answer to the cell's query: `Δ = [Δw, Δh..]` is row `row` of a
    /// pass's output `block` (shared by the pass's cells: no allocation per answer).
    Update {
        /// A rule pass's output, `[rows, 1+d]`.
        block: Arc<[f64]>,
        /// The cell's row in it.
        row: u32,
    },
}

/// A message to a neuron.
#[derive(Debug, Clone)]
pub enum NeuronMsg {
    /// State rows of cells (a partial sum) of a round, from the `fan` side.
    Report {
        /// The round.
        round: u32,
        /// Incoming or outgoing cells.
        fan: Fan,
        /// Sum of their state rows.
        part: Partial,
    },
    /// Per-sample `Σ w · a_pre` of some incoming cells of a round.
    Drive {
        /// The round.
        round: u32,
        /// Sum over the cells of `w · a_pre`, per sample.
        part: Partial,
    },
    /// An output neuron's per-sample logits, for its peers' softmax.
    Logit {
        /// The round.
        round: u32,
        /// The sender's class index.
        class: u32,
        /// Its logits.
        z: Arc<[f64]>,
    },
    /// Per-sample backward parts of some outgoing cells of a round: `Σ w · δ_post` (when
    /// `backward` is on), then `Σ B · δ_post` (when `alignment` is on).
    Back {
        /// The round.
        round: u32,
        /// Sum over the cells of their [`Contribution::Back`].
        part: Partial,
    },
}

/// What a cell reports when it finishes a round.
#[derive(Debug, Clone, PartialEq)]
pub struct CellDone {
    /// The cell's state-row index.
    pub cell: u32,
    /// The round finished.
    pub round: u32,
    /// Weight change of the round (0 when it did not fire).
    pub dw: f64,
    /// Whether it fired.
    pub fired: bool,
    /// Rounds between the cell's own round and the older of the two summaries it used.
    pub staleness: u32,
    /// The whole state row after the last round (`None` before).
    pub final_state: Option<Vec<f64>>,
    /// The whole state row after this round, when the run records every round
    /// ([`crate::world::Ctx::record`]; `None` otherwise).
    pub row: Option<Vec<f64>>,
}

/// Where cells and neurons put the messages they send. Executors implement it.
pub trait Outbox {
    /// Sends `msg` to neuron `neuron` (a global neuron index of the network).
    fn to_neuron(&mut self, neuron: u32, msg: NeuronMsg);
    /// Adds a cell's `part` to `neuron`'s sum of round `round`; the executor delivers the
    /// sum (every aggregate is a sum, so it may add on the way).
    fn contribute(&mut self, neuron: u32, round: u32, part: Contribution<'_>);
    /// Sends `msg` to every cell on the `fan` side of `neuron`.
    fn broadcast(&mut self, neuron: u32, fan: Fan, msg: CellMsg);
    /// Asks the rule service for the update of `cell` from its perception, a row of `width`
    /// zeros that `perceive` fills (in place: the shards write it straight into the rows they
    /// send to the rule service).
    fn query(&mut self, cell: u32, width: usize, perceive: impl FnOnce(&mut [f64]));
    /// A cell finished a round.
    fn done(&mut self, done: CellDone);
    /// Async mode: `cell` wants its clock to tick again (the executor adds jitter).
    fn tick_later(&mut self, cell: u32);
}
