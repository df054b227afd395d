//! What the learning suite reports: per task and step count, grown networks next to the
//! baselines; flattened into rows for CSV, and averaged over tasks.

use serde::{Deserialize, Serialize};

use crate::eval::Stats;

/// Train and validation accuracy, and the training split's loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Acc {
    /// On the training split.
    pub train: f64,
    /// On the validation split.
    pub val: f64,
    /// Mean cross-entropy on the training split: what meta-training and backprop minimise,
    /// so it tells a network that fits less from one that fits differently (on some tasks a
    /// lower loss means a lower accuracy).
    #[serde(default)]
    pub train_loss: f64,
}

/// Everything measured at one step count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HorizonResult {
    /// Rule steps (and Adam steps).
    pub steps: usize,
    /// Grown networks, labels as given: training accuracy.
    pub grown_train: Stats,
    /// Grown networks, labels as given: validation accuracy.
    pub grown_val: Stats,
    /// Grown networks, labels as given: mean cross-entropy on the training split.
    pub grown_train_loss: Stats,
    /// Grown networks, class `k` renamed `(k+1) mod C`: training accuracy.
    pub permuted_train: Stats,
    /// Grown networks, labels permuted: validation accuracy.
    pub permuted_val: Stats,
    /// Full-batch Adam from the grown networks' starting weights for `steps` steps (mean).
    pub adam: Acc,
    /// Full-batch Adam from Xavier-initialised weights on the same architectures for `steps`
    /// steps (mean).
    pub adam_xavier: Acc,
}

/// One task of the suite.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskResult {
    /// Task name (`<kind>-<i>`, or the dataset's name).
    pub name: String,
    /// `mixture`, `teacher`, `xor`, or `dataset`.
    pub kind: String,
    /// Features.
    pub features: usize,
    /// Classes.
    pub classes: usize,
    /// Training rows.
    pub train_rows: usize,
    /// Validation rows.
    pub val_rows: usize,
    /// Whether the rule was meta-trained on this dataset (`[data]` of its run).
    pub seen: bool,
    /// Per step count.
    pub horizons: Vec<HorizonResult>,
    /// Backprop on the grown networks' architectures, trained to convergence (mean over the
    /// networks' architectures).
    pub backprop: Acc,
    /// Logistic regression (one weight matrix with an intercept, trained to convergence).
    pub logistic: Acc,
}

/// A task the rule cannot grow on, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// Task name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// One learning rate of the grid and the mean validation accuracy Adam reached with it on
/// the training-stream tasks at the first horizon.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LrScore {
    /// Learning rate.
    pub lr: f64,
    /// Mean validation accuracy.
    pub val_acc: f64,
}

/// What `meta-nca suite` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SuiteReport {
    /// Networks grown per task and labelling.
    pub networks: usize,
    /// The rule's trained steps `K`.
    pub trained_steps: usize,
    /// Seed of the suite.
    pub seed: u64,
    /// Adam's learning rate from the grown networks' starts (chosen on training-stream tasks).
    pub adam_lr: f64,
    /// The grid it was chosen from.
    pub adam_lr_grid: Vec<LrScore>,
    /// Adam's learning rate from Xavier starts (chosen alike).
    pub adam_xavier_lr: f64,
    /// The grid it was chosen from.
    pub adam_xavier_lr_grid: Vec<LrScore>,
    /// Every task that ran.
    pub tasks: Vec<TaskResult>,
    /// Tasks that could not run.
    pub skipped: Vec<Skipped>,
    /// Per step count, the mean over tasks ([`SuiteReport::means`]).
    pub mean: Vec<SuiteRow>,
}

/// One CSV row: one task at one step count (the baselines that do not depend on the step
/// count repeat on every row of their task).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SuiteRow {
    /// Task name, or `mean` for the mean over tasks.
    pub task: String,
    /// `mixture`, `teacher`, `xor`, `dataset` (or `all` for the mean).
    pub kind: String,
    /// Features (0 for the mean).
    pub features: usize,
    /// Classes (0 for the mean).
    pub classes: usize,
    /// Training rows (0 for the mean).
    pub train_rows: usize,
    /// Validation rows (0 for the mean).
    pub val_rows: usize,
    /// Whether the rule was meta-trained on it.
    pub seen: bool,
    /// Rule steps and Adam steps.
    pub steps: usize,
    /// Grown, labels as given: mean training accuracy.
    pub grown_train: f64,
    /// Grown, labels as given: mean validation accuracy.
    pub grown_val: f64,
    /// Grown, labels as given: worst network's validation accuracy.
    pub grown_val_min: f64,
    /// Grown, labels as given: mean cross-entropy on the training split.
    pub grown_train_loss: f64,
    /// Grown, labels permuted: mean training accuracy.
    pub permuted_train: f64,
    /// Grown, labels permuted: mean validation accuracy.
    pub permuted_val: f64,
    /// Adam at equal steps: training accuracy.
    pub adam_train: f64,
    /// Adam at equal steps: validation accuracy.
    pub adam_val: f64,
    /// Adam from Xavier weights at equal steps: training accuracy.
    pub adam_xavier_train: f64,
    /// Adam from Xavier weights at equal steps: validation accuracy.
    pub adam_xavier_val: f64,
    /// Backprop to convergence: training accuracy.
    pub backprop_train: f64,
    /// Backprop to convergence: validation accuracy.
    pub backprop_val: f64,
    /// Backprop to convergence: mean cross-entropy on the training split.
    pub backprop_train_loss: f64,
    /// Logistic regression: training accuracy.
    pub logistic_train: f64,
    /// Logistic regression: validation accuracy.
    pub logistic_val: f64,
}

impl SuiteReport {
    /// One row per task and step count, tasks in suite order.
    pub fn rows(&self) -> Vec<SuiteRow> {
        self.tasks
            .iter()
            .flat_map(|t| {
                t.horizons.iter().map(move |h| SuiteRow {
                    task: t.name.clone(),
                    kind: t.kind.clone(),
                    features: t.features,
                    classes: t.classes,
                    train_rows: t.train_rows,
                    val_rows: t.val_rows,
                    seen: t.seen,
                    steps: h.steps,
                    grown_train: h.grown_train.mean,
                    grown_val: h.grown_val.mean,
                    grown_val_min: h.grown_val.min,
                    grown_train_loss: h.grown_train_loss.mean,
                    permuted_train: h.permuted_train.mean,
                    permuted_val: h.permuted_val.mean,
                    adam_train: h.adam.train,
                    adam_val: h.adam.val,
                    adam_xavier_train: h.adam_xavier.train,
                    adam_xavier_val: h.adam_xavier.val,
                    backprop_train: t.backprop.train,
                    backprop_val: t.backprop.val,
                    backprop_train_loss: t.backprop.train_loss,
                    logistic_train: t.logistic.train,
                    logistic_val: t.logistic.val,
                })
            })
            .collect()
    }

    /// Per step count, the mean over tasks of every column (`grown_val_min`: the mean of the
    /// per-task worst networks).
    pub fn means(&self) -> Vec<SuiteRow> {
        let rows = self.rows();
        let mut steps: Vec<usize> = rows.iter().map(|r| r.steps).collect();
        steps.sort_unstable();
        steps.dedup();
        steps
            .into_iter()
            .map(|s| {
                let at: Vec<&SuiteRow> = rows.iter().filter(|r| r.steps == s).collect();
                let mean = |f: fn(&SuiteRow) -> f64| at.iter().map(|r| f(r)).sum::<f64>() / at.len().max(1) as f64;
                SuiteRow {
                    task: "mean".into(),
                    kind: "all".into(),
                    features: 0,
                    classes: 0,
                    train_rows: 0,
                    val_rows: 0,
                    seen: false,
                    steps: s,
                    grown_train: mean(|r| r.grown_train),
                    grown_val: mean(|r| r.grown_val),
                    grown_val_min: mean(|r| r.grown_val_min),
                    grown_train_loss: mean(|r| r.grown_train_loss),
                    permuted_train: mean(|r| r.permuted_train),
                    permuted_val: mean(|r| r.permuted_val),
                    adam_train: mean(|r| r.adam_train),
                    adam_val: mean(|r| r.adam_val),
                    adam_xavier_train: mean(|r| r.adam_xavier_train),
                    adam_xavier_val: mean(|r| r.adam_xavier_val),
                    backprop_train: mean(|r| r.backprop_train),
                    backprop_val: mean(|r| r.backprop_val),
                    backprop_train_loss: mean(|r| r.backprop_train_loss),
                    logistic_train: mean(|r| r.logistic_train),
                    logistic_val: mean(|r| r.logistic_val),
                }
            })
            .collect()
    }
}
