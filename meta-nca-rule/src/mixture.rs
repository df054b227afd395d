//! The tasks of one meta-epoch (`[tasks]`): the datasets of `[data]`, each optionally with its
//! feature columns shuffled or subsampled afresh, then `tasks.per-epoch` generated tasks drawn
//! from the training stream. With `[tasks]` at its defaults this is exactly the experiment's
//! datasets and draws nothing, so configs without a `[tasks]` section train as before.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::seq::index::sample;

use crate::Result;
use crate::data::Split;
use crate::experiment::{Experiment, TaskSource};
use crate::generate;
use crate::random::Stream;

/// The tasks meta-epoch `epoch` grows on. Reshaping the datasets draws from `rng` (the
/// meta-epoch's generator); generated task `j` of meta-epoch `e` is task
/// `e · per-epoch + j` of [`Stream::TrainTasks`] under the config's seed.
pub fn epoch_tasks(exp: &Experiment, epoch: usize, rng: &mut StdRng) -> Result<Vec<TaskSource>> {
    let cfg = &exp.config;
    let ts = &cfg.tasks;
    let mut tasks = Vec::new();
    if ts.include_datasets {
        for task in &exp.tasks {
            if ts.reshapes_datasets() {
                let columns = reshape_columns(task.split.num_features, ts.permute_features, ts.subsample_features, rng);
                tasks.push(TaskSource::from_split(cfg, task.name.clone(), select_features(&task.split, &columns)));
            } else {
                tasks.push(task.clone());
            }
        }
    }
    for j in 0..ts.per_epoch {
        let index = (epoch * ts.per_epoch + j) as u64;
        let generated = generate::draw(ts, cfg.seed, Stream::TrainTasks, index);
        tasks.push(TaskSource::from_dataset(cfg, generated.dataset)?);
    }
    Ok(tasks)
}

/// The columns a reshaped dataset keeps, in their new order: a random subset of between
/// `ceil(min_fraction · n)` (at least 1) and `n` columns, shuffled when `permute` (kept in
/// order otherwise).
pub fn reshape_columns(n: usize, permute: bool, min_fraction: f64, rng: &mut StdRng) -> Vec<usize> {
    let min = ((min_fraction * n as f64).ceil() as usize).clamp(1, n.max(1));
    let keep = if min < n { rng.gen_range(min..=n) } else { n };
    let mut columns = sample(rng, n, keep).into_vec();
    if permute {
        columns.shuffle(rng);
    } else {
        columns.sort_unstable();
    }
    columns
}

/// `split` with only the feature `columns`, in that order (standardisation carried along).
pub fn select_features(split: &Split, columns: &[usize]) -> Split {
    let nf = split.num_features;
    let pick = |x: &[f64]| -> Vec<f64> { x.chunks(nf).flat_map(|row| columns.iter().map(|&j| row[j])).collect() };
    Split {
        num_features: columns.len(),
        train_x: pick(&split.train_x),
        val_x: pick(&split.val_x),
        mean: columns.iter().map(|&j| split.mean[j]).collect(),
        std: columns.iter().map(|&j| split.std[j]).collect(),
        ..split.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::random::rng_for;

    #[test]
    fn defaults_are_the_datasets_and_draw_nothing() {
        let exp = Experiment::new(Config::default()).expect("iris");
        let mut rng = rng_for(0, Stream::Train, 0);
        let before = rng.clone();
        let tasks = epoch_tasks(&exp, 3, &mut rng).expect("tasks");
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].split.train_x, exp.tasks[0].split.train_x);
        assert_eq!(rng, before, "no draws when [tasks] is off");
    }

    #[test]
    fn generated_tasks_follow_the_epoch() {
        let mut cfg = Config::default();
        cfg.tasks.per_epoch = 2;
        cfg.tasks.features = [2, 6];
        cfg.tasks.rows = [100, 200];
        let exp = Experiment::new(cfg).expect("valid");
        let mut rng = rng_for(0, Stream::Train, 0);
        let a = epoch_tasks(&exp, 0, &mut rng).expect("tasks");
        let b = epoch_tasks(&exp, 1, &mut rng).expect("tasks");
        assert_eq!((a.len(), b.len()), (3, 3));
        assert_ne!(a[1].split.train_x, b[1].split.train_x);
        assert_eq!(a[1].split.train_x, epoch_tasks(&exp, 0, &mut rng).expect("again")[1].split.train_x);
        for t in &a[1..] {
            assert_eq!(t.train.features, t.split.num_features);
            assert!((2..=6).contains(&t.train.features));
        }
    }

    #[test]
    fn reshaped_datasets_keep_rows_and_values() {
        let exp = Experiment::new(Config::default()).expect("iris");
        let split = &exp.tasks[0].split;
        let mut rng = rng_for(0, Stream::Train, 0);
        for _ in 0..10 {
            let cols = reshape_columns(4, true, 0.5, &mut rng);
            assert!((2..=4).contains(&cols.len()));
            let s = select_features(split, &cols);
            assert_eq!(s.train_x.len(), split.train_y.len() * cols.len());
            for (k, &j) in cols.iter().enumerate() {
                assert_eq!(s.train_x[k], split.train_x[j]);
                assert_eq!(s.val_x[cols.len() + k], split.val_x[4 + j]);
            }
        }
    }
}
