//! The cell and neuron state machines without a runtime: a recording [`Outbox`] drives them
//! message by message, and a synchronous executor of a few lines grows a whole network in
//! lockstep against the reference path.

use std::collections::VecDeque;
use std::sync::Arc;

use meta_nca_rule::config::Config;
use meta_nca_rule::init::{HiddenCode, WeightInit};
use meta_nca_rule::perception::{CellView, Group, PerceptionSpec, perceive};
use meta_nca_rule::rule::RuleNet;
use meta_nca_rule::task_data::TaskData;
use meta_nca_rule::topology::Topology;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::cell::Cell;
use crate::neuron::Neuron;
use crate::protocol::{CellDone, CellMsg, Contribution, Fan, NeuronMsg, NeuronSummary, Outbox, Partial, Side};
use crate::setup::Setup;
use crate::world::{Ctx, World};

/// One call an actor made on its outbox.
#[derive(Debug, Clone)]
enum Call {
    ToNeuron(u32, NeuronMsg),
    /// A contribution, as the sum of it alone, with its [`Contribution::slot`].
    Contribute {
        neuron: u32,
        round: u32,
        slot: u8,
        part: Partial,
    },
    Broadcast(u32, Fan, CellMsg),
    /// A rule query with the perception row the cell wrote.
    Query {
        cell: u32,
        row: Vec<f64>,
    },
    Done(CellDone),
    TickLater(u32),
}

/// An outbox that records every call.
#[derive(Debug, Default)]
struct Recorder(Vec<Call>);

impl Recorder {
    fn take(&mut self) -> Vec<Call> {
        std::mem::take(&mut self.0)
    }
}

impl Outbox for Recorder {
    fn to_neuron(&mut self, neuron: u32, msg: NeuronMsg) {
        self.0.push(Call::ToNeuron(neuron, msg));
    }
    fn contribute(&mut self, neuron: u32, round: u32, part: Contribution<'_>) {
        self.0.push(Call::Contribute { neuron, round, slot: part.slot(), part: Partial::of(&part) });
    }
    fn broadcast(&mut self, neuron: u32, fan: Fan, msg: CellMsg) {
        self.0.push(Call::Broadcast(neuron, fan, msg));
    }
    fn query(&mut self, cell: u32, width: usize, perceive: impl FnOnce(&mut [f64])) {
        let mut row = vec![0.0; width];
        perceive(&mut row);
        self.0.push(Call::Query { cell, row });
    }
    fn done(&mut self, done: CellDone) {
        self.0.push(Call::Done(done));
    }
    fn tick_later(&mut self, cell: u32) {
        self.0.push(Call::TickLater(cell));
    }
}

/// A dense network of `sizes` (no bias) on `samples` fixed samples, cells of state width 3.
fn world(sizes: &[usize], groups: &[Group], samples: usize) -> World {
    let (features, classes) = (sizes[0], sizes[sizes.len() - 1]);
    let x = (0..samples * features).map(|k| ((k * 7) % 11) as f64 / 4.0 - 1.25).collect();
    let y = (0..samples).map(|b| b % classes).collect();
    let data = Arc::new(TaskData { x, y, features, classes });
    let spec = PerceptionSpec::new(groups, 2).expect("valid groups");
    let ctx = Ctx {
        spec: spec.clone(),
        needs: Default::default(),
        samples: 0,
        rounds: u32::MAX,
        max_staleness: 0,
        async_mode: false,
        fire_fraction: 0.0,
        record: false,
    };
    World::new(Topology::dense(sizes, false).expect("valid sizes"), data, spec, ctx).expect("world")
}

/// A summary of `round` with recognisable numbers (`seed` tells two apart).
fn summary(round: u32, seed: f64, samples: usize) -> Arc<NeuronSummary> {
    let per_sample = |k: f64| -> Option<Arc<[f64]>> { Some((0..samples).map(|b| seed * k + b as f64).collect()) };
    Arc::new(NeuronSummary {
        round,
        in_sum: vec![seed, 2.0 * seed, 0.5],
        in_count: 3,
        out_sum: vec![-seed, 1.0, seed],
        out_count: 2,
        act: 0.25 * seed,
        pre_act: -0.5 * seed,
        err: 0.1 * seed,
        delta: 0.0,
        delta_fa: 0.0,
        a: per_sample(0.5),
        z: per_sample(-1.0),
        e: per_sample(0.25),
        d: None,
        d_fa: None,
    })
}

fn mean_product(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>() / a.len() as f64
}

/// Every contribution among `calls`: `(neuron, round, slot, its sum)`.
fn contributions(calls: &[Call]) -> Vec<(u32, u32, u8, Partial)> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Contribute { neuron, round, slot, part } => Some((*neuron, *round, *slot, part.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_firing_cell_reports_queries_once_and_applies_the_rules_answer() {
    let groups = [Group::SelfState, Group::Column, Group::Row, Group::Activations, Group::Hebbian];
    let samples = 4;
    let world = world(&[2, 3, 2], &groups, samples);
    let ctx = &world.ctx;
    // A cell into an output neuron: its post-neuron's summary carries the error.
    let c = (0..world.num_cells() as u32).find(|&c| world.cell_id(c).layer == 1).expect("an output cell");
    let slot = &world.batch.cells()[c as usize];
    let row = vec![0.5, -0.25, 0.125];
    let mut cell = Cell::new(&world, c, row.clone(), 7, false);
    assert_eq!(cell.neurons(), (slot.pre as u32, slot.post as u32));
    assert_eq!(cell.feedback(), world.feedback(c));
    let (pre, post) = cell.neurons();
    let mut out = Recorder::default();

    // Begin: its state row to both neurons, nothing else.
    cell.handle(CellMsg::Begin { round: 0, fire: true }, ctx, &mut out);
    let calls = out.take();
    let one = |sum: &[f64]| Partial { sum: sum.to_vec(), count: 1 };
    assert_eq!(contributions(&calls), vec![(pre, 0, 1, one(&row)), (post, 0, 0, one(&row))], "{calls:?}");
    assert_eq!(calls.len(), 2);

    // The pre-neuron's activation: the drive `w · a` to the post-neuron.
    let a: Arc<[f64]> = vec![1.0, -2.0, 0.5, 3.0].into();
    cell.handle(CellMsg::Act { round: 0, a: a.clone() }, ctx, &mut out);
    let drive: Vec<f64> = a.iter().map(|v| row[0] * v).collect();
    assert_eq!(contributions(&out.take()), vec![(post, 0, 2, one(&drive))]);

    // One summary is not enough; the second makes it perceive and query exactly once.
    let (pre_view, post_view) = (summary(0, 1.0, samples), summary(0, 3.0, samples));
    cell.handle(CellMsg::Summary { side: Side::Pre, view: pre_view.clone() }, ctx, &mut out);
    assert!(out.take().is_empty());
    cell.handle(CellMsg::Summary { side: Side::Post, view: post_view.clone() }, ctx, &mut out);
    let calls = out.take();
    let [Call::Query { cell: asker, row: perception }] = calls.as_slice() else { panic!("one query: {calls:?}") };
    assert_eq!(*asker, c);
    assert_eq!(perception.len(), ctx.spec.width());
    // The row is meta_nca_rule's perception of the same inputs.
    let (pa, pz, pe) = (pre_view.a.as_deref(), post_view.z.as_deref(), post_view.e.as_deref());
    let me = CellView {
        state: &row,
        hebb_z: mean_product(pa.expect("a"), pz.expect("z")),
        hebb_e: mean_product(pa.expect("a"), pe.expect("e")),
        back: 0.0,
        align: 0.0,
    };
    let mut expected = vec![0.0; ctx.spec.width()];
    perceive(&ctx.spec, me, pre_view.view(), post_view.view(), &mut expected);
    assert_eq!(*perception, expected);

    // The rule's answer (row 1 of a two-row pass): state + Δ, reported done.
    let delta = [0.25, 0.5, -1.0];
    let block: Arc<[f64]> = [9.0, 9.0, 9.0].iter().chain(&delta).copied().collect();
    cell.handle(CellMsg::Update { block, row: 1 }, ctx, &mut out);
    let new: Vec<f64> = row.iter().zip(&delta).map(|(s, d)| s + d).collect();
    assert_eq!(cell.state(), new.as_slice());
    let calls = out.take();
    let [Call::Done(done)] = calls.as_slice() else { panic!("one report: {calls:?}") };
    let expected =
        CellDone { cell: c, round: 0, dw: new[0] - row[0], fired: true, staleness: 0, final_state: None, row: None };
    assert_eq!(*done, expected);

    // The next round reports the new state to both neurons.
    cell.handle(CellMsg::Begin { round: 1, fire: false }, ctx, &mut out);
    assert_eq!(contributions(&out.take()), vec![(pre, 1, 1, one(&new)), (post, 1, 0, one(&new))]);
}

#[test]
fn a_cell_that_does_not_fire_still_reports_and_keeps_its_state() {
    let world = world(&[2, 2], &[Group::SelfState, Group::Column], 3);
    let ctx = &world.ctx;
    let row = vec![-0.75, 0.5, 2.0];
    let mut cell = Cell::new(&world, 1, row.clone(), 0, false);
    let mut out = Recorder::default();
    cell.handle(CellMsg::Begin { round: 0, fire: false }, ctx, &mut out);
    assert_eq!(contributions(&out.take()).len(), 2);
    cell.handle(CellMsg::Summary { side: Side::Post, view: summary(0, 1.0, 3) }, ctx, &mut out);
    cell.handle(CellMsg::Summary { side: Side::Pre, view: summary(0, 2.0, 3) }, ctx, &mut out);
    let calls = out.take();
    assert!(!calls.iter().any(|c| matches!(c, Call::Query { .. })), "{calls:?}");
    let [Call::Done(done)] = calls.as_slice() else { panic!("one report: {calls:?}") };
    let expected = CellDone { cell: 1, round: 0, dw: 0.0, fired: false, staleness: 0, final_state: None, row: None };
    assert_eq!(*done, expected);
    assert_eq!(cell.state(), row.as_slice());
    assert!(cell.settled());
}

#[test]
fn a_cell_waits_for_summaries_fresh_enough_for_its_staleness_bound() {
    let mut world = world(&[2, 2], &[Group::SelfState, Group::Row], 3);
    let old =
        |seed| CellMsg::Summary { side: if seed > 1.5 { Side::Pre } else { Side::Post }, view: summary(0, seed, 3) };
    for (max_staleness, reports) in [(0, false), (1, true)] {
        world.ctx.max_staleness = max_staleness;
        let mut cell = Cell::new(&world, 0, vec![0.0; 3], 0, false).joining_at(1);
        let mut out = Recorder::default();
        cell.handle(CellMsg::Begin { round: 1, fire: false }, &world.ctx, &mut out);
        cell.handle(old(1.0), &world.ctx, &mut out);
        cell.handle(old(2.0), &world.ctx, &mut out);
        let done: Vec<_> =
            out.take().into_iter().filter_map(|c| if let Call::Done(d) = c { Some(d) } else { None }).collect();
        assert_eq!(done.len(), usize::from(reports), "max staleness {max_staleness}");
        assert!(done.iter().all(|d| d.round == 1 && d.staleness == 1));
    }
}

#[test]
fn a_neuron_with_every_report_of_a_round_broadcasts_one_summary_to_each_fan() {
    let world = world(&[2, 3, 2], &[Group::SelfState, Group::Column, Group::Row], 3);
    let ctx = &world.ctx;
    let g = world.batch.neuron(0, 1, 1) as u32; // a hidden neuron: two cells in, two out
    let mut neuron = Neuron::new(&world, g);
    let mut out = Recorder::default();
    let report =
        |fan, sum: &[f64], count| NeuronMsg::Report { round: 0, fan, part: Partial { sum: sum.to_vec(), count } };
    neuron.handle(report(Fan::In, &[1.0, 2.0, 3.0], 1), ctx, &mut out);
    neuron.handle(report(Fan::Out, &[0.5, 0.5, 0.5], 2), ctx, &mut out);
    // A report of the next round waits in its own round.
    neuron.handle(
        NeuronMsg::Report { round: 1, fan: Fan::In, part: Partial { sum: vec![0.0; 3], count: 2 } },
        ctx,
        &mut out,
    );
    assert!(out.take().is_empty(), "one incoming report is still missing");
    assert!(neuron.last_summary().is_none());
    neuron.handle(report(Fan::In, &[-1.0, 0.0, 1.0], 1), ctx, &mut out);
    let calls = out.take();
    let [
        Call::Broadcast(g_in, Fan::In, CellMsg::Summary { side: Side::Post, view: to_in }),
        Call::Broadcast(g_out, Fan::Out, CellMsg::Summary { side: Side::Pre, view: to_out }),
    ] = calls.as_slice()
    else {
        panic!("one summary per fan: {calls:?}")
    };
    assert_eq!((*g_in, *g_out), (g, g));
    assert!(Arc::ptr_eq(to_in, to_out), "one summary, shared");
    assert_eq!((to_in.round, to_in.in_count, to_in.out_count), (0, 2, 2));
    assert_eq!(to_in.in_sum, vec![0.0, 2.0, 4.0]);
    assert_eq!(to_in.out_sum, vec![0.5, 0.5, 0.5]);
    assert!(to_in.a.is_none() && to_in.z.is_none(), "no activity without a group that needs it");
    assert!(neuron.last_summary().is_some_and(|s| Arc::ptr_eq(s, to_in)));
}

#[test]
fn a_hidden_neuron_activates_once_every_drive_is_in() {
    let world = world(&[2, 3, 2], &[Group::SelfState, Group::Activations], 3);
    let ctx = &world.ctx;
    let g = world.batch.neuron(0, 1, 0) as u32;
    let mut neuron = Neuron::new(&world, g);
    let mut out = Recorder::default();
    let drive = |sum: Vec<f64>| NeuronMsg::Drive { round: 0, part: Partial { sum, count: 1 } };
    neuron.handle(drive(vec![1.0, -2.0, 0.5]), ctx, &mut out);
    assert!(out.take().is_empty());
    neuron.handle(drive(vec![0.5, 1.0, -1.0]), ctx, &mut out);
    let calls = out.take();
    let [Call::Broadcast(from, Fan::Out, CellMsg::Act { round: 0, a })] = calls.as_slice() else {
        panic!("the activation to the outgoing cells: {calls:?}")
    };
    assert_eq!(*from, g);
    assert_eq!(&a[..], &[1.5, 0.0, 0.0], "relu of the summed drives");
    for fan in [Fan::In, Fan::Out] {
        neuron.handle(
            NeuronMsg::Report { round: 0, fan, part: Partial { sum: vec![0.0; 3], count: 2 } },
            ctx,
            &mut out,
        );
    }
    let summary = neuron.last_summary().expect("the round finished");
    // z = [1.5, -1, -0.5], a = relu(z) = [1.5, 0, 0]: the batch means.
    assert_eq!((summary.act, summary.pre_act), (0.5, 0.0));
    assert_eq!(summary.in_count, 2);
}

/// A lockstep grow driven by hand: every message through a queue, one contribution per
/// message (nothing summed on the way), every query answered at once by the rule.
fn grow_synchronously(setup: &Setup) -> Vec<f64> {
    let mut world = (*setup.world).clone();
    world.ctx.rounds = setup.fires.len() as u32;
    let world = &world;
    let mut cells = Cell::all(world, &setup.state0, 0, &|_| false).expect("cells");
    let mut neurons = Neuron::all(world);
    let mut pass = setup.rule.forward_pass();
    let mut finals = vec![Vec::new(); cells.len()];
    enum To {
        Cell(u32, CellMsg),
        Neuron(u32, NeuronMsg),
    }
    for (round, fire) in setup.fires.iter().enumerate() {
        let round = round as u32;
        let mut queue: VecDeque<To> =
            fire.iter().enumerate().map(|(c, &fire)| To::Cell(c as u32, CellMsg::Begin { round, fire })).collect();
        let mut out = Recorder::default();
        while let Some(msg) = queue.pop_front() {
            match msg {
                To::Cell(c, msg) => cells[c as usize].handle(msg, &world.ctx, &mut out),
                To::Neuron(g, msg) => neurons[g as usize].handle(msg, &world.ctx, &mut out),
            }
            for call in out.take() {
                match call {
                    Call::ToNeuron(g, msg) => queue.push_back(To::Neuron(g, msg)),
                    Call::Contribute { neuron, round, slot, part } => {
                        let msg = match slot {
                            0 => NeuronMsg::Report { round, fan: Fan::In, part },
                            1 => NeuronMsg::Report { round, fan: Fan::Out, part },
                            2 => NeuronMsg::Drive { round, part },
                            _ => NeuronMsg::Back { round, part },
                        };
                        queue.push_back(To::Neuron(neuron, msg));
                    }
                    Call::Broadcast(g, fan, msg) => {
                        queue.extend(world.fan(g, fan).iter().map(|&c| To::Cell(c, msg.clone())));
                    }
                    Call::Query { cell, row } => {
                        let mut delta = vec![0.0; pass.output()];
                        pass.run(&row, &mut delta);
                        queue.push_back(To::Cell(cell, CellMsg::Update { block: delta.into(), row: 0 }));
                    }
                    Call::Done(done) => {
                        assert_eq!(done.fired, fire[done.cell as usize]);
                        if let Some(state) = done.final_state {
                            finals[done.cell as usize] = state;
                        }
                    }
                    Call::TickLater(c) => panic!("lockstep cell {c} asked for a tick"),
                }
            }
        }
    }
    finals.concat()
}

#[test]
fn cells_and_neurons_driven_by_hand_grow_what_the_reference_path_grows() {
    let groups = [Group::SelfState, Group::Column, Group::Row, Group::Activations, Group::Hebbian, Group::Backward];
    let sizes = [3, 4, 2];
    let topology = Topology::dense(&sizes, true).expect("valid sizes");
    let mut rng = StdRng::seed_from_u64(5);
    let samples = 6;
    let x = (0..samples * sizes[0]).map(|k| ((k * 5) % 7) as f64 / 3.0 - 1.0).collect();
    let data = Arc::new(TaskData { x, y: (0..samples).map(|b| b % 2).collect(), features: 3, classes: 2 });
    let code = HiddenCode::for_family(2, 16, true, 1);
    let mut cfg = Config::default();
    cfg.rule.perception = groups.to_vec();
    cfg.rule.hidden = vec![8];
    cfg.rule.output_scale = 0.5;
    let (spec, shape) = cfg.rule_shape(&code).expect("valid groups");
    let rule = RuleNet::new(&dfdx::prelude::Cpu::default(), shape, &mut rng);
    let setup = Setup::grow_episode(rule, spec, code, WeightInit::Xavier, topology, data, 4, 0.6, 11).expect("setup");
    assert!(setup.fires.iter().flatten().any(|&f| f) && setup.fires.iter().flatten().any(|&f| !f));
    let reference = setup.reference_states().expect("reference");
    let grown = grow_synchronously(&setup);
    let last = reference.last().expect("states");
    assert_eq!(grown.len(), last.len());
    let diff = grown.iter().zip(last).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(diff < 1e-9, "max |actors - reference| = {diff}");
    assert!(grown != setup.state0, "the rule changed something");
}
