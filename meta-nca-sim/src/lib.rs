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
//! - [`cell`]: the cell agent (one connection `(l, i, j)`).
//! - [`neuron`]: the neuron aggregator (sums, forward pass, softmax error, backward messages).
//! - `coord`: the coordinator's inbox, what it collects, and its waits (both executors).
//! - [`world`]: the static description of one network and the shared context.
//! - [`rule_service`]: the rule network's owner, on its own thread, with explicit batching.
//! - `tasks`: the task-per-cell executor.
//! - `shards`: the shard executor with batched, pre-summed messages (`shards/io.rs`: its
//!   routing, queues and rule link).
//! - [`setup`]: what to grow (network, starting state, firing draws, rule) and the reference
//!   path's states on it.
//! - [`sim`]: how to run it ([`sim::run`]) and what came out.
//! - [`trace`]: which cells get a span and per-update events.
//! - [`engine`]: the simulation as an engine of `meta_nca_rule::engine` (one lockstep
//!   simulation per network), which the robustness experiments run on.
//! - [`synthetic`]: wide random networks for benchmarks, and the reference step's time on them.
//! - [`error`]: the crate's error type.

pub mod cell;
mod coord;
pub mod engine;
pub mod error;
pub mod neuron;
pub mod protocol;
pub mod rule_service;
pub mod setup;
mod shards;
pub mod sim;
pub mod synthetic;
mod tasks;
pub mod trace;
pub mod world;

pub use error::{Error, Result};
pub use sim::{AsyncSpec, Executor, Mode, Outcome, RunStats, Setup, SimSpec, Simulation, Snapshot, run};
