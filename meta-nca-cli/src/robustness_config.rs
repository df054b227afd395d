//! A robustness experiment as a TOML file (`configs/robustness-*.toml`) or as flags of
//! `meta-nca robustness`: both fill one struct, [`RobustnessConfig`]. Flags given on the
//! command line override the file's keys ([`RobustnessConfig::over`]);
//! [`RobustnessConfig::resolve`] fills what is still unset from the defaults and the run's
//! config, checks every value, and returns the [`Plan`] that runs and is copied into the run
//! folder (loadable again with `--config`).
//!
//! A new key (say `engine`) is a field here (and its line in `over`), a field in [`Plan`]
//! (and its default in `resolve`).

use std::path::Path;

use anyhow::{Context, Result, bail};
use meta_nca_rule::config::Config;
use serde::{Deserialize, Serialize};

use meta_nca_rule::engine::EngineKind;

use crate::actors::{EngineArg, ExecutorArg};
use crate::run_dir::Which;

/// What is done to the grown networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Damage {
    /// Remove a fraction of the connections (`fractions`, `mode`).
    Prune,
    /// Add hidden neurons to the first hidden layer (`neurons`).
    Neurons,
    /// Replace a fraction of the connections at every step (`rates`, `recover` steps).
    Churn,
}

/// Which connections a prune removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PruneModeArg {
    /// Uniformly at random.
    Random,
    /// The smallest |w| first.
    Magnitude,
}

impl PruneModeArg {
    /// Name in file names and tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::Magnitude => "magnitude",
        }
    }
}

/// One robustness experiment, from a TOML file or from flags; every key optional (unset:
/// the default in brackets, or the run's own value).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RobustnessConfig {
    /// The experiment [default: prune].
    #[arg(long, value_enum)]
    pub experiment: Option<Damage>,
    /// Prune: fractions of each network's connections to remove, comma-separated
    /// [default: 0.1,0.2,0.3,0.5].
    #[arg(long, value_delimiter = ',', value_name = "Q1,Q2,..")]
    pub fractions: Option<Vec<f64>>,
    /// Prune: which connections are removed [default: random].
    #[arg(long, value_enum)]
    pub mode: Option<PruneModeArg>,
    /// Neurons: numbers of hidden neurons added, comma-separated [default: 1,2].
    #[arg(long, value_delimiter = ',', value_name = "N1,N2,..")]
    pub neurons: Option<Vec<usize>>,
    /// Churn: fractions of the live connections replaced per step, comma-separated
    /// [default: 0.02,0.05,0.1].
    #[arg(long, value_delimiter = ',', value_name = "R1,R2,..")]
    pub rates: Option<Vec<f64>>,
    /// Rule steps after the damage; churn: churned steps [default: 10].
    #[arg(long)]
    pub recover: Option<usize>,
    /// Networks grown [default: 100].
    #[arg(long)]
    pub networks: Option<usize>,
    /// Prune: Adam epochs of the backprop baseline's fine-tune after pruning [default: 20].
    #[arg(long)]
    pub fine_tune: Option<usize>,
    /// Which checkpoint of the run [default: best].
    #[arg(long, value_enum)]
    pub checkpoint: Option<Which>,
    /// Grow steps before the damage [default: the run's grow.steps].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Firing fraction of every rule step [default: the run's grow.fire-fraction].
    #[arg(long = "p", value_name = "P")]
    pub fire_fraction: Option<f64>,
    /// Seed of the grows and of the damage [default: the run's seed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where the grows run: the batched reference path or the actor simulation (lockstep,
    /// one simulation per network) [default: reference].
    #[arg(long, value_enum)]
    pub engine: Option<EngineArg>,
    /// Actors: one task per cell, or shards [default: tasks].
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorArg>,
    /// Actors: shards of the shard executor [default: 2].
    #[arg(long)]
    pub shards: Option<usize>,
}

/// A resolved experiment: every key set and checked. Serialises to a TOML file that
/// [`RobustnessConfig::load`] reads back into the same plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Plan {
    /// The experiment.
    pub experiment: Damage,
    /// Prune: fractions of the connections removed, each in [0, 1].
    pub fractions: Vec<f64>,
    /// Prune: which connections.
    pub mode: PruneModeArg,
    /// Neurons: numbers of neurons added, each at least 1.
    pub neurons: Vec<usize>,
    /// Churn: fractions replaced per step, each in [0, 1].
    pub rates: Vec<f64>,
    /// Rule steps after the damage (churn: churned steps).
    pub recover: usize,
    /// Networks grown, at least 1.
    pub networks: usize,
    /// Prune: Adam epochs of the baseline's fine-tune.
    pub fine_tune: usize,
    /// Which checkpoint of the run.
    pub checkpoint: Which,
    /// Grow steps before the damage, at least 1.
    pub steps: usize,
    /// Firing fraction, in (0, 1].
    pub fire_fraction: f64,
    /// Seed of the grows and of the damage.
    pub seed: u64,
    /// Where the grows run.
    pub engine: EngineArg,
    /// Actors: the executor.
    pub executor: ExecutorArg,
    /// Actors: shards of the shard executor, at least 1.
    pub shards: usize,
}

impl RobustnessConfig {
    /// Reads a TOML file; unknown keys and values of the wrong type are errors naming the key.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading robustness config {}", path.display()))?;
        let config: Self = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim()))
            .with_context(|| format!("in robustness config {}", path.display()))?;
        Ok(config)
    }

    /// These keys where set, `file`'s elsewhere (flags over a config file).
    pub fn over(self, file: Self) -> Self {
        Self {
            experiment: self.experiment.or(file.experiment),
            fractions: self.fractions.or(file.fractions),
            mode: self.mode.or(file.mode),
            neurons: self.neurons.or(file.neurons),
            rates: self.rates.or(file.rates),
            recover: self.recover.or(file.recover),
            networks: self.networks.or(file.networks),
            fine_tune: self.fine_tune.or(file.fine_tune),
            checkpoint: self.checkpoint.or(file.checkpoint),
            steps: self.steps.or(file.steps),
            fire_fraction: self.fire_fraction.or(file.fire_fraction),
            seed: self.seed.or(file.seed),
            engine: self.engine.or(file.engine),
            executor: self.executor.or(file.executor),
            shards: self.shards.or(file.shards),
        }
    }

    /// Checks the keys that are set (before a run is loaded, so a bad file fails at once).
    pub fn check(&self) -> Result<()> {
        let unit = |key: &str, list: &Option<Vec<f64>>| -> Result<()> {
            match list {
                Some(list) if list.is_empty() => bail!("{key} (--{key}) must name at least one value"),
                Some(list) => match list.iter().find(|q| !(0.0..=1.0).contains(*q)) {
                    Some(q) => bail!("{key} (--{key}): {q} is not in [0, 1]"),
                    None => Ok(()),
                },
                None => Ok(()),
            }
        };
        unit("fractions", &self.fractions)?;
        unit("rates", &self.rates)?;
        if let Some(neurons) = self.neurons.as_ref().filter(|n| n.is_empty() || n.contains(&0)) {
            bail!("neurons (--neurons) must name at least one count, each >= 1; got {neurons:?}");
        }
        if self.networks == Some(0) {
            bail!("networks (--networks) must be at least 1");
        }
        if self.shards == Some(0) {
            bail!("shards (--shards) must be at least 1");
        }
        if self.steps == Some(0) {
            bail!("steps (--steps) must be at least 1");
        }
        if let Some(p) = self.fire_fraction.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            bail!("fire-fraction (--p) must be in (0, 1], got {p}");
        }
        Ok(())
    }

    /// The plan: the keys set here (checked), the defaults for the experiment's own keys,
    /// and the run's grow steps, firing fraction and seed (`run`, checked when it was loaded)
    /// for the rest.
    pub fn resolve(self, run: &Config) -> Result<Plan> {
        self.check()?;
        Ok(Plan {
            experiment: self.experiment.unwrap_or(Damage::Prune),
            fractions: self.fractions.unwrap_or_else(|| vec![0.1, 0.2, 0.3, 0.5]),
            mode: self.mode.unwrap_or(PruneModeArg::Random),
            neurons: self.neurons.unwrap_or_else(|| vec![1, 2]),
            rates: self.rates.unwrap_or_else(|| vec![0.02, 0.05, 0.1]),
            recover: self.recover.unwrap_or(10),
            networks: self.networks.unwrap_or(100),
            fine_tune: self.fine_tune.unwrap_or(20),
            checkpoint: self.checkpoint.unwrap_or(Which::Best),
            steps: self.steps.unwrap_or(run.grow.steps),
            fire_fraction: self.fire_fraction.unwrap_or(run.grow.fire_fraction),
            seed: self.seed.unwrap_or(run.seed),
            engine: self.engine.unwrap_or(EngineArg::Reference),
            executor: self.executor.unwrap_or(ExecutorArg::Tasks),
            shards: self.shards.unwrap_or(2),
        })
    }
}

impl Plan {
    /// Name of the files the experiment writes into the run folder, without extension:
    /// `robustness-prune-<mode>`, `robustness-neurons` or `robustness-churn` (`.csv`: the
    /// curves; `.toml`: this plan; prune also `-baseline.csv`).
    pub fn file_stem(&self) -> String {
        let stem = match self.experiment {
            Damage::Prune => format!("robustness-prune-{}", self.mode.name()),
            Damage::Neurons => "robustness-neurons".into(),
            Damage::Churn => "robustness-churn".into(),
        };
        match self.engine {
            EngineArg::Reference => stem,
            EngineArg::Actors => format!("{stem}-actors"),
        }
    }

    /// The engine the grows run on.
    pub fn engine_kind(&self) -> Box<dyn EngineKind> {
        crate::actors::engine_kind(self.engine, self.executor, self.shards, self.seed)
    }

    /// The keys this experiment uses (those of the other experiments, and the actor keys of a
    /// reference grow, left out): the body of [`Plan::to_toml`] and the `plan` of
    /// `robustness --json`.
    pub fn keys(&self) -> Result<toml::Table> {
        let mut table = toml::Table::try_from(self).context("writing the robustness config as TOML")?;
        let unused: &[&str] = match self.experiment {
            Damage::Prune => &["neurons", "rates"],
            Damage::Neurons => &["fractions", "mode", "rates", "fine-tune"],
            Damage::Churn => &["fractions", "mode", "neurons", "fine-tune"],
        };
        let reference_only: &[&str] = match self.engine {
            EngineArg::Reference => &["executor", "shards"],
            EngineArg::Actors => &[],
        };
        for key in unused.iter().chain(reference_only) {
            table.remove(*key);
        }
        Ok(table)
    }

    /// The plan as a TOML file for the run folder, headed by how it was made; the keys of the
    /// other experiments are left out.
    pub fn to_toml(&self, run: &Path) -> Result<String> {
        let body = toml::to_string(&self.keys()?).context("writing the robustness config as TOML")?;
        Ok(format!(
            "# The resolved robustness experiment run on {}, written by `meta-nca robustness`.\n\
             # Rerun it with\n\
             #   meta-nca robustness --run {} --config <this file>\n{body}",
            run.display(),
            run.display()
        ))
    }
}
