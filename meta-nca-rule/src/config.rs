//! Experiment configuration in two layers: [`Config`] is the on-disk TOML (kebab-case, unknown
//! keys rejected, every field defaulted), [`Config::check`] checks it and resolves what
//! depends on the data (layer sizes, hidden-state widths).

use serde::{Deserialize, Serialize};

pub mod schedule;
pub mod tasks;
pub mod train;
pub use tasks::{KindMix, TasksConfig};
pub use train::{DamageConfig, GradNormalisation, HeadStart, LossStep, TrainConfig};

use crate::init::{HiddenCode, WeightInit, bits_for};
use crate::perception::{Group, PerceptionSpec};
use crate::rule::{Activation, RuleShape};
use crate::{Error, Result};

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    /// Seed of everything random in training (architectures, initial weights, firing).
    pub seed: u64,
    /// Where the data comes from and how it is split.
    pub data: DataConfig,
    /// The task networks that are grown.
    pub task: TaskConfig,
    /// The rule network and what it perceives.
    pub rule: RuleConfig,
    /// The grow process.
    pub grow: GrowConfig,
    /// Meta-training.
    pub train: TrainConfig,
    /// The task distribution of meta-training: generated tasks mixed with `[data]`.
    pub tasks: TasksConfig,
}

/// Data source and split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct DataConfig {
    /// `"iris"` (embedded) or a path to a CSV file with a header row.
    pub dataset: String,
    /// The CSV's label column (header name); default: the last column.
    pub label_column: Option<String>,
    /// Fraction of each class that goes to the training set.
    pub train_fraction: f64,
    /// Seed of the stratified split (kept apart from `seed` so runs with different training
    /// seeds share one split).
    pub split_seed: u64,
    /// More datasets grown on in every meta-epoch besides `dataset` (each gets `num-models`
    /// networks; the meta-loss is the mean over all of them).
    pub extra_datasets: Vec<String>,
}

/// Architectures of the task networks; input and output sizes come from the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct TaskConfig {
    /// Hidden-layer widths of each architecture; each network picks one uniformly.
    /// `[[]]` is one weight matrix (inputs straight to classes).
    pub hidden: Vec<Vec<usize>>,
    /// Sample architectures from a family instead of `hidden`.
    pub family: Option<FamilyConfig>,
    /// A constant-1 bias neuron in every non-output layer.
    pub bias: bool,
    /// Starting weights.
    pub weight_init: WeightInit,
}

/// A family of architectures: depth (weight matrices) and each hidden width drawn uniformly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FamilyConfig {
    /// Allowed numbers of weight matrices (1 = no hidden layer).
    pub depths: Vec<usize>,
    /// Allowed hidden-layer widths.
    pub widths: Vec<usize>,
}

/// The rule network and its perception.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RuleConfig {
    /// Perception groups: self, column, row, activations, upstream, downstream, feedback, hebbian.
    pub perception: Vec<Group>,
    /// Hidden-layer widths of the rule MLP.
    pub hidden: Vec<usize>,
    /// Hidden nonlinearity of the rule MLP.
    pub activation: Activation,
    /// Bound of one update: `Δ = output-scale · tanh(·)`.
    pub output_scale: f64,
    /// Half-width of the uniform init of the rule's last layer (0 = exactly "do nothing").
    pub last_init: f64,
    /// Put the per-cell index code into the starting hidden state (false = layer-only init).
    pub index_code: bool,
    /// Extra hidden channels that start at zero.
    pub extra_channels: usize,
    /// Squash the perception with `tanh` before the rule's first layer (input normalisation).
    pub input_squash: bool,
    /// Override the layer-code width (default: enough for the configured architectures).
    pub layer_bits: Option<usize>,
    /// Override the index-code width (default: enough for the configured architectures).
    pub index_bits: Option<usize>,
}

/// The grow process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct GrowConfig {
    /// Rule steps `K` per grow.
    pub steps: usize,
    /// Fraction `p` of each layer's live cells that fire at a step.
    pub fire_fraction: f64,
    /// Training rows each step sees, drawn without replacement for that step (a minibatch;
    /// unset: the whole training split). The forward pass, the activity statistics and the
    /// messages use them; the meta-loss uses the whole training split. Meta-training, the
    /// training probes and `eval` grow this way; single recorded grows (`grow`), robustness
    /// experiments and the learning suite (`suite`) use the whole split.
    pub batch_size: Option<usize>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: "iris".into(),
            label_column: None,
            train_fraction: 0.8,
            split_seed: 0,
            extra_datasets: Vec::new(),
        }
    }
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self { hidden: vec![vec![]], family: None, bias: true, weight_init: WeightInit::Zeros }
    }
}

impl Default for RuleConfig {
    fn default() -> Self {
        Self {
            perception: vec![
                Group::SelfState,
                Group::Column,
                Group::Row,
                Group::Activations,
                Group::Feedback,
                Group::Hebbian,
            ],
            hidden: vec![16, 16],
            activation: Activation::Relu,
            output_scale: 0.5,
            last_init: 1e-3,
            index_code: true,
            extra_channels: 2,
            input_squash: false,
            layer_bits: None,
            index_bits: None,
        }
    }
}

impl Default for GrowConfig {
    fn default() -> Self {
        Self { steps: 10, fire_fraction: 0.8, batch_size: None }
    }
}

/// The architectures a validated config grows, with input and output sizes filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Architectures {
    /// Pick uniformly from these layer-size lists.
    List(Vec<Vec<usize>>),
    /// Sample depth and every hidden width uniformly.
    Family {
        /// Inputs.
        features: usize,
        /// Classes.
        classes: usize,
        /// Allowed depths.
        depths: Vec<usize>,
        /// Allowed hidden widths.
        widths: Vec<usize>,
    },
}

impl Architectures {
    /// Draws one architecture's layer sizes.
    pub fn sample<R: rand::Rng>(&self, rng: &mut R) -> Vec<usize> {
        match self {
            Architectures::List(list) => list[rng.gen_range(0..list.len())].clone(),
            Architectures::Family { features, classes, depths, widths } => {
                let depth = depths[rng.gen_range(0..depths.len())];
                let mut sizes = vec![*features];
                sizes.extend((1..depth).map(|_| widths[rng.gen_range(0..widths.len())]));
                sizes.push(*classes);
                sizes
            }
        }
    }

    /// The largest number of weight matrices and of cells in one matrix over the family.
    pub fn extent(&self, bias: bool) -> (usize, usize) {
        let b = usize::from(bias);
        match self {
            Architectures::List(list) => {
                let layers = list.iter().map(|s| s.len() - 1).max().unwrap_or(1);
                let cells = list.iter().flat_map(|s| s.windows(2).map(|w| (w[0] + b) * w[1])).max().unwrap_or(1);
                (layers, cells)
            }
            Architectures::Family { features, classes, depths, widths } => {
                let layers = depths.iter().copied().max().unwrap_or(1);
                let w = widths.iter().copied().max().unwrap_or(1);
                let mut cells = (features + b) * classes;
                if layers > 1 {
                    cells = cells.max((features + b) * w).max((w + b) * w).max((w + b) * classes);
                }
                (layers, cells)
            }
        }
    }
}

fn bad(key: &str, message: impl Into<String>) -> Error {
    Error::Config { key: key.into(), message: message.into() }
}

impl Config {
    /// Parses TOML text; unknown keys and wrong types are errors that name the key.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| bad("toml", e.to_string().trim().to_string()))
    }

    /// Checks every value that does not depend on the data.
    pub fn check(&self) -> Result<()> {
        let d = &self.data;
        if !(d.train_fraction > 0.0 && d.train_fraction < 1.0) {
            return Err(bad("data.train-fraction", format!("must be in (0, 1), got {}", d.train_fraction)));
        }
        if d.dataset.trim().is_empty() {
            return Err(bad("data.dataset", "is empty: use \"iris\" or a CSV path"));
        }
        if crate::data::is_embedded(&d.dataset) && d.label_column.is_some() {
            return Err(bad(
                "data.label-column",
                format!("applies to CSV datasets only; the embedded {} has its label", d.dataset),
            ));
        }
        let t = &self.task;
        match &t.family {
            None if t.hidden.is_empty() => return Err(bad("task.hidden", "lists no architecture")),
            None => {
                if t.hidden.iter().flatten().any(|&w| w == 0) {
                    return Err(bad("task.hidden", "a hidden layer has width 0"));
                }
            }
            Some(f) => {
                if f.depths.is_empty() || f.depths.contains(&0) {
                    return Err(bad("task.family.depths", "needs one or more depths, each >= 1"));
                }
                if f.widths.is_empty() || f.widths.contains(&0) {
                    return Err(bad("task.family.widths", "needs one or more widths, each >= 1"));
                }
            }
        }
        let r = &self.rule;
        PerceptionSpec::new(&r.perception, 0).map_err(|e| match e {
            Error::Config { message, .. } => bad("rule.perception", message),
            other => other,
        })?;
        if r.hidden.contains(&0) {
            return Err(bad("rule.hidden", "a hidden layer has width 0"));
        }
        if !(r.output_scale > 0.0 && r.output_scale.is_finite()) {
            return Err(bad("rule.output-scale", format!("must be positive and finite, got {}", r.output_scale)));
        }
        if !(r.last_init >= 0.0 && r.last_init.is_finite()) {
            return Err(bad("rule.last-init", format!("must be >= 0 and finite, got {}", r.last_init)));
        }
        let g = &self.grow;
        if g.steps == 0 {
            return Err(bad("grow.steps", "must be >= 1"));
        }
        if !(g.fire_fraction > 0.0 && g.fire_fraction <= 1.0) {
            return Err(bad("grow.fire-fraction", format!("must be in (0, 1], got {}", g.fire_fraction)));
        }
        if g.batch_size == Some(0) {
            return Err(bad("grow.batch-size", "must be >= 1 (or unset: every training row)"));
        }
        self.train.check(g, &self.tasks)?;
        for (i, extra) in d.extra_datasets.iter().enumerate() {
            if extra.trim().is_empty() {
                return Err(bad("data.extra-datasets", format!("entry {i} is empty")));
            }
        }
        let ts = &self.tasks;
        ts.check()?;
        let (_, cells) = self.architectures(ts.features[1], ts.classes[1]).extent(t.bias);
        ts.check_index_bits(r.index_code.then_some(r.index_bits).flatten(), cells)?;
        Ok(())
    }

    /// The architectures for data with `features` inputs and `classes` outputs.
    pub fn architectures(&self, features: usize, classes: usize) -> Architectures {
        match &self.task.family {
            Some(f) => Architectures::Family { features, classes, depths: f.depths.clone(), widths: f.widths.clone() },
            None => Architectures::List(
                self.task
                    .hidden
                    .iter()
                    .map(|h| {
                        let mut s = vec![features];
                        s.extend(h);
                        s.push(classes);
                        s
                    })
                    .collect(),
            ),
        }
    }

    /// The hidden-state layout a new rule gets for networks of up to `layers` weight matrices
    /// and `cells` cells in one matrix.
    pub fn hidden_code(&self, (layers, cells): (usize, usize)) -> HiddenCode {
        let r = &self.rule;
        HiddenCode {
            layer_bits: r.layer_bits.unwrap_or_else(|| bits_for(layers)),
            index_bits: if r.index_code { r.index_bits.unwrap_or_else(|| bits_for(cells)) } else { 0 },
            extra: r.extra_channels,
            feedback: r.perception.iter().any(|g| g.needs().alignment),
        }
    }

    /// The perception and rule shape a new rule gets for hidden state layout `code`.
    pub fn rule_shape(&self, code: &HiddenCode) -> Result<(PerceptionSpec, RuleShape)> {
        let spec = PerceptionSpec::new(&self.rule.perception, code.dim())?;
        let shape = RuleShape {
            input: spec.width(),
            hidden: self.rule.hidden.clone(),
            output: spec.state_width(),
            activation: self.rule.activation,
            output_scale: self.rule.output_scale,
            last_init: self.rule.last_init,
            input_squash: self.rule.input_squash,
        };
        Ok((spec, shape))
    }

    /// Whether this config starts on the dead saddle: zero weights, no bias cells, a rule whose
    /// output is exactly zero, and a network with a hidden layer. Returns the reason if so.
    pub fn dead_saddle(&self, max_layers: usize) -> Option<String> {
        let deep = max_layers >= 2;
        (deep && !self.task.bias && self.task.weight_init == WeightInit::Zeros && self.rule.last_init == 0.0).then(
            || {
                "zero initial weights, no bias cells and a rule whose output starts at exactly zero: every \
             weight's effect on the loss passes through another zero weight, so the meta-gradient is \
             exactly zero (the dead saddle). Set task.bias = true, task.weight-init = \"xavier\" or \
             rule.last-init > 0"
                    .to_string()
            },
        )
    }

    /// Applies a `key=value` override, `key` dotted kebab-case (`train.lr=0.01`); the value is
    /// read as TOML (`[1, 2]`, `true`, `"x"`), bare words as strings.
    pub fn with_override(&self, assignment: &str) -> Result<Self> {
        let (key, value) =
            assignment.split_once('=').ok_or_else(|| bad(assignment, "an override must look like key=value"))?;
        let key = key.trim();
        let value_text = value.trim();
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value_text}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value_text.to_string()));
        let mut root = toml::Value::try_from(self).map_err(|e| bad(key, e.to_string()))?;
        let mut node = &mut root;
        let parts: Vec<&str> = key.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let table = node.as_table_mut().ok_or_else(|| bad(key, format!("'{part}' is not inside a table")))?;
            if i + 1 == parts.len() {
                table.insert((*part).to_string(), value.clone());
                break;
            }
            node = table.entry((*part).to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
        }
        let text = toml::to_string(&root).map_err(|e| bad(key, e.to_string()))?;
        Config::from_toml(&text).map_err(|e| match e {
            Error::Config { message, .. } => bad(key, message),
            other => other,
        })
    }

    /// The config as TOML text (what a run writes into its folder).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_check() {
        let c = Config::default();
        c.check().expect("defaults are valid");
        assert_eq!(Config::from_toml(&c.to_toml()).expect("round trip"), c);
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = Config::from_toml("[train]\nmeta-epoch = 3\n").expect_err("unknown key");
        assert!(err.to_string().contains("meta-epoch"), "{err}");
    }

    #[test]
    fn overrides() {
        let c = Config::default().with_override("train.lr=0.01").expect("valid");
        assert_eq!(c.train.lr, 0.01);
        let c = c.with_override("task.hidden=[[5, 5]]").expect("valid");
        assert_eq!(c.task.hidden, vec![vec![5, 5]]);
        let c = c.with_override("seed=7").expect("valid");
        assert_eq!(c.seed, 7);
        let c = c.with_override("data.dataset=iris").expect("valid");
        assert_eq!(c.data.dataset, "iris");
        assert!(c.with_override("train.nope=1").is_err());
        assert!(c.with_override("train.lr").is_err());
        assert!(c.with_override("train.lr=abc").is_err());
    }

    #[test]
    fn impossible_values() {
        for (k, v) in [
            ("grow.fire-fraction", "0"),
            ("grow.steps", "0"),
            ("train.num-models", "0"),
            ("train.lr", "-1"),
            ("data.train-fraction", "1.0"),
            ("rule.output-scale", "0"),
            ("rule.perception", "[\"self\", \"self\"]"),
            ("task.hidden", "[[0]]"),
            ("train.held-out", "0.95"),
            ("train.head-start", "{ fraction = 0, steps = [0, 10] }"),
            ("train.head-start", "{ fraction = 0.5, steps = [10, 5] }"),
            ("train.head-start", "{ fraction = 0.5, steps = [0, 0] }"),
        ] {
            let c = Config::default().with_override(&format!("{k}={v}")).expect("parses");
            let err = c.check().expect_err(k);
            assert!(err.to_string().contains(k), "{k}: {err}");
        }
    }

    #[test]
    fn family_extent_and_codes() {
        let mut c = Config::default();
        c.task.family = Some(FamilyConfig { depths: vec![1, 2, 3, 4, 5], widths: vec![2, 5, 10] });
        let a = c.architectures(4, 3);
        assert_eq!(a.extent(true), (5, 110));
        let code = c.hidden_code(a.extent(true));
        assert_eq!((code.layer_bits, code.index_bits), (3, 7));
        let mut rng = rand::rngs::mock::StepRng::new(0, 1 << 60);
        let s = a.sample(&mut rng);
        assert_eq!((s[0], s[s.len() - 1]), (4, 3));
    }

    #[test]
    fn dead_saddle_is_detected() {
        let mut c = Config::default();
        c.task.hidden = vec![vec![5]];
        c.task.bias = false;
        c.rule.last_init = 0.0;
        assert!(c.dead_saddle(2).is_some());
        c.task.bias = true;
        assert!(c.dead_saddle(2).is_none());
    }
}
