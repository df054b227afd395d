//! The living topology as a state machine: random sequences of grow steps and topology
//! changes (remove or add a connection, remove or add a hidden neuron, and changes that name
//! something that does not exist or that overflow the hidden-state encoding) on small
//! networks. The model is the batched reference path (`Grower::step`, `Grower::reshape`); the
//! system under test is the actor simulation in lockstep, on both executors. After every
//! transition (and at the start):
//! - the simulation's topology is the model's, and the live cells the actors report are
//!   exactly the live mask;
//! - every state row equals the reference path's (1e-9);
//! - after a step, every neuron with cells has a summary of that step (what its cells
//!   perceived) that holds the brute-force sums and counts of its incoming and outgoing cells'
//!   rows, and, when a message group is on, the reference path's backward messages;
//! - the feedback weights the cells carry are the network's (both engines change it through
//!   `Topology::apply`, so they hold the same `B`);
//! - with one task per cell, the live tasks are exactly the live cells and neurons (a removed
//!   cell's task has ended);
//! - a refused change is refused by both and changes nothing;
//! - changes may remove every live connection: the empty network steps (it predicts a
//!   constant) and grows back as connections and neurons are added.
//!
//! Every call into the simulation runs under a watchdog: a deadlock aborts the test with the
//! transition that hung. At least 10 000 transitions run per `cargo test`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dfdx::prelude::*;
use meta_nca_rule::batch::Batch;
use meta_nca_rule::config::Config;
use meta_nca_rule::episode::Episode;
use meta_nca_rule::firing::choose_firing;
use meta_nca_rule::fused::values;
use meta_nca_rule::init::{HiddenCode, WeightInit, initial_state};
use meta_nca_rule::perception::{Group, PerceptionSpec};
use meta_nca_rule::reference::Grower;
use meta_nca_rule::rule::{Activation, RuleNet};
use meta_nca_rule::task;
use meta_nca_rule::task_data::TaskData;
use meta_nca_rule::topology::{Change, Topology};
use meta_nca_sim::{Executor, Mode, Setup, SimSpec, Simulation};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// What stays fixed in one test case: data, perception, rule, encoding, executor.
#[derive(Debug)]
struct Problem {
    data: Arc<TaskData>,
    spec: PerceptionSpec,
    rule: RuleNet,
    code: HiddenCode,
    executor: Executor,
    /// Rule rows per pass (and a shard's most rows at the rule service): small values make
    /// the shards hold deliveries back.
    rule_chunk: usize,
    start: Topology,
    state0: Vec<f64>,
}

/// The model: the reference path's network and state.
#[derive(Debug, Clone)]
struct Model {
    problem: Arc<Problem>,
    topology: Topology,
    state: Vec<f64>,
    /// The state before the last transition, when it was a step (the summaries describe it).
    before_step: Option<Vec<f64>>,
    /// Whether the last change was refused (or skipped because it would empty the network).
    refused: bool,
}

/// One transition.
#[derive(Debug, Clone)]
enum Op {
    /// A lockstep step; `seed` draws the firing flags with fraction `p`.
    Step { seed: u64, p: f64 },
    /// A topology change; `seed` draws new cells' starting weights.
    Change { change: Change, seed: u64 },
}

fn firing(topology: &Topology, seed: u64, p: f64) -> Vec<bool> {
    choose_firing(&mut StdRng::seed_from_u64(seed), topology, p)
}

fn build(sizes: Vec<usize>, bias: bool, mask: u16, shards: usize, rule_chunk: usize, seed: u64) -> Problem {
    let mut rng = StdRng::seed_from_u64(seed);
    let (features, classes) = (sizes[0], sizes[sizes.len() - 1]);
    let samples = 5;
    let x: Vec<f64> = (0..samples * features).map(|_| rand::Rng::gen_range(&mut rng, -2.0..2.0)).collect();
    let y: Vec<usize> = (0..samples).map(|b| b % classes).collect();
    let data = Arc::new(TaskData { x, y, features, classes });
    let mut start = Topology::dense(&sizes, bias).expect("valid sizes");
    // Room for some new cells, not for many: additions eventually overflow the encoding.
    let max_cells = (0..start.num_layers()).map(|l| start.layer(l).cells.len()).max().unwrap_or(1);
    let mut code = HiddenCode::for_family(start.num_layers(), max_cells + 6, true, 1);
    let mut cfg = Config::default();
    cfg.rule.perception = Group::ALL.iter().enumerate().filter(|(k, _)| mask >> k & 1 == 1).map(|(_, g)| *g).collect();
    // Alignment reads the cells' fixed feedback weights: the network draws them.
    code.feedback = cfg.rule.perception.iter().any(|g| g.needs().alignment);
    cfg.rule.hidden = vec![6];
    cfg.rule.activation = Activation::Tanh;
    cfg.rule.output_scale = 0.5;
    cfg.rule.last_init = 0.5;
    let (spec, shape) = cfg.rule_shape(&code).expect("valid groups");
    let rule = RuleNet::new(&Cpu::default(), shape, &mut rng);
    let state0 = initial_state(&code, WeightInit::Xavier, &mut start, &mut rng).expect("fits");
    let executor = if shards == 0 { Executor::Tasks } else { Executor::Shards { shards } };
    Problem { data, spec, rule, code, executor, rule_chunk, start, state0 }
}

struct Living;

impl ReferenceStateMachine for Living {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        (
            1usize..4,
            prop::collection::vec(1usize..4, 1..3),
            2usize..4,
            any::<bool>(),
            1u16..1 << Group::ALL.len(),
            0usize..4,
            prop::sample::select(vec![1usize, 3, 1024]),
            any::<u64>(),
        )
            .prop_map(|(features, hidden, classes, bias, mask, shards, rule_chunk, seed)| {
                let mut sizes = vec![features];
                sizes.extend(hidden);
                sizes.push(classes);
                let problem = Arc::new(build(sizes, bias, mask, shards, rule_chunk, seed));
                Model {
                    topology: problem.start.clone(),
                    state: problem.state0.clone(),
                    problem,
                    before_step: None,
                    refused: false,
                }
            })
            .boxed()
    }

    fn transitions(model: &Model) -> BoxedStrategy<Op> {
        let t = &model.topology;
        let live: Vec<Change> =
            t.cells().map(|c| Change::RemoveConnection { layer: c.layer, pre: c.pre, post: c.post }).collect();
        let mut dead = Vec::new();
        for layer in 0..t.num_layers() {
            for (at, &m) in t.mask(layer).iter().enumerate() {
                if !m {
                    dead.push(Change::AddConnection { layer, pre: at / t.cols(layer), post: at % t.cols(layer) });
                }
            }
        }
        let hidden: Vec<usize> = (1..t.sizes().len() - 1).collect();
        let neuron_ops: Vec<Change> = hidden
            .iter()
            .flat_map(|&layer| {
                (0..t.sizes()[layer])
                    .map(move |idx| Change::RemoveNeuron { layer, idx })
                    .chain([Change::AddNeuron { layer }])
            })
            .collect();
        let change = |choices: Vec<Change>| {
            let n = choices.len();
            (0..n.max(1), any::<u64>()).prop_map(move |(k, seed)| Op::Change { change: choices[k % n], seed })
        };
        // Changes that name nothing that exists, or are malformed for this network.
        let bad =
            (0usize..4, 0usize..6, 0usize..6, 0usize..3, any::<u64>()).prop_map(|(layer, pre, post, kind, seed)| {
                let change = match kind {
                    0 => Change::RemoveConnection { layer, pre, post },
                    1 => Change::RemoveNeuron { layer, idx: pre },
                    _ => Change::AddNeuron { layer },
                };
                Op::Change { change, seed }
            });
        let step = (any::<u64>(), 0.0f64..=1.0).prop_map(|(seed, p)| Op::Step { seed, p });
        let mut options: Vec<(u32, BoxedStrategy<Op>)> = vec![(6, step.boxed()), (1, bad.boxed())];
        if !live.is_empty() {
            options.push((3, change(live).boxed()));
        }
        if !dead.is_empty() {
            options.push((2, change(dead).boxed()));
        }
        if !neuron_ops.is_empty() {
            options.push((1, change(neuron_ops).boxed()));
        }
        prop::strategy::Union::new_weighted(options).boxed()
    }

    fn apply(mut model: Model, op: &Op) -> Model {
        let problem = model.problem.clone();
        let dev = Cpu::default();
        let grower =
            Grower::new(&dev, Batch::new(vec![model.topology.clone()]), problem.spec.clone(), problem.data.clone())
                .expect("grower");
        match *op {
            Op::Step { seed, p } => {
                let fire = firing(&model.topology, seed, p);
                let next = values(&grower.step(&problem.rule, grower.state_tensor(model.state.clone()), &fire));
                model.before_step = Some(std::mem::replace(&mut model.state, next));
                model.refused = false;
            }
            Op::Change { change, seed } => {
                model.before_step = None;
                let mut changed = model.topology.clone();
                // A change may leave no live connection: an empty network is a legal state.
                let ok = changed.apply(&change).is_ok();
                let reshaped = ok
                    .then(|| {
                        let mut rng = StdRng::seed_from_u64(seed);
                        let state = grower.state_tensor(model.state.clone());
                        grower.reshape(state, vec![changed.clone()], &problem.code, WeightInit::Xavier, &mut rng).ok()
                    })
                    .flatten();
                model.refused = reshaped.is_none();
                if let Some((_, state)) = reshaped {
                    model.topology = changed;
                    model.state = values(&state);
                }
            }
        }
        model
    }
}

/// Transitions applied to simulations, over every test case.
static TRANSITIONS: AtomicUsize = AtomicUsize::new(0);

/// What the transitions did, over every test case: steps on each executor, applied changes
/// of each kind, refused changes.
static COUNTS: [AtomicUsize; 12] = [const { AtomicUsize::new(0) }; 12];
const COUNT_NAMES: [&str; 12] = [
    "steps (tasks)",
    "steps (shards)",
    "connections removed",
    "connections added",
    "neurons removed",
    "neurons added",
    "changes refused",
    "changes that left no live connection",
    "steps whose backward messages were checked",
    "steps whose alignment messages were checked",
    "changes that brought an empty network back",
    "steps of an empty network",
];

fn count(what: usize) {
    COUNTS[what].fetch_add(1, Ordering::Relaxed);
}

/// Runs `job`, aborting the whole test binary if it does not return within a minute (a
/// deadlock must fail loudly, not hang CI).
fn within<T>(what: String, job: impl FnOnce() -> T) -> T {
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let dog = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watch.recv_timeout(Duration::from_secs(60)) {
            eprintln!("deadlock: {what} did not return within 60 s");
            std::process::abort();
        }
    });
    let out = job();
    drop(done);
    let _ = dog.join();
    out
}

impl StateMachineTest for Living {
    type SystemUnderTest = Simulation;
    type Reference = Living;

    fn init_test(model: &Model) -> Simulation {
        let p = &model.problem;
        let episode = Episode { topologies: vec![p.start.clone()], state0: p.state0.clone(), fires: Vec::new() };
        let setup = Setup::from_episode(p.rule.clone(), p.spec.clone(), p.start.clone(), p.data.clone(), episode)
            .expect("setup");
        let spec = SimSpec {
            executor: p.executor,
            mode: Mode::Lockstep,
            workers: 2,
            rule_chunk: p.rule_chunk,
            ..SimSpec::default()
        };
        let mut sim =
            within(format!("starting on {:?}", p.executor), || Simulation::start(&setup, &spec).expect("starts"));
        check(&mut sim, model);
        sim
    }

    fn apply(mut sim: Simulation, model: &Model, op: Op) -> Simulation {
        TRANSITIONS.fetch_add(1, Ordering::Relaxed);
        let p = model.problem.clone();
        match op {
            Op::Step { seed, p: fraction } => {
                count(if p.executor == Executor::Tasks { 0 } else { 1 });
                if sim.topology().num_cells() == 0 {
                    count(11);
                }
                let fire = firing(sim.topology(), seed, fraction);
                within(format!("{op:?} on {:?} {:?}", p.executor, sim.topology().sizes()), || sim.step(&fire))
                    .expect("a step succeeds");
            }
            Op::Change { change, seed } => {
                let before = sim.topology().clone();
                let mut rng = StdRng::seed_from_u64(seed);
                let result = within(format!("{op:?}"), || sim.apply(&change, &p.code, WeightInit::Xavier, &mut rng));
                assert_eq!(
                    result.is_err(),
                    model.refused,
                    "{change}: simulation {result:?}, model refused: {}",
                    model.refused
                );
                if result.is_err() {
                    count(6);
                    assert_eq!(sim.topology(), &before, "a refused change leaves the simulation alone");
                } else {
                    count(match change {
                        Change::RemoveConnection { .. } => 2,
                        Change::AddConnection { .. } => 3,
                        Change::RemoveNeuron { .. } => 4,
                        Change::AddNeuron { .. } => 5,
                    });
                    if before.num_cells() > 0 && sim.topology().num_cells() == 0 {
                        count(7);
                    }
                    if before.num_cells() == 0 && sim.topology().num_cells() > 0 {
                        count(10);
                    }
                }
            }
        }
        check(&mut sim, model);
        sim
    }

    fn teardown(sim: Simulation) {
        within("finish".into(), || sim.finish()).expect("finishes");
    }
}

/// The invariants after every transition (a snapshot is a request to the actors, so this
/// runs inside `apply`, which owns the simulation, rather than in `check_invariants`).
fn check(sim: &mut Simulation, model: &Model) {
    assert_eq!(sim.topology(), &model.topology, "topology");
    let snap = within("snapshot".into(), || sim.snapshot()).expect("snapshot");
    // Exactly one live actor per live cell answered, each linking the neurons the live mask
    // gives its connection.
    let batch = Batch::new(vec![model.topology.clone()]);
    let want: Vec<(u32, u32)> = batch.cells().iter().map(|s| (s.pre as u32, s.post as u32)).collect();
    assert_eq!(snap.links, want, "the live cells' own links are the live mask's");
    // The feedback weights the cells carry are the reference path's, bit for bit (drawn once
    // when a cell is created, kept through every change).
    let fb: Vec<f64> = model.topology.feedback().collect();
    assert_eq!(snap.feedback, fb, "the cells' feedback weights are the network's");
    if model.problem.code.feedback {
        assert!(fb.iter().all(|&b| b != 0.0), "every cell has a feedback weight");
    }
    let diff = snap.state.iter().zip(&model.state).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert_eq!(snap.state.len(), model.state.len());
    assert!(diff <= 1e-9, "actors differ from the reference path by {diff:e}");
    if let Some(before) = &model.before_step {
        let round = sim.round() - 1;
        check_summaries(&snap.summaries, &model.topology, before, model.problem.spec.state_width(), round);
        check_messages(&snap.summaries, &model.topology, before, &model.problem);
    }
    if model.problem.executor == Executor::Tasks {
        assert_eq!(sim.live_tasks(), batch.num_cells() + batch.num_neurons(), "one live task per live cell and neuron");
    }
}

/// Every neuron's last summary (of step `round`) against brute-force sums over `state` (the rows its cells had
/// when they reported).
fn check_summaries(
    summaries: &[Option<Arc<meta_nca_sim::protocol::NeuronSummary>>],
    topology: &Topology,
    state: &[f64],
    width: usize,
    round: u32,
) {
    let batch = Batch::new(vec![topology.clone()]);
    assert_eq!(summaries.len(), batch.num_neurons());
    let mut in_sum = vec![vec![0.0; width]; batch.num_neurons()];
    let mut out_sum = vec![vec![0.0; width]; batch.num_neurons()];
    for (c, slot) in batch.cells().iter().enumerate() {
        let row = &state[c * width..(c + 1) * width];
        in_sum[slot.post].iter_mut().zip(row).for_each(|(s, v)| *s += v);
        out_sum[slot.pre].iter_mut().zip(row).for_each(|(s, v)| *s += v);
    }
    let (ins, outs) = batch.counts();
    for (g, summary) in summaries.iter().enumerate() {
        if ins[g] + outs[g] == 0 {
            continue; // no cell perceives a neuron without cells
        }
        let s = summary.as_ref().unwrap_or_else(|| panic!("neuron {g} has no summary after a step"));
        assert_eq!(s.round, round, "neuron {g}: summary of the last step");
        assert_eq!((s.in_count, s.out_count), (ins[g], outs[g]), "neuron {g}: cell counts");
        for (got, want) in s.in_sum.iter().zip(&in_sum[g]).chain(s.out_sum.iter().zip(&out_sum[g])) {
            assert!((got - want).abs() <= 1e-9, "neuron {g}: sum {got} against brute force {want}");
        }
    }
}

/// Every hidden and output neuron's backward messages of the last step (per sample and their
/// batch mean, through the weights and through the feedback weights) against the reference
/// path's [`task::messages`] on the state the step started from.
fn check_messages(
    summaries: &[Option<Arc<meta_nca_sim::protocol::NeuronSummary>>],
    topology: &Topology,
    state: &[f64],
    problem: &Problem,
) {
    let needs = problem.spec.needs();
    if !needs.messages() {
        return;
    }
    let batch = Batch::new(vec![topology.clone()]);
    let net = batch.dense_net(0, state, problem.spec.state_width());
    let act = task::forward(&net, &problem.data.x, Some(&problem.data.y));
    let b = act.batch;
    let (ins, outs) = batch.counts();
    let waves = [(needs.backward, net.weights.clone(), true), (needs.alignment, batch.dense_feedback(0), false)];
    for (_, fb, through_w) in waves.into_iter().filter(|w| w.0) {
        count(if through_w { 8 } else { 9 });
        let msgs = task::messages(&net, &act, &fb);
        for (k, m) in msgs.iter().enumerate() {
            for (j, want) in m.chunks_exact(b).enumerate() {
                let g = batch.neuron(0, k + 1, j);
                if ins[g] + outs[g] == 0 {
                    continue; // no cell perceives a neuron without cells (its summary is old)
                }
                let Some(s) = summaries[g].as_ref() else { continue };
                let (d, mean) = if through_w { (&s.d, s.delta) } else { (&s.d_fa, s.delta_fa) };
                let d = d.as_ref().unwrap_or_else(|| panic!("neuron {g} sent no message"));
                let diff = d.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                assert!(diff <= 1e-9, "neuron {g} (through w: {through_w}): message differs by {diff:e}");
                let want_mean = want.iter().sum::<f64>() / b as f64;
                assert!((mean - want_mean).abs() <= 1e-9, "neuron {g}: mean message {mean} vs {want_mean}");
            }
        }
    }
}

#[test]
fn actors_follow_the_reference_path_through_topology_changes() {
    let config =
        ProptestConfig { cases: 100, failure_persistence: None, max_shrink_iters: 200, ..ProptestConfig::default() };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&Living::sequential_strategy(100..=140), |(model, ops, seen)| {
        Living::test_sequential(ProptestConfig::default(), model, ops, seen);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let total = TRANSITIONS.load(Ordering::Relaxed);
    println!("{total} transitions");
    assert!(total >= 10_000, "only {total} transitions ran");
    // Not vacuous: every kind of transition happened, on both executors.
    for (k, (name, n)) in COUNT_NAMES.iter().zip(&COUNTS).enumerate() {
        let n = n.load(Ordering::Relaxed);
        println!("  {name}: {n}");
        assert!(n >= if k >= 10 { 5 } else { 20 }, "only {n} {name}");
    }
}
