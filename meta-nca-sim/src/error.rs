//! The one error type of `meta-nca-sim`: every variant says what failed and where.

/// Everything that can go wrong in a simulation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the shared definitions (topology, encoding, checkpoint, ...).
    #[error(transparent)]
    Rule(#[from] meta_nca_rule::Error),
    /// The simulation was configured with an impossible value.
    #[error("simulation config: {key}: {message}")]
    Config {
        /// The offending setting.
        key: &'static str,
        /// Why it is rejected.
        message: String,
    },
    /// An actor panicked or stopped early; the simulation was cancelled instead of hanging.
    #[error("actor {actor} failed: {message}")]
    ActorFailed {
        /// Which actor (`cell 0:1:2`, `neuron 7`, `shard 3`, `rule service`).
        actor: String,
        /// What happened.
        message: String,
    },
    /// The tokio runtime could not be built.
    #[error("cannot start the tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
