//! The reference path's meta-gradient against central finite differences, in f64, on a batch
//! of 1-, 2- and 3-layer networks with every perception group on and some dead connections
//! (and with each message group alone); and a negative control showing the check catches a
//! dropped tape.

use std::sync::Arc;

use dfdx::prelude::*;
use meta_nca_rule::batch::Batch;
use meta_nca_rule::firing::choose_firing;
use meta_nca_rule::init::{HiddenCode, WeightInit, initial_state};
use meta_nca_rule::perception::{Group, PerceptionSpec};
use meta_nca_rule::reference::{Grower, Tensor2};
use meta_nca_rule::rule::RuleNet;
use meta_nca_rule::task_data::TaskData;
use meta_nca_rule::topology::Topology;
use rand::{Rng, SeedableRng, rngs::StdRng};

struct Setup {
    grower: Grower,
    rule: RuleNet,
    state0: Vec<f64>,
    fires: Vec<Vec<bool>>,
}

fn setup() -> Setup {
    setup_with(&Group::ALL)
}

fn setup_with(groups: &[Group]) -> Setup {
    setup_sized(groups, 3)
}

/// Networks with `classes` outputs grown on data of that many classes.
fn setup_sized(groups: &[Group], classes: usize) -> Setup {
    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(11);
    let (features, rows) = (3, 9);
    let x: Vec<f64> = (0..rows * features).map(|_| rng.gen_range(-1.5..1.5)).collect();
    let y: Vec<usize> = (0..rows).map(|i| i % classes).collect();
    let data = Arc::new(TaskData { x, y, features, classes });
    let mut deep = Topology::dense(&[3, 4, 3, classes], true).expect("valid");
    deep.remove_connection(0, 1, 2).expect("live");
    deep.remove_connection(1, 4, 0).expect("live");
    deep.remove_connection(2, 0, 1).expect("live");
    let mut shallow = Topology::dense(&[3, classes], true).expect("valid");
    shallow.remove_connection(0, 2, classes - 1).expect("live");
    let mut two = Topology::dense(&[3, 5, classes], true).expect("valid");
    two.remove_connection(1, 2, 1).expect("live");
    let mut topologies = vec![deep, shallow, two];
    let code = code();
    let spec = PerceptionSpec::new(groups, code.dim()).expect("valid");
    let mut state0 = Vec::new();
    for t in &mut topologies {
        state0.extend(initial_state(&code, WeightInit::Xavier, t, &mut rng).expect("fits"));
    }
    let fires: Vec<Vec<bool>> =
        (0..3).map(|_| topologies.iter().flat_map(|t| choose_firing(&mut rng, t, 0.7)).collect()).collect();
    let rule = meta_nca_tests::tanh_rule(&spec, 6, 0.3, 0.3, &mut rng);
    let grower = Grower::new(&dev, Batch::new(topologies), spec, data).expect("sizes match");
    Setup { grower, rule, state0, fires }
}

/// A hidden code with feedback weights (the `alignment` group reads them).
fn code() -> HiddenCode {
    HiddenCode { feedback: true, ..HiddenCode::for_family(3, 20, true, 1) }
}

fn loss(s: &Setup, rule: &RuleNet, state0: &[f64]) -> f64 {
    let state = s.grower.state_tensor(state0.to_vec());
    s.grower.loss(s.grower.unroll(rule, state, &s.fires)).array()
}

/// Analytic gradients (rule parameters, initial state); `drop_tape_at` drops the tape before that step.
fn analytic(s: &Setup, drop_tape_at: Option<usize>) -> (Vec<Vec<f64>>, Vec<f64>) {
    let state0 = s.grower.state_tensor(s.state0.clone());
    let mut state: Tensor2<OwnedTape<f64, Cpu>> = state0.clone().put_tape(OwnedTape::default());
    for (t, fire) in s.fires.iter().enumerate() {
        if drop_tape_at == Some(t) {
            let (value, _dropped) = state.split_tape();
            state = value.put_tape(OwnedTape::default());
        }
        state = s.grower.step(&s.rule, state, fire);
    }
    let grads = s.grower.loss(state).backward();
    let d_state0 = grads.get_ref_checked_or_zero(&state0);
    (s.rule.grads_flat(&grads), d_state0)
}

trait GradOrZero {
    fn get_ref_checked_or_zero(&self, t: &Tensor2<NoneTape>) -> Vec<f64>;
}

impl GradOrZero for Gradients<f64, Cpu> {
    fn get_ref_checked_or_zero(&self, t: &Tensor2<NoneTape>) -> Vec<f64> {
        // A dropped tape may leave no gradient at all for the initial state.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.get(t).as_vec()))
            .unwrap_or_else(|_| vec![0.0; t.shape().0 * t.shape().1])
    }
}

/// Central differences of every rule parameter and every initial state entry.
/// Central differences of `f` with respect to every rule parameter and every initial state
/// entry.
fn central_differences(s: &Setup, f: impl Fn(&RuleNet, &[f64]) -> f64) -> (Vec<Vec<f64>>, Vec<f64>) {
    let eps = 1e-6;
    let base: Vec<Vec<f64>> = s.rule.params_flat().into_iter().map(|(_, v)| v).collect();
    let d_params = base
        .iter()
        .enumerate()
        .map(|(pi, values)| {
            (0..values.len())
                .map(|k| {
                    let probe = |delta: f64| {
                        let mut vals = base.clone();
                        vals[pi][k] += delta;
                        let mut rule = s.rule.clone();
                        rule.set_params_flat(&vals);
                        f(&rule, &s.state0)
                    };
                    (probe(eps) - probe(-eps)) / (2.0 * eps)
                })
                .collect()
        })
        .collect();
    let d_state = (0..s.state0.len())
        .map(|k| {
            let probe = |delta: f64| {
                let mut st = s.state0.clone();
                st[k] += delta;
                f(&s.rule, &st)
            };
            (probe(eps) - probe(-eps)) / (2.0 * eps)
        })
        .collect();
    (d_params, d_state)
}

/// Central differences of the plain grow's loss.
fn numeric(s: &Setup) -> (Vec<Vec<f64>>, Vec<f64>) {
    central_differences(s, |rule, state0| loss(s, rule, state0))
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    diff / norm.max(1e-12)
}

#[test]
fn meta_gradient_matches_finite_differences() {
    check_against_finite_differences(&setup());
}

/// Each local error message alone (so no other group's gradient hides a wrong adjoint).
#[test]
fn message_groups_alone_match_finite_differences() {
    for group in [Group::Backward, Group::Alignment] {
        let s = setup_with(&[Group::SelfState, group]);
        assert!(s.grower.batch().topologies()[0].feedback().any(|b| b != 0.0), "feedback weights were drawn");
        check_against_finite_differences(&s);
    }
}

fn check_against_finite_differences(s: &Setup) {
    let (an_params, an_state) = analytic(s, None);
    let (fd_params, fd_state) = numeric(s);
    for (k, (a, f)) in an_params.iter().zip(&fd_params).enumerate() {
        let e = rel_err(a, f);
        assert!(f.iter().any(|v| v.abs() > 1e-8), "parameter tensor {k} has a zero gradient");
        assert!(e <= 1e-6, "parameter tensor {k}: relative error {e:e}");
    }
    let e = rel_err(&an_state, &fd_state);
    assert!(e <= 1e-6, "initial state: relative error {e:e}");
}

#[test]
fn finite_difference_check_catches_a_dropped_tape() {
    let s = setup();
    let (an_params, an_state) = analytic(&s, Some(1));
    let (fd_params, fd_state) = numeric(&s);
    let worst = an_params.iter().zip(&fd_params).map(|(a, f)| rel_err(a, f)).fold(0.0, f64::max);
    assert!(worst > 1e-3, "dropping a tape went unnoticed (worst relative error {worst:e})");
    assert!(rel_err(&an_state, &fd_state) > 1e-3, "initial-state gradient survived a dropped tape");
}

/// Two steps, a topology change (a connection removed, a hidden neuron removed, one added),
/// then two more steps on the carried state: the meta-gradient still matches finite
/// differences, through the reshape.
fn reshaped_loss<T: Tape<f64, Cpu>>(s: &Setup, rule: &RuleNet, state0: Tensor2<T>) -> Tensor<(), f64, Cpu, T> {
    let code = code();
    let state = s.grower.unroll(rule, state0, &s.fires[..2]);
    let mut topologies = s.grower.batch().topologies().to_vec();
    topologies[0].remove_connection(1, 0, 2).expect("live");
    topologies[0].remove_neuron(2, 1).expect("hidden neuron");
    topologies[0].add_neuron(1).expect("hidden layer");
    let mut rng = StdRng::seed_from_u64(5);
    let (grower, state) = s.grower.reshape(state, topologies, &code, WeightInit::Xavier, &mut rng).expect("fits");
    let fires: Vec<Vec<bool>> = (0..2)
        .map(|_| grower.batch().topologies().iter().flat_map(|t| choose_firing(&mut rng, t, 0.7)).collect())
        .collect();
    grower.loss(grower.unroll(rule, state, &fires))
}

#[test]
fn meta_gradient_through_a_topology_change_matches_finite_differences() {
    let s = setup();
    let state0 = s.grower.state_tensor(s.state0.clone());
    let grads = reshaped_loss(&s, &s.rule, state0.clone().put_tape(OwnedTape::default())).backward();
    let an_params = s.rule.grads_flat(&grads);
    let an_state = grads.get(&state0).as_vec();
    let (fd_params, fd_state) =
        central_differences(&s, |rule, state0| reshaped_loss(&s, rule, s.grower.state_tensor(state0.to_vec())).array());
    for (pi, (a, f)) in an_params.iter().zip(&fd_params).enumerate() {
        let e = rel_err(a, f);
        assert!(e <= 1e-6, "parameter tensor {pi}: relative error {e:e}");
    }
    let e = rel_err(&an_state, &fd_state);
    assert!(e <= 1e-6, "initial state through the reshape: relative error {e:e}");
}

/// A class arriving mid-grow (`meta_nca_rule::continual`): two steps on two classes, the loss
/// there, an output neuron added to every network and the data switched to three classes (only
/// the new class's rows), two more steps, the loss on all three classes; their mean. The
/// meta-gradient matches finite differences through the new output neurons and the data change.
fn class_arrival_loss<T: Tape<f64, Cpu>>(s: &Setup, rule: &RuleNet, state0: Tensor2<T>) -> Tensor<(), f64, Cpu, T> {
    let code = code();
    let (value, tape) = s.grower.unroll(rule, state0, &s.fires[..2]).split_tape();
    let (before, tape) = s.grower.loss(value.clone().put_tape(tape)).split_tape();
    let topologies: Vec<Topology> = s
        .grower
        .batch()
        .topologies()
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t.add_neuron(t.sizes().len() - 1).expect("output layer");
            t
        })
        .collect();
    let old = s.grower.data();
    let three = |keep: &dyn Fn(usize) -> bool| {
        let rows: Vec<usize> = (0..9).filter(|&r| keep(r % 3)).collect();
        let x = rows.iter().flat_map(|&r| old.x[r * 3..r * 3 + 3].to_vec()).collect();
        Arc::new(TaskData { x, y: rows.iter().map(|&r| r % 3).collect(), features: 3, classes: 3 })
    };
    let mut rng = StdRng::seed_from_u64(7);
    let (grower, state) = s
        .grower
        .reshape_on(value.put_tape(tape), topologies, three(&|y| y == 2), &code, WeightInit::Xavier, &mut rng)
        .expect("fits");
    let fires: Vec<Vec<bool>> = (0..2)
        .map(|_| grower.batch().topologies().iter().flat_map(|t| choose_firing(&mut rng, t, 0.7)).collect())
        .collect();
    let after = grower
        .reshape_on(
            grower.unroll(rule, state, &fires),
            grower.batch().topologies().to_vec(),
            three(&|_| true),
            &code,
            WeightInit::Xavier,
            &mut rng,
        )
        .expect("same networks");
    (after.0.loss(after.1) + before) * 0.5
}

#[test]
fn meta_gradient_through_a_class_arriving_matches_finite_differences() {
    let s = setup_sized(&Group::ALL, 2);
    let state0 = s.grower.state_tensor(s.state0.clone());
    let grads = class_arrival_loss(&s, &s.rule, state0.clone().put_tape(OwnedTape::default())).backward();
    let an_params = s.rule.grads_flat(&grads);
    let an_state = grads.get(&state0).as_vec();
    let (fd_params, fd_state) = central_differences(&s, |rule, state0| {
        class_arrival_loss(&s, rule, s.grower.state_tensor(state0.to_vec())).array()
    });
    for (pi, (a, f)) in an_params.iter().zip(&fd_params).enumerate() {
        let e = rel_err(a, f);
        assert!(e <= 1e-6, "parameter tensor {pi}: relative error {e:e}");
    }
    let e = rel_err(&an_state, &fd_state);
    assert!(e <= 1e-6, "initial state through the class arrival: relative error {e:e}");
}

/// The damage-aware loss (loss, connections removed, recovery steps, loss again; their mean):
/// its meta-gradient matches finite differences too.
fn damaged(
    s: &Setup,
    rule: &RuleNet,
    state0: Tensor2<OwnedTape<f64, Cpu>>,
) -> Tensor<(), f64, Cpu, OwnedTape<f64, Cpu>> {
    let code = code();
    let state = s.grower.unroll(rule, state0, &s.fires[..2]);
    let mut topologies = s.grower.batch().topologies().to_vec();
    topologies[0].remove_connection(0, 0, 0).expect("live");
    topologies[0].remove_connection(2, 1, 0).expect("live");
    topologies[1].remove_connection(0, 0, 1).expect("live");
    let mut rng = StdRng::seed_from_u64(9);
    s.grower.damaged_loss(rule, state, topologies, 2, 0.7, &code, WeightInit::Xavier, &mut rng).expect("fits").loss
}

#[test]
fn damage_aware_meta_gradient_matches_finite_differences() {
    let s = setup();
    let taped = |values: Vec<f64>| s.grower.state_tensor(values).put_tape(OwnedTape::default());
    let grads = damaged(&s, &s.rule, taped(s.state0.clone())).backward();
    let an = s.rule.grads_flat(&grads);
    let (fd, _) = central_differences(&s, |rule, state0| damaged(&s, rule, taped(state0.to_vec())).array());
    for (pi, (a, f)) in an.iter().zip(&fd).enumerate() {
        let e = rel_err(a, f);
        assert!(e <= 1e-6, "parameter tensor {pi}: relative error {e:e}");
    }
}

/// The meta-loss averaged over the last steps of the grow (`train.loss-steps`): the earlier
/// losses' tapes travel on with the state, and the gradient still matches finite differences.
#[test]
fn tail_averaged_meta_gradient_matches_finite_differences() {
    let s = setup();
    let tail_loss = |rule: &RuleNet, state0: Tensor2<OwnedTape<f64, Cpu>>| {
        s.grower.unroll_tail_loss(rule, state0, &s.fires, &[], 2).0
    };
    let taped = |values: Vec<f64>| s.grower.state_tensor(values).put_tape(OwnedTape::default());
    let state0 = s.grower.state_tensor(s.state0.clone());
    let grads = tail_loss(&s.rule, state0.clone().put_tape(OwnedTape::default())).backward();
    let an_params = s.rule.grads_flat(&grads);
    let an_state = grads.get(&state0).as_vec();
    let (fd_params, fd_state) = central_differences(&s, |rule, st| tail_loss(rule, taped(st.to_vec())).array());
    for (pi, (a, f)) in an_params.iter().zip(&fd_params).enumerate() {
        let e = rel_err(a, f);
        assert!(e <= 1e-6, "parameter tensor {pi}: relative error {e:e}");
    }
    let e = rel_err(&an_state, &fd_state);
    assert!(e <= 1e-6, "initial state: relative error {e:e}");
    let last_only = s.grower.unroll_tail_loss(&s.rule, taped(s.state0.clone()), &s.fires, &[], 1).0.array();
    assert!((last_only - loss(&s, &s.rule, &s.state0)).abs() < 1e-12, "a tail of 1 is the final loss");
}
