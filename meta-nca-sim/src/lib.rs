//! `meta-nca-sim`: the actor simulation of meta neural cellular automata on tokio. Every
//! weight of a task network is a cell agent that owns its weight and hidden state and learns
//! about its neighbourhood only through messages; neurons aggregate (every perception group
//! is a sum over a neuron's cells, so a cell reports to its two neurons and gets their
//! summaries back; the local error messages travel down the same way, cell to neuron to
//! cell); one rule service owns the rule network and answers batched queries.
//!
//! The cell and neuron code is written once, as message-driven state machines, and runs
//! unchanged under two executors (one task per cell; shards hosting blocks of cells) and in
//! two modes: `lockstep` (a barrier per step, the reference path's firing draws: it must
//! reproduce [`meta_nca_rule::reference::Grower`]) and `async` (every cell on its own clock,
//! using summaries up to `max_staleness` rounds old).
//!
//! # Layout
//! - [`protocol`]: the messages, summaries and the [`protocol::Outbox`] executors implement.
//! - [`world`]: the static description of one network and the context every actor reads.
//! - [`cell`]: the cell agent (one connection `(l, i, j)`), built and moved from the network.
//! - [`neuron`]: the neuron aggregator (sums, forward pass, softmax error, backward messages).
//! - [`rule_service`]: the rule network's owner, on its own thread, with explicit batching.
//! - `executor`: the two executors and what they share (start-up parts, topology changes,
//!   task spawning, the `Driver` trait and the coordinator actor that runs one);
//!   `executor/coord.rs`: the coordinator's inbox, what it collects and its waits;
//!   `executor/tasks.rs`: a task per cell and neuron; `executor/shards/`: shards with batched,
//!   pre-summed messages (`io.rs`: their routing, queues and rule link).
//! - [`setup`]: what to grow (network, starting state, firing draws, rule) and the reference
//!   path's states on it.
//! - `host`: the tokio runtime and rule service a simulation runs on, its own or shared by a
//!   batch of lockstep simulations.
//! - [`simulation`]: how to run it ([`SimSpec`]), the running [`Simulation`], and [`run`].
//! - [`outcome`]: what a run reports ([`Outcome`], [`RunStats`], [`Snapshot`]).
//! - [`trace`]: which cells get a span and per-update events.
//! - [`engine`]: the simulation as an engine of `meta_nca_rule::engine` (one lockstep
//!   simulation per network, all on one runtime and rule service), which the robustness
//!   experiments run on.
//! - [`synthetic`]: wide random networks for benchmarks, and the reference step's time on them.
//! - [`error`]: the crate's error type.
//! - `tests` (test builds only): the cell and neuron state machines driven through a
//!   recording outbox without a runtime, and a hand-driven lockstep grow against the
//!   reference path.

pub mod cell;
pub mod engine;
pub mod error;
mod executor;
mod host;
pub mod neuron;
pub mod outcome;
pub mod protocol;
pub mod rule_service;
pub mod setup;
pub mod simulation;
pub mod synthetic;
pub mod trace;
pub mod world;

#[cfg(test)]
mod tests;

pub use error::{Error, Result};
pub use outcome::{Outcome, RunStats, Snapshot};
pub use setup::Setup;
pub use simulation::{AsyncSpec, Executor, Mode, RULE_CHUNK, SimSpec, Simulation, run};
