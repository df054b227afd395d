//! `meta-nca-rule`: the shared definitions of meta neural cellular automata (topology, cell
//! initialisation, perception, firing), the rule network, the batched differentiable
//! reference path and meta-training.
//!
//! # Layout
//! Listed bottom-up: a module uses only modules listed before it (there are no import cycles).
//! - [`error`]: the crate's error type.
//! - [`random`]: seeded random streams ([`random::rng_for`]), the SplitMix64 hash, the normal draw.
//! - [`fused`]: fused ops on the dfdx tape with hand-written adjoints.
//! - [`optim`]: Adam and global-norm clipping.
//! - [`perception`]: the perception groups, what each needs computed, and
//!   [`perception::perceive`], their one definition.
//! - [`task`]: the task network's forward and reverse pass, and its local error messages.
//! - [`topology`]: layer sizes, live connections, stable cell ids, fixed feedback weights, and
//!   the changes between grow steps.
//! - [`data`]: datasets (Iris embedded, CSV), stratified split, standardisation.
//! - [`task_data`]: the rows a network is grown and scored on, and its loss and accuracy on them.
//! - [`rule`]: the rule network (a dfdx MLP with a bounded output); its `forward` submodule:
//!   the forward pass without tape (reused buffers, fused bias and activation); `tanh`: a
//!   vectorisable `tanh` for it.
//! - [`init`]: a cell's starting weight and hidden-state code (bit widths fixed per rule), and
//!   the state rows carried over a topology change.
//! - [`firing`]: which cells fire at a step.
//! - [`batch`]: many networks flattened into one cell/neuron table.
//! - [`config`]: the TOML experiment config, its sections (`[tasks]`, `[train]`, schedules)
//!   and its validation.
//! - [`baseline`]: the backprop-trained network every evaluation is compared to.
//! - [`generate`]: generated classification tasks (Gaussian mixtures, random teachers, XOR-like).
//! - [`experiment`]: a checked config with its tasks ([`experiment::TaskSource`]: datasets split
//!   and standardised) loaded.
//! - [`episode`]: the random draws of one grow, from a seed (and each step's minibatch rows).
//! - [`mixture`]: the tasks of one meta-epoch: datasets (optionally reshaped) and generated tasks.
//! - [`reference`](mod@reference): the batched, unrolled, differentiable grow on one dfdx tape (its
//!   `activity` submodule: activity statistics, messages and their adjoint).
//! - [`pool`]: partly grown networks carried across meta-epochs.
//! - [`engine`]: where a grow runs, step by step with topology changes (the reference path
//!   here; the actor simulation in `meta-nca-sim`).
//! - [`checkpoint`]: atomic safetensors checkpoints with metadata.
//! - [`eval`]: growing many networks with a trained rule; recorded single grows.
//! - [`robustness`]: damage a grown network and watch the rule repair it.
//! - [`continual`]: grows whose data changes (classes arrive, inputs drift), forgetting, and
//!   backprop on the same schedule (its `report` submodule: what was measured, the table).
//! - [`train`]: the meta-training loop (one meta-epoch at a time; `train/probe.rs`: the probes
//!   that pick the best rule, runnable on another thread).
//! - [`suite`]: the learning suite: held-out generated tasks and the embedded datasets, grown
//!   and compared with backprop, equal-step Adam and logistic regression.

pub mod baseline;
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod continual;
pub mod data;
pub mod engine;
pub mod episode;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod firing;
pub mod fused;
pub mod generate;
pub mod init;
pub mod mixture;
pub mod optim;
pub mod perception;
pub mod pool;
pub mod random;
pub mod reference;
pub mod robustness;
pub mod rule;
pub mod suite;
pub mod task;
pub mod task_data;
pub mod topology;
pub mod train;

pub use error::{Error, Result};
