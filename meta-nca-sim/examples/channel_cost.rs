//! What one message costs between many tokio tasks, the floor of the task-per-cell executor:
//! `tasks` tasks, each with an unbounded inbox, pass `inflight` messages each along a fixed
//! permutation for `hops` hops (every hop is a send, a wake-up and a poll, as a cell-step's
//! messages are); each message carries `payload` floats in a fresh `Vec` (as reports and
//! drives do). Prints wall and CPU nanoseconds per message and how many cores were busy.
//!
//! `cargo run --release -p meta-nca-sim --example channel_cost -- [tasks] [workers] [hops] [inflight] [payload]`
//! (defaults `10000 2 50 1 8`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

/// Seconds of CPU this process has used (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let tick = |k: usize| fields.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (tick(11) + tick(12)) / 100.0
}

/// A message: hops left, and its payload.
type Hop = (usize, Vec<f64>);

fn main() {
    let arg = |k: usize, default: usize| std::env::args().nth(k).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (tasks, workers, hops, inflight, payload) = (arg(1, 10_000), arg(2, 2), arg(3, 50), arg(4, 1), arg(5, 8));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers.max(1)).build().expect("runtime");
    let chains = tasks * inflight;
    let (start, cpu0) = (Instant::now(), cpu_seconds());
    runtime.block_on(async {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..tasks).map(|_| unbounded_channel::<Hop>()).unzip();
        let txs: Arc<Vec<UnboundedSender<Hop>>> = Arc::new(txs);
        let finished = Arc::new(AtomicUsize::new(0));
        let (done_tx, mut done_rx) = unbounded_channel::<()>();
        for (i, mut rx) in rxs.into_iter().enumerate() {
            let (txs, finished, done_tx) = (txs.clone(), finished.clone(), done_tx.clone());
            tokio::spawn(async move {
                let next = (i * 7919 + 1) % tasks;
                while let Some((left, v)) = rx.recv().await {
                    if left == 0 {
                        if finished.fetch_add(1, Ordering::Relaxed) + 1 == chains {
                            let _ = done_tx.send(());
                        }
                        continue;
                    }
                    let v: Vec<f64> = v.iter().map(|x| x + 1.0).collect();
                    let _ = txs[next].send((left - 1, v));
                }
            });
        }
        for tx in txs.iter() {
            for _ in 0..inflight {
                let _ = tx.send((hops, vec![0.0; payload]));
            }
        }
        done_rx.recv().await;
    });
    let (wall, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let messages = (chains * hops) as f64;
    println!(
        "{tasks} tasks, {workers} workers, {inflight} in flight each, {payload} floats: {:.0} ns wall and {:.0} ns CPU per message, {:.2} cores busy, {:.2} M messages/s",
        wall * 1e9 / messages,
        cpu * 1e9 / messages,
        cpu / wall,
        messages / wall / 1e6
    );
}
