//! Perception on the tape, the part that reads the task network's activity: the forward pass
//! of every network, its batch statistics and local error messages ([`Grower::activity`]), and
//! the hand-written adjoint that carries their gradients back to the state
//! ([`Grower::perceive_adjoint`]). The finite-difference test in `tests/` guards it.

use super::*;

/// One network's forward pass and backward messages in a step, kept for the adjoint.
pub(super) struct NetActivity {
    /// The dense masked weights.
    net: DenseNet<f64>,
    /// The forward pass on the grow data.
    act: Activity,
    /// Messages through the weights (`backward` on).
    back: Option<Vec<Vec<f64>>>,
    /// The dense feedback weights and the messages through them (`alignment` on).
    align: Option<(Dense, Vec<Vec<f64>>)>,
}

/// Per-layer dense matrices laid out like [`DenseNet::weights`].
type Dense = Vec<Vec<f64>>;

/// `m[r, :] += v[r] * k` for a neuron-major `[n, B]` matrix `m`.
pub(super) fn broadcast_mean(m: &mut [f64], n: usize, v: &[f64], k: f64) {
    let batch = m.len() / n.max(1);
    for (row, v) in m.chunks_exact_mut(batch.max(1)).zip(v) {
        row.iter_mut().for_each(|o| *o += v * k);
    }
}

/// One network's share of an [`ActivityStats`]: every vector's entries for the network's
/// neurons (from global neuron `neuron0` on) and cells (from global cell `cell0` on), so
/// that networks can fill their statistics side by side.
struct NetStats<'a> {
    neuron0: usize,
    cell0: usize,
    act: &'a mut [f64],
    pre_act: &'a mut [f64],
    err: &'a mut [f64],
    delta: &'a mut [f64],
    delta_fa: &'a mut [f64],
    hebb_z: &'a mut [f64],
    hebb_e: &'a mut [f64],
    back: &'a mut [f64],
    align: &'a mut [f64],
}

/// The first `n` entries of `rest`, which keeps the others.
fn split_off<'a>(rest: &mut &'a mut [f64], n: usize) -> &'a mut [f64] {
    let (head, tail) = std::mem::take(rest).split_at_mut(n);
    *rest = tail;
    head
}

impl ActivityStats {
    /// Every network's share, in network order.
    fn by_net(&mut self, batch: &Batch) -> Vec<NetStats<'_>> {
        let Self { act, pre_act, err, hebb_z, hebb_e, delta, delta_fa, back, align } = self;
        let (mut act, mut pre_act, mut err, mut delta, mut delta_fa) =
            (&mut act[..], &mut pre_act[..], &mut err[..], &mut delta[..], &mut delta_fa[..]);
        let (mut hebb_z, mut hebb_e, mut back, mut align) =
            (&mut hebb_z[..], &mut hebb_e[..], &mut back[..], &mut align[..]);
        (0..batch.num_nets())
            .map(|n| {
                let (neuron0, neuron1) = batch.net_neurons(n);
                let (cell0, cell1) = batch.net_cells(n);
                let (g, c) = (neuron1 - neuron0, cell1 - cell0);
                NetStats {
                    neuron0,
                    cell0,
                    act: split_off(&mut act, g),
                    pre_act: split_off(&mut pre_act, g),
                    err: split_off(&mut err, g),
                    delta: split_off(&mut delta, g),
                    delta_fa: split_off(&mut delta_fa, g),
                    hebb_z: split_off(&mut hebb_z, c),
                    hebb_e: split_off(&mut hebb_e, c),
                    back: split_off(&mut back, c),
                    align: split_off(&mut align, c),
                }
            })
            .collect()
    }
}

/// Cells times grow rows from which [`Grower::activity`] shares the networks among the
/// machine's cores.
const PARALLEL_WORK: usize = 1 << 22;

impl Grower {
    /// Activity statistics of every network in `state` (zeros when the perception needs none),
    /// and the networks with their activity and messages for the adjoint. Networks are
    /// independent, so with enough work they run on all cores, each thread taking a
    /// contiguous run of networks: the same bits on any number of threads.
    pub(super) fn activity(&self, state: &[f64]) -> (ActivityStats, Vec<NetActivity>) {
        let mut stats = ActivityStats::zeros(&self.batch);
        if !self.spec.needs().activity {
            return (stats, Vec::new());
        }
        let nets = self.batch.num_nets();
        let work = self.batch.num_cells() * self.data.y.len();
        let threads = if work >= PARALLEL_WORK && nets > 1 {
            std::thread::available_parallelism().map_or(1, |n| n.get()).min(nets)
        } else {
            1
        };
        let mut parts = stats.by_net(&self.batch);
        let out = if threads == 1 {
            parts.iter_mut().enumerate().map(|(n, part)| self.net_activity(n, state, part)).collect()
        } else {
            let per = nets.div_ceil(threads);
            std::thread::scope(|scope| {
                let handles: Vec<_> = parts
                    .chunks_mut(per)
                    .enumerate()
                    .map(|(t, chunk)| {
                        scope.spawn(move || {
                            let first = t * per;
                            chunk
                                .iter_mut()
                                .enumerate()
                                .map(|(k, part)| self.net_activity(first + k, state, part))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                    .collect()
            })
        };
        (stats, out)
    }

    /// Network `n`'s forward pass, statistics (into `out`) and messages.
    fn net_activity(&self, n: usize, state: &[f64], out: &mut NetStats<'_>) -> NetActivity {
        let needs = self.spec.needs();
        let net = self.batch.dense_net(n, state, self.spec.state_width());
        let act = task::forward(&net, &self.data.x, Some(&self.data.y));
        let inv = 1.0 / act.batch.max(1) as f64;
        let nl = net.num_layers();
        let g0 = out.neuron0;
        for k in 0..nl {
            let (rows, cols) = (net.rows(k), net.cols(k));
            let first = self.batch.neuron(n, k, 0) - g0;
            out.act[first..first + rows].copy_from_slice(&task::means(&act.acts[k], rows));
            let next = self.batch.neuron(n, k + 1, 0) - g0;
            out.pre_act[next..next + cols].copy_from_slice(&task::means(&act.pre[k], cols));
            if needs.hebbian {
                let hz = task::at_z(&act.acts[k], rows, &act.pre[k], cols);
                self.scatter_cells(n, k, &hz, inv, out.cell0, out.hebb_z);
                if k + 1 == nl {
                    let he = task::at_z(&act.acts[k], rows, &act.err, cols);
                    self.scatter_cells(n, k, &he, inv, out.cell0, out.hebb_e);
                }
            }
        }
        let c = net.classes();
        let last = self.batch.neuron(n, nl, 0) - g0;
        out.err[last..last + c].copy_from_slice(&task::means(&act.err, c));
        let back = needs.backward.then(|| {
            let msgs = task::messages(&net, &act, &net.weights);
            self.message_stats(n, &net, &act, &msgs, (g0, out.cell0), out.delta, out.back);
            msgs
        });
        let align = needs.alignment.then(|| {
            let fb = self.batch.dense_feedback(n);
            let msgs = task::messages(&net, &act, &fb);
            self.message_stats(n, &net, &act, &msgs, (g0, out.cell0), out.delta_fa, out.align);
            (fb, msgs)
        });
        NetActivity { net, act, back, align }
    }

    /// Writes `dense[pre, post] * k` (a `[rows, cols]` matrix of weight matrix `layer` of network
    /// `n`) into `per_cell` (whose first entry is global cell `cell0`) at every live cell of
    /// that matrix.
    fn scatter_cells(&self, n: usize, layer: usize, dense: &[f64], k: f64, cell0: usize, per_cell: &mut [f64]) {
        let (start, end) = self.batch.net_cells(n);
        let cols = self.batch.topologies()[n].cols(layer);
        let slots = &self.batch.cells()[start..end];
        for (slot, v) in slots.iter().zip(&mut per_cell[start - cell0..end - cell0]) {
            if slot.id.layer == layer {
                *v = dense[slot.id.pre * cols + slot.id.post] * k;
            }
        }
    }

    /// The inverse of [`Self::scatter_cells`] over every layer: dense `[rows, cols]` matrices
    /// holding `per_cell * k` at the live cells of network `n`, 0 elsewhere.
    fn gather_cells(&self, n: usize, per_cell: &[f64], k: f64) -> Vec<Vec<f64>> {
        self.batch.dense(n, |c| per_cell[c] * k)
    }

    /// Batch statistics of one message wave: each neuron's mean message, each cell's mean
    /// `a_pre * δ_post`; `delta` and `corr` start at global neuron and cell `first`.
    #[allow(clippy::too_many_arguments)]
    fn message_stats(
        &self,
        n: usize,
        net: &DenseNet<f64>,
        act: &Activity,
        msgs: &[Vec<f64>],
        first: (usize, usize),
        delta: &mut [f64],
        corr: &mut [f64],
    ) {
        let inv = 1.0 / act.batch.max(1) as f64;
        for (k, m) in msgs.iter().enumerate() {
            let (rows, cols) = (net.rows(k), net.cols(k));
            let next = self.batch.neuron(n, k + 1, 0) - first.0;
            delta[next..next + cols].copy_from_slice(&task::means(m, cols));
            self.scatter_cells(n, k, &task::at_z(&act.acts[k], rows, m, cols), inv, first.1, corr);
        }
    }

    /// The adjoint of [`Self::message_stats`] and of the messages: gradients `g_delta` (per
    /// neuron) and `g_corr` (per cell) of the statistics, pushed into `grad` (activations and
    /// the error) and, for messages through the weights, into `dw`.
    #[allow(clippy::too_many_arguments)]
    fn message_grad(
        &self,
        n: usize,
        na: &NetActivity,
        fb: &[Vec<f64>],
        msgs: &[Vec<f64>],
        (g_delta, g_corr): (&[f64], &[f64]),
        grad: &mut ActivityGrad,
        dw: Option<&mut [Vec<f64>]>,
    ) {
        let (net, act) = (&na.net, &na.act);
        let inv = 1.0 / act.batch.max(1) as f64;
        let gc = self.gather_cells(n, g_corr, inv);
        let mut gm = Vec::with_capacity(msgs.len());
        for (k, m) in msgs.iter().enumerate() {
            let (rows, cols) = (net.rows(k), net.cols(k));
            let next = self.batch.neuron(n, k + 1, 0);
            let mut g = vec![0.0; m.len()];
            broadcast_mean(&mut g, cols, &g_delta[next..next + cols], inv);
            task::add_a_g(&mut g, cols, &act.acts[k], rows, &gc[k]);
            if k > 0 {
                task::add_z_gt(&mut grad.d_acts[k], rows, m, cols, &gc[k]);
            }
            gm.push(g);
        }
        task::messages_adjoint(net, act, fb, msgs, gm, grad, dw);
    }

    /// Adds the dense weight gradient `dw` of network `n` to the `w` column of `ds`.
    pub(super) fn scatter_weight_grad(&self, n: usize, dw: &[Vec<f64>], ds: &mut [f64]) {
        let s = self.spec.state_width();
        let (start, end) = self.batch.net_cells(n);
        let t = &self.batch.topologies()[n];
        for cell in start..end {
            let id = self.batch.cells()[cell].id;
            ds[cell * s] += dw[id.layer][id.pre * t.cols(id.layer) + id.post];
        }
    }

    /// The adjoint of [`Self::perceive`]: d loss / d state from d loss / d perception.
    pub(super) fn perceive_adjoint(&self, acts: &[NetActivity], dp: &[f64]) -> Vec<f64> {
        let s = self.spec.state_width();
        let f = self.spec.width();
        let nn = self.batch.num_neurons();
        let nc = self.batch.num_cells();
        let (in_count, out_count) = self.batch.counts();
        let mut ds = vec![0.0; nc * s];
        // Gradient to broadcast to every cell into (gin) / out of (gout) a neuron.
        let mut gin = vec![0.0; nn * s];
        let mut gout = vec![0.0; nn * s];
        let mut g = ActivityStats::zeros(&self.batch);
        for (c, slot) in self.batch.cells().iter().enumerate() {
            let counts = Counts {
                pre_in: in_count[slot.pre],
                pre_out: out_count[slot.pre],
                post_in: in_count[slot.post],
                post_out: out_count[slot.post],
            };
            perceive_adjoint(&self.spec, counts, &dp[c * f..(c + 1) * f], |input, v| match input {
                Input::State(k) => ds[c * s + k] += v,
                Input::PreInSum(k) => gin[slot.pre * s + k] += v,
                Input::PreOutSum(k) => gout[slot.pre * s + k] += v,
                Input::PostInSum(k) => gin[slot.post * s + k] += v,
                Input::PostOutSum(k) => gout[slot.post * s + k] += v,
                Input::PreAct => g.act[slot.pre] += v,
                Input::PostPreAct => g.pre_act[slot.post] += v,
                Input::PostErr => g.err[slot.post] += v,
                Input::PostDelta => g.delta[slot.post] += v,
                Input::PostDeltaFa => g.delta_fa[slot.post] += v,
                Input::HebbZ => g.hebb_z[c] += v,
                Input::HebbE => g.hebb_e[c] += v,
                Input::Back => g.back[c] += v,
                Input::Align => g.align[c] += v,
            });
        }
        // A neuron's state sums are sums over its cells: their gradient reaches each of them.
        for (c, slot) in self.batch.cells().iter().enumerate() {
            for k in 0..s {
                ds[c * s + k] += gin[slot.post * s + k] + gout[slot.pre * s + k];
            }
        }
        for (n, na) in acts.iter().enumerate() {
            let mut grad = self.activity_grad(n, &na.net, &na.act, &g);
            let mut direct: Vec<Vec<f64>> = na.net.weights.iter().map(|w| vec![0.0; w.len()]).collect();
            if let Some(msgs) = &na.back {
                let stats = (&g.delta[..], &g.back[..]);
                self.message_grad(n, na, &na.net.weights, msgs, stats, &mut grad, Some(&mut direct));
            }
            if let Some((fb, msgs)) = &na.align {
                self.message_grad(n, na, fb, msgs, (&g.delta_fa, &g.align), &mut grad, None);
            }
            let mut dw = task::backward(&na.net, &na.act, grad);
            dw.iter_mut().flatten().zip(direct.iter().flatten()).for_each(|(d, v)| *d += v);
            self.scatter_weight_grad(n, &dw, &mut ds);
        }
        ds
    }

    /// Per-sample gradients of network `n`'s activity from gradients `g` of its statistics.
    fn activity_grad(&self, n: usize, net: &DenseNet<f64>, act: &Activity, g: &ActivityStats) -> ActivityGrad {
        let mut grad = ActivityGrad::zeros_like(act);
        let inv = 1.0 / act.batch.max(1) as f64;
        let nl = net.num_layers();
        let broadcast = |m: &mut [f64], n: usize, v: &[f64]| broadcast_mean(m, n, v, inv);
        // Dense per-layer gradients of the Hebbian statistics, [rows, cols] (`hebb_e` is 0
        // off the output layer).
        let gz = self.gather_cells(n, &g.hebb_z, inv);
        let ge = self.gather_cells(n, &g.hebb_e, inv).swap_remove(nl - 1);
        // One index runs over the layers' shapes, activations and gradients together.
        #[allow(clippy::needless_range_loop)]
        for k in 0..nl {
            let (rows, cols) = (net.rows(k), net.cols(k));
            if k > 0 {
                // Inputs and the bias column are constants: only hidden layers take a gradient.
                let first = self.batch.neuron(n, k, 0);
                let mut v = g.act[first..first + rows].to_vec();
                if net.bias {
                    v[rows - 1] = 0.0;
                }
                broadcast(&mut grad.d_acts[k], rows, &v);
                task::add_z_gt(&mut grad.d_acts[k], rows, &act.pre[k], cols, &gz[k]);
                if k + 1 == nl {
                    task::add_z_gt(&mut grad.d_acts[k], rows, &act.err, cols, &ge);
                }
            }
            let next = self.batch.neuron(n, k + 1, 0);
            broadcast(&mut grad.d_pre[k], cols, &g.pre_act[next..next + cols]);
            task::add_a_g(&mut grad.d_pre[k], cols, &act.acts[k], rows, &gz[k]);
        }
        let c = net.classes();
        let last = self.batch.neuron(n, nl, 0);
        broadcast(&mut grad.d_err, c, &g.err[last..last + c]);
        task::add_a_g(&mut grad.d_err, c, &act.acts[nl - 1], net.rows(nl - 1), &ge);
        grad
    }
}
