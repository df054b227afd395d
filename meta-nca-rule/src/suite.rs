//! The learning suite: how well a trained rule learns tasks it never saw. A fixed, seeded set
//! of held-out generated tasks (the evaluation stream, spanning the feature, class and row
//! ranges, every kind) and the embedded datasets; on each, many networks grown by the rule,
//! with labels as given and permuted, at several step counts (`K`, `2K`, `5K`: growth past
//! the trained `K`), next to (a) backprop on the same architecture and split trained to
//! convergence, (b) full-batch Adam from the grown networks' own starting weights for the same
//! number of steps, its learning rate chosen from a small grid on *training-stream* tasks only,
//! (c) the same from Xavier-initialised weights (a start Adam can learn from when the grown
//! networks start from zeros, where gradient descent through a hidden layer cannot move), and
//! (d) logistic regression.

use std::collections::BTreeMap;

use crate::Result;
use crate::baseline::{BaselineSpec, adam_curve, train_baseline, xavier_net};
use crate::batch::Batch;
use crate::checkpoint::RuleMeta;
use crate::config::TasksConfig;
use crate::config::tasks::Kind;
use crate::data::Dataset;
use crate::episode::{Episode, EpisodeSpec};
use crate::eval::{Stats, grow_at};
use crate::experiment::{TaskSource, load_dataset};
use crate::generate::{self, Shape};
use crate::random::{Stream, rng_for};
use crate::rule::RuleNet;
use crate::task_data::score;

mod report;
pub use report::{Acc, HorizonResult, LrScore, Skipped, SuiteReport, SuiteRow, TaskResult};

/// What the suite runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteSpec {
    /// Networks grown per task (and per labelling).
    pub networks: usize,
    /// Held-out generated tasks.
    pub generated: usize,
    /// Shape ranges of the generated tasks (and of the training-stream tasks that choose
    /// Adam's learning rate); only the ranges and difficulty are read.
    pub ranges: TasksConfig,
    /// Datasets besides the generated tasks (embedded names or CSV paths).
    pub datasets: Vec<String>,
    /// Step counts at which everything is scored, ascending (the first is the equal budget).
    pub horizons: Vec<usize>,
    /// Seed of the suite: its tasks and grows (fixed, so that rules are compared on one suite).
    pub seed: u64,
    /// Adam learning rates tried on the training-stream tasks.
    pub lr_grid: Vec<f64>,
    /// Training-stream tasks that choose Adam's learning rate.
    pub lr_tasks: usize,
    /// Starting points (the first grown networks of a task) Adam runs from.
    pub adam_networks: usize,
}

impl SuiteSpec {
    /// The standard suite: 100 networks, 12 generated tasks over 2-64 features, 2-10 classes,
    /// 100-2000 rows, and Iris, Wine and Breast Cancer.
    pub fn standard(horizons: Vec<usize>) -> Self {
        Self {
            networks: 100,
            generated: 12,
            ranges: TasksConfig::default(),
            datasets: crate::data::EMBEDDED.iter().map(|s| s.to_string()).collect(),
            horizons,
            seed: 0,
            lr_grid: vec![1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
            lr_tasks: 8,
            adam_networks: 10,
        }
    }

    /// A seconds-long suite for tests: 10 networks, 3 small generated tasks, Iris only.
    pub fn quick(horizons: Vec<usize>) -> Self {
        let ranges = TasksConfig { features: [2, 8], classes: [2, 4], rows: [100, 200], ..TasksConfig::default() };
        Self {
            networks: 10,
            generated: 3,
            ranges,
            datasets: vec!["iris".into()],
            lr_grid: vec![1e-2, 1e-1],
            lr_tasks: 2,
            adam_networks: 2,
            ..Self::standard(horizons)
        }
    }
}

/// A named table before the split.
struct Named {
    kind: String,
    data: Dataset,
}

/// The fewest rows per class of a held-out generated task.
const ROWS_PER_CLASS: usize = 40;

/// The held-out generated tasks: shapes spread over the ranges (features and rows on a log
/// scale, classes linearly, decorrelated; at least [`ROWS_PER_CLASS`] rows per class), kinds in
/// turn, contents from [`Stream::EvalTasks`].
fn held_out(spec: &SuiteSpec) -> Vec<Named> {
    let r = &spec.ranges;
    let log = |q: f64, [lo, hi]: [usize; 2]| ((lo as f64).ln() + q * ((hi as f64).ln() - (lo as f64).ln())).exp();
    let n = spec.generated.max(1) as f64;
    (0..spec.generated)
        .map(|i| {
            let q = (i as f64 + 0.5) / n;
            let qc = (0.3 + 0.618_034 * i as f64).fract();
            let qr = (0.7 + 0.381_966 * i as f64).fract();
            let classes = r.classes[0] + (qc * (r.classes[1] - r.classes[0] + 1) as f64) as usize;
            let shape = Shape {
                features: (log(q, r.features).round() as usize).clamp(r.features[0], r.features[1]),
                classes,
                // At least ROWS_PER_CLASS rows per class, so that backprop is not left guessing.
                rows: (log(qr, r.rows).round() as usize).max(ROWS_PER_CLASS * classes).clamp(r.rows[0], r.rows[1]),
            };
            let kind = [Kind::Mixture, Kind::Teacher, Kind::Xor][i % 3];
            let mut rng = rng_for(spec.seed, Stream::EvalTasks, i as u64);
            let g = generate::generate(kind, shape, r, &format!("{kind}-{i}"), &mut rng);
            let kind = match g.latent {
                Some(d) => format!("{kind}/{d}"),
                None => kind.to_string(),
            };
            Named { kind, data: g.dataset }
        })
        .collect()
}

/// The held-out generated tasks of `spec`, whole (before the split), as the suite grows on
/// them: to look at one, or to grow on it alone (`meta-nca eval --dataset`).
pub fn held_out_datasets(spec: &SuiteSpec) -> Vec<Dataset> {
    held_out(spec).into_iter().map(|n| n.data).collect()
}

/// Draws `networks` networks on `task` as a grow would, for `steps` steps; `None` when the
/// rule's hidden-state code cannot number their cells.
fn episode(meta: &RuleMeta, task: &TaskSource, networks: usize, steps: usize, key: u64) -> Result<Episode> {
    let cfg = &meta.config;
    let (layers, cells) = task.archs.extent(cfg.task.bias);
    meta.code.check_fits(layers, cells)?;
    let spec = EpisodeSpec {
        archs: &task.archs,
        networks,
        bias: cfg.task.bias,
        weight_init: cfg.task.weight_init,
        code: meta.code,
        steps,
        fire_fraction: cfg.grow.fire_fraction,
    };
    Episode::draw(&spec, &mut rng_for(key, Stream::Eval, 0))
}

/// Grows `episode` on `task`, scoring every network at each horizon: train and validation
/// accuracy and training loss. The suite grows on every training row.
fn grow_curve(
    rule: &RuleNet,
    meta: &RuleMeta,
    task: &TaskSource,
    ep: &Episode,
    horizons: &[usize],
) -> Result<Vec<Grown>> {
    let mut acc: Vec<[Vec<f64>; 3]> = vec![Default::default(); horizons.len()];
    grow_at(rule, &meta.perception, &task.train, ep, &[], horizons, |i, nets| {
        let [train, val, loss] = &mut acc[i];
        for net in nets {
            let fit = score(&net, &task.train);
            train.push(fit.acc);
            loss.push(fit.loss);
            val.push(score(&net, &task.val).acc);
        }
    })?;
    Ok(acc
        .iter()
        .map(|[train, val, loss]| Grown { train: Stats::of(train), val: Stats::of(val), loss: Stats::of(loss) })
        .collect())
}

/// The grown networks at one horizon: train and validation accuracy, training loss.
struct Grown {
    train: Stats,
    val: Stats,
    loss: Stats,
}

/// Where the equal-step Adam baseline starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdamStart {
    /// The grown networks' own starting weights (`task.weight-init`).
    Grown,
    /// Xavier-initialised weights on the same architectures (seeded by the suite).
    Xavier,
}

/// Adam from `start` for the first `spec.adam_networks` networks of `ep`, scored at every
/// horizon (mean over the starts).
fn adam_from(
    meta: &RuleMeta,
    task: &TaskSource,
    ep: &Episode,
    start: AdamStart,
    lr: f64,
    spec: &SuiteSpec,
) -> Result<Vec<Acc>> {
    let batch = Batch::new(ep.topologies.clone());
    let n = spec.adam_networks.clamp(1, batch.num_nets());
    let mut sum = vec![Acc { train: 0.0, val: 0.0, train_loss: 0.0 }; spec.horizons.len()];
    for k in 0..n {
        let net = match start {
            AdamStart::Grown => batch.dense_net(k, &ep.state0, meta.perception.state_width()),
            AdamStart::Xavier => {
                let mut rng = rng_for(spec.seed, Stream::Eval, u64::MAX - k as u64);
                xavier_net(ep.topologies[k].sizes(), meta.config.task.bias, &mut rng)?
            }
        };
        for (s, b) in sum.iter_mut().zip(adam_curve(net, &task.train, &task.val, lr, &spec.horizons)) {
            s.train += b.train.acc / n as f64;
            s.val += b.val.acc / n as f64;
            s.train_loss += b.train.loss / n as f64;
        }
    }
    Ok(sum)
}

/// The training-stream tasks (never a suite task) that choose Adam's learning rates, each with
/// the networks Adam starts from.
pub fn lr_tasks(meta: &RuleMeta, spec: &SuiteSpec) -> Result<Vec<(TaskSource, Episode)>> {
    let mut tasks = Vec::new();
    for i in 0..spec.lr_tasks as u64 {
        let g = generate::draw(&TasksConfig { per_epoch: 1, ..spec.ranges.clone() }, spec.seed, Stream::TrainTasks, i);
        let task = TaskSource::from_dataset(&meta.config, g.dataset)?;
        if let Ok(ep) = episode(meta, &task, spec.adam_networks.max(1), 0, spec.seed ^ (i << 32)) {
            tasks.push((task, ep));
        }
    }
    Ok(tasks)
}

/// Chooses Adam's learning rate for `start` on `tasks` ([`lr_tasks`]): the rate with the
/// highest mean validation accuracy after the first horizon's steps.
pub fn choose_adam_lr(
    meta: &RuleMeta,
    spec: &SuiteSpec,
    tasks: &[(TaskSource, Episode)],
    start: AdamStart,
) -> Result<(f64, Vec<LrScore>)> {
    let k = spec.horizons.first().copied().unwrap_or(meta.config.grow.steps);
    let one = SuiteSpec { horizons: vec![k], ..spec.clone() };
    let mut grid = Vec::with_capacity(spec.lr_grid.len());
    for &lr in &spec.lr_grid {
        let mut total = 0.0;
        for (t, ep) in tasks {
            total += adam_from(meta, t, ep, start, lr, &one)?[0].val;
        }
        grid.push(LrScore { lr, val_acc: total / tasks.len().max(1) as f64 });
    }
    let best = grid.iter().copied().fold(None, |b: Option<LrScore>, s| match b {
        Some(b) if b.val_acc >= s.val_acc => Some(b),
        _ => Some(s),
    });
    Ok((best.map_or(1e-2, |b| b.lr), grid))
}

/// Runs one task: grows, baselines, everything at every horizon.
fn run_task(
    rule: &RuleNet,
    meta: &RuleMeta,
    named: Named,
    key: u64,
    lr: [f64; 2],
    spec: &SuiteSpec,
) -> Result<TaskResult> {
    let cfg = &meta.config;
    let task = TaskSource::from_dataset(cfg, named.data)?;
    let last = spec.horizons.last().copied().unwrap_or(cfg.grow.steps);
    let ep = episode(meta, &task, spec.networks, last, key)?;
    let grown = grow_curve(rule, meta, &task, &ep, &spec.horizons)?;
    let c = task.split.num_classes;
    let perm: Vec<usize> = (0..c).map(|k| (k + 1) % c).collect();
    let permuted = grow_curve(rule, meta, &task.permuted(cfg, &perm)?, &ep, &spec.horizons)?;
    let adam = adam_from(meta, &task, &ep, AdamStart::Grown, lr[0], spec)?;
    let adam_xavier = adam_from(meta, &task, &ep, AdamStart::Xavier, lr[1], spec)?;
    let mut by_arch = BTreeMap::new();
    for t in &ep.topologies {
        let sizes = t.sizes().to_vec();
        if !by_arch.contains_key(&sizes) {
            let b = train_baseline(&sizes, cfg.task.bias, &task.train, &task.val, BaselineSpec::default())?;
            by_arch.insert(sizes.clone(), b);
        }
    }
    let n = ep.topologies.len().max(1) as f64;
    let backprop = Acc {
        train: ep.topologies.iter().map(|t| by_arch[t.sizes()].train.acc).sum::<f64>() / n,
        val: ep.topologies.iter().map(|t| by_arch[t.sizes()].val.acc).sum::<f64>() / n,
        train_loss: ep.topologies.iter().map(|t| by_arch[t.sizes()].train.loss).sum::<f64>() / n,
    };
    let (f, c) = (task.split.num_features, task.split.num_classes);
    let lr_fit = train_baseline(&[f, c], true, &task.train, &task.val, BaselineSpec::default())?;
    let seen = std::iter::once(&cfg.data.dataset).chain(&cfg.data.extra_datasets).any(|d| *d == task.name);
    Ok(TaskResult {
        name: task.name.clone(),
        kind: named.kind,
        features: f,
        classes: c,
        train_rows: task.train.y.len(),
        val_rows: task.val.y.len(),
        seen,
        horizons: (0..spec.horizons.len())
            .map(|i| HorizonResult {
                steps: spec.horizons[i],
                grown_train: grown[i].train,
                grown_val: grown[i].val,
                grown_train_loss: grown[i].loss,
                permuted_train: permuted[i].train,
                permuted_val: permuted[i].val,
                adam: adam[i],
                adam_xavier: adam_xavier[i],
            })
            .collect(),
        backprop,
        logistic: Acc { train: lr_fit.train.acc, val: lr_fit.val.acc, train_loss: lr_fit.train.loss },
    })
}

/// Runs the suite with a trained rule; `progress` hears of every task as it finishes.
pub fn run_suite(
    rule: &RuleNet,
    meta: &RuleMeta,
    spec: &SuiteSpec,
    mut progress: impl FnMut(std::result::Result<&TaskResult, &Skipped>),
) -> Result<SuiteReport> {
    if spec.horizons.is_empty() || spec.horizons.windows(2).any(|w| w[0] >= w[1]) || spec.horizons[0] == 0 {
        return Err(crate::Error::Config {
            key: "horizons".into(),
            message: format!("must be ascending step counts >= 1, got {:?}", spec.horizons),
        });
    }
    let choosers = lr_tasks(meta, spec)?;
    let (adam_lr, adam_lr_grid) = choose_adam_lr(meta, spec, &choosers, AdamStart::Grown)?;
    let (adam_xavier_lr, adam_xavier_lr_grid) = choose_adam_lr(meta, spec, &choosers, AdamStart::Xavier)?;
    let mut named = held_out(spec);
    for d in &spec.datasets {
        named.push(Named { kind: "dataset".into(), data: load_dataset(d, None)? });
    }
    let (mut tasks, mut skipped) = (Vec::new(), Vec::new());
    for (i, n) in named.into_iter().enumerate() {
        let name = n.data.name.clone();
        match run_task(rule, meta, n, spec.seed ^ ((i as u64 + 1) << 40), [adam_lr, adam_xavier_lr], spec) {
            Ok(t) => {
                progress(Ok(&t));
                tasks.push(t);
            }
            Err(e @ crate::Error::EncodingOverflow { .. }) => {
                let s = Skipped { name, reason: format!("the rule's hidden-state code is too small: {e}") };
                progress(Err(&s));
                skipped.push(s);
            }
            Err(e) => return Err(e),
        }
    }
    let mut report = SuiteReport {
        networks: spec.networks,
        trained_steps: meta.config.grow.steps,
        seed: spec.seed,
        adam_lr,
        adam_lr_grid,
        adam_xavier_lr,
        adam_xavier_lr_grid,
        tasks,
        skipped,
        mean: Vec::new(),
    };
    report.mean = report.means();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_tasks_span_the_ranges_and_repeat() {
        let spec = SuiteSpec::standard(vec![10]);
        let (a, b) = (held_out(&spec), held_out(&spec));
        assert_eq!(a.len(), 12);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.data.x, &x.data.y), (&y.data.x, &y.data.y), "the suite is fixed by its seed");
        }
        let (f, c, r) = (&spec.ranges.features, &spec.ranges.classes, &spec.ranges.rows);
        for n in &a {
            assert!((f[0]..=f[1]).contains(&n.data.num_features()), "{}", n.data.name);
            assert!((c[0]..=c[1]).contains(&n.data.num_classes()), "{}", n.data.name);
            assert!((r[0]..=r[1]).contains(&n.data.len()), "{}", n.data.name);
        }
        let feats: Vec<usize> = a.iter().map(|n| n.data.num_features()).collect();
        assert!(feats.iter().min() <= Some(&3) && feats.iter().max() >= Some(&48), "{feats:?}");
        for kind in ["mixture", "teacher", "xor"] {
            assert_eq!(a.iter().filter(|n| n.kind == kind).count(), 4, "{kind}");
        }
        let other = held_out(&SuiteSpec { seed: 1, ..spec });
        assert_ne!(a[0].data.x, other[0].data.x, "another seed, another suite");
    }
}
