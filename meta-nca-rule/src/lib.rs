//! `meta-nca-rule`: the shared definitions of meta neural cellular automata (topology, cell
//! initialisation, perception, firing), the rule network, the batched differentiable
//! reference path and meta-training.
//!
//! # Layout
//! - [`topology`]: layer sizes, live connections, stable cell ids.
//! - [`init`]: a cell's starting weight and hidden-state code (bit widths fixed per rule).
//! - [`perception`]: the perception groups and [`perception::perceive`], their one definition.
//! - [`firing`]: which cells fire at a step.
//! - [`task`]: the task network's forward and reverse pass.
//! - [`batch`]: many networks flattened into one cell/neuron table.
//! - [`rule`]: the rule network (a dfdx MLP with a bounded output).
//! - [`reference`]: the batched, unrolled, differentiable grow on one dfdx tape.
//! - [`data`]: datasets (Iris embedded, CSV), stratified split, standardisation.
//! - [`error`]: the crate's error type.

pub mod batch;
pub mod data;
pub mod error;
pub mod firing;
pub mod init;
pub mod perception;
pub mod reference;
pub mod rule;
pub mod task;
pub mod topology;

pub use error::{Error, Result};
