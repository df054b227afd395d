//! An experiment's resolved inputs: the checked config, its data split as grow/validation
//! sets, and the architectures it grows. Training, evaluation and single grows start here.

use std::path::Path;
use std::sync::Arc;

use crate::config::{Architectures, Config};
use crate::data::{Dataset, Split};
use crate::reference::TaskData;
use crate::Result;

/// A checked config with its data loaded.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// The config.
    pub config: Config,
    /// The split (with standardisation statistics).
    pub split: Split,
    /// Training set: what networks are grown on and the meta-loss is taken on.
    pub train: Arc<TaskData>,
    /// Validation set: never seen by the rule or the meta-loss.
    pub val: Arc<TaskData>,
    /// The architectures grown.
    pub archs: Architectures,
}

/// Loads the dataset a config names: `"iris"` (embedded) or a CSV path.
pub fn load_dataset(dataset: &str, label_column: Option<&str>) -> Result<Dataset> {
    if dataset.eq_ignore_ascii_case("iris") {
        Ok(Dataset::iris())
    } else {
        Dataset::from_csv_path(Path::new(dataset), label_column)
    }
}

impl Experiment {
    /// Checks `config`, loads and splits its data.
    pub fn new(config: Config) -> Result<Self> {
        config.check()?;
        let data = load_dataset(&config.data.dataset, config.data.label_column.as_deref())?;
        let split = Split::stratified(&data, config.data.train_fraction, config.data.split_seed)?;
        let train = Arc::new(TaskData {
            x: split.train_x.clone(),
            y: split.train_y.clone(),
            features: split.num_features,
            classes: split.num_classes,
        });
        let val = Arc::new(TaskData {
            x: split.val_x.clone(),
            y: split.val_y.clone(),
            features: split.num_features,
            classes: split.num_classes,
        });
        let archs = config.architectures(split.num_features, split.num_classes);
        Ok(Self { config, split, train, val, archs })
    }
}
