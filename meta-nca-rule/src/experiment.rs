//! An experiment's resolved inputs: the checked config and its tasks (each dataset split into
//! grow and validation sets, with the architectures grown on it). Training, evaluation and
//! single grows start here.

use std::path::Path;
use std::sync::Arc;

use crate::config::{Architectures, Config};
use crate::data::{Dataset, Split};
use crate::task_data::TaskData;
use crate::{Error, Result};

/// One task of an experiment, made from a dataset (loaded, or generated): its split into grow
/// and validation sets, standardised, and the architectures grown on it. The networks grown
/// on it are the task networks of [`crate::task`].
#[derive(Debug, Clone)]
pub struct TaskSource {
    /// Dataset name (embedded name or file stem).
    pub name: String,
    /// The split (with standardisation statistics).
    pub split: Split,
    /// Training set: what networks are grown on and the meta-loss is taken on.
    pub train: Arc<TaskData>,
    /// Validation set: never seen by the rule or the meta-loss.
    pub val: Arc<TaskData>,
    /// The architectures grown on this dataset.
    pub archs: Architectures,
}

/// A checked config with its data loaded: `tasks[0]` is `data.dataset`, then
/// `data.extra-datasets` in order.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// The config.
    pub config: Config,
    /// Every dataset the rule is trained on.
    pub tasks: Vec<TaskSource>,
}

/// Loads a dataset by name: an embedded one (`iris`, `wine`, `breast-cancer`) or a CSV path.
pub fn load_dataset(dataset: &str, label_column: Option<&str>) -> Result<Dataset> {
    match Dataset::embedded(dataset) {
        Some(d) => Ok(d),
        None => Dataset::from_csv_path(Path::new(dataset), label_column),
    }
}

fn task_data(x: &[f64], y: &[usize], split: &Split) -> Arc<TaskData> {
    Arc::new(TaskData { x: x.to_vec(), y: y.to_vec(), features: split.num_features, classes: split.num_classes })
}

impl TaskSource {
    /// Loads, splits and standardises `dataset` as `config` says.
    pub fn load(config: &Config, dataset: &str, label_column: Option<&str>) -> Result<Self> {
        let data = load_dataset(dataset, label_column)?;
        Self::from_dataset(config, data)
    }

    /// Splits and standardises a dataset in memory (a generated task) as `config` says.
    pub fn from_dataset(config: &Config, data: Dataset) -> Result<Self> {
        let split = Split::stratified(&data, config.data.train_fraction, config.data.split_seed)?;
        Ok(Self::from_split(config, data.name, split))
    }

    /// A task from a split, with the architectures `config` grows on its shape.
    pub fn from_split(config: &Config, name: String, split: Split) -> Self {
        let archs = config.architectures(split.num_features, split.num_classes);
        Self {
            name,
            train: task_data(&split.train_x, &split.train_y, &split),
            val: task_data(&split.val_x, &split.val_y, &split),
            split,
            archs,
        }
    }

    /// The same task with every class label `k` renamed `perm[k]`, in training and
    /// validation alike (the label-permutation test of a learned rule).
    pub fn permuted(&self, config: &Config, perm: &[usize]) -> Result<Self> {
        let split = self.split.permute_labels(perm)?;
        Ok(Self::from_split(config, format!("{} (labels permuted)", self.name), split))
    }
}

impl Experiment {
    /// Checks `config`, loads and splits its datasets.
    pub fn new(config: Config) -> Result<Self> {
        config.check()?;
        let mut tasks = vec![TaskSource::load(&config, &config.data.dataset, config.data.label_column.as_deref())?];
        for extra in &config.data.extra_datasets {
            tasks.push(TaskSource::load(&config, extra, None)?);
        }
        Ok(Self { config, tasks })
    }

    /// The first dataset (`data.dataset`): what evaluation and single grows use.
    pub fn primary(&self) -> &TaskSource {
        &self.tasks[0]
    }

    /// The largest number of weight matrices and of cells in one matrix over every task,
    /// generated tasks (up to the largest `[tasks]` ranges allow) included.
    pub fn extent(&self) -> (usize, usize) {
        let (cfg, bias) = (&self.config, self.config.task.bias);
        let generated =
            cfg.tasks.generates().then(|| cfg.architectures(cfg.tasks.features[1], cfg.tasks.classes[1]).extent(bias));
        self.tasks
            .iter()
            .map(|t| t.archs.extent(bias))
            .chain(generated)
            .fold((1, 1), |a, b| (a.0.max(b.0), a.1.max(b.1)))
    }

    /// This experiment's config with the data replaced by one dataset (another one than the
    /// rule was trained on, for transfer), loaded.
    pub fn with_dataset(config: &Config, dataset: &str) -> Result<Self> {
        let mut config = config.clone();
        if config.data.dataset != dataset {
            config.data.label_column = None;
        }
        config.data.dataset = dataset.to_string();
        config.data.extra_datasets.clear();
        Self::new(config).map_err(|e| match e {
            Error::Config { key, message } => Error::Config { key: format!("{key} (dataset {dataset})"), message },
            other => other,
        })
    }
}
