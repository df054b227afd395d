//! The shard executor: a few tokio tasks, each hosting a contiguous block of cells and every
//! `S`-th neuron, running the same cell and neuron code. Inside a shard a message is a push
//! on a local queue; between shards messages travel in batches, one per destination per
//! drain cycle, and reports and drives to the same neuron are summed on the way (every
//! aggregate is a sum). A neuron's broadcast crosses to each shard once and fans out there.
//! Inboxes are unbounded (no send ever waits, so no cycle can deadlock); rule answers come
//! back into the shard's own inbox through a small forwarding task.

mod io;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::cell::Cell;
use crate::neuron::Neuron;
use crate::protocol::{CellMsg, Fan};
use crate::rule_service::Answer;
use crate::sim::{Collector, Parts, RunStats};
use crate::tasks::{CoordMsg, FailGuard, receive};
use crate::Result;
use io::{Envelope, Io, Layout, Local, RuleLink, fan_slot, may_query};

/// A message between shards, or to a shard from the coordinator or the rule service.
#[derive(Debug)]
enum ShardMsg {
    /// Messages from another shard.
    Batch(Vec<Envelope>),
    /// Lockstep: begin `round`; `fire` holds every cell's flag.
    Begin { round: u32, fire: Arc<[bool]> },
    /// Async: start every cell's clock.
    Tick,
    /// The rule service's answers for `cells`, row after row.
    Rule { cells: Vec<u32>, answer: Answer },
}

struct Shard {
    lo: u32,
    cells: Vec<Cell>,
    /// Per global neuron and fan (`[in, out]`): this shard's cells on that fan.
    local_fans: HashMap<u32, [Vec<u32>; 2]>,
    neurons: HashMap<u32, Neuron>,
    io: Io,
}

impl Shard {
    fn ingest(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Batch(envelopes) => {
                for e in envelopes {
                    match e {
                        Envelope::Neuron(n, m) => self.io.queue.push_back(Local::Neuron(n, m)),
                        Envelope::Broadcast { neuron, fan, msg } => self.io.deliver_local(neuron, fan, msg),
                    }
                }
            }
            ShardMsg::Begin { round, fire } => {
                for c in &self.cells {
                    let f = fire[c.index as usize];
                    self.io.queue.push_back(Local::Cell(c.index, CellMsg::Begin { round, fire: f }));
                }
            }
            ShardMsg::Tick => {
                for c in &self.cells {
                    self.io.queue.push_back(Local::Cell(c.index, CellMsg::Tick));
                }
            }
            ShardMsg::Rule { cells, answer } => {
                self.io.in_flight -= cells.len();
                for (k, c) in cells.into_iter().enumerate() {
                    let row = (answer.first + k) as u32;
                    self.io.queue.push_back(Local::Cell(c, CellMsg::Update { block: answer.block.clone(), row }));
                }
            }
        }
    }

    /// Handles queued messages until none is left that the shard may handle now (held ones
    /// wait for rule answers).
    fn drain(&mut self) {
        let world = self.io.world.clone();
        let ctx = &world.ctx;
        loop {
            while let Some(item) = self.next() {
                self.handle(item, ctx);
            }
            self.io.flush_sums();
            if self.io.queue.is_empty() && (self.io.held.is_empty() || self.io.saturated()) {
                break;
            }
        }
    }

    /// The next message: held deliveries first once the shard may query again.
    fn next(&mut self) -> Option<Local> {
        if !self.io.held.is_empty() && !self.io.saturated() {
            return self.io.held.pop_front();
        }
        self.io.queue.pop_front()
    }

    fn handle(&mut self, item: Local, ctx: &crate::world::Ctx) {
        match item {
            Local::Cell(c, msg) => {
                if may_query(&msg) && self.io.saturated() {
                    self.io.held.push_back(Local::Cell(c, msg));
                } else {
                    self.cells[(c - self.lo) as usize].handle(msg, ctx, &mut self.io);
                }
            }
            Local::Fan { neuron, fan, msg, from } => {
                let Some(fans) = self.local_fans.get(&neuron) else { return };
                let gate = may_query(&msg);
                for (k, &c) in fans[fan_slot(fan)].iter().enumerate().skip(from as usize) {
                    if gate && self.io.saturated() {
                        // The rest of the fan waits, ahead of later held deliveries.
                        self.io.held.push_front(Local::Fan { neuron, fan, msg, from: k as u32 });
                        return;
                    }
                    self.cells[(c - self.lo) as usize].handle(msg.clone(), ctx, &mut self.io);
                }
            }
            Local::Neuron(n, msg) => {
                if let Some(neuron) = self.neurons.get_mut(&n) {
                    neuron.handle(msg, ctx, &mut self.io);
                }
            }
        }
    }
}

async fn shard_task(
    mut shard: Shard,
    mut rx: UnboundedReceiver<ShardMsg>,
    peers: Arc<Vec<UnboundedSender<ShardMsg>>>,
    coord: UnboundedSender<CoordMsg>,
    _guard: FailGuard,
) {
    loop {
        let msg = if shard.io.deferred.is_empty() {
            match rx.recv().await {
                Some(m) => Some(m),
                None => return,
            }
        } else {
            tokio::task::yield_now().await;
            rx.try_recv().ok()
        };
        if let Some(m) = msg {
            shard.ingest(m);
        }
        while let Ok(m) = rx.try_recv() {
            shard.ingest(m);
        }
        let io = &mut shard.io;
        io.deferred.retain_mut(|(wait, cell)| {
            *wait -= 1;
            if *wait == 0 {
                io.queue.push_back(Local::Cell(*cell, CellMsg::Tick));
            }
            *wait > 0
        });
        shard.drain();
        let io = &mut shard.io;
        for (s, out) in io.outboxes.iter_mut().enumerate() {
            if !out.is_empty() {
                let _ = peers[s].send(ShardMsg::Batch(std::mem::take(out)));
            }
        }
        io.ask_rule();
        if !io.done.is_empty() {
            let _ = coord.send(CoordMsg::DoneBatch(std::mem::take(&mut io.done)));
        }
        if io.stats.cell_steps > 0 {
            let (stats, finals) = (std::mem::take(&mut io.stats), std::mem::take(&mut io.finals));
            let _ = coord.send(CoordMsg::Progress { stats, finals });
        }
    }
}

/// Runs the simulation on `shards` shard tasks.
pub(crate) async fn run(parts: Parts, shards: usize) -> Result<Collector> {
    let Parts { world, cells, neurons, rule, fires, jitter, chunk, spawner, mut collector } = parts;
    let n = world.num_cells();
    let shards = shards.clamp(1, n.max(1));
    let bounds: Vec<u32> = (0..=shards).map(|s| (s * n / shards) as u32).collect();
    let mut layout = Layout { shards, bounds, fan_shards: Vec::new() };
    let mut local_fans: Vec<HashMap<u32, [Vec<u32>; 2]>> = vec![HashMap::new(); shards];
    for neuron in 0..world.num_neurons() as u32 {
        let mut per = [Vec::new(), Vec::new()];
        for fan in [Fan::In, Fan::Out] {
            for &c in world.fan(neuron, fan) {
                let s = layout.cell_shard(c);
                local_fans[s].entry(neuron).or_insert_with(|| [Vec::new(), Vec::new()])[fan_slot(fan)].push(c);
                if per[fan_slot(fan)].last() != Some(&(s as u16)) {
                    per[fan_slot(fan)].push(s as u16);
                }
            }
            per[fan_slot(fan)].sort_unstable();
            per[fan_slot(fan)].dedup();
        }
        layout.fan_shards.push(per);
    }
    let layout = Arc::new(layout);
    let token = spawner.token.clone();
    let (coord_tx, mut coord_rx) = unbounded_channel();
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..shards).map(|_| unbounded_channel()).unzip();
    let peers = Arc::new(txs);
    // Cut the blocks off the end, shrinking the rest each time, so that the cells are not held
    // twice while the shards are built.
    let mut cells = cells;
    let mut blocks: Vec<Vec<Cell>> = (0..shards)
        .rev()
        .map(|s| {
            let block = cells.split_off(layout.bounds[s] as usize);
            cells.shrink_to_fit();
            block
        })
        .collect();
    blocks.reverse();
    let mut neuron_sets: Vec<HashMap<u32, Neuron>> = (0..shards).map(|_| HashMap::new()).collect();
    for neuron in neurons {
        neuron_sets[layout.neuron_shard(neuron.index)].insert(neuron.index, neuron);
    }
    let parts = rxs.into_iter().zip(local_fans).zip(neuron_sets).zip(blocks);
    for (s, (((rx, fans), neurons), block)) in parts.enumerate() {
        let lo = layout.bounds[s];
        let io = Io {
            me: s,
            layout: layout.clone(),
            world: world.clone(),
            queue: VecDeque::new(),
            held: VecDeque::new(),
            in_flight: 0,
            outboxes: (0..shards).map(|_| Vec::new()).collect(),
            reports: HashMap::new(),
            drives: HashMap::new(),
            rule_cells: Vec::new(),
            rule_rows: Vec::new(),
            done: Vec::new(),
            record: collector.recording(),
            stats: RunStats::default(),
            finals: Vec::new(),
            deferred: Vec::new(),
            jitter,
            rng: (s as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            rule_link: RuleLink {
                rule: rule.clone(),
                me: peers[s].clone(),
                coord: coord_tx.clone(),
                actor: format!("shard {s}"),
                chunk,
            },
        };
        let shard = Shard { lo, cells: block, local_fans: fans, neurons, io };
        let guard = FailGuard { actor: format!("shard {s}"), coord: coord_tx.clone(), token: token.clone() };
        spawner.spawn(shard_task(shard, rx, peers.clone(), coord_tx.clone(), guard));
    }
    let result = async {
        if world.ctx.async_mode {
            peers.iter().for_each(|tx| {
                let _ = tx.send(ShardMsg::Tick);
            });
            while collector.finished < n {
                receive(&mut coord_rx, &mut collector).await?;
            }
        } else {
            for (round, fire) in fires.iter().enumerate() {
                rule.expect(fire.iter().filter(|&&f| f).count());
                let fire: Arc<[bool]> = fire.clone().into();
                for tx in peers.iter() {
                    let _ = tx.send(ShardMsg::Begin { round: round as u32, fire: fire.clone() });
                }
                let target = collector.stats.cell_steps + n as u64;
                while collector.stats.cell_steps < target {
                    receive(&mut coord_rx, &mut collector).await?;
                }
            }
        }
        Ok(())
    }
    .await;
    spawner.shutdown().await;
    result.map(|()| collector)
}
