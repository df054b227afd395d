//! The one error type of `meta-nca-rule`: every variant names what was wrong and where.

use std::path::PathBuf;

/// Everything that can go wrong in the rule library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written (the I/O error is the `source`).
    #[error("{path}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A CSV table is malformed (ragged row, non-numeric cell, missing value, ...).
    #[error("{source_name}, line {line}: {message}")]
    Csv {
        /// The file name (or "embedded iris") the table came from.
        source_name: String,
        /// 1-based line number of the offending row (0 for whole-table problems).
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A dataset is unusable as a classification task (one class only, too few rows, ...).
    #[error("dataset {name}: {message}")]
    Dataset {
        /// The dataset name.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// A configuration value is impossible.
    #[error("config: {key}: {message}")]
    Config {
        /// The offending key, kebab-case as in the TOML file.
        key: String,
        /// Why the value is rejected.
        message: String,
    },
    /// A cell's layer or index does not fit the hidden-state encoding fixed when the rule was created.
    #[error(
        "cell (layer {layer}, index {index}) does not fit the hidden-state encoding ({layer_bits} layer bits, {index_bits} index bits); {}",
        overflow_hint(*layer, *index, *layer_bits)
    )]
    EncodingOverflow {
        /// The cell's layer.
        layer: usize,
        /// The cell's index within its layer.
        index: usize,
        /// Bits available for the layer code.
        layer_bits: usize,
        /// Bits available for the index code.
        index_bits: usize,
    },
    /// A topology operation names something that does not exist, or is otherwise impossible.
    #[error("topology: {0}")]
    Topology(String),
    /// A checkpoint is missing, corrupt, or does not match what it is loaded for.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An engine other than the reference path (the actor simulation) failed.
    #[error("engine {engine}: {message}")]
    Engine {
        /// Which engine.
        engine: String,
        /// What happened.
        message: String,
    },
    /// Meta-training cannot continue (zero or non-finite meta-gradient, dead network, ...).
    #[error("meta-training stopped at meta-epoch {epoch}: {message}")]
    Training {
        /// The meta-epoch at which training stopped.
        epoch: usize,
        /// Why.
        message: String,
    },
}

/// What to do about an [`Error::EncodingOverflow`]: the code widths are fixed when a rule is
/// created, so the fix is in the config of the training run.
fn overflow_hint(layer: usize, index: usize, layer_bits: usize) -> String {
    let needed = |v: usize| (usize::BITS - v.leading_zeros()) as usize;
    let layer_fits = layer_bits >= usize::BITS as usize || layer >> layer_bits == 0;
    if !layer_fits {
        return format!(
            "the code widths are fixed when a rule is trained: train it with rule.layer-bits = {} or more \
             (or unset, to fit the configured architectures)",
            needed(layer)
        );
    }
    format!(
        "the code widths are fixed when a rule is trained: train it with rule.index-bits = {} or more (or unset, to \
         fit the configured architectures), or with a layer-only code (rule.index-code = false), which grows \
         networks of any width",
        needed(index)
    )
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
