//! Generated classification tasks: seeded tables whose feature, class and row counts are drawn
//! from the ranges of `[tasks]`, of three kinds ([`Kind`]), each with some label noise so that
//! no learner is perfect; a share of them (`tasks.latent`) is made in a few latent dimensions
//! that every feature mixes, so that their features are correlated as real data's are. A task is an ordinary [`Dataset`], so the stratified split and the
//! standardisation of [`crate::data`] apply to it unchanged.
//!
//! Meta-training draws its tasks from [`Stream::TrainTasks`], held-out evaluation from
//! [`Stream::EvalTasks`]; the two never share a generator (see [`rng_for`]).

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::config::TasksConfig;
use crate::config::tasks::Kind;
use crate::data::Dataset;
use crate::random::{Stream, normal, rng_for};

/// The size of a generated task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Feature columns.
    pub features: usize,
    /// Classes.
    pub classes: usize,
    /// Rows.
    pub rows: usize,
}

/// A generated task: what it is and its table.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Its kind.
    pub kind: Kind,
    /// Its size.
    pub shape: Shape,
    /// Its latent dimensions when its features mix a few latent ones (`tasks.latent`).
    pub latent: Option<usize>,
    /// Its table (named after the kind and the draw).
    pub dataset: Dataset,
}

fn uniform<R: Rng>(rng: &mut R, r: [f64; 2]) -> f64 {
    if r[0] < r[1] { rng.gen_range(r[0]..=r[1]) } else { r[0] }
}

fn int<R: Rng>(rng: &mut R, r: [usize; 2]) -> usize {
    rng.gen_range(r[0]..=r[1])
}

/// A count in `r`, uniform on a log scale.
fn log_int<R: Rng>(rng: &mut R, r: [usize; 2]) -> usize {
    let (lo, hi) = ((r[0].max(1) as f64).ln(), ((r[1].max(1) + 1) as f64).ln());
    let v = if lo < hi { rng.gen_range(lo..hi).exp().floor() as usize } else { r[0] };
    v.clamp(r[0], r[1])
}

/// Range of the standard deviation of the noise added to each latent task's feature, in units
/// of a latent dimension's within-cluster standard deviation.
const LATENT_NOISE: [f64; 2] = [0.25, 1.0];

/// Draws task `index` of `stream` under `seed`: shape and kind from the ranges of `cfg`.
pub fn draw(cfg: &TasksConfig, seed: u64, stream: Stream, index: u64) -> Generated {
    let mut rng = rng_for(seed, stream, index);
    let shape = Shape {
        features: if cfg.log_features { log_int(&mut rng, cfg.features) } else { int(&mut rng, cfg.features) },
        classes: int(&mut rng, cfg.classes),
        rows: int(&mut rng, cfg.rows),
    };
    let kind = cfg.mix.pick(rng.r#gen::<f64>());
    generate(kind, shape, cfg, &format!("{kind}-{index}"), &mut rng)
}

/// Generates a task of `kind` and `shape`; clusters, separation and label noise are drawn from
/// the ranges of `cfg`. Classes take turns over the rows, so each has `rows / classes` rows
/// (rounded) before the label noise moves a few. With probability `cfg.latent` the task is
/// made in `d` latent dimensions (drawn from `cfg.latent-dims`, below the feature count) and
/// each feature is a random Gaussian mix of them (weights `N(0, 1/d)`) plus Gaussian noise.
pub fn generate(kind: Kind, shape: Shape, cfg: &TasksConfig, name: &str, rng: &mut StdRng) -> Generated {
    // Drawn only when asked for, so that configs without latent tasks keep their draws.
    if cfg.latent > 0.0 && rng.gen_bool(cfg.latent) {
        let f = shape.features;
        let d = int(rng, [cfg.latent_dims[0].min(f), cfg.latent_dims[1].min(f)]);
        if d < f {
            return latent(kind, shape, d, cfg, name, rng);
        }
    }
    let Shape { features: f, classes: c, rows: n } = shape;
    let separation = uniform(rng, cfg.separation);
    let mut y: Vec<usize> = (0..n).map(|i| i % c).collect();
    // Informative dimensions: at least half the features (the rest is pure noise).
    let informative = rng.gen_range(f.div_ceil(2)..=f).max(1);
    let mut x: Vec<Vec<f64>> = (0..n).map(|_| (0..f).map(|_| normal(rng)).collect()).collect();
    match kind {
        Kind::Mixture => {
            // Centres about `separation` apart in any dimension; spread further when there are
            // more centres than informative dimensions (they would crowd a low-dimensional space).
            let counts: Vec<usize> = (0..c).map(|_| int(rng, cfg.clusters)).collect();
            let crowding = (counts.iter().sum::<usize>() as f64 / informative as f64).max(1.0).sqrt();
            let scale = separation * crowding / (informative as f64).sqrt();
            let centres: Vec<Vec<Vec<f64>>> = counts
                .iter()
                .map(|&k| (0..k).map(|_| (0..informative).map(|_| scale * normal(rng)).collect()).collect())
                .collect();
            for (row, &label) in x.iter_mut().zip(&y) {
                let centre = &centres[label][rng.gen_range(0..centres[label].len())];
                row.iter_mut().zip(centre).for_each(|(v, m)| *v += m);
            }
        }
        Kind::Xor => {
            // One direction per class, orthogonal while the dimensions allow.
            let dims = informative.max(f.min(c)).max(f.min(2));
            let mut dirs: Vec<Vec<f64>> = Vec::with_capacity(c);
            for k in 0..c {
                let mut d: Vec<f64> = (0..dims).map(|_| normal(rng)).collect();
                if k < dims {
                    for prev in &dirs {
                        let dot: f64 = d.iter().zip(prev).map(|(a, b)| a * b).sum();
                        d.iter_mut().zip(prev).for_each(|(a, b)| *a -= dot * b);
                    }
                }
                let norm = d.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                dirs.push(d.into_iter().map(|v| v / norm).collect());
            }
            let radius = 1.5 * separation;
            for (row, &label) in x.iter_mut().zip(&y) {
                let sign = if rng.gen_bool(0.5) { radius } else { -radius };
                row.iter_mut().zip(&dirs[label]).for_each(|(v, d)| *v += sign * d);
            }
        }
        Kind::Teacher => {
            y = teacher_labels(&x, informative, c, separation, rng);
        }
    }
    let noise = uniform(rng, cfg.label_noise);
    for label in y.iter_mut() {
        if rng.gen_bool(noise) {
            *label = (*label + rng.gen_range(1..c)) % c;
        }
    }
    // Informative and noise columns in a random order.
    let mut order: Vec<usize> = (0..f).collect();
    order.shuffle(rng);
    let x = x.into_iter().map(|row| order.iter().map(|&j| row[j]).collect()).collect();
    let dataset = Dataset {
        name: name.to_string(),
        feature_names: feature_names(f),
        class_names: (0..c).map(|k| k.to_string()).collect(),
        x,
        y,
    };
    Generated { kind, shape, latent: None, dataset }
}

/// A task of `kind` made in `d` latent dimensions, its `shape.features` features each a random
/// Gaussian mix of them (weights `N(0, 1/d)`) plus Gaussian noise (see [`generate`]).
fn latent(kind: Kind, shape: Shape, d: usize, cfg: &TasksConfig, name: &str, rng: &mut StdRng) -> Generated {
    let flat = TasksConfig { latent: 0.0, ..cfg.clone() };
    let mut dataset = generate(kind, Shape { features: d, ..shape }, &flat, name, rng).dataset;
    let mix: Vec<Vec<f64>> =
        (0..shape.features).map(|_| (0..d).map(|_| normal(rng) / (d as f64).sqrt()).collect()).collect();
    let noise = uniform(rng, LATENT_NOISE);
    dataset.x = dataset
        .x
        .iter()
        .map(|z| mix.iter().map(|m| m.iter().zip(z).map(|(a, v)| a * v).sum::<f64>() + noise * normal(rng)).collect())
        .collect();
    dataset.feature_names = feature_names(shape.features);
    Generated { kind, shape, latent: Some(d), dataset }
}

/// Column names `x0`, `x1`, ... of `f` features.
fn feature_names(f: usize) -> Vec<String> {
    (0..f).map(|j| format!("x{j}")).collect()
}

/// Labels of `x` from a random teacher that reads the first `informative` columns: hidden
/// width in `[c, 4c]`, Gaussian weights, and output biases moved until every class has at
/// least half its share of rows (or 200 rounds pass).
fn teacher_labels(x: &[Vec<f64>], informative: usize, c: usize, gain: f64, rng: &mut StdRng) -> Vec<usize> {
    let h = rng.gen_range(c..=4 * c);
    let w1: Vec<Vec<f64>> =
        (0..h).map(|_| (0..informative).map(|_| gain * normal(rng) / (informative as f64).sqrt()).collect()).collect();
    let b1: Vec<f64> = (0..h).map(|_| normal(rng)).collect();
    let w2: Vec<Vec<f64>> = (0..c).map(|_| (0..h).map(|_| normal(rng) / (h as f64).sqrt()).collect()).collect();
    let logits: Vec<Vec<f64>> = x
        .iter()
        .map(|row| {
            let hidden: Vec<f64> = w1
                .iter()
                .zip(&b1)
                .map(|(w, b)| (w.iter().zip(row).map(|(a, v)| a * v).sum::<f64>() + b).max(0.0))
                .collect();
            w2.iter().map(|w| w.iter().zip(&hidden).map(|(a, v)| a * v).sum()).collect()
        })
        .collect();
    let spread = {
        let all: Vec<f64> = logits.iter().flatten().copied().collect();
        let mean = all.iter().sum::<f64>() / all.len().max(1) as f64;
        (all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / all.len().max(1) as f64).sqrt().max(1e-9)
    };
    let mut bias = vec![0.0; c];
    let label =
        |z: &[f64], bias: &[f64]| crate::task::argmax(&z.iter().zip(bias).map(|(a, b)| a + b).collect::<Vec<_>>());
    let share = x.len() as f64 / c as f64;
    for _ in 0..200 {
        let mut counts = vec![0usize; c];
        logits.iter().for_each(|z| counts[label(z, &bias)] += 1);
        if counts.iter().all(|&k| k as f64 >= 0.5 * share) {
            break;
        }
        for (b, &k) in bias.iter_mut().zip(&counts) {
            *b -= 0.1 * spread * ((k as f64 + 1.0) / (share + 1.0)).ln();
        }
    }
    logits.iter().map(|z| label(z, &bias)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Split;

    fn wide() -> TasksConfig {
        TasksConfig { per_epoch: 1, ..TasksConfig::default() }
    }

    #[test]
    fn same_seed_same_task() {
        let (a, b) = (draw(&wide(), 3, Stream::TrainTasks, 7), draw(&wide(), 3, Stream::TrainTasks, 7));
        assert_eq!((a.kind, a.shape), (b.kind, b.shape));
        assert_eq!((a.dataset.x, a.dataset.y), (b.dataset.x, b.dataset.y));
    }

    #[test]
    fn shapes_stay_in_their_ranges() {
        let cfg = TasksConfig { features: [3, 9], classes: [2, 4], rows: [100, 150], ..wide() };
        for i in 0..40 {
            let g = draw(&cfg, 0, Stream::TrainTasks, i);
            let d = &g.dataset;
            assert!((3..=9).contains(&d.num_features()) && d.num_features() == g.shape.features);
            assert!((2..=4).contains(&d.num_classes()) && d.num_classes() == g.shape.classes);
            assert!((100..=150).contains(&d.len()) && d.len() == g.shape.rows);
            assert!(d.x.iter().flatten().all(|v| v.is_finite()));
            assert!(d.y.iter().all(|&y| y < d.num_classes()));
            Split::stratified(d, 0.8, 0).expect("splits");
        }
    }

    #[test]
    fn training_and_evaluation_streams_differ() {
        for i in 0..10 {
            let (a, b) = (draw(&wide(), 0, Stream::TrainTasks, i), draw(&wide(), 0, Stream::EvalTasks, i));
            assert_ne!(a.dataset.x, b.dataset.x, "task {i}");
        }
    }

    #[test]
    fn classes_are_balanced() {
        for kind in [Kind::Mixture, Kind::Teacher, Kind::Xor] {
            for (i, c) in [2usize, 5, 10].into_iter().enumerate() {
                let shape = Shape { features: 8, classes: c, rows: 1000 };
                let mut rng = rng_for(1, Stream::EvalTasks, i as u64);
                let g = generate(kind, shape, &wide(), "t", &mut rng);
                let mut counts = vec![0usize; c];
                g.dataset.y.iter().for_each(|&y| counts[y] += 1);
                let share = 1000.0 / c as f64;
                assert!(counts.iter().all(|&k| k as f64 >= 0.4 * share), "{kind} c={c}: {counts:?}");
            }
        }
    }

    /// Mean absolute correlation over pairs of distinct feature columns.
    fn mean_abs_correlation(x: &[Vec<f64>]) -> f64 {
        let (n, f) = (x.len() as f64, x[0].len());
        let cols: Vec<Vec<f64>> = (0..f)
            .map(|j| {
                let mean = x.iter().map(|r| r[j]).sum::<f64>() / n;
                let sd = (x.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / n).sqrt();
                x.iter().map(|r| (r[j] - mean) / sd).collect()
            })
            .collect();
        let mut sum = 0.0;
        for a in 0..f {
            for b in a + 1..f {
                sum += (cols[a].iter().zip(&cols[b]).map(|(u, v)| u * v).sum::<f64>() / n).abs();
            }
        }
        sum / (f * (f - 1) / 2) as f64
    }

    #[test]
    fn latent_tasks_have_correlated_features_of_low_dimension() {
        let cfg = TasksConfig { features: [40, 60], latent: 1.0, latent_dims: [2, 4], ..wide() };
        for i in 0..6 {
            let g = draw(&cfg, 0, Stream::TrainTasks, i);
            let d = g.latent.expect("every task is latent at share 1");
            assert!((2..=4).contains(&d), "{d} latent dimensions");
            assert_eq!(g.dataset.num_features(), g.shape.features);
            assert!(g.dataset.x.iter().flatten().all(|v| v.is_finite()));
            // A few latent dimensions shared by 40+ features: strongly correlated columns.
            let latent = mean_abs_correlation(&g.dataset.x);
            let flat = mean_abs_correlation(
                &draw(&TasksConfig { latent: 0.0, ..cfg.clone() }, 0, Stream::TrainTasks, i).dataset.x,
            );
            assert!(latent > 0.15 && latent > 2.0 * flat, "task {i}: latent {latent:.3}, independent {flat:.3}");
            Split::stratified(&g.dataset, 0.8, 0).expect("splits");
        }
    }

    #[test]
    fn without_latent_tasks_the_draws_do_not_change() {
        // No random number is spent on the latent options when the share is 0, so configs
        // written before them draw the same tasks.
        let other = TasksConfig { latent_dims: [1, 1], ..wide() };
        for i in 0..5 {
            let (a, b) = (draw(&wide(), 2, Stream::TrainTasks, i), draw(&other, 2, Stream::TrainTasks, i));
            assert!(a.latent.is_none());
            assert_eq!((a.shape, a.dataset.x, a.dataset.y), (b.shape, b.dataset.x, b.dataset.y));
        }
    }

    #[test]
    fn log_features_spread_over_the_log_scale() {
        let cfg = TasksConfig { features: [2, 784], log_features: true, ..wide() };
        let mut counts: Vec<usize> = (0..200)
            .map(|i| {
                let mut rng = rng_for(0, Stream::TrainTasks, i);
                log_int(&mut rng, cfg.features)
            })
            .collect();
        counts.sort_unstable();
        assert!(counts.iter().all(|f| (2..=784).contains(f)));
        // Uniform on a log scale: the median near sqrt(2 * 784) = 40 (uniform: 393); both ends reached.
        let median = counts[100];
        assert!((20..=80).contains(&median), "median {median}");
        assert!(counts[10] < 5 && counts[190] > 400, "{} .. {}", counts[10], counts[190]);
    }

    #[test]
    fn kinds_follow_the_mix() {
        let cfg = TasksConfig { mix: crate::config::KindMix { mixture: 0.0, teacher: 0.0, xor: 1.0 }, ..wide() };
        assert!((0..10).all(|i| draw(&cfg, 0, Stream::TrainTasks, i).kind == Kind::Xor));
    }
}

#[cfg(test)]
mod difficulty {
    use super::*;
    use crate::baseline::{BaselineSpec, train_baseline};
    use crate::config::Config;
    use crate::experiment::TaskSource;

    /// Validation accuracy of logistic regression and of an MLP (hidden 32), both backprop.
    fn lr_and_mlp(kind: Kind, shape: Shape, index: u64) -> (f64, f64) {
        let cfg = TasksConfig { per_epoch: 1, ..TasksConfig::default() };
        let g = generate(kind, shape, &cfg, "t", &mut rng_for(9, Stream::EvalTasks, index));
        let task = TaskSource::from_dataset(&Config::default(), g.dataset).expect("splits");
        let (f, c) = (shape.features, shape.classes);
        let spec = BaselineSpec::default();
        let lr = train_baseline(&[f, c], true, &task.train, &task.val, spec).expect("lr");
        let mlp = train_baseline(&[f, 32, c], true, &task.train, &task.val, spec).expect("mlp");
        (lr.val.acc, mlp.val.acc)
    }

    #[test]
    fn useful_but_imperfect_and_xor_is_nonlinear() {
        let shapes = [(4, 2, 400), (16, 3, 600), (32, 5, 1000), (8, 8, 1200), (2, 4, 800)];
        for kind in [Kind::Mixture, Kind::Teacher, Kind::Xor] {
            let (mut lr_sum, mut mlp_sum) = (0.0, 0.0);
            for (i, &(features, classes, rows)) in shapes.iter().enumerate() {
                let (lr, mlp) = lr_and_mlp(kind, Shape { features, classes, rows }, i as u64);
                eprintln!("{kind} f={features} c={classes} n={rows}: logistic {lr:.3} mlp {mlp:.3}");
                assert!(mlp < 0.995, "{kind}: an MLP is perfect ({mlp})");
                assert!(mlp > 1.0 / classes as f64 + 0.15, "{kind}: an MLP is near chance ({mlp})");
                lr_sum += lr;
                mlp_sum += mlp;
            }
            let n = shapes.len() as f64;
            eprintln!("{kind}: mean logistic {:.3} mean mlp {:.3}", lr_sum / n, mlp_sum / n);
            if kind == Kind::Xor {
                assert!(mlp_sum - lr_sum > 0.2 * n, "xor: logistic regression is not clearly below an MLP");
            }
        }
    }
}
