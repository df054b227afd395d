//! The rule service: the one owner of the rule network. It runs on its own OS thread (the
//! forward pass is CPU-heavy and must not stall tokio's workers), collects queries into
//! explicit batches and answers each query on its `respond_to` oneshot.
//!
//! Batching: in lockstep the coordinator announces how many rows a step will ask for and the
//! service runs one forward pass per step; in async mode it runs when `max_rows` rows are
//! waiting or `deadline` has passed since the oldest waiting query.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use dfdx::prelude::*;
use meta_nca_rule::rule::RuleNet;
use tokio::sync::oneshot;

/// When the service runs a forward pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Batching {
    /// When all rows announced with [`RuleHandle::expect`] have arrived.
    Announced,
    /// When `max_rows` rows wait, or `deadline` after the oldest waiting query.
    CountOrDeadline {
        /// Rows that trigger a pass.
        max_rows: usize,
        /// Longest wait of a query.
        deadline: Duration,
    },
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
    /// Seconds spent in forward passes.
    pub forward_seconds: f64,
}

impl RuleStats {
    /// Mean rows per forward pass.
    pub fn mean_batch(&self) -> f64 {
        self.rows as f64 / self.batches.max(1) as f64
    }
}

enum RuleMsg {
    Expect { rows: usize },
    Query { rows: Vec<f64>, n: usize, respond_to: oneshot::Sender<Vec<f64>> },
}

/// The cloneable handle to the rule service; the service stops when every handle is dropped.
#[derive(Debug, Clone)]
pub struct RuleHandle {
    tx: mpsc::Sender<RuleMsg>,
}

impl std::fmt::Debug for RuleMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleMsg::Expect { rows } => write!(f, "Expect({rows})"),
            RuleMsg::Query { n, .. } => write!(f, "Query({n} rows)"),
        }
    }
}

impl RuleHandle {
    /// Starts the service on its own thread; join the returned handle for its statistics.
    pub fn spawn(rule: RuleNet, batching: Batching) -> std::io::Result<(Self, std::thread::JoinHandle<RuleStats>)> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("rule-service".into())
            .spawn(move || serve(rule, batching, rx))?;
        Ok((Self { tx }, thread))
    }

    /// Announces `rows` more rows for the current lockstep batch.
    pub fn expect(&self, rows: usize) {
        let _ = self.tx.send(RuleMsg::Expect { rows });
    }

    /// Queries `n` perception rows (row-major); the answer is `n` update rows. The receiver
    /// fails if the service is gone.
    pub fn query(&self, rows: Vec<f64>, n: usize) -> oneshot::Receiver<Vec<f64>> {
        let (respond_to, rx) = oneshot::channel();
        let _ = self.tx.send(RuleMsg::Query { rows, n, respond_to });
        rx
    }
}

struct Waiting {
    rows: Vec<f64>,
    n: usize,
    respond_to: oneshot::Sender<Vec<f64>>,
}

fn serve(rule: RuleNet, batching: Batching, rx: mpsc::Receiver<RuleMsg>) -> RuleStats {
    let dev = Cpu::default();
    let width = rule.shape.input;
    let out_width = rule.shape.output;
    let mut stats = RuleStats::default();
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut have = 0usize;
    let mut expected = 0usize;
    let mut oldest = Instant::now();
    let flush = |waiting: &mut Vec<Waiting>, have: &mut usize, stats: &mut RuleStats| {
        if *have == 0 {
            return;
        }
        let t = Instant::now();
        let mut x = Vec::with_capacity(*have * width);
        waiting.iter().for_each(|w| x.extend_from_slice(&w.rows));
        let input: Tensor<(usize, usize), f64, Cpu> = dev.tensor_from_vec(x, (*have, width));
        let y = rule.forward(input).as_vec();
        let mut at = 0;
        for w in waiting.drain(..) {
            let len = w.n * out_width;
            let _ = w.respond_to.send(y[at..at + len].to_vec());
            at += len;
        }
        stats.batches += 1;
        stats.rows += *have as u64;
        stats.max_batch = stats.max_batch.max(*have as u64);
        stats.forward_seconds += t.elapsed().as_secs_f64();
        *have = 0;
    };
    loop {
        let msg = match batching {
            Batching::CountOrDeadline { deadline, .. } if have > 0 => {
                match rx.recv_timeout(deadline.saturating_sub(oldest.elapsed())) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            _ => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            },
        };
        match msg {
            Some(RuleMsg::Expect { rows }) => expected += rows,
            Some(RuleMsg::Query { rows, n, respond_to }) => {
                if rows.len() != n * width {
                    continue; // a malformed query is dropped: its sender sees a closed reply
                }
                if have == 0 {
                    oldest = Instant::now();
                }
                have += n;
                waiting.push(Waiting { rows, n, respond_to });
            }
            None => flush(&mut waiting, &mut have, &mut stats),
        }
        match batching {
            Batching::Announced if expected > 0 && have >= expected => {
                expected -= have;
                flush(&mut waiting, &mut have, &mut stats);
            }
            Batching::CountOrDeadline { max_rows, deadline } if have >= max_rows || (have > 0 && oldest.elapsed() >= deadline) => {
                flush(&mut waiting, &mut have, &mut stats)
            }
            _ => {}
        }
    }
    flush(&mut waiting, &mut have, &mut stats);
    stats
}
