//! The rule service: the one owner of the rule network. It runs on its own OS thread (the
//! forward pass is CPU-heavy and must not stall tokio's workers), collects queries into
//! explicit batches and answers each query on its `respond_to` oneshot.
//!
//! Batching: in lockstep the coordinator announces how many rows a step will ask for and the
//! service runs one forward pass per step; in async mode it runs when `max_rows` rows are
//! waiting or `deadline` has passed since the oldest waiting query.
//!
//! Threads: when the machine has more than one core, the service runs one thread per core
//! (at most [`MAX_THREADS`]), each taking whole passes from the shared inbox; every row's
//! answer is computed by the same operations whichever thread runs it
//! ([`meta_nca_rule::rule::ForwardPass`]), so the answers do not depend on the thread count.
//!
//! Cost: queries land in a shared inbox under a mutex, and the thread is woken only when a
//! batch is ready (or, in async mode, to start the deadline clock), not once per query. The
//! answers of a batch are one shared block ([`Answer`]: no allocation per query), handed back
//! to the runtime as one task that calls every query's [`Reply`], so waking the cells costs
//! in-runtime wake-ups, not one unpark per cell. A [`Reply`] is what the asker wants done with
//! its answer (a shard has it put into its inbox, without a forwarding task; a cell task
//! completes the oneshot it awaits).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use meta_nca_rule::rule::{ForwardPass, RuleNet};

/// Most threads the service runs forward passes on.
pub const MAX_THREADS: usize = 2;

/// When the service runs a forward pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Batching {
    /// When all rows announced with [`RuleHandle::expect`] have arrived, in passes of at
    /// most `chunk` rows (a pass starts as soon as `chunk` rows wait, which bounds memory).
    Announced {
        /// Rows that trigger a pass before the announced count is reached.
        chunk: usize,
    },
    /// When `max_rows` rows wait, or `deadline` after the oldest waiting query.
    CountOrDeadline {
        /// Rows that trigger a pass.
        max_rows: usize,
        /// Longest wait of a query.
        deadline: Duration,
    },
}

impl Batching {
    /// Most rows of one pass (`chunk`, `max_rows`): a pass takes at most this many, but always
    /// at least one query.
    fn limit(self) -> usize {
        match self {
            Batching::Announced { chunk } => chunk,
            Batching::CountOrDeadline { max_rows, .. } => max_rows,
        }
    }

    /// When a pass is due for `inbox`: `Some(ZERO)` now (every announced row came, or a full
    /// pass waits), `Some(left)` once the oldest waiting query's deadline passes, `None` not
    /// before more rows come.
    fn due_in(self, inbox: &Inbox) -> Option<Duration> {
        let announced =
            matches!(self, Batching::Announced { .. }) && inbox.expected > 0 && inbox.rows >= inbox.expected;
        match self {
            _ if announced || inbox.rows >= self.limit() => Some(Duration::ZERO),
            Batching::CountOrDeadline { deadline, .. } => inbox.oldest.map(|t| deadline.saturating_sub(t.elapsed())),
            Batching::Announced { .. } => None,
        }
    }

    /// Whether a service thread should wake for `inbox`: a pass is due, or the first query
    /// came and the deadline clock starts.
    fn wake(self, inbox: &Inbox) -> bool {
        match self.due_in(inbox) {
            Some(Duration::ZERO) => true,
            Some(_) => inbox.waiting.len() == 1,
            None => false,
        }
    }
}

/// What the service did, reported when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct RuleStats {
    /// Forward passes run.
    pub batches: u64,
    /// Rows (cell queries) answered.
    pub rows: u64,
    /// Largest batch.
    pub max_batch: u64,
    /// Seconds spent in forward passes (summed over the service's threads).
    pub forward_seconds: f64,
}

impl RuleStats {
    /// Adds another thread's statistics.
    fn add(&mut self, other: &RuleStats) {
        self.batches += other.batches;
        self.rows += other.rows;
        self.max_batch = self.max_batch.max(other.max_batch);
        self.forward_seconds += other.forward_seconds;
    }

    /// Mean rows per forward pass.
    pub fn mean_batch(&self) -> f64 {
        self.rows as f64 / self.batches.max(1) as f64
    }
}

/// The answer to one query: rows `first..first + n` of one forward pass's output, each
/// `[Δw, Δh..]`. Cloning shares the pass's block.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The whole pass's output, `[rows, width]`.
    pub block: Arc<[f64]>,
    /// The query's first row in the block.
    pub first: usize,
    /// The query's rows.
    pub n: usize,
}

/// Where the answer of a query goes: called once with `Some(answer)`, or with `None` if the
/// service fails or stops before answering (dropping an unanswered reply calls it with `None`,
/// so a panicking service is reported instead of leaving the asker waiting).
pub struct Reply(Option<Box<dyn FnOnce(Option<Answer>) + Send>>);

impl Reply {
    /// A reply that calls `f`.
    pub fn new(f: impl FnOnce(Option<Answer>) + Send + 'static) -> Self {
        Self(Some(Box::new(f)))
    }

    fn send(mut self, answer: Answer) {
        if let Some(f) = self.0.take() {
            f(Some(answer));
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(None);
        }
    }
}

struct Waiting {
    rows: Vec<f64>,
    n: usize,
    respond_to: Reply,
}

#[derive(Default)]
struct Inbox {
    waiting: Vec<Waiting>,
    rows: usize,
    expected: usize,
    oldest: Option<Instant>,
    handles: usize,
    /// [`RuleHandle::close`] was called.
    closed: bool,
}

struct Shared {
    inbox: Mutex<Inbox>,
    ready: Condvar,
    batching: Batching,
    width: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// See [`RuleHandle::close`].
    fn close(&self) {
        let dropped = {
            let mut inbox = self.lock();
            inbox.closed = true;
            inbox.rows = 0;
            inbox.oldest = None;
            std::mem::take(&mut inbox.waiting)
        };
        self.ready.notify_all();
        drop(dropped); // outside the lock: the replies run now
    }
}

/// The cloneable handle to the rule service; the service stops when every handle is dropped.
pub struct RuleHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RuleHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleHandle").field("batching", &self.shared.batching).finish()
    }
}

impl Clone for RuleHandle {
    fn clone(&self) -> Self {
        self.shared.lock().handles += 1;
        Self { shared: self.shared.clone() }
    }
}

impl Drop for RuleHandle {
    fn drop(&mut self) {
        let mut inbox = self.shared.lock();
        inbox.handles -= 1;
        if inbox.handles == 0 {
            self.shared.ready.notify_all();
        }
    }
}

impl RuleHandle {
    /// Starts the service on its own threads (one per core, at most [`MAX_THREADS`]); answers
    /// are completed on `runtime`. Join the returned handle for the service's statistics.
    pub fn spawn(
        rule: RuleNet,
        batching: Batching,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<(Self, std::thread::JoinHandle<RuleStats>)> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::spawn_on(rule, batching, runtime, cores.min(MAX_THREADS))
    }

    /// [`Self::spawn`] on `threads` threads (at least one).
    pub fn spawn_on(
        rule: RuleNet,
        batching: Batching,
        runtime: tokio::runtime::Handle,
        threads: usize,
    ) -> std::io::Result<(Self, std::thread::JoinHandle<RuleStats>)> {
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox { handles: 1, ..Inbox::default() }),
            ready: Condvar::new(),
            batching,
            width: rule.shape.input,
        });
        let inner = shared.clone();
        let thread = std::thread::Builder::new().name("rule-service".into()).spawn(move || {
            let _close = CloseOnPanic(&inner);
            let _span = tracing::debug_span!("rule service", threads).entered();
            let pass = rule.forward_pass();
            std::thread::scope(|scope| {
                let helpers: Vec<_> = (1..threads.max(1))
                    .map(|_| {
                        let (pass, inner, runtime) = (pass.clone(), &inner, runtime.clone());
                        scope.spawn(move || {
                            let _close = CloseOnPanic(inner);
                            serve(pass, inner, runtime)
                        })
                    })
                    .collect();
                let mut stats = serve(pass, &inner, runtime);
                for helper in helpers {
                    // A helper that panicked closed the inbox, which told every asker.
                    if let Ok(s) = helper.join() {
                        stats.add(&s);
                    }
                }
                tracing::debug!(
                    batches = stats.batches,
                    rows = stats.rows,
                    max_batch = stats.max_batch,
                    forward_seconds = stats.forward_seconds,
                    "rule service stopped"
                );
                stats
            })
        })?;
        Ok((Self { shared }, thread))
    }

    /// Drops every waiting query unanswered (their replies get `None`) and every later one,
    /// and lets the service stop: what a run calls when it ends, so that no actor waits for an
    /// answer that an unfinished batch would never give.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Announces `rows` more rows for the current lockstep batch.
    pub fn expect(&self, rows: usize) {
        let mut inbox = self.shared.lock();
        inbox.expected += rows;
        if self.shared.batching.wake(&inbox) {
            self.shared.ready.notify_one();
        }
    }

    /// Queries `n` perception rows (row-major); `respond_to` gets `n` update rows, or `None`
    /// if the service is gone or the query is malformed.
    pub fn query(&self, rows: Vec<f64>, n: usize, respond_to: Reply) {
        if rows.len() != n * self.shared.width {
            return; // dropping `respond_to` tells the asker
        }
        let mut inbox = self.shared.lock();
        if inbox.closed {
            drop(inbox);
            return;
        }
        if inbox.waiting.is_empty() {
            inbox.oldest = Some(Instant::now());
        }
        inbox.rows += n;
        inbox.waiting.push(Waiting { rows, n, respond_to });
        if self.shared.batching.wake(&inbox) {
            self.shared.ready.notify_one();
        }
    }
}

/// Closes the inbox if a service thread panics (a rule of the wrong shape, say), so that
/// every waiting and later query is answered with `None` instead of waiting for ever.
struct CloseOnPanic<'a>(&'a Shared);

impl Drop for CloseOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.close();
        }
    }
}

fn serve(mut pass: ForwardPass, shared: &Shared, runtime: tokio::runtime::Handle) -> RuleStats {
    let (width, out_width) = (pass.input(), pass.output());
    let mut stats = RuleStats::default();
    loop {
        let (mut batch, rows, last) = {
            let mut inbox = shared.lock();
            loop {
                if inbox.handles == 0 || inbox.closed {
                    break;
                }
                inbox = match shared.batching.due_in(&inbox) {
                    Some(Duration::ZERO) => break,
                    Some(left) => shared.ready.wait_timeout(inbox, left).unwrap_or_else(|e| e.into_inner()).0,
                    None => shared.ready.wait(inbox).unwrap_or_else(|e| e.into_inner()),
                };
            }
            let limit = shared.batching.limit();
            let (mut take, mut rows) = (0, 0);
            for w in &inbox.waiting {
                if take > 0 && rows + w.n > limit {
                    break;
                }
                rows += w.n;
                take += 1;
            }
            let batch: Vec<Waiting> = inbox.waiting.drain(..take).collect();
            inbox.expected = inbox.expected.saturating_sub(rows);
            inbox.rows -= rows;
            if inbox.waiting.is_empty() {
                inbox.oldest = None;
            } else if shared.batching.wake(&inbox) {
                shared.ready.notify_one(); // another thread may take the next pass
            }
            (batch, rows, (inbox.handles == 0 || inbox.closed) && inbox.waiting.is_empty())
        };
        if rows > 0 {
            let t = Instant::now();
            // A pass of one query (a shard's chunk) takes its rows without a copy.
            let input = if let [one] = batch.as_mut_slice() {
                std::mem::take(&mut one.rows)
            } else {
                let mut x = Vec::with_capacity(rows * width);
                batch.iter().for_each(|w| x.extend_from_slice(&w.rows));
                x
            };
            debug_assert_eq!(input.len(), rows * width);
            let mut block: Arc<[f64]> = std::iter::repeat_n(0.0, rows * out_width).collect();
            if let Some(out) = Arc::get_mut(&mut block) {
                pass.run(&input, out);
            }
            stats.batches += 1;
            stats.rows += rows as u64;
            stats.max_batch = stats.max_batch.max(rows as u64);
            stats.forward_seconds += t.elapsed().as_secs_f64();
            let answer = move || {
                let mut first = 0;
                for w in batch {
                    w.respond_to.send(Answer { block: block.clone(), first, n: w.n });
                    first += w.n;
                }
            };
            // Replying from a runtime task keeps the wake-ups inside the pool (if the runtime
            // is gone, the replies are dropped and tell their askers).
            runtime.spawn(async move { answer() });
        }
        if last {
            break;
        }
    }
    stats
}
