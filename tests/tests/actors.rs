//! The actor simulation against the batched reference path: lockstep mode, under both
//! executors, must grow the same network as `Grower::unroll` from the same episode (same
//! starting state, same firing draws) — within 1e-5 per state entry after K steps, on random
//! small architectures, perceptions, seeds and firing fractions. Also: async mode runs to the
//! end within its staleness bound, async with staleness 0 does not depend on scheduling,
//! traced cells emit their events, a failing actor is reported instead of hanging, and the
//! cells' fixed feedback weights survive topology changes as the reference path's do.

use std::sync::Arc;

use dfdx::prelude::*;
use meta_nca_rule::batch::Batch;
use meta_nca_rule::config::{Architectures, Config};
use meta_nca_rule::episode::{Episode, EpisodeSpec};
use meta_nca_rule::firing::choose_firing;
use meta_nca_rule::init::{HiddenCode, WeightInit};
use meta_nca_rule::perception::Group;
use meta_nca_rule::reference::Grower;
use meta_nca_rule::rule::{Activation, RuleNet};
use meta_nca_rule::task_data::TaskData;
use meta_nca_rule::topology::{CellId, Change, Topology};
use meta_nca_sim::{AsyncSpec, Executor, Mode, Setup, SimSpec, Simulation};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A random small problem: data, network, perception, rule and an episode.
#[derive(Debug, Clone)]
struct Case {
    sizes: Vec<usize>,
    bias: bool,
    groups: Vec<Group>,
    samples: usize,
    steps: usize,
    p: f64,
    seed: u64,
}

struct Built {
    setup: Setup,
    reference: Vec<f64>,
    /// The hidden-state layout (and whether feedback weights are drawn).
    code: HiddenCode,
}

fn build(case: &Case) -> Built {
    let mut rng = StdRng::seed_from_u64(case.seed);
    let features = case.sizes[0];
    let classes = *case.sizes.last().expect("sizes");
    let x: Vec<f64> = (0..case.samples * features).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let y: Vec<usize> = (0..case.samples).map(|b| b % classes).collect();
    let data = Arc::new(TaskData { x, y, features, classes });
    let topology = Topology::dense(&case.sizes, case.bias).expect("valid sizes");
    let max_cells = (0..topology.num_layers()).map(|l| topology.layer(l).cells.len()).max().unwrap_or(1);
    let mut code = HiddenCode::for_family(topology.num_layers(), max_cells, true, 1);
    code.feedback = case.groups.iter().any(|g| g.needs().alignment);
    let mut cfg = Config::default();
    cfg.rule.perception = case.groups.clone();
    cfg.rule.hidden = vec![8];
    cfg.rule.activation = Activation::Tanh;
    cfg.rule.output_scale = 0.5;
    cfg.rule.last_init = 0.5;
    let (spec, shape) = cfg.rule_shape(&code).expect("valid groups");
    let dev = Cpu::default();
    let rule = RuleNet::new(&dev, shape, &mut rng);
    let archs = Architectures::List(vec![case.sizes.clone()]);
    let ep = EpisodeSpec {
        archs: &archs,
        networks: 1,
        bias: case.bias,
        weight_init: WeightInit::Xavier,
        code,
        steps: case.steps,
        fire_fraction: case.p,
    };
    let episode = Episode::draw_for(vec![topology], &ep, &mut rng).expect("episode");
    // The episode's network carries the feedback weights drawn with it.
    let topology = episode.topologies[0].clone();
    let grower = Grower::new(&dev, Batch::new(vec![topology.clone()]), spec.clone(), data.clone()).expect("grower");
    let reference = grower.unroll(&rule, grower.state_tensor(episode.state0.clone()), &episode.fires).as_vec();
    let setup = Setup::from_episode(rule, spec, topology, data, episode).expect("setup");
    Built { setup, reference, code }
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
}

fn spec(executor: Executor, mode: Mode) -> SimSpec {
    SimSpec { executor, mode, workers: 2, ..SimSpec::default() }
}

prop_compose! {
    fn case()(
        hidden in prop::collection::vec(1usize..4, 0..3),
        features in 1usize..4,
        classes in 2usize..4,
        bias in any::<bool>(),
        mask in 1u16..1 << Group::ALL.len(),
        samples in 1usize..7,
        steps in 1usize..5,
        p in 0.05f64..=1.0,
        seed in any::<u64>(),
    ) -> Case {
        let mut sizes = vec![features];
        sizes.extend(hidden);
        sizes.push(classes);
        let groups: Vec<Group> = Group::ALL.iter().enumerate().filter(|(k, _)| mask >> k & 1 == 1).map(|(_, g)| *g).collect();
        Case { sizes, bias, groups, samples, steps, p, seed }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn lockstep_matches_reference(case in case(), shards in 1usize..5, chunk in prop::sample::select(vec![1usize, 3, 8192])) {
        let b = build(&case);
        let tasks = meta_nca_sim::run(&b.setup, &spec(Executor::Tasks, Mode::Lockstep)).expect("tasks run");
        let d = max_diff(&tasks.state, &b.reference);
        prop_assert!(d <= 1e-5, "tasks executor differs by {d}");
        // Small chunks make the shards hold deliveries back (flow control on rule queries).
        let s = SimSpec { rule_chunk: chunk, ..spec(Executor::Shards { shards }, Mode::Lockstep) };
        let sharded = meta_nca_sim::run(&b.setup, &s).expect("shards run");
        let d = max_diff(&sharded.state, &b.reference);
        prop_assert!(d <= 1e-5, "shards executor ({shards} shards, chunk {chunk}) differs by {d}");
    }
}

fn all_groups_case(seed: u64) -> Case {
    Case { sizes: vec![3, 4, 2], bias: true, groups: Group::ALL.to_vec(), samples: 5, steps: 4, p: 0.6, seed }
}

#[test]
fn lockstep_records_every_step_and_fires_the_episode_cells() {
    let b = build(&all_groups_case(3));
    let mut s = spec(Executor::Tasks, Mode::Lockstep);
    s.record_rounds = true;
    let out = meta_nca_sim::run(&b.setup, &s).expect("run");
    assert_eq!(out.weights().len(), 4);
    let fired: u64 = b.setup.fires.iter().flatten().filter(|&&f| f).count() as u64;
    assert_eq!(out.stats.updates, fired);
    assert_eq!(out.stats.cell_steps, 4 * b.setup.world.num_cells() as u64);
    assert_eq!(out.stats.staleness, vec![out.stats.cell_steps]);
    let width = b.setup.world.ctx.spec.state_width();
    let last: Vec<f64> = out.state.chunks(width).map(|r| r[0]).collect();
    assert_eq!(out.weights()[3], last);
}

#[test]
fn async_mode_finishes_on_both_executors() {
    let b = build(&all_groups_case(5));
    for (executor, chunk) in
        [(Executor::Tasks, 8192), (Executor::Shards { shards: 3 }, 8192), (Executor::Shards { shards: 2 }, 2)]
    {
        for max_staleness in [0, 2] {
            let mode = Mode::Async(AsyncSpec { max_staleness, jitter: 3, ..AsyncSpec::default() });
            let s = SimSpec { rule_chunk: chunk, ..spec(executor, mode) };
            let s = SimSpec { record_rounds: true, ..s };
            let out = meta_nca_sim::run(&b.setup, &s).expect("async run");
            assert_eq!(out.stats.cell_steps, 4 * b.setup.world.num_cells() as u64);
            // Every cell's weight after every round, the last one the final state's.
            assert_eq!(out.weights().len(), 4);
            let width = b.setup.world.ctx.spec.state_width();
            let last: Vec<f64> = out.state.chunks(width).map(|r| r[0]).collect();
            assert_eq!(out.weights()[3], last);
            assert!(out.stats.staleness.len() <= max_staleness as usize + 1, "{:?}", out.stats.staleness);
            assert!(out.state.iter().all(|v| v.is_finite()));
        }
    }
}

#[test]
fn the_comparison_is_not_vacuous() {
    // The rule moves the state, so equality with the reference means something; and the same
    // run with different firing draws does not match.
    let b = build(&all_groups_case(7));
    let moved = max_diff(&b.setup.state0, &b.reference);
    assert!(moved > 1e-2, "the reference barely moved: {moved}");
    let out = meta_nca_sim::run(&b.setup, &spec(Executor::Tasks, Mode::Lockstep)).expect("run");
    let d = max_diff(&out.state, &b.reference);
    assert!(d < 1e-12, "lockstep differs by {d}");
    let mut other = b.setup.clone();
    other.fires.iter_mut().for_each(|f| f.rotate_left(1));
    let out = meta_nca_sim::run(&other, &spec(Executor::Tasks, Mode::Lockstep)).expect("run");
    assert!(max_diff(&out.state, &b.reference) > 1e-3);
}

#[test]
fn a_panicking_rule_service_is_reported_not_hung() {
    let b = build(&all_groups_case(9));
    let mut broken = b.setup.clone();
    // A last layer of the wrong shape: the service's forward pass panics on the first batch.
    let dev = Cpu::default();
    let last = broken.rule.layers.len() - 1;
    broken.rule.layers[last] = dev.tensor_from_vec(vec![0.0; 3 * 2], (3, 2));
    let modes = [Mode::Lockstep, Mode::Async(AsyncSpec::default())];
    for (executor, mode) in
        [Executor::Tasks, Executor::Shards { shards: 2 }].into_iter().flat_map(|e| modes.map(|m| (e, m)))
    {
        let setup = broken.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(meta_nca_sim::run(&setup, &spec(executor, mode)).map(|_| ()));
        });
        let result = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("the run hung");
        let err = result.expect_err("a broken rule must fail the run");
        assert!(err.to_string().contains("rule service") || err.to_string().contains("failed"), "{err}");
    }
}

/// Collects the fields of every event, as text.
struct Collect(Arc<std::sync::Mutex<Vec<std::collections::BTreeMap<String, String>>>>);

struct Fields(std::collections::BTreeMap<String, String>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Collect {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == meta_nca_sim::trace::TARGET {
            let mut f = Fields(Default::default());
            event.record(&mut f);
            self.0.lock().expect("not poisoned").push(f.0);
        }
    }
}

#[test]
fn traced_cells_emit_one_event_per_round_with_their_fields() {
    use tracing_subscriber::layer::SubscriberExt;
    let b = build(&all_groups_case(11));
    // Cells 0:1:* are the four cells out of input neuron 1.
    let traced: Vec<usize> = (0..b.setup.world.num_cells())
        .filter(|&c| {
            let id = b.setup.world.cell_id(c as u32);
            id.layer == 0 && id.pre == 1
        })
        .collect();
    let fired: usize = b.setup.fires.iter().map(|f| traced.iter().filter(|&&c| f[c]).count()).sum();
    for executor in [Executor::Tasks, Executor::Shards { shards: 2 }] {
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(Collect(events.clone())));
        let mut s = spec(executor, Mode::Lockstep);
        s.trace = meta_nca_sim::trace::CellFilter::parse("0:1:*").expect("valid filter");
        s.dispatch = Some(dispatch);
        meta_nca_sim::run(&b.setup, &s).expect("run");
        let events = events.lock().expect("not poisoned");
        assert_eq!(events.len(), traced.len() * b.setup.fires.len(), "{executor:?}");
        for e in events.iter() {
            // Every group is on: the messages the cell received are in its events too.
            for key in
                ["step", "layer", "i", "j", "w", "dw", "fired", "staleness", "back", "delta", "align", "delta_fa"]
            {
                assert!(e.contains_key(key), "{key} missing from {e:?}");
            }
            assert_eq!((e["layer"].as_str(), e["i"].as_str(), e["staleness"].as_str()), ("0", "1", "0"));
        }
        assert_eq!(events.iter().filter(|e| e["fired"] == "true").count(), fired);
    }
}

#[test]
fn async_with_staleness_zero_does_not_depend_on_scheduling() {
    // Every cell draws its firing from its own clock and waits for its own round's
    // summaries, so executor, shard count and jitter cannot change the grown network.
    let b = build(&all_groups_case(13));
    let mode = |jitter| Mode::Async(AsyncSpec { max_staleness: 0, jitter, ..AsyncSpec::default() });
    let first = meta_nca_sim::run(&b.setup, &spec(Executor::Tasks, mode(0))).expect("run");
    for (executor, jitter, chunk) in
        [(Executor::Tasks, 7, 8192), (Executor::Shards { shards: 1 }, 0, 8192), (Executor::Shards { shards: 3 }, 5, 2)]
    {
        let s = SimSpec { rule_chunk: chunk, ..spec(executor, mode(jitter)) };
        let out = meta_nca_sim::run(&b.setup, &s).expect("run");
        let d = max_diff(&out.state, &first.state);
        assert!(d < 1e-12, "{executor:?} with jitter {jitter} differs by {d}");
    }
}

#[test]
fn feedback_weights_survive_topology_changes_in_both_engines() {
    // Alignment on: every cell has a fixed random B (no bias cells: the index code has room
    // for the added cells). Grow steps interleaved with removing and
    // adding a hidden neuron and a connection, in the actors (both executors) and in the
    // reference path: after every change the Bs the actor cells carry are the reference
    // network's, survivors keep theirs, new cells get new ones, and the states agree.
    let groups = vec![Group::SelfState, Group::Activations, Group::Feedback, Group::Backward, Group::Alignment];
    let case = Case { sizes: vec![3, 4, 2], bias: false, groups, samples: 5, steps: 0, p: 0.7, seed: 21 };
    let b = build(&case);
    assert!(b.code.feedback);
    let changes = [
        Change::RemoveNeuron { layer: 1, idx: 1 },
        Change::AddNeuron { layer: 1 },
        Change::RemoveConnection { layer: 0, pre: 0, post: 0 },
        Change::AddConnection { layer: 0, pre: 0, post: 0 },
    ];
    let by_id = |t: &Topology| -> std::collections::HashMap<(usize, usize), f64> {
        t.cells().zip(t.feedback()).map(|(c, f): (&CellId, f64)| ((c.layer, c.index), f)).collect()
    };
    for executor in [Executor::Tasks, Executor::Shards { shards: 2 }] {
        let mut sim = Simulation::start(&b.setup, &spec(executor, Mode::Lockstep)).expect("starts");
        let mut topology = (*b.setup.world.topology).clone();
        let start = by_id(&topology);
        let dev = Cpu::default();
        let mut grower = Grower::new(
            &dev,
            Batch::new(vec![topology.clone()]),
            b.setup.world.ctx.spec.clone(),
            b.setup.world.data.clone(),
        )
        .expect("grower");
        let mut state = grower.state_tensor(b.setup.state0.clone());
        for (k, change) in changes.iter().enumerate() {
            let fire = choose_firing(&mut StdRng::seed_from_u64(k as u64), &topology, case.p);
            sim.step(&fire).expect("step");
            state = grower.step(&b.setup.rule, state, &fire);
            let before = by_id(&topology);
            topology.apply(change).expect("a valid change");
            let mut rng = StdRng::seed_from_u64(100 + k as u64);
            sim.apply(change, &b.code, WeightInit::Xavier, &mut rng).expect("actors change");
            let mut rng = StdRng::seed_from_u64(100 + k as u64);
            (grower, state) =
                grower.reshape(state, vec![topology.clone()], &b.code, WeightInit::Xavier, &mut rng).expect("reshape");
            let snap = sim.snapshot().expect("snapshot");
            let want: Vec<f64> = grower.batch().topologies()[0].feedback().collect();
            assert_eq!(snap.feedback, want, "{executor:?} after {change}");
            for (id, fb) in by_id(&topology) {
                match before.get(&id) {
                    Some(&old) => assert_eq!(fb, old, "{executor:?} after {change}: a survivor keeps its B"),
                    None => {
                        assert!(fb != 0.0 && !start.values().any(|&s| s == fb), "{executor:?}: a new cell, a new B")
                    }
                }
            }
            let d = max_diff(&snap.state, &state.as_vec());
            assert!(d < 1e-9, "{executor:?} after {change}: states differ by {d}");
        }
        sim.finish().expect("finishes");
    }
}
