//! Continual learning at library level: schedules cut a task as described, the actor
//! simulation grows through class arrivals and input drifts exactly as the reference path
//! does, and the backprop fine-tuned baseline forgets the classes it no longer sees.

use meta_nca_rule::baseline::BaselineSpec;
use meta_nca_rule::config::Config;
use meta_nca_rule::config::schedule::{PhaseRows, ScheduleKind, ScheduleSpec};
use meta_nca_rule::continual::{ContinualReport, ContinualSpec, Schedule, forgetting, run};
use meta_nca_rule::engine::{EngineKind, ReferenceKind};
use meta_nca_rule::experiment::Experiment;
use meta_nca_rule::perception::Group;
use meta_nca_rule::random::{Stream, rng_for};
use meta_nca_rule::train::Trainer;
use meta_nca_sim::engine::ActorKind;
use meta_nca_sim::{Executor, SimSpec};

/// A rule that perceives every group (the message waves and feedback weights included),
/// trained for a few meta-epochs on a 2-layer Wine network so that it does something.
fn trained() -> Trainer {
    let mut c = Config { seed: 3, ..Config::default() };
    c.data.dataset = "wine".into();
    c.task.hidden = vec![vec![4]];
    c.rule.hidden = vec![8];
    c.rule.perception = Group::ALL.to_vec();
    c.grow.steps = 4;
    c.train.meta_epochs = 3;
    c.train.num_models = 2;
    let mut t = Trainer::new(Experiment::new(c).expect("experiment")).expect("trainer");
    for _ in 0..3 {
        t.meta_epoch().expect("meta-epoch");
    }
    t
}

fn spec(schedule: ScheduleSpec) -> ContinualSpec {
    ContinualSpec {
        schedule,
        networks: 3,
        fire_fraction: 0.7,
        seed: 5,
        baseline: BaselineSpec { epochs: 200, lr: 0.01, seed: 0 },
    }
}

fn class_incremental() -> ScheduleSpec {
    ScheduleSpec { phase_steps: 3, first_classes: 2, classes_per_phase: 1, ..ScheduleSpec::default() }
}

fn domain_incremental() -> ScheduleSpec {
    ScheduleSpec { kind: ScheduleKind::DomainIncremental, phase_steps: 3, drifts: 2, ..ScheduleSpec::default() }
}

fn grow(t: &Trainer, engine: &dyn EngineKind, schedule: ScheduleSpec) -> ContinualReport {
    let meta = t.checkpoint().meta;
    run(&t.rule, &meta, engine, t.exp.primary(), &spec(schedule)).expect("continual run")
}

fn assert_close(a: &ContinualReport, b: &ContinualReport, what: &str) {
    assert_eq!(a.curve.len(), b.curve.len(), "{what}: curve lengths");
    for (p, q) in a.curve.iter().zip(&b.curve) {
        assert_eq!((p.step, p.phase), (q.step, q.phase), "{what}");
        for (x, y) in [(p.seen, q.seen), (p.first, q.first)] {
            assert!((x - y).abs() < 1e-12, "{what}: step {}: {x} vs {y}", p.step);
        }
        assert_eq!(p.old.is_some(), q.old.is_some(), "{what}");
    }
    assert_eq!(a.grown, b.grown, "{what}: final summaries");
}

#[test]
fn schedules_cut_the_task_as_described() {
    let t = trained();
    let task = t.exp.primary();
    let mut rng = rng_for(0, Stream::Continual, 0);
    let s = Schedule::new(&class_incremental(), &task.split, &mut rng).expect("schedule");
    assert_eq!(s.phases.len(), 2, "wine: classes 0,1 then 2");
    assert_eq!((s.phases[0].outputs, s.phases[1].outputs), (2, 3));
    assert_eq!(s.phases[1].arriving, 2..3);
    assert!(s.phases[1].train.y.iter().all(|&y| y == 2), "only the new class's rows");
    assert!(s.phases[0].train.y.iter().all(|&y| y < 2));
    assert_eq!(s.phases[1].val.y.len(), task.val.y.len(), "validation on every class seen");
    let seen = ScheduleSpec { rows: PhaseRows::Seen, ..class_incremental() };
    let s = Schedule::new(&seen, &task.split, &mut rng).expect("schedule");
    assert_eq!(s.phases[1].train.y.len(), task.train.y.len());
    let d = Schedule::new(&domain_incremental(), &task.split, &mut rng).expect("schedule");
    assert_eq!(d.phases.len(), 3);
    assert!(d.phases.iter().all(|p| p.outputs == 3 && p.train.y == task.train.y));
    assert_eq!(d.phases[0].train.x, task.train.x, "the first domain is the original inputs");
    assert_ne!(d.phases[1].train.x, task.train.x, "a drift moves the inputs");
    assert_eq!(d.all_train.y.len(), 3 * task.train.y.len());
    let too_many = ScheduleSpec { first_classes: 3, ..class_incremental() };
    let err = Schedule::new(&too_many, &task.split, &mut rng).expect_err("no class left to arrive");
    assert!(err.to_string().contains("first-classes"), "{err}");
}

#[test]
fn forgetting_is_the_mean_drop_from_the_best_earlier_accuracy() {
    let acc = vec![
        vec![Some(0.9), Some(0.8), None],
        vec![Some(0.5), Some(0.9), Some(0.7)],
        vec![Some(0.6), Some(0.6), Some(0.9)],
    ];
    // Class 0: best 0.9, final 0.6; class 1: best 0.9, final 0.6; class 2: best 0.7, final 0.9.
    let expected = (0.3 + 0.3 - 0.2) / 3.0;
    assert!((forgetting(&acc) - expected).abs() < 1e-12);
    assert_eq!(forgetting(&acc[..1]), 0.0, "one phase, nothing to forget");
}

#[test]
fn actors_grow_through_class_arrivals_and_drifts_as_the_reference_path_does() {
    let t = trained();
    for schedule in [class_incremental(), domain_incremental()] {
        let reference = grow(&t, &ReferenceKind, schedule.clone());
        for executor in [Executor::Tasks, Executor::Shards { shards: 2 }] {
            let actors = ActorKind { spec: SimSpec { executor, workers: 1, ..SimSpec::default() } };
            let other = grow(&t, &actors, schedule.clone());
            assert_close(&reference, &other, &format!("{:?} on {}", schedule.kind, actors.name()));
        }
        // One point per step, plus one right after each phase boundary.
        let steps: usize = reference.phases.iter().map(|p| p.steps).sum();
        assert_eq!(reference.curve.len(), 1 + steps + reference.phases.len() - 1);
    }
}

/// Before the first step every weight is zero (the config's `zeros` init), every logit is 0,
/// and the networks predict class 0 (the first maximum, as every accuracy of the project).
#[test]
fn zero_networks_predict_the_first_class_as_everywhere_else() {
    let t = trained();
    assert_eq!(t.exp.config.task.weight_init, meta_nca_rule::init::WeightInit::Zeros);
    let report = grow(&t, &ReferenceKind, class_incremental());
    let val = &t.exp.primary().val.y;
    let (zeros, first) = (val.iter().filter(|&&y| y == 0).count(), val.iter().filter(|&&y| y < 2).count());
    let start = report.curve[0];
    assert_eq!((start.step, start.phase), (0, 0));
    assert!((start.seen - zeros as f64 / first as f64).abs() < 1e-12, "{start:?}");
}

#[test]
fn fine_tuning_on_new_classes_alone_forgets_the_old_ones() {
    let t = trained();
    let report = grow(&t, &ReferenceKind, class_incremental());
    let (first, last) = (report.phase_ends[0], report.phase_ends[report.phase_ends.len() - 1]);
    let old = last.fine_tune.old.expect("old classes exist in the last phase");
    let table = report.table();
    assert!(old < first.fine_tune.seen - 0.3, "backprop on the new class's rows alone kept {old}:\n{table}");
    assert!(report.fine_tune.forgetting.expect("measured") > 0.3, "{table}");
    assert!(report.joint.seen > 0.85, "backprop on all of wine at once: {}", report.joint.seen);
    assert!(report.recovery.is_empty());
    let drift = grow(&t, &ReferenceKind, domain_incremental());
    assert_eq!(drift.recovery.len(), 2, "one recovery per drift");
    let table = drift.table();
    assert!(table.contains("drift at phase 1") && table.contains("backprop on all data"), "{table}");
}
