//! `meta-nca inspect`: summarises a cell trace written by `--trace-json` (see [`crate::trace`]):
//! updates per cell, mean |dw|, the local error messages each cell received (when the
//! perception has them), and the staleness histogram.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Arguments of `meta-nca inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A JSON-lines trace written by `--trace-json`.
    file: PathBuf,
    /// Print at most this many cells (the rest are counted in the totals).
    #[arg(long, default_value_t = 40)]
    max_cells: usize,
}

#[derive(Default)]
struct PerCell {
    /// Its place `(i, j)` in its last event (it moves when neurons are removed or added).
    place: (u64, u64),
    /// Whether its place changed during the trace.
    moved: bool,
    rounds: u64,
    updates: u64,
    sum_abs_dw: f64,
    last_w: f64,
    max_staleness: u64,
    /// Sums over its rounds of the message features it received: `mean a·δ` and `mean δ`
    /// through the weights (`backward`), the same through the feedback weights (`alignment`).
    messages: Messages,
}

/// Sums of the message features of some events, and how many events carried each group.
#[derive(Default, Clone, Copy)]
struct Messages {
    back: (f64, f64),
    back_rounds: u64,
    align: (f64, f64),
    align_rounds: u64,
}

impl Messages {
    /// Adds the features of one event (its `back`/`delta`, `align`/`delta_fa` fields).
    fn add(&mut self, v: &Value) {
        let num = |k: &str| v.get(k).and_then(Value::as_f64);
        if let (Some(b), Some(d)) = (num("back"), num("delta")) {
            self.back = (self.back.0 + b, self.back.1 + d);
            self.back_rounds += 1;
        }
        if let (Some(a), Some(d)) = (num("align"), num("delta_fa")) {
            self.align = (self.align.0 + a, self.align.1 + d);
            self.align_rounds += 1;
        }
    }

    /// Mean `(a·δ, δ)` of each group over the rounds that carried it.
    fn means(&self) -> [Option<(f64, f64)>; 2] {
        let mean = |s: (f64, f64), n: u64| (n > 0).then(|| (s.0 / n as f64, s.1 / n as f64));
        [mean(self.back, self.back_rounds), mean(self.align, self.align_rounds)]
    }
}

/// `a·δ / δ` as a column, or `-` when the group is off.
fn column(m: Option<(f64, f64)>) -> String {
    m.map_or_else(|| "-".into(), |(ad, d)| format!("{ad:+.4}/{d:+.4}"))
}

/// Runs `meta-nca inspect`.
pub fn run(args: Args) -> Result<()> {
    let file = File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    // A cell is its layer and stable index (events without an index: its place `(i, j)`).
    let mut cells: BTreeMap<(u64, u64), PerCell> = BTreeMap::new();
    let mut staleness: BTreeMap<u64, u64> = BTreeMap::new();
    let mut steps = 0u64;
    let mut reader = BufReader::new(file);
    let mut raw = Vec::new();
    for n in 0.. {
        raw.clear();
        let read = reader.read_until(b'\n', &mut raw).with_context(|| format!("reading {}", args.file.display()))?;
        if read == 0 {
            break;
        }
        // A last line without its newline: the writer was stopped in the middle of it.
        let partial = raw.last() != Some(&b'\n');
        let parsed = std::str::from_utf8(&raw)
            .map_err(anyhow::Error::from)
            .and_then(|line| Ok((!line.trim().is_empty()).then(|| serde_json::from_str::<Value>(line)).transpose()?));
        let v = match parsed {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(_) if partial => {
                eprintln!(
                    "warning: {}, line {}: the last line is cut off (the run writing the trace was stopped?); \
                     read the {n} whole lines before it",
                    args.file.display(),
                    n + 1
                );
                break;
            }
            Err(e) => return Err(e).with_context(|| format!("{}, line {}: not JSON", args.file.display(), n + 1)),
        };
        let num = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .with_context(|| format!("{}, line {}: no integer field '{k}'", args.file.display(), n + 1))
        };
        let real = |k: &str| {
            v.get(k)
                .and_then(Value::as_f64)
                .with_context(|| format!("{}, line {}: no number field '{k}'", args.file.display(), n + 1))
        };
        let (layer, place) = (num("layer")?, (num("i")?, num("j")?));
        let key = (layer, v.get("index").and_then(Value::as_u64).unwrap_or(place.0 << 32 | place.1));
        let (step, stale, w, dw) = (num("step")?, num("staleness")?, real("w")?, real("dw")?);
        let fired = v.get("fired").and_then(Value::as_bool).unwrap_or(dw != 0.0);
        let c = cells.entry(key).or_default();
        c.moved |= c.rounds > 0 && c.place != place;
        c.place = place;
        c.rounds += 1;
        if fired {
            c.updates += 1;
            c.sum_abs_dw += dw.abs();
        }
        c.last_w = w;
        c.max_staleness = c.max_staleness.max(stale);
        c.messages.add(&v);
        *staleness.entry(stale).or_default() += 1;
        steps = steps.max(step + 1);
    }
    if cells.is_empty() {
        bail!("{} holds no cell update events", args.file.display());
    }
    let events: u64 = cells.values().map(|c| c.rounds).sum();
    let updates: u64 = cells.values().map(|c| c.updates).sum();
    let dw: f64 = cells.values().map(|c| c.sum_abs_dw).sum();
    // Written, not printed: a reader that stops early (`| head`) is an error `main` ends quietly.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: {} events, {} cells, {} steps", args.file.display(), events, cells.len(), steps)?;
    writeln!(out)?;
    let messages = cells.values().any(|c| c.messages.back_rounds + c.messages.align_rounds > 0);
    write!(
        out,
        "{:<12}{:>8}{:>9}{:>13}{:>12}{:>11}",
        "cell", "rounds", "updates", "mean |dw|", "final w", "max stale"
    )?;
    if messages {
        write!(out, "{:>22}{:>22}", "backward a·δ/δ", "alignment a·δ/δ")?;
    }
    writeln!(out)?;
    for ((l, _), c) in cells.iter().take(args.max_cells) {
        let mean = if c.updates == 0 { 0.0 } else { c.sum_abs_dw / c.updates as f64 };
        let (i, j) = c.place;
        write!(
            out,
            "{:<12}{:>8}{:>9}{:>13.6}{:>12.5}{:>11}",
            format!("{l}:{i}:{j}{}", if c.moved { "*" } else { "" }),
            c.rounds,
            c.updates,
            mean,
            c.last_w,
            c.max_staleness
        )?;
        if messages {
            let [back, align] = c.messages.means();
            write!(out, "{:>22}{:>22}", column(back), column(align))?;
        }
        writeln!(out)?;
    }
    if cells.len() > args.max_cells {
        writeln!(out, "... {} more cells", cells.len() - args.max_cells)?;
    }
    if cells.values().any(|c| c.moved) {
        writeln!(out, "* moved when neurons were removed or added (shown at its last place)")?;
    }
    if messages {
        writeln!(out, "a·δ/δ: the local error messages the cell received, mean over its rounds of the batch means")?;
        writeln!(out, "of a_pre·δ_post and of δ_post (through the weights: backward; through B: alignment)")?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "all cells: {updates} updates in {events} rounds ({:.1}% fired), mean |dw| {:.6}",
        100.0 * updates as f64 / events as f64,
        dw / updates.max(1) as f64
    )?;
    writeln!(out, "staleness histogram (rounds old: rounds)")?;
    let widest = staleness.values().copied().max().unwrap_or(1);
    for (k, count) in &staleness {
        let bar = "#".repeat(((40 * count).div_ceil(widest)) as usize);
        writeln!(out, "  {k:>3}: {count:>8}  {bar}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_columns_average_the_rounds_that_carried_them() {
        let mut m = Messages::default();
        m.add(&serde_json::json!({"back": 0.5, "delta": -1.0}));
        m.add(&serde_json::json!({"back": 1.5, "delta": 0.0, "align": 2.0, "delta_fa": 4.0}));
        m.add(&serde_json::json!({"w": 1.0}));
        assert_eq!(m.means(), [Some((1.0, -0.5)), Some((2.0, 4.0))]);
        assert_eq!(column(None), "-");
        assert_eq!(column(Some((0.25, -0.5))), "+0.2500/-0.5000");
    }
}
