//! Property tests of perception and firing against brute-force implementations written
//! directly from SPEC "Semantics": random batches of small networks with random layer sizes,
//! bias on/off, dead connections, random states and activity statistics.
//!
//! The brute force never uses `Batch::neuron_sums`/`counts` or `perception::perceive`: for every
//! cell it scans all other live cells of its network.

use std::collections::HashMap;
use std::sync::Arc;

use dfdx::prelude::*;
use meta_nca_rule::batch::{ActivityStats, Batch, CellSlot, perceive_batch};
use meta_nca_rule::firing::{choose_firing, firing_count};
use meta_nca_rule::perception::{Group, PerceptionSpec};
use meta_nca_rule::reference::Grower;
use meta_nca_rule::rule::RuleNet;
use meta_nca_rule::task_data::TaskData;
use meta_nca_rule::topology::Topology;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// `cases` cases; failures are kept in `tests/proptest-regressions/perception.txt` (test
/// binaries run with the package folder as current directory).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/perception.txt"))),
        ..ProptestConfig::default()
    }
}

/// Most cells one generated network can have: 3 weight matrices of at most (4 + 1) x 4.
const MAX_CELLS: usize = 3 * 5 * 4;

/// SPEC's table order of the perception groups.
const SPEC_ORDER: [Group; 11] = [
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

/// A network before it is built: sizes, bias, and which dense cells are dead.
#[derive(Debug, Clone)]
struct NetPlan {
    sizes: Vec<usize>,
    bias: bool,
    /// Dead flags in dense creation order (layer by layer, row-major); extra entries unused.
    dead: Vec<bool>,
}

impl NetPlan {
    fn build(&self) -> Topology {
        let mut t = Topology::dense(&self.sizes, self.bias).expect("sizes are valid");
        let mut k = 0;
        for l in 0..t.num_layers() {
            for pre in 0..t.rows(l) {
                for post in 0..t.cols(l) {
                    if self.dead[k] {
                        t.remove_connection(l, pre, post).expect("live until now");
                    }
                    k += 1;
                }
            }
        }
        t
    }
}

prop_compose! {
    /// 2-4 layers of 1-4 neurons, bias on/off, about a quarter of the connections dead.
    fn arb_net()(
        sizes in prop::collection::vec(1usize..=4, 2..=4),
        bias in any::<bool>(),
        dead in prop::collection::vec(prop::bool::weighted(0.25), MAX_CELLS),
    ) -> NetPlan {
        NetPlan { sizes, bias, dead }
    }
}

fn num_neurons(t: &Topology) -> usize {
    let l = t.num_layers();
    t.sizes().iter().sum::<usize>() + if t.bias() { l } else { 0 }
}

/// A batch with state and statistics.
#[derive(Debug, Clone)]
struct Case {
    topologies: Vec<Topology>,
    /// Hidden width `d`; state width is `1 + d`.
    d: usize,
    state: Vec<f64>,
    act: Vec<f64>,
    pre_act: Vec<f64>,
    err: Vec<f64>,
    hebb_z: Vec<f64>,
    hebb_e: Vec<f64>,
    /// Message statistics: per neuron `delta`, `delta_fa`; per cell `back`, `align`.
    messages: [Vec<f64>; 4],
}

impl Case {
    fn stats(&self) -> ActivityStats {
        ActivityStats {
            act: self.act.clone(),
            pre_act: self.pre_act.clone(),
            err: self.err.clone(),
            hebb_z: self.hebb_z.clone(),
            hebb_e: self.hebb_e.clone(),
            delta: self.messages[0].clone(),
            delta_fa: self.messages[1].clone(),
            back: self.messages[2].clone(),
            align: self.messages[3].clone(),
        }
    }
}

prop_compose! {
    /// 1-3 networks, hidden width 0-3, random state rows and activity statistics.
    fn arb_case()(plans in prop::collection::vec(arb_net(), 1..=3), d in 0usize..=3)(
        state in prop::collection::vec(-2.0f64..2.0, cells_of(&plans) * (1 + d)),
        act in prop::collection::vec(-2.0f64..2.0, neurons_of(&plans)),
        pre_act in prop::collection::vec(-2.0f64..2.0, neurons_of(&plans)),
        err in prop::collection::vec(-1.0f64..1.0, neurons_of(&plans)),
        hebb_z in prop::collection::vec(-2.0f64..2.0, cells_of(&plans)),
        hebb_e in prop::collection::vec(-2.0f64..2.0, cells_of(&plans)),
        delta in prop::collection::vec(-1.0f64..1.0, neurons_of(&plans)),
        delta_fa in prop::collection::vec(-1.0f64..1.0, neurons_of(&plans)),
        back in prop::collection::vec(-2.0f64..2.0, cells_of(&plans)),
        align in prop::collection::vec(-2.0f64..2.0, cells_of(&plans)),
        plans in Just(plans),
        d in Just(d),
    ) -> Case {
        let topologies = plans.iter().map(NetPlan::build).collect();
        Case { topologies, d, state, act, pre_act, err, hebb_z, hebb_e, messages: [delta, delta_fa, back, align] }
    }
}

fn cells_of(plans: &[NetPlan]) -> usize {
    plans.iter().map(|p| p.build().num_cells()).sum()
}

fn neurons_of(plans: &[NetPlan]) -> usize {
    plans.iter().map(|p| num_neurons(&p.build())).sum()
}

/// Mean of the state rows `rows` (all zeros when there are none).
fn mean_rows(state: &[f64], s: usize, rows: &[usize]) -> Vec<f64> {
    let mut out = vec![0.0; s];
    if rows.is_empty() {
        return out;
    }
    for &r in rows {
        for k in 0..s {
            out[k] += state[r * s + k];
        }
    }
    out.iter_mut().for_each(|v| *v /= rows.len() as f64);
    out
}

/// Where the activity statistics of a cell come from.
struct CellActivity {
    /// Batch mean of the pre-neuron's activation.
    act_pre: f64,
    /// Batch mean of the post-neuron's pre-activation.
    pre_act_post: f64,
    /// Feedback value of the cell.
    feedback: f64,
    /// Hebbian pair.
    hebb: (f64, f64),
    /// `backward` pair: mean `a_pre δ_post`, mean `δ_post` (messages through the weights).
    back: (f64, f64),
    /// `alignment` pair (messages through the feedback weights).
    align: (f64, f64),
}

/// Brute-force perception of every cell, straight from SPEC's table, for the enabled
/// `groups`, laid out in SPEC's order. `activity(c, slot)` gives the cell's activity values.
fn brute_force(
    batch: &Batch,
    state: &[f64],
    s: usize,
    groups: &[Group],
    activity: impl Fn(usize, &CellSlot) -> CellActivity,
) -> Vec<Vec<f64>> {
    let cells = batch.cells();
    let mut out = Vec::with_capacity(cells.len());
    for (c, me) in cells.iter().enumerate() {
        let t = &batch.topologies()[me.net];
        let (l, i, j) = (me.id.layer, me.id.pre, me.id.post);
        let output_layer = l + 1 == t.num_layers();
        let others = |pred: &dyn Fn(&CellSlot) -> bool| -> Vec<usize> {
            cells
                .iter()
                .enumerate()
                .filter(|&(c2, o)| c2 != c && o.net == me.net && pred(o))
                .map(|(c2, _)| c2)
                .collect()
        };
        let column = others(&|o| o.id.layer == l && o.id.post == j);
        let row = others(&|o| o.id.layer == l && o.id.pre == i);
        // Cells of layer l-1 into pre-neuron i; none for layer 0 or the bias neuron.
        let is_bias_pre = t.bias() && i == t.sizes()[l];
        let upstream =
            if l == 0 || is_bias_pre { Vec::new() } else { others(&|o| o.id.layer + 1 == l && o.id.post == i) };
        // Cells of layer l+1 out of post-neuron j; none for the output layer.
        let downstream = if output_layer { Vec::new() } else { others(&|o| o.id.layer == l + 1 && o.id.pre == j) };
        let a = activity(c, me);
        let mut p = Vec::new();
        for g in SPEC_ORDER {
            if !groups.contains(&g) {
                continue;
            }
            match g {
                Group::SelfState => p.extend_from_slice(&state[c * s..(c + 1) * s]),
                Group::Column => p.extend(mean_rows(state, s, &column)),
                Group::Row => p.extend(mean_rows(state, s, &row)),
                Group::Activations => p.extend([a.act_pre, a.pre_act_post]),
                Group::Upstream => p.extend(mean_rows(state, s, &upstream)),
                Group::Downstream => p.extend(mean_rows(state, s, &downstream)),
                Group::Feedback => p.push(a.feedback),
                Group::Hebbian => p.extend([a.hebb.0, a.hebb.1]),
                Group::Backward => p.extend([a.back.0, a.back.1]),
                Group::Alignment => p.extend([a.align.0, a.align.1]),
                Group::Fan => p.extend([column.len(), row.len()].map(|n| 1.0 / ((n + 1) as f64).sqrt())),
            }
        }
        out.push(p);
    }
    out
}

/// Brute force with the statistics taken verbatim from `stats` (as `perceive_batch` defines them).
fn brute_force_stats(batch: &Batch, state: &[f64], s: usize, groups: &[Group], stats: &ActivityStats) -> Vec<Vec<f64>> {
    brute_force(batch, state, s, groups, |c, slot| {
        let pre = batch.neuron(slot.net, slot.id.layer, slot.id.pre);
        let post = batch.neuron(slot.net, slot.id.layer + 1, slot.id.post);
        CellActivity {
            act_pre: stats.act[pre],
            pre_act_post: stats.pre_act[post],
            feedback: stats.err[post],
            hebb: (stats.hebb_z[c], stats.hebb_e[c]),
            back: (stats.back[c], stats.delta[post]),
            align: (stats.align[c], stats.delta_fa[post]),
        }
    })
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()))
}

/// Compares a flat `[cells, width]` perception with per-cell rows.
fn check_rows(batch: &Batch, got: &[f64], want: &[Vec<f64>]) -> Result<(), TestCaseError> {
    let width = want.first().map_or(0, Vec::len);
    prop_assert_eq!(got.len(), want.len() * width, "perception has the wrong size");
    for (c, row) in want.iter().enumerate() {
        let g = &got[c * width..(c + 1) * width];
        let ok = g.iter().zip(row).all(|(&x, &y)| close(x, y));
        prop_assert!(ok, "cell {} ({:?}): got {:?}, want {:?}", c, batch.cells()[c], g, row);
    }
    Ok(())
}

/// The batch's own neuron indexing agrees with `Batch::neuron`, and neurons are numbered
/// network by network, layer by layer, bias last, with no gaps.
fn check_indexing(batch: &Batch) -> Result<(), TestCaseError> {
    for slot in batch.cells() {
        prop_assert_eq!(slot.pre, batch.neuron(slot.net, slot.id.layer, slot.id.pre));
        prop_assert_eq!(slot.post, batch.neuron(slot.net, slot.id.layer + 1, slot.id.post));
    }
    let mut next = 0;
    for (n, t) in batch.topologies().iter().enumerate() {
        for k in 0..t.sizes().len() {
            let count = t.sizes()[k] + usize::from(t.bias() && k < t.num_layers());
            for idx in 0..count {
                prop_assert_eq!(batch.neuron(n, k, idx), next);
                next += 1;
            }
        }
    }
    prop_assert_eq!(next, batch.num_neurons());
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn perceive_batch_matches_brute_force_all_groups(case in arb_case()) {
        let batch = Batch::new(case.topologies.clone());
        check_indexing(&batch)?;
        let spec = PerceptionSpec::new(&Group::ALL, case.d).expect("valid");
        let s = spec.state_width();
        prop_assert_eq!(spec.width(), 5 * s + 2 + 1 + 2 + 2 + 2 + 2);
        let stats = case.stats();
        let got = perceive_batch(&spec, &batch, &case.state, &stats);
        let want = brute_force_stats(&batch, &case.state, s, &SPEC_ORDER, &stats);
        check_rows(&batch, &got, &want)?;
    }

    #[test]
    fn perceive_batch_matches_brute_force_any_groups(
        case in arb_case(),
        enabled in prop::collection::vec(any::<bool>(), SPEC_ORDER.len()).prop_filter("one group at least", |v| v.contains(&true)),
        listed_in_reverse in any::<bool>(),
    ) {
        let batch = Batch::new(case.topologies.clone());
        let mut groups: Vec<Group> = SPEC_ORDER.iter().zip(&enabled).filter(|(_, e)| **e).map(|(g, _)| *g).collect();
        if listed_in_reverse {
            groups.reverse();
        }
        let spec = PerceptionSpec::new(&groups, case.d).expect("valid");
        let s = spec.state_width();
        let stats = case.stats();
        let got = perceive_batch(&spec, &batch, &case.state, &stats);
        let want = brute_force_stats(&batch, &case.state, s, &groups, &stats);
        prop_assert_eq!(spec.width(), want.first().map_or(spec.width(), Vec::len));
        check_rows(&batch, &got, &want)?;
    }

    /// Perception does not depend on the order of the networks in the batch, nor on the order
    /// of cells within a layer (a removed-and-re-added connection moves to the end of its layer
    /// and takes a new index): permuting both, with state and statistics permuted along,
    /// gives every (network, layer, pre, post) the same perception.
    #[test]
    fn perception_is_invariant_to_network_and_cell_order(
        case in arb_case(),
        perm_seed in any::<u64>(),
        readd in prop::collection::vec(any::<bool>(), 3 * MAX_CELLS),
    ) {
        let spec = PerceptionSpec::new(&Group::ALL, case.d).expect("valid");
        let s = spec.state_width();
        let a = Batch::new(case.topologies.clone());
        let nets = case.topologies.len();
        // A permutation of the networks from the seed.
        let mut order: Vec<usize> = (0..nets).collect();
        {
            use rand::seq::SliceRandom;
            order.shuffle(&mut StdRng::seed_from_u64(perm_seed));
        }
        let mut moved = Vec::new();
        let mut flag = readd.iter();
        for &n in &order {
            let mut t = case.topologies[n].clone();
            let live: Vec<_> = t.cells().copied().collect();
            for id in live {
                if *flag.next().unwrap_or(&false) {
                    t.remove_connection(id.layer, id.pre, id.post).expect("live");
                    t.add_connection(id.layer, id.pre, id.post).expect("free");
                }
            }
            moved.push(t);
        }
        let b = Batch::new(moved);
        prop_assert_eq!(a.num_cells(), b.num_cells());
        prop_assert_eq!(a.num_neurons(), b.num_neurons());
        // Rows of a by (original net, layer, pre, post).
        let key = |net: usize, slot: &CellSlot| (net, slot.id.layer, slot.id.pre, slot.id.post);
        let row_of: HashMap<_, usize> = a.cells().iter().enumerate().map(|(c, slot)| (key(slot.net, slot), c)).collect();
        let b_to_a: Vec<usize> = b.cells().iter().map(|slot| row_of[&key(order[slot.net], slot)]).collect();
        let mut state_b = vec![0.0; b.num_cells() * s];
        for (cb, &ca) in b_to_a.iter().enumerate() {
            state_b[cb * s..(cb + 1) * s].copy_from_slice(&case.state[ca * s..(ca + 1) * s]);
        }
        let sa = case.stats();
        let mut sb = ActivityStats::zeros(&b);
        for (nb, &na) in order.iter().enumerate() {
            let t = &case.topologies[na];
            for k in 0..t.sizes().len() {
                for idx in 0..t.sizes()[k] + usize::from(t.bias() && k < t.num_layers()) {
                    let (ga, gb) = (a.neuron(na, k, idx), b.neuron(nb, k, idx));
                    sb.act[gb] = sa.act[ga];
                    sb.pre_act[gb] = sa.pre_act[ga];
                    sb.err[gb] = sa.err[ga];
                    sb.delta[gb] = sa.delta[ga];
                    sb.delta_fa[gb] = sa.delta_fa[ga];
                }
            }
        }
        for (cb, &ca) in b_to_a.iter().enumerate() {
            sb.hebb_z[cb] = sa.hebb_z[ca];
            sb.hebb_e[cb] = sa.hebb_e[ca];
            sb.back[cb] = sa.back[ca];
            sb.align[cb] = sa.align[ca];
        }
        let pa = perceive_batch(&spec, &a, &case.state, &sa);
        let pb = perceive_batch(&spec, &b, &state_b, &sb);
        let f = spec.width();
        for (cb, &ca) in b_to_a.iter().enumerate() {
            let (ra, rb) = (&pa[ca * f..(ca + 1) * f], &pb[cb * f..(cb + 1) * f]);
            prop_assert!(
                ra.iter().zip(rb).all(|(&x, &y)| close(x, y)),
                "cell {:?}: {:?} in the original order, {:?} permuted", a.cells()[ca], ra, rb
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The full perception of the reference path, with activity computed from a forward pass written
// here from SPEC ("Task network"), on random data.

/// Networks sharing input and output sizes (as one grow batch must), with random data.
#[derive(Debug, Clone)]
struct GrowCase {
    topologies: Vec<Topology>,
    d: usize,
    state: Vec<f64>,
    x: Vec<f64>,
    y: Vec<usize>,
    features: usize,
    classes: usize,
}

prop_compose! {
    fn arb_grow_case()(
        features in 1usize..=4,
        classes in 1usize..=4,
        hidden in prop::collection::vec(prop::collection::vec(1usize..=4, 0..=2), 1..=3),
        bias in prop::collection::vec(any::<bool>(), 3),
        dead in prop::collection::vec(prop::bool::weighted(0.25), 3 * MAX_CELLS),
        d in 0usize..=2,
        rows in 1usize..=6,
    )(
        state in prop::collection::vec(-1.5f64..1.5, grow_cells(features, classes, &hidden, &bias, &dead) * (1 + d)),
        x in prop::collection::vec(-2.0f64..2.0, rows * features),
        y in prop::collection::vec(0..classes, rows),
        features in Just(features),
        classes in Just(classes),
        hidden in Just(hidden),
        bias in Just(bias),
        dead in Just(dead),
        d in Just(d),
    ) -> GrowCase {
        let topologies = grow_plans(features, classes, &hidden, &bias, &dead).iter().map(NetPlan::build).collect();
        GrowCase { topologies, d, state, x, y, features, classes }
    }
}

fn grow_plans(features: usize, classes: usize, hidden: &[Vec<usize>], bias: &[bool], dead: &[bool]) -> Vec<NetPlan> {
    hidden
        .iter()
        .enumerate()
        .map(|(n, h)| {
            let mut sizes = vec![features];
            sizes.extend(h);
            sizes.push(classes);
            NetPlan { sizes, bias: bias[n], dead: dead[n * MAX_CELLS..(n + 1) * MAX_CELLS].to_vec() }
        })
        .collect()
}

fn grow_cells(features: usize, classes: usize, hidden: &[Vec<usize>], bias: &[bool], dead: &[bool]) -> usize {
    grow_plans(features, classes, hidden, bias, dead).iter().map(|p| p.build().num_cells()).sum()
}

/// Per-sample activity of one network: `a[l][b][i]` (bias included, = 1), `z[l][b][j]` for
/// `z_{l+1}`, `e[b][j]`, and the backward messages `δ[l][b][j]` of layer `l + 1`'s neurons
/// through the weights (`dw`) and through the feedback weights (`db`).
struct Forward {
    a: Vec<Vec<Vec<f64>>>,
    z: Vec<Vec<Vec<f64>>>,
    e: Vec<Vec<f64>>,
    dw: Vec<Vec<Vec<f64>>>,
    db: Vec<Vec<Vec<f64>>>,
}

/// SPEC's forward pass of network `net` of `batch` with the weights in `state`:
/// `z_{l+1} = a_l · (W_l ⊙ M_l)`, ReLU on hidden layers, logits `z_L`, `e = onehot(y) − softmax(z_L)`.
fn spec_forward(batch: &Batch, net: usize, state: &[f64], s: usize, case: &GrowCase) -> Forward {
    let t = &batch.topologies()[net];
    let layers = t.num_layers();
    let rows = case.y.len();
    let with_bias = |v: Vec<f64>| if t.bias() { v.into_iter().chain([1.0]).collect() } else { v };
    let mut a = vec![Vec::new(); layers];
    let mut z = vec![Vec::new(); layers];
    let mut e: Vec<Vec<f64>> = Vec::new();
    for b in 0..rows {
        let mut cur = with_bias(case.x[b * case.features..(b + 1) * case.features].to_vec());
        for l in 0..layers {
            let mut next = vec![0.0; t.cols(l)];
            for (c, slot) in batch.cells().iter().enumerate() {
                if slot.net == net && slot.id.layer == l {
                    next[slot.id.post] += cur[slot.id.pre] * state[c * s];
                }
            }
            a[l].push(cur);
            z[l].push(next.clone());
            if l + 1 < layers {
                cur = with_bias(next.iter().map(|v| v.max(0.0)).collect());
            } else {
                let m = next.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = next.iter().map(|v| (v - m).exp()).collect();
                let sum: f64 = exps.iter().sum();
                e.push(exps.iter().enumerate().map(|(j, x)| f64::from(u8::from(j == case.y[b])) - x / sum).collect());
                break;
            }
        }
    }
    // SPEC "Local error messages": δ_L = e; a hidden neuron j of layer l + 1 sends
    // relu'(z_{l+1}[j]) · Σ over its live outgoing cells (l + 1, j, k) of F · δ_{l+2}[k].
    let feedback: Vec<f64> = t.feedback().collect();
    let message = |through_b: bool| {
        let mut d = vec![Vec::new(); layers];
        d[layers - 1] = e.clone();
        for l in (0..layers - 1).rev() {
            d[l] = (0..rows)
                .map(|b| {
                    let mut v = vec![0.0; t.cols(l)];
                    let mut k = 0;
                    for (c, slot) in batch.cells().iter().enumerate() {
                        if slot.net != net {
                            continue;
                        }
                        let f = if through_b { feedback[k] } else { state[c * s] };
                        k += 1;
                        if slot.id.layer == l + 1 && slot.id.pre < t.sizes()[l + 1] {
                            v[slot.id.pre] += f * d[l + 1][b][slot.id.post];
                        }
                    }
                    v.iter().zip(&z[l][b]).map(|(v, &zz)| if zz > 0.0 { *v } else { 0.0 }).collect()
                })
                .collect();
        }
        d
    };
    let (dw, db) = (message(false), message(true));
    Forward { a, z, e, dw, db }
}

fn batch_mean(values: impl Iterator<Item = f64>, rows: usize) -> f64 {
    values.sum::<f64>() / rows as f64
}

fn close_loose(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

proptest! {
    #![proptest_config(config(256))]

    /// `Grower::perceive` (activity computed by the library) equals the brute force with the
    /// activity computed here from SPEC: activations, feedback only at output cells (0 elsewhere),
    /// hebbian `a_i·z_j` everywhere and `a_i·e_j` only at output cells.
    #[test]
    fn grower_perception_matches_spec_with_real_activity(
        // An empty batch is covered by `grower_with_no_live_cells_does_not_panic`.
        case in arb_grow_case().prop_filter("one live cell at least", |c| !c.state.is_empty()),
    ) {
        let dev = Cpu::default();
        let spec = PerceptionSpec::new(&Group::ALL, case.d).expect("valid");
        let s = spec.state_width();
        let mut topologies = case.topologies.clone();
        topologies.iter_mut().enumerate().for_each(|(n, t)| t.set_feedback_seed(n as u64 + 7));
        let batch = Batch::new(topologies);
        let data = Arc::new(TaskData { x: case.x.clone(), y: case.y.clone(), features: case.features, classes: case.classes });
        let grower = Grower::new(&dev, batch.clone(), spec, data).expect("sizes match the data");
        let got = grower.perceive(grower.state_tensor(case.state.clone())).as_vec();
        let forwards: Vec<Forward> = (0..batch.num_nets()).map(|n| spec_forward(&batch, n, &case.state, s, &case)).collect();
        let rows = case.y.len();
        let want = brute_force(&batch, &case.state, s, &SPEC_ORDER, |_, slot| {
            let f = &forwards[slot.net];
            let (l, i, j) = (slot.id.layer, slot.id.pre, slot.id.post);
            let output = l + 1 == batch.topologies()[slot.net].num_layers();
            let e_mean = if output { batch_mean(f.e.iter().map(|e| e[j]), rows) } else { 0.0 };
            CellActivity {
                act_pre: batch_mean(f.a[l].iter().map(|a| a[i]), rows),
                pre_act_post: batch_mean(f.z[l].iter().map(|z| z[j]), rows),
                feedback: e_mean,
                hebb: (
                    batch_mean(f.a[l].iter().zip(&f.z[l]).map(|(a, z)| a[i] * z[j]), rows),
                    if output { batch_mean(f.a[l].iter().zip(&f.e).map(|(a, e)| a[i] * e[j]), rows) } else { 0.0 },
                ),
                back: (
                    batch_mean(f.a[l].iter().zip(&f.dw[l]).map(|(a, d)| a[i] * d[j]), rows),
                    batch_mean(f.dw[l].iter().map(|d| d[j]), rows),
                ),
                align: (
                    batch_mean(f.a[l].iter().zip(&f.db[l]).map(|(a, d)| a[i] * d[j]), rows),
                    batch_mean(f.db[l].iter().map(|d| d[j]), rows),
                ),
            }
        });
        let width = want.first().map_or(0, Vec::len);
        prop_assert_eq!(got.len(), want.len() * width);
        for (c, row) in want.iter().enumerate() {
            let g = &got[c * width..(c + 1) * width];
            prop_assert!(
                g.iter().zip(row).all(|(&x, &y)| close_loose(x, y)),
                "cell {} ({:?}): got {:?}, want {:?}", c, batch.cells()[c], g, row
            );
        }
    }
}

/// A rule of `spec`'s widths with every nonlinearity on, updates far from zero.
fn test_rule(spec: &PerceptionSpec, seed: u64) -> RuleNet {
    meta_nca_tests::tanh_rule(spec, 7, 0.5, 1.0, &mut StdRng::seed_from_u64(seed))
}

/// `step_plain` against the taped step on the same state and firing: equal to a few machine
/// epsilons (the two use different `tanh`s), and cells that do not fire keep their bits.
fn check_plain_step(grower: &Grower, rule: &RuleNet, state: &[f64], fire: &[bool]) -> Result<(), TestCaseError> {
    let s = grower.spec().state_width();
    let taped = grower.step(rule, grower.state_tensor(state.to_vec()).put_tape(OwnedTape::default()), fire);
    let want = taped.as_vec();
    let mut got = state.to_vec();
    grower.step_plain(rule, &mut got, fire);
    prop_assert_eq!(got.len(), want.len());
    for (c, &f) in fire.iter().enumerate() {
        for k in c * s..(c + 1) * s {
            if f {
                prop_assert!(
                    (got[k] - want[k]).abs() <= 1e-14 * (1.0 + want[k].abs()),
                    "cell {} value {}: plain {} taped {}",
                    c,
                    k - c * s,
                    got[k],
                    want[k]
                );
            } else {
                prop_assert_eq!(got[k].to_bits(), state[k].to_bits(), "cell {} does not fire but changed", c);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(128))]

    /// The step without tape (perception and rule a chunk of firing cells at a time, the state
    /// updated in place) is the taped step, on random batches, perceptions and firings.
    #[test]
    fn plain_step_matches_the_taped_step(
        // An empty batch is covered by `grower_with_no_live_cells_does_not_panic`.
        case in arb_grow_case().prop_filter("one live cell at least", |c| !c.state.is_empty()),
        fire_seed in any::<u64>(),
        rule_seed in any::<u64>(),
        groups in prop::sample::subsequence(Group::ALL.to_vec(), 1..=Group::ALL.len()),
    ) {
        let dev = Cpu::default();
        let spec = PerceptionSpec::new(&groups, case.d).expect("valid");
        let data = Arc::new(TaskData { x: case.x.clone(), y: case.y.clone(), features: case.features, classes: case.classes });
        let grower = Grower::new(&dev, Batch::new(case.topologies.clone()), spec.clone(), data).expect("sizes match");
        let mut rng = StdRng::seed_from_u64(fire_seed);
        let fire: Vec<bool> = (0..grower.batch().num_cells()).map(|_| rng.gen_bool(0.7)).collect();
        check_plain_step(&grower, &test_rule(&spec, rule_seed), &case.state, &fire)?;
    }
}

/// The same on a batch of about 2000 cells, so firing cells fill several chunks of the
/// plain step and the last chunk is partial, over three steps; on 2, 3 and 7 threads the
/// plain step gives the bits it gives on one.
#[test]
fn plain_step_matches_the_taped_step_across_chunks() {
    let dev = Cpu::default();
    let spec = PerceptionSpec::new(&Group::ALL, 2).expect("valid");
    let s = spec.state_width();
    let topologies: Vec<Topology> = (0..3).map(|n| Topology::dense(&[6, 20, 9, 4], n != 1).expect("valid")).collect();
    let batch = Batch::new(topologies);
    let mut rng = StdRng::seed_from_u64(5);
    let rows = 12;
    let x: Vec<f64> = (0..rows * 6).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let y: Vec<usize> = (0..rows).map(|_| rng.gen_range(0..4)).collect();
    let data = Arc::new(TaskData { x, y, features: 6, classes: 4 });
    let grower = Grower::new(&dev, batch, spec.clone(), data).expect("sizes match");
    let n = grower.batch().num_cells();
    assert!(n > 4 * meta_nca_rule::reference::STEP_CHUNK, "{n} cells");
    let rule = test_rule(&spec, 11);
    let mut state: Vec<f64> = (0..n * s).map(|_| rng.gen_range(-1.0..1.0)).collect();
    for _ in 0..3 {
        let fire: Vec<bool> = (0..n).map(|_| rng.gen_bool(0.8)).collect();
        check_plain_step(&grower, &rule, &state, &fire).expect("plain step = taped step");
        let mut one = state.clone();
        grower.step_plain_on(&rule, &mut one, &fire, 1);
        for threads in [2, 3, 7] {
            let mut many = state.clone();
            grower.step_plain_on(&rule, &mut many, &fire, threads);
            assert!(
                one.iter().zip(&many).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{threads} threads differ from one"
            );
        }
        state = one;
    }
}

/// Networks perceive independently, and a batch with enough work shares its networks'
/// activity among the cores: perceiving 8 networks of `[64, 32, 10]` on 256 rows together
/// (parallel) gives, network by network, the bits of perceiving each alone (one thread), with
/// every perception group on, and so does the gradient of a taped step.
#[test]
fn perception_of_a_big_batch_is_each_network_alone() {
    let dev = Cpu::default();
    let spec = PerceptionSpec::new(&Group::ALL, 2).expect("valid");
    let s = spec.state_width();
    let mut rng = StdRng::seed_from_u64(9);
    let topologies: Vec<Topology> = (0..8)
        .map(|n| {
            let mut t = Topology::dense(&[64, 32, 10], n % 3 != 1).expect("valid");
            t.set_feedback_seed(n as u64 + 3);
            t
        })
        .collect();
    let rows = 256;
    let x: Vec<f64> = (0..rows * 64).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let y: Vec<usize> = (0..rows).map(|_| rng.gen_range(0..10)).collect();
    let data = Arc::new(TaskData { x, y, features: 64, classes: 10 });
    let batch = Batch::new(topologies.clone());
    let n = batch.num_cells();
    assert!(n * rows >= 1 << 22, "the batch must be big enough to run in parallel: {n} cells");
    let state: Vec<f64> = (0..n * s).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let grower = Grower::new(&dev, batch.clone(), spec.clone(), data.clone()).expect("sizes match");
    let together = grower.perceive(grower.state_tensor(state.clone())).as_vec();
    let f = spec.width();
    for (net, t) in topologies.into_iter().enumerate() {
        let (start, end) = batch.net_cells(net);
        let alone = Grower::new(&dev, Batch::new(vec![t]), spec.clone(), data.clone()).expect("sizes match");
        let got = alone.perceive(alone.state_tensor(state[start * s..end * s].to_vec())).as_vec();
        let want = &together[start * f..end * f];
        assert!(got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()), "network {net} differs");
    }
    // The adjoint reads each network's kept activity back in order: the gradient of the loss
    // after one taped step with respect to a network's initial state is, bit for bit, 1/8 of
    // that network's own (the loss is the mean over the 8 networks).
    let rule = test_rule(&spec, 4);
    let d_state0 = |grower: &Grower, state: Vec<f64>| -> Vec<f64> {
        let state0 = grower.state_tensor(state);
        let fire = vec![true; grower.batch().num_cells()];
        let next = grower.step(&rule, state0.clone().put_tape(OwnedTape::default()), &fire);
        let grads = grower.loss(next).backward();
        grads.get(&state0).as_vec()
    };
    let together = d_state0(&grower, state.clone());
    for (net, t) in batch.topologies().iter().enumerate() {
        let (start, end) = batch.net_cells(net);
        let alone = Grower::new(&dev, Batch::new(vec![t.clone()]), spec.clone(), data.clone()).expect("sizes match");
        let got = d_state0(&alone, state[start * s..end * s].to_vec());
        let want = &together[start * s..end * s];
        assert!(got.iter().any(|g| *g != 0.0), "network {net}: no gradient");
        assert!(
            got.iter().zip(want).all(|(a, b)| (a * 0.125).to_bits() == b.to_bits()),
            "network {net}: gradient differs"
        );
    }
}

/// A grow batch whose every connection was removed: perception is empty, not a panic.
#[test]
fn grower_with_no_live_cells_does_not_panic() {
    let dev = Cpu::default();
    let mut t = Topology::dense(&[1, 1], false).expect("valid");
    t.remove_connection(0, 0, 0).expect("live");
    let spec = PerceptionSpec::new(&Group::ALL, 1).expect("valid");
    let data = Arc::new(TaskData { x: vec![0.5, -0.5], y: vec![0, 0], features: 1, classes: 1 });
    let grower = Grower::new(&dev, Batch::new(vec![t]), spec, data).expect("sizes match the data");
    let p = grower.perceive(grower.state_tensor(Vec::new()));
    assert_eq!(p.shape().0, 0);
    // A whole step and the loss too: an empty network is a legal state that predicts a constant.
    let code = meta_nca_rule::init::HiddenCode::for_family(1, 1, false, 0);
    let (spec, shape) = meta_nca_rule::config::Config::default().rule_shape(&code).expect("valid");
    let rule = meta_nca_rule::rule::RuleNet::new(&dev, shape, &mut StdRng::seed_from_u64(0));
    let grower = Grower::new(&dev, grower.batch().clone(), spec, grower.data().clone().into()).expect("sizes");
    let next = grower.step(&rule, grower.state_tensor(Vec::new()), &[]);
    assert_eq!(next.shape().0, 0);
    grower.step_plain_on(&rule, &mut [], &[], 2);
    let loss = grower.loss(next).array();
    assert!((loss - 0.0).abs() < 1e-12, "one class: a constant prediction has zero loss, got {loss}");
}

// ---------------------------------------------------------------------------------------------
// Firing.

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn firing_count_is_floor_at_least_one(n in 0usize..200, p in prop_oneof![Just(1.0), 1e-6f64..=1.0]) {
        let k = firing_count(n, p);
        if n == 0 {
            prop_assert_eq!(k, 0);
        } else {
            prop_assert!((1..=n).contains(&k), "n {} p {} -> {}", n, p, k);
            prop_assert_eq!(k, ((p * n as f64).floor() as usize).max(1));
        }
        if p == 1.0 {
            prop_assert_eq!(k, n);
        }
    }

    /// Every layer fires exactly `firing_count(n, p)` of its `n` live cells (also layers whose
    /// cells were all removed), flags come in `Topology::cells` order, and the draw is seeded.
    #[test]
    fn choose_firing_fires_exact_count_per_layer(
        plan in arb_net(),
        all_dead_layer in prop::option::of(0usize..3),
        p in prop_oneof![Just(1.0), 1e-6f64..=1.0],
        seed in any::<u64>(),
    ) {
        let mut t = plan.build();
        if let Some(l) = all_dead_layer.filter(|&l| l < t.num_layers()) {
            for id in t.layer(l).cells.clone() {
                t.remove_connection(id.layer, id.pre, id.post).expect("live");
            }
        }
        let flags = choose_firing(&mut StdRng::seed_from_u64(seed), &t, p);
        prop_assert_eq!(flags.len(), t.num_cells());
        let mut start = 0;
        for l in 0..t.num_layers() {
            let n = t.layer(l).cells.len();
            let fired = flags[start..start + n].iter().filter(|&&f| f).count();
            prop_assert_eq!(fired, firing_count(n, p), "layer {} of {} live cells, p {}", l, n, p);
            start += n;
        }
        prop_assert_eq!(flags, choose_firing(&mut StdRng::seed_from_u64(seed), &t, p));
    }
}

// ---------------------------------------------------------------------------------------------
// Perception after neurons were removed and added.

/// One neuron operation on a hidden layer (`layer` and `idx` are reduced modulo what exists).
#[derive(Debug, Clone)]
enum NeuronOp {
    Remove { layer: usize, idx: usize },
    Add { layer: usize },
}

fn apply_ops(t: &mut Topology, ops: &[NeuronOp]) {
    let hidden = t.sizes().len().saturating_sub(2);
    if hidden == 0 {
        return;
    }
    for op in ops {
        // Errors (the last neuron of a layer) leave the topology unchanged; that is checked too.
        let before = t.clone();
        let result = match *op {
            NeuronOp::Remove { layer, idx } => {
                let l = 1 + layer % hidden;
                t.remove_neuron(l, idx % t.sizes()[l]).map(|_| ())
            }
            NeuronOp::Add { layer } => t.add_neuron(1 + layer % hidden).map(|_| ()),
        };
        if result.is_err() {
            assert_eq!(*t, before, "a refused neuron operation changed the topology");
        }
    }
}

/// Live cells are exactly the mask, within bounds, and their indices are unique per layer.
fn check_topology(t: &Topology) -> Result<(), TestCaseError> {
    for l in 0..t.num_layers() {
        let cells = &t.layer(l).cells;
        prop_assert_eq!(t.mask(l).iter().filter(|&&m| m).count(), cells.len(), "mask and live cells differ");
        let mut seen = std::collections::HashSet::new();
        for c in cells {
            prop_assert!(c.pre < t.rows(l) && c.post < t.cols(l), "cell {:?} outside W_{}", c, l);
            prop_assert!(c.index < t.layer(l).next_index, "index {} not below next_index", c.index);
            prop_assert!(seen.insert(c.index), "index {} used twice in layer {}", c.index, l);
        }
    }
    Ok(())
}

fn arb_ops() -> impl Strategy<Value = Vec<NeuronOp>> {
    prop::collection::vec(
        prop_oneof![
            (0usize..4, 0usize..5).prop_map(|(layer, idx)| NeuronOp::Remove { layer, idx }),
            (0usize..4).prop_map(|layer| NeuronOp::Add { layer }),
        ],
        0..6,
    )
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn perception_matches_brute_force_after_neuron_changes(
        plans in prop::collection::vec(arb_net(), 1..=2),
        ops in arb_ops(),
        d in 0usize..=2,
        seed in any::<u64>(),
    ) {
        let topologies: Vec<Topology> = plans
            .iter()
            .map(|p| {
                let mut t = p.build();
                apply_ops(&mut t, &ops);
                t
            })
            .collect();
        for t in &topologies {
            check_topology(t)?;
        }
        let batch = Batch::new(topologies);
        check_indexing(&batch)?;
        let spec = PerceptionSpec::new(&Group::ALL, d).expect("valid");
        let s = spec.state_width();
        let mut rng = StdRng::seed_from_u64(seed);
        let state: Vec<f64> = (0..batch.num_cells() * s).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let n = batch.num_neurons();
        let c = batch.num_cells();
        let mut draw = |k: usize| (0..k).map(|_| rng.gen_range(-1.0..1.0)).collect::<Vec<f64>>();
        let stats = ActivityStats {
            act: draw(n),
            pre_act: draw(n),
            err: draw(n),
            hebb_z: draw(c),
            hebb_e: draw(c),
            delta: draw(n),
            delta_fa: draw(n),
            back: draw(c),
            align: draw(c),
        };
        let got = perceive_batch(&spec, &batch, &state, &stats);
        let want = brute_force_stats(&batch, &state, s, &SPEC_ORDER, &stats);
        check_rows(&batch, &got, &want)?;
    }
}
