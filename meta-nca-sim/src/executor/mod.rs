//! The executors, which run the cells and neurons (`tasks`: a task per actor; `shards`: blocks
//! of actors per task), and what they share: what they start from ([`Parts`]), a topology
//! change as they apply it ([`Reshape`]), how their tasks are spawned ([`Spawner`]), the
//! coordinator's side of a run ([`Driver`], implemented by both) and the coordinator as an
//! actor ([`DriverHandle`]) that the simulation sends its requests to.

pub(crate) mod coord;
pub(crate) mod shards;
pub(crate) mod tasks;

use std::sync::Arc;

use meta_nca_rule::init::RowSource;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::instrument::WithSubscriber;

use crate::cell::Cell;
use crate::executor::coord::Collector;
use crate::neuron::Neuron;
use crate::outcome::Snapshot;
use crate::rule_service::RuleHandle;
use crate::trace::CellFilter;
use crate::world::World;
use crate::{Error, Result};

/// A topology change as the executors apply it: the new network, and for each of its cells
/// and neurons where it comes from.
pub(crate) struct Reshape {
    pub(crate) world: Arc<World>,
    /// Per cell of the new network: the old state row it continues, or a new cell's start.
    pub(crate) cells: Vec<RowSource>,
    /// Per neuron of the new network: the old neuron it continues, or `None`.
    pub(crate) neurons: Vec<Option<u32>>,
    /// The next round: the one new cells join at.
    pub(crate) round: u32,
}

/// Everything an executor needs to start.
pub(crate) struct Parts {
    pub(crate) world: Arc<World>,
    pub(crate) cells: Vec<Cell>,
    pub(crate) neurons: Vec<Neuron>,
    pub(crate) rule: RuleHandle,
    /// Async scheduling jitter.
    pub(crate) jitter: u32,
    /// [`SimSpec::rule_chunk`].
    pub(crate) chunk: usize,
    pub(crate) spawner: Spawner,
    pub(crate) collector: Collector,
    /// Seed of the cells' async clocks (new cells too).
    pub(crate) seed: u64,
    /// Which cells (new ones too) are traced.
    pub(crate) trace: CellFilter,
}

/// Spawns the actors of one run: every task is tracked, stops when the token is cancelled,
/// and runs under the run's tracing dispatcher when it has one.
#[derive(Clone)]
pub(crate) struct Spawner {
    pub(crate) tracker: TaskTracker,
    pub(crate) token: CancellationToken,
    dispatch: Option<tracing::Dispatch>,
}

impl Spawner {
    /// A spawner for a new run; its tasks run under `dispatch` when given.
    pub(crate) fn new(dispatch: Option<tracing::Dispatch>) -> Self {
        Self { tracker: TaskTracker::new(), token: CancellationToken::new(), dispatch }
    }

    /// Spawns a tracked task that ends when the run is cancelled (`None`) or on its own.
    pub(crate) fn spawn<F>(&self, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let token = self.token.clone();
        match &self.dispatch {
            Some(d) => {
                self.tracker.spawn(async move { token.run_until_cancelled(task).await }.with_subscriber(d.clone()))
            }
            None => self.tracker.spawn(async move { token.run_until_cancelled(task).await }),
        }
    }

    /// Spawns a tracked task that stops on its own (on a stop message); it is not wrapped in
    /// the cancellation token, which saves a lock per poll. It must watch the token itself
    /// wherever it awaits anything but its inbox.
    pub(crate) fn spawn_stoppable<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> JoinHandle<()> {
        match &self.dispatch {
            Some(d) => self.tracker.spawn(task.with_subscriber(d.clone())),
            None => self.tracker.spawn(task),
        }
    }

    /// Cancels every actor and waits for all of them to stop.
    pub(crate) async fn shutdown(&self) {
        self.tracker.close();
        self.token.cancel();
        self.tracker.wait().await;
    }
}

/// The coordinator's side of a run: what the simulation asks of an executor between its
/// calls. Both executors implement it; [`DriverHandle`] runs one as an actor.
pub(crate) trait Driver: Send + 'static {
    /// Async mode: starts every cell's clock and waits until every cell has finished.
    fn run_async(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// Lockstep: runs round `round`, firing the cells flagged in `fire`.
    fn step(&mut self, round: u32, fire: &[bool]) -> impl Future<Output = Result<()>> + Send;
    /// Between rounds: every cell's state row and every neuron's last summary; `last`: the
    /// run ends after it, so the cells hand their rows over.
    fn snapshot(&mut self, last: bool) -> impl Future<Output = Result<Snapshot>> + Send;
    /// Between rounds: moves to `reshape.world`; removed actors have ended when it returns.
    fn reshape(&mut self, reshape: Reshape) -> impl Future<Output = Result<()>> + Send;
    /// Stops every actor and hands over what was collected.
    fn finish(self) -> impl Future<Output = Result<Collector>> + Send;
}

/// A request to the coordinator actor, answered on `respond_to`.
pub(crate) enum DriverMsg {
    /// [`Driver::run_async`].
    RunAsync { respond_to: oneshot::Sender<Result<()>> },
    /// [`Driver::step`].
    Step { round: u32, fire: Vec<bool>, respond_to: oneshot::Sender<Result<()>> },
    /// [`Driver::snapshot`].
    Snapshot { last: bool, respond_to: oneshot::Sender<Result<Snapshot>> },
    /// [`Driver::reshape`].
    Reshape { reshape: Reshape, respond_to: oneshot::Sender<Result<()>> },
    /// [`Driver::finish`]; the actor ends after answering.
    Finish { respond_to: oneshot::Sender<Result<Collector>> },
}

/// The handle to the coordinator actor, a task on the simulation's runtime that owns the
/// executor's [`Driver`]: the simulation's thread only waits for each answer, while the
/// coordinator's many wake-ups stay inside the runtime's worker pool.
pub(crate) struct DriverHandle {
    tx: UnboundedSender<DriverMsg>,
}

impl DriverHandle {
    /// Spawns the coordinator actor owning `driver` (from inside the runtime). It is not one
    /// of the run's tracked tasks: it outlives their shutdown to report it.
    pub(crate) fn spawn(driver: impl Driver) -> Self {
        let (tx, rx) = unbounded_channel();
        tokio::spawn(tracing::Instrument::instrument(coordinate(driver, rx), tracing::debug_span!("coordinator")));
        Self { tx }
    }

    /// Sends the request `msg` makes and waits for its answer.
    pub(crate) async fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<Result<T>>) -> DriverMsg) -> Result<T> {
        let gone = || Error::ActorFailed { actor: "coordinator".into(), message: "stopped answering".into() };
        let (respond_to, answer) = oneshot::channel();
        self.tx.send(msg(respond_to)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// The coordinator actor: one request at a time, until [`DriverMsg::Finish`] (or until the
/// handle is gone, when it stops the actors all the same).
async fn coordinate(mut driver: impl Driver, mut inbox: UnboundedReceiver<DriverMsg>) {
    while let Some(msg) = inbox.recv().await {
        match msg {
            DriverMsg::RunAsync { respond_to } => drop(respond_to.send(driver.run_async().await)),
            DriverMsg::Step { round, fire, respond_to } => drop(respond_to.send(driver.step(round, &fire).await)),
            DriverMsg::Snapshot { last, respond_to } => drop(respond_to.send(driver.snapshot(last).await)),
            DriverMsg::Reshape { reshape, respond_to } => drop(respond_to.send(driver.reshape(reshape).await)),
            DriverMsg::Finish { respond_to } => return drop(respond_to.send(driver.finish().await)),
        }
    }
    let _ = driver.finish().await;
}

/// A topology change names an actor (`what` `index`) that is not there.
pub(crate) fn missing(what: &str, index: usize) -> Error {
    Error::ActorFailed {
        actor: format!("{what} {index}"),
        message: "a topology change names an actor that is not there".into(),
    }
}
