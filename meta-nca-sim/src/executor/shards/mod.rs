//! The shard executor: a few tokio tasks, each hosting a contiguous block of cells and every
//! `S`-th neuron, running the same cell and neuron code. Inside a shard a message is a push
//! on a local queue; between shards messages travel in batches, one per destination per
//! drain cycle, and reports and drives to the same neuron are summed on the way (every
//! aggregate is a sum). A neuron's broadcast crosses to each shard once and fans out there.
//! Inboxes are unbounded (no send ever waits, so no cycle can deadlock); rule answers come
//! back into the shard's own inbox. Flow control: a shard has at most two chunks of rows at
//! the rule service and holds back the deliveries that would make more cells perceive until
//! answers come (see `io.rs`).
//!
//! Topology changes: between lockstep rounds every shard hands its cells and neurons back
//! to the [`ShardDriver`] and its task ends; removed cells and neurons are dropped (their slots
//! end with them), survivors are moved to their new places, new ones are made, and fresh
//! shard tasks take the blocks of the new network. Cells and neurons are the agents and live
//! on; a shard is only where they run.

mod io;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use meta_nca_rule::init::RowSource;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use crate::cell::Cell;
use crate::executor::coord::{Collector, CoordMsg, Coordinator, FailGuard};
use crate::executor::{Driver, Parts, Reshape, Spawner, missing};
use crate::neuron::Neuron;
use crate::outcome::{RunStats, Snapshot};
use crate::protocol::{CellMsg, Fan};
use crate::rule_service::{Answer, RuleHandle};
use crate::trace::CellFilter;
use crate::world::{Ctx, World};
use crate::{Error, Result};
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
    /// Between rounds: report the cells' state rows and the neurons' last summaries (`last`:
    /// the run is ending, the cells hand their rows over instead of copying them).
    Snapshot { last: bool },
    /// Between rounds: end, handing the cells and neurons back.
    Handover,
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
            ShardMsg::Snapshot { last } => {
                let row = |c: &mut Cell| if last { c.take_state() } else { c.state().to_vec() };
                let cells = self.cells.iter_mut().map(|c| (c.index, c.neurons(), c.feedback(), row(c))).collect();
                let neurons = self.neurons.values().map(|n| (n.index, n.last_summary().cloned())).collect();
                let stats = std::mem::take(&mut self.io.stats);
                let _ = self.io.rule_link.coord.send(CoordMsg::Snapshot { stats, cells, neurons });
            }
            // `shard_task` ends on a handover before ingesting it.
            ShardMsg::Handover => {}
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

    fn handle(&mut self, item: Local, ctx: &Ctx) {
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

/// Runs a shard until its inbox closes (`None`) or it is asked to hand its cells and
/// neurons back (`Some`).
async fn shard_task(
    mut shard: Shard,
    mut rx: UnboundedReceiver<ShardMsg>,
    peers: Arc<Vec<UnboundedSender<ShardMsg>>>,
    coord: UnboundedSender<CoordMsg>,
    _guard: FailGuard,
) -> Option<Shard> {
    loop {
        let msg = if shard.io.deferred.is_empty() {
            Some(rx.recv().await?)
        } else {
            tokio::task::yield_now().await;
            rx.try_recv().ok()
        };
        for m in msg.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            if let ShardMsg::Handover = m {
                return Some(shard);
            }
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

/// The coordinator's side of a shard simulation: the shard tasks and their inboxes.
pub(crate) struct ShardDriver {
    world: Arc<World>,
    shards: usize,
    peers: Arc<Vec<UnboundedSender<ShardMsg>>>,
    tasks: Vec<JoinHandle<Option<Option<Shard>>>>,
    coord: Coordinator,
    rule: RuleHandle,
    jitter: u32,
    /// Most rows a shard has at the rule service at once.
    chunk: usize,
    spawner: Spawner,
    /// Seed of new cells' clocks, and which of them are traced.
    seed: u64,
    trace: CellFilter,
}

impl ShardDriver {
    /// Spreads the cells and neurons over `shards` shard tasks.
    pub(crate) fn start(parts: Parts, shards: usize) -> Self {
        let Parts { world, cells, neurons, rule, jitter, chunk, spawner, collector, seed, trace } = parts;
        let mut driver = Self {
            world,
            shards,
            peers: Arc::new(Vec::new()),
            tasks: Vec::new(),
            coord: Coordinator::new(collector),
            rule,
            jitter,
            chunk,
            spawner,
            seed,
            trace,
        };
        driver.launch(cells, neurons);
        driver
    }

    /// Spawns shard tasks for `cells` (in the world's order) and `neurons`.
    fn launch(&mut self, cells: Vec<Cell>, neurons: Vec<Neuron>) {
        let world = &self.world;
        let n = world.num_cells();
        let shards = self.shards.clamp(1, n.max(1));
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
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..shards).map(|_| unbounded_channel()).unzip();
        self.peers = Arc::new(txs);
        // Cut the blocks off the end, shrinking the rest each time, so that the cells are not
        // held twice while the shards are built.
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
                backs: HashMap::new(),
                rule_cells: Vec::new(),
                rule_rows: Vec::new(),
                done: Vec::new(),
                record: self.coord.collector.recording(),
                stats: RunStats::default(),
                finals: Vec::new(),
                deferred: Vec::new(),
                jitter: self.jitter,
                rng: (s as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
                rule_link: RuleLink {
                    rule: self.rule.clone(),
                    me: self.peers[s].clone(),
                    coord: self.coord.sender(),
                    actor: format!("shard {s}"),
                    chunk: self.chunk,
                },
            };
            let shard = Shard { lo, cells: block, local_fans: fans, neurons, io };
            let guard = self.coord.guard(format!("shard {s}"), &self.spawner.token);
            let task = shard_task(shard, rx, self.peers.clone(), self.coord.sender(), guard);
            let task = tracing::Instrument::instrument(task, tracing::debug_span!("shard", index = s));
            self.tasks.push(self.spawner.spawn(task));
        }
    }

    /// Every shard's cells and neurons, its task ended.
    async fn collect(&mut self) -> Result<(Vec<Option<Cell>>, Vec<Option<Neuron>>)> {
        for tx in self.peers.iter() {
            let _ = tx.send(ShardMsg::Handover);
        }
        let mut cells: Vec<Option<Cell>> = (0..self.world.num_cells()).map(|_| None).collect();
        let mut neurons: Vec<Option<Neuron>> = (0..self.world.num_neurons()).map(|_| None).collect();
        for (s, task) in std::mem::take(&mut self.tasks).into_iter().enumerate() {
            let lost = |message: &str| Error::ActorFailed { actor: format!("shard {s}"), message: message.into() };
            let shard = match task.await {
                Ok(Some(Some(shard))) => shard,
                Ok(_) => return Err(lost("stopped before handing its cells back")),
                Err(e) => return Err(lost(&e.to_string())),
            };
            self.coord.drain()?;
            for cell in shard.cells {
                let c = cell.index as usize;
                cells[c] = Some(cell);
            }
            for (g, neuron) in shard.neurons {
                neurons[g as usize] = Some(neuron);
            }
        }
        Ok((cells, neurons))
    }
}

impl Driver for ShardDriver {
    async fn run_async(&mut self) -> Result<()> {
        for tx in self.peers.iter() {
            let _ = tx.send(ShardMsg::Tick);
        }
        self.coord.until_finished(self.world.num_cells()).await
    }

    async fn step(&mut self, round: u32, fire: &[bool]) -> Result<()> {
        let n = self.world.num_cells();
        if !self.coord.begin_round(n, fire, &self.rule) {
            return Ok(());
        }
        let fire: Arc<[bool]> = fire.into();
        for tx in self.peers.iter() {
            let _ = tx.send(ShardMsg::Begin { round, fire: fire.clone() });
        }
        self.coord.until_reported(n).await
    }

    async fn snapshot(&mut self, last: bool) -> Result<Snapshot> {
        self.coord.expect_snapshot(&self.world);
        for tx in self.peers.iter() {
            let _ = tx.send(ShardMsg::Snapshot { last });
        }
        self.coord.snapshot().await
    }

    /// The shards hand their cells and neurons back and end; removed ones are dropped,
    /// survivors moved, new ones made, and new shard tasks host the new network.
    async fn reshape(&mut self, reshape: Reshape) -> Result<()> {
        let Reshape { world, cells: sources, neurons: neuron_sources, round } = reshape;
        let (mut old_cells, mut old_neurons) = self.collect().await?;
        let mut cells = Vec::with_capacity(sources.len());
        for (c, source) in sources.into_iter().enumerate() {
            let c = c as u32;
            cells.push(match source {
                RowSource::Old(r) => {
                    let mut cell = old_cells.get_mut(r).and_then(Option::take).ok_or_else(|| missing("cell", r))?;
                    cell.place(&world, c);
                    cell
                }
                RowSource::New(row) => {
                    let traced = self.trace.matches(&world.cell_id(c));
                    Cell::new(&world, c, row, self.seed, traced).joining_at(round)
                }
            });
        }
        let mut neurons = Vec::with_capacity(neuron_sources.len());
        for (g, source) in neuron_sources.into_iter().enumerate() {
            let g = g as u32;
            neurons.push(match source {
                Some(prev) => {
                    let prev = prev as usize;
                    let mut neuron =
                        old_neurons.get_mut(prev).and_then(Option::take).ok_or_else(|| missing("neuron", prev))?;
                    neuron.place(&world, g);
                    neuron
                }
                None => Neuron::new(&world, g),
            });
        }
        // What is left of the old network was removed: it ends here.
        drop((old_cells, old_neurons));
        self.world = world;
        self.launch(cells, neurons);
        Ok(())
    }

    async fn finish(mut self) -> Result<Collector> {
        self.peers = Arc::new(Vec::new());
        self.spawner.shutdown().await;
        self.coord.drain()?;
        Ok(self.coord.collector)
    }
}
