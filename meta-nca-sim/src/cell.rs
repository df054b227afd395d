//! A cell: one live connection `(l, i, j)` as an agent. It owns its state row `[w, h..]` and
//! its fixed feedback weight `B`, and learns about its neighbourhood only through messages
//! from its two neurons; when the perception has the local error messages it also passes its
//! post-neuron's message on to its pre-neuron (`w·δ`, `B·δ`). The same code runs under every
//! executor and in both modes; only who delivers its messages differs.

use std::sync::Arc;

use meta_nca_rule::perception::{CellView, perceive};
use meta_nca_rule::random::splitmix_next;
use meta_nca_rule::topology::CellId;

use crate::protocol::{CellDone, CellMsg, Contribution, Fan, NeuronSummary, Outbox, Side};
use crate::world::{Ctx, World};
use crate::{Error, Result};

/// Where a cell is within its current round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The round has not begun (waiting for `Begin` or its clock).
    Idle,
    /// Reported; waiting for fresh enough summaries.
    Waiting { fire: bool },
    /// Asked the rule service; waiting for the update.
    Querying { staleness: u32 },
    /// All rounds done.
    Finished,
}

/// Work a cell owes or holds for another round than its current one (async mode; empty in
/// lockstep, so one vector serves every kind and costs no allocation there).
#[derive(Debug)]
enum Later {
    /// The weight of a finished round whose drive the post-neuron still needs.
    Drive(u32, f64),
    /// The pre-neuron's activation of a round the cell has not reached yet.
    Act(u32, Arc<[f64]>),
    /// The weight of a finished round whose backward part the pre-neuron still needs (the
    /// post-neuron's message of that round had not come when the cell moved on).
    Back(u32, f64),
}

/// A cell's two neurons, and whether its pre-neuron takes backward messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Links {
    /// The pre-synaptic neuron (global index).
    pre: u32,
    /// The post-synaptic neuron (global index).
    post: u32,
    /// Whether the pre-neuron is a hidden neuron: only those take backward messages (input
    /// and bias neurons send none further down).
    pre_hidden: bool,
}

impl Links {
    /// Cell `c`'s place in `world`: its id and neurons.
    fn of(world: &World, c: u32) -> (CellId, Self) {
        let slot = &world.batch.cells()[c as usize];
        let (pre, post) = (slot.pre as u32, slot.post as u32);
        (slot.id, Self { pre, post, pre_hidden: world.is_hidden(pre) })
    }
}

/// A traced cell's span and connection (boxed: a million untraced cells pay one pointer),
/// and the local error messages it received in the round in progress.
#[derive(Debug)]
struct Traced {
    span: tracing::Span,
    id: CellId,
    /// `(mean a_pre·δ_post, mean δ_post)` through the weights (`backward` on).
    back: Option<(f64, f64)>,
    /// The same through the feedback weights (`alignment` on).
    align: Option<(f64, f64)>,
}

/// A cell agent's state. Kept small (it is most of a shard's memory per cell at 1M cells; the
/// bench prints its size): what only traced or async cells need lives behind a pointer or in
/// one rarely filled vector.
#[derive(Debug)]
pub struct Cell {
    /// State-row index (the order of [`meta_nca_rule::topology::Topology::cells`]).
    pub index: u32,
    pre: u32,
    post: u32,
    /// The round in progress (the state is the state at the start of it).
    round: u32,
    phase: Phase,
    /// The current round's drive was already sent.
    drive_sent: bool,
    /// The current round's backward part was already sent.
    back_sent: bool,
    /// Whether the pre-neuron takes backward messages ([`Links::pre_hidden`]).
    pre_hidden: bool,
    /// The fixed feedback weight `B` (drawn when the cell was created, never updated).
    feedback: f64,
    state: Box<[f64]>,
    pre_view: Option<Arc<NeuronSummary>>,
    post_view: Option<Arc<NeuronSummary>>,
    /// Drives owed for finished rounds and activations of future rounds.
    later: Vec<Later>,
    /// Async clock: a splitmix64 state.
    clock: u64,
    /// Span of a traced cell; untraced cells emit nothing.
    traced: Option<Box<Traced>>,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// Batch mean of `a · d` (0 when either is missing).
fn mean_product(a: Option<&Arc<[f64]>>, d: Option<&Arc<[f64]>>, inv: f64) -> f64 {
    match (a, d) {
        (Some(a), Some(d)) => dot(a, d) * inv,
        _ => 0.0,
    }
}

/// The cell's local error message features from its two neurons' summaries: `(mean a_pre·δ,
/// mean δ)` through the weights and through the feedback weights, each `None` when its group
/// is off.
type Messages = (Option<(f64, f64)>, Option<(f64, f64)>);

fn messages(pre: &NeuronSummary, post: &NeuronSummary, ctx: &Ctx) -> Messages {
    let inv = 1.0 / ctx.samples.max(1) as f64;
    let back = ctx.needs.backward.then(|| (mean_product(pre.a.as_ref(), post.d.as_ref(), inv), post.delta));
    let align = ctx.needs.alignment.then(|| (mean_product(pre.a.as_ref(), post.d_fa.as_ref(), inv), post.delta_fa));
    (back, align)
}

impl Cell {
    /// Cell `c` of `world`, starting from state row `state` (its feedback weight is the
    /// network's); `seed` seeds its async clock; `traced` gives it a span and an event per update.
    pub fn new(world: &World, c: u32, state: Vec<f64>, seed: u64, traced: bool) -> Self {
        let (id, links) = Links::of(world, c);
        let mut clock = seed ^ (u64::from(c) << 17) ^ 0x5EED;
        splitmix_next(&mut clock);
        let traced = traced.then(|| {
            let span = tracing::info_span!("cell", layer = id.layer, i = id.pre, j = id.post);
            Box::new(Traced { span, id, back: None, align: None })
        });
        Self {
            index: c,
            pre: links.pre,
            post: links.post,
            round: 0,
            phase: Phase::Idle,
            drive_sent: false,
            back_sent: false,
            pre_hidden: links.pre_hidden,
            feedback: world.feedback(c),
            state: state.into_boxed_slice(),
            pre_view: None,
            post_view: None,
            later: Vec::new(),
            clock,
            traced,
        }
    }

    /// Every cell of `world`, with their starting state rows `state0` (`[cells, 1+d]`, topology
    /// order); `traced` says which get a span.
    pub fn all(world: &World, state0: &[f64], seed: u64, traced: &dyn Fn(&CellId) -> bool) -> Result<Vec<Cell>> {
        let s = world.ctx.spec.state_width();
        if state0.len() != world.num_cells() * s {
            return Err(Error::Config {
                key: "state0",
                message: format!("{} values for {} cells of width {s}", state0.len(), world.num_cells()),
            });
        }
        let cell = |(c, row): (usize, &[f64])| {
            let c = c as u32;
            Cell::new(world, c, row.to_vec(), seed, traced(&world.cell_id(c)))
        };
        Ok(state0.chunks_exact(s).enumerate().map(cell).collect())
    }

    /// The cell starting at round `round` instead of 0 (it joins a running simulation).
    pub fn joining_at(mut self, round: u32) -> Self {
        self.round = round;
        self
    }

    /// The state row `[w, h..]` (empty once the cell has finished and reported it).
    pub fn state(&self) -> &[f64] {
        &self.state
    }

    /// Whether every round is done.
    pub fn finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Whether the cell is between rounds with nothing owed: the only time its place in the
    /// network may change.
    pub fn settled(&self) -> bool {
        self.phase == Phase::Idle && self.later.is_empty()
    }

    /// Hands the state row over, leaving the cell empty (at the end of a run, so that a
    /// million rows are not held twice).
    pub fn take_state(&mut self) -> Vec<f64> {
        std::mem::take(&mut self.state).into_vec()
    }

    /// Its pre- and post-neuron (global neuron indices).
    pub fn neurons(&self) -> (u32, u32) {
        (self.pre, self.post)
    }

    /// Its fixed feedback weight `B`.
    pub fn feedback(&self) -> f64 {
        self.feedback
    }

    /// Moves the cell to state row `c` of `world` after a topology change between rounds: its
    /// new state-row index, id (neuron indices shift when neurons come and go) and neurons.
    /// It keeps its state, round, clock and feedback weight (the network carries the same one,
    /// see [`meta_nca_rule::topology::Topology::apply`]); the summaries it held describe the
    /// old neighbourhood and are dropped.
    pub fn place(&mut self, world: &World, c: u32) {
        let (id, links) = Links::of(world, c);
        debug_assert!(self.settled(), "cell {id} rewired in the middle of a round");
        self.index = c;
        if let Some(traced) = &mut self.traced {
            traced.id = id;
        }
        self.pre = links.pre;
        self.post = links.post;
        self.pre_hidden = links.pre_hidden;
        self.pre_view = None;
        self.post_view = None;
    }

    /// Handles one message.
    pub fn handle(&mut self, msg: CellMsg, ctx: &Ctx, out: &mut impl Outbox) {
        match msg {
            CellMsg::Begin { round, fire } => self.begin(round, fire, ctx, out),
            CellMsg::Tick => {
                let draw = (splitmix_next(&mut self.clock) >> 11) as f64 / (1u64 << 53) as f64;
                self.begin(self.round, draw < ctx.fire_fraction, ctx, out);
            }
            CellMsg::Act { round, a } => self.on_act(round, a, out),
            CellMsg::Summary { side, view } => {
                if side == Side::Post && self.pre_hidden && ctx.needs.messages() {
                    self.send_back(&view, out);
                }
                let slot = match side {
                    Side::Pre => &mut self.pre_view,
                    Side::Post => &mut self.post_view,
                };
                if slot.as_ref().is_none_or(|v| v.round <= view.round) {
                    *slot = Some(view);
                }
                self.try_fire(ctx, out);
            }
            CellMsg::Update { block, row } => {
                if let Phase::Querying { staleness } = self.phase {
                    let w0 = self.state[0];
                    let width = self.state.len();
                    let delta = &block[row as usize * width..(row as usize + 1) * width];
                    self.state.iter_mut().zip(delta).for_each(|(s, d)| *s += d);
                    self.complete(w0, true, staleness, ctx, out);
                }
            }
        }
    }

    fn begin(&mut self, round: u32, fire: bool, ctx: &Ctx, out: &mut impl Outbox) {
        if self.phase != Phase::Idle || round != self.round {
            return;
        }
        self.phase = Phase::Waiting { fire };
        out.contribute(self.pre, round, Contribution::Report { fan: Fan::Out, row: &self.state });
        out.contribute(self.post, round, Contribution::Report { fan: Fan::In, row: &self.state });
        self.try_fire(ctx, out);
    }

    fn on_act(&mut self, round: u32, a: Arc<[f64]>, out: &mut impl Outbox) {
        let w = if round == self.round && !self.drive_sent {
            self.drive_sent = true;
            self.state[0]
        } else if round > self.round {
            self.later.push(Later::Act(round, a));
            return;
        } else if let Some(k) = self.later.iter().position(|l| matches!(l, Later::Drive(r, _) if *r == round)) {
            match self.later.swap_remove(k) {
                Later::Drive(_, w) => w,
                _ => return,
            }
        } else {
            return;
        };
        out.contribute(self.post, round, Contribution::Drive { w, a: &a });
    }

    /// Passes the post-neuron's backward message of `view.round` on to the pre-neuron as
    /// `w · δ` (and `B · δ`), `w` being the weight the cell had in that round.
    fn send_back(&mut self, view: &NeuronSummary, out: &mut impl Outbox) {
        let round = view.round;
        let w = if round == self.round && !self.back_sent {
            self.back_sent = true;
            self.state[0]
        } else if let Some(k) = self.later.iter().position(|l| matches!(l, Later::Back(r, _) if *r == round)) {
            match self.later.swap_remove(k) {
                Later::Back(_, w) => w,
                _ => return,
            }
        } else {
            return;
        };
        let part = Contribution::Back { w, d: view.d.as_deref(), fb: self.feedback, d_fa: view.d_fa.as_deref() };
        out.contribute(self.pre, round, part);
    }

    fn try_fire(&mut self, ctx: &Ctx, out: &mut impl Outbox) {
        let Phase::Waiting { fire } = self.phase else { return };
        let (Some(pre), Some(post)) = (&self.pre_view, &self.post_view) else { return };
        let oldest = pre.round.min(post.round);
        if oldest + ctx.max_staleness < self.round {
            return;
        }
        let staleness = self.round - oldest;
        let messages = ctx.needs.messages().then(|| messages(pre, post, ctx));
        if let (Some(t), Some((back, align))) = (&mut self.traced, messages) {
            (t.back, t.align) = (back, align);
        }
        if !fire {
            let w0 = self.state[0];
            self.complete(w0, false, staleness, ctx, out);
            return;
        }
        let (mut hebb_z, mut hebb_e) = (0.0, 0.0);
        if ctx.needs.hebbian {
            let inv = 1.0 / ctx.samples.max(1) as f64;
            hebb_z = mean_product(pre.a.as_ref(), post.z.as_ref(), inv);
            hebb_e = mean_product(pre.a.as_ref(), post.e.as_ref(), inv);
        }
        let (back, align) = messages.unwrap_or_default();
        let (back, align) = (back.map_or(0.0, |b| b.0), align.map_or(0.0, |a| a.0));
        self.phase = Phase::Querying { staleness };
        let cell = CellView { state: &self.state, hebb_z, hebb_e, back, align };
        out.query(self.index, ctx.spec.width(), |p| perceive(&ctx.spec, cell, pre.view(), post.view(), p));
    }

    /// Ends the round: `w0` is the weight the round started with.
    fn complete(&mut self, w0: f64, fired: bool, staleness: u32, ctx: &Ctx, out: &mut impl Outbox) {
        let round = self.round;
        if ctx.needs.activity && !self.drive_sent {
            self.later.push(Later::Drive(round, w0));
        }
        if ctx.needs.messages() && self.pre_hidden && !self.back_sent {
            self.later.push(Later::Back(round, w0));
        }
        let dw = self.state[0] - w0;
        if let Some(t) = &mut self.traced {
            let _enter = t.span.enter();
            let (back, align) = (t.back.take(), t.align.take());
            tracing::info!(
                target: "meta_nca_sim::cell",
                step = round,
                layer = t.id.layer,
                i = t.id.pre,
                j = t.id.post,
                index = t.id.index,
                w = self.state[0],
                dw,
                fired,
                staleness,
                back = back.map(|b| b.0),
                delta = back.map(|b| b.1),
                align = align.map(|a| a.0),
                delta_fa = align.map(|a| a.1),
                "update"
            );
        }
        self.round += 1;
        self.drive_sent = false;
        self.back_sent = false;
        let finished = self.round >= ctx.rounds;
        self.phase = if finished { Phase::Finished } else { Phase::Idle };
        let row = ctx.record.then(|| self.state.to_vec());
        out.done(CellDone {
            cell: self.index,
            round,
            dw,
            fired,
            staleness,
            row,
            // A finished cell hands its state over (it only owes drives now, from `later`).
            final_state: finished.then(|| std::mem::take(&mut self.state).into_vec()),
        });
        // The new round's activation, if it came early (at most one per round).
        let r = self.round;
        let early = self.later.iter().position(|l| matches!(l, Later::Act(k, _) if *k == r));
        if let Some(Later::Act(_, a)) = early.map(|k| self.later.swap_remove(k)) {
            self.on_act(r, a, out);
        }
        if ctx.async_mode && !finished {
            out.tick_later(self.index);
        }
    }
}
