//! The `[tasks]` section: the task distribution meta-training draws from. Each meta-epoch
//! grows networks on the datasets of `[data]` (optionally with their features permuted or
//! subsampled) and on `per-epoch` freshly generated classification tasks
//! (the `generate` module). Off by default: `per-epoch = 0` and the datasets as they are.

use serde::{Deserialize, Serialize};

use crate::init::bits_for;
use crate::{Error, Result};

/// The task distribution of meta-training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct TasksConfig {
    /// Generated tasks per meta-epoch, each grown on by `train.num-models` networks
    /// (0 = none: train on the datasets of `[data]` only).
    pub per_epoch: usize,
    /// Inclusive range `[min, max]` of a generated task's feature count.
    pub features: [usize; 2],
    /// Draw feature counts uniformly on a log scale instead of uniformly (for wide ranges such
    /// as 2-784, where a uniform draw would make nearly every task wide).
    pub log_features: bool,
    /// Inclusive range `[min, max]` of a generated task's class count.
    pub classes: [usize; 2],
    /// Inclusive range `[min, max]` of a generated task's row count (before the split).
    pub rows: [usize; 2],
    /// Relative weights of the kinds of generated task (a kind of weight 0 is never drawn).
    pub mix: KindMix,
    /// Inclusive range of Gaussian clusters per class in `mixture` tasks (more clusters per
    /// class: less linear).
    pub clusters: [usize; 2],
    /// Range of the distance scale of cluster centres (and of the teacher's input scale), in
    /// units of the within-cluster standard deviation: smaller is harder.
    pub separation: [f64; 2],
    /// Range of the fraction of labels moved to another class at random, so that no task is
    /// solved perfectly.
    pub label_noise: [f64; 2],
    /// Share of generated tasks (0-1) whose features are *latent*: the task is made in a few
    /// latent dimensions and every feature is a random mix of them plus noise, so the features
    /// are correlated and the data has a low intrinsic dimension, as images or spectra have.
    pub latent: f64,
    /// Inclusive range of a latent task's latent dimensions (capped at its feature count).
    pub latent_dims: [usize; 2],
    /// Also grow on the datasets of `[data]` (`dataset` and `extra-datasets`) every meta-epoch.
    pub include_datasets: bool,
    /// Shuffle the feature columns of the `[data]` datasets afresh every meta-epoch (a rule
    /// should not depend on which input is which).
    pub permute_features: bool,
    /// Keep a random subset of the `[data]` datasets' features every meta-epoch: between
    /// this fraction (rounded up, at least 1) and all of them (1 = keep all).
    pub subsample_features: f64,
}

/// How a generated task makes its rows and labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Gaussian mixture: each class is one or more unit-variance clusters at random centres.
    Mixture,
    /// Gaussian inputs labelled by a random teacher network (one ReLU hidden layer, argmax,
    /// output biases balanced so that every class is common).
    Teacher,
    /// XOR-like: each class is a pair of opposite clusters `±c`, so all classes share their
    /// mean and a linear classifier is near chance while an MLP is not.
    Xor,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Mixture => "mixture",
            Kind::Teacher => "teacher",
            Kind::Xor => "xor",
        })
    }
}

/// Relative weights of the kinds of generated task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct KindMix {
    /// Gaussian mixtures: several clusters per class at random centres.
    pub mixture: f64,
    /// Labels from a random teacher network (one ReLU hidden layer, argmax).
    pub teacher: f64,
    /// XOR-like layouts: each class is a pair of opposite clusters, so every class has the
    /// same mean and a linear classifier stays near chance.
    pub xor: f64,
}

impl Default for KindMix {
    fn default() -> Self {
        Self { mixture: 1.0, teacher: 1.0, xor: 1.0 }
    }
}

impl KindMix {
    /// `(kind, weight)` in a fixed order.
    pub fn weights(&self) -> [(Kind, f64); 3] {
        [(Kind::Mixture, self.mixture), (Kind::Teacher, self.teacher), (Kind::Xor, self.xor)]
    }

    /// The kind a uniform draw `u` in `[0, 1)` picks.
    pub fn pick(&self, u: f64) -> Kind {
        let total: f64 = self.weights().iter().map(|w| w.1).sum();
        let mut acc = 0.0;
        for (kind, w) in self.weights() {
            acc += w / total;
            if u < acc && w > 0.0 {
                return kind;
            }
        }
        self.weights().into_iter().rev().find(|w| w.1 > 0.0).map_or(Kind::Mixture, |w| w.0)
    }
}

impl Default for TasksConfig {
    fn default() -> Self {
        Self {
            per_epoch: 0,
            features: [2, 64],
            log_features: false,
            classes: [2, 10],
            rows: [100, 2000],
            mix: KindMix::default(),
            clusters: [1, 3],
            separation: [1.5, 3.0],
            label_noise: [0.0, 0.1],
            latent: 0.0,
            latent_dims: [2, 16],
            include_datasets: true,
            permute_features: false,
            subsample_features: 1.0,
        }
    }
}

fn bad(key: &str, message: impl Into<String>) -> Error {
    Error::Config { key: format!("tasks.{key}"), message: message.into() }
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(key: &str, r: [T; 2], min: T) -> Result<()> {
    if r[0] < min || r[0] > r[1] {
        return Err(bad(key, format!("must be [min, max] with {min} <= min <= max, got [{}, {}]", r[0], r[1])));
    }
    Ok(())
}

impl TasksConfig {
    /// Whether meta-epochs grow on generated tasks.
    pub fn generates(&self) -> bool {
        self.per_epoch > 0
    }

    /// Whether the `[data]` datasets change shape from one meta-epoch to the next.
    pub fn reshapes_datasets(&self) -> bool {
        self.include_datasets && (self.permute_features || self.subsample_features < 1.0)
    }

    /// Checks every value; errors name the key.
    pub fn check(&self) -> Result<()> {
        range("features", self.features, 1)?;
        range("classes", self.classes, 2)?;
        range("rows", self.rows, 1)?;
        range("clusters", self.clusters, 1)?;
        range("separation", self.separation, 0.0)?;
        range("label-noise", self.label_noise, 0.0)?;
        if !self.separation.iter().all(|s| s.is_finite()) {
            return Err(bad("separation", "must be finite"));
        }
        range("latent-dims", self.latent_dims, 1)?;
        if !(0.0..=1.0).contains(&self.latent) {
            return Err(bad("latent", format!("must be a share in [0, 1], got {}", self.latent)));
        }
        if self.label_noise[1] >= 0.5 {
            return Err(bad("label-noise", format!("must stay below 0.5, got {}", self.label_noise[1])));
        }
        if self.rows[0] < 5 * self.classes[1] {
            return Err(bad(
                "rows",
                format!(
                    "the smallest task ({} rows) needs at least 5 rows per class for the largest class count \
                     ({}): raise tasks.rows or lower tasks.classes",
                    self.rows[0], self.classes[1]
                ),
            ));
        }
        let w = self.mix.weights();
        if w.iter().any(|(_, w)| !(w.is_finite() && *w >= 0.0)) || w.iter().all(|(_, w)| *w == 0.0) {
            return Err(bad("mix", "weights must be finite, >= 0, and not all 0"));
        }
        if !(self.subsample_features > 0.0 && self.subsample_features <= 1.0) {
            return Err(bad("subsample-features", format!("must be in (0, 1], got {}", self.subsample_features)));
        }
        if !self.generates() && !self.include_datasets {
            return Err(bad("include-datasets", "is false and tasks.per-epoch is 0: nothing to train on"));
        }
        Ok(())
    }

    /// Checks that a rule whose index code has `index_bits` bits (None: sized automatically)
    /// fits networks with `cells` cells in one weight matrix, the largest the ranges allow.
    pub fn check_index_bits(&self, index_bits: Option<usize>, cells: usize) -> Result<()> {
        match index_bits {
            Some(bits) if self.generates() && bits < bits_for(cells) => Err(Error::Config {
                key: "rule.index-bits".into(),
                message: format!(
                    "{bits} bits cannot number the {cells} cells of the largest weight matrix of a generated task \
                     (tasks.features up to {}, tasks.classes up to {}): use at least {} bits, leave it unset, or \
                     set rule.index-code = false (layer-only code)",
                    self.features[1],
                    self.classes[1],
                    bits_for(cells)
                ),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_off_and_valid() {
        let t = TasksConfig::default();
        t.check().expect("valid");
        assert!(!t.generates() && !t.reshapes_datasets());
    }

    #[test]
    fn bad_values_name_their_key() {
        type Case = (&'static str, fn(&mut TasksConfig));
        let cases: [Case; 9] = [
            ("tasks.features", |t| t.features = [10, 2]),
            ("tasks.classes", |t| t.classes = [1, 3]),
            ("tasks.rows", |t| t.rows = [20, 30]),
            ("tasks.label-noise", |t| t.label_noise = [0.0, 0.6]),
            ("tasks.mix", |t| t.mix = KindMix { mixture: 0.0, teacher: 0.0, xor: 0.0 }),
            ("tasks.include-datasets", |t| t.include_datasets = false),
            ("tasks.latent", |t| t.latent = 1.5),
            ("tasks.latent", |t| t.latent = f64::NAN),
            ("tasks.latent-dims", |t| t.latent_dims = [0, 4]),
        ];
        for (key, f) in cases {
            let mut t = TasksConfig::default();
            f(&mut t);
            let err = t.check().expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn pick_follows_the_weights() {
        let m = KindMix { mixture: 0.0, teacher: 1.0, xor: 1.0 };
        assert_eq!(m.pick(0.0), Kind::Teacher);
        assert_eq!(m.pick(0.49), Kind::Teacher);
        assert_eq!(m.pick(0.51), Kind::Xor);
        assert_eq!(m.pick(0.999_999), Kind::Xor);
    }
}
