//! Cell traces as JSON lines: the dispatcher that `--trace-json` puts under the actors,
//! tracing-subscriber's JSON formatter writing each cell event as one object per line with its
//! fields at the top level (`meta-nca inspect` reads what it writes).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use meta_nca_sim::trace::TARGET;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::MutexGuardWriter;
use tracing_subscriber::layer::{Layer, SubscriberExt};

/// An open JSON-lines trace file, flushed on demand.
pub type TraceFile = Arc<Mutex<BufWriter<File>>>;

/// The trace file as the formatter's writer: each event locks the file once and writes its
/// whole line, so lines from the simulation's threads never interleave.
struct Shared(TraceFile);

impl<'a> MakeWriter<'a> for Shared {
    type Writer = MutexGuardWriter<'a, BufWriter<File>>;

    fn make_writer(&'a self) -> Self::Writer {
        self.0.as_ref().make_writer()
    }
}

/// A dispatcher writing the cell events (target [`TARGET`]) to `path` (created or truncated),
/// and the file handle to flush when the run is over.
///
/// Each line holds the event's fields and its message (`"message": "update"`), nothing else: no
/// time, level, target or spans (the cell's span repeats fields the event already has). Numbers
/// are written by `serde_json`, so an `f64` reads back to the same bits.
pub fn dispatch(path: &Path) -> Result<(tracing::Dispatch, TraceFile)> {
    let file = File::create(path).with_context(|| format!("creating trace file {}", path.display()))?;
    let out: TraceFile = Arc::new(Mutex::new(BufWriter::new(file)));
    let lines = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_writer(Shared(out.clone()))
        .with_filter(filter_fn(|meta| meta.is_event() && meta.target() == TARGET));
    let subscriber = tracing_subscriber::registry().with(lines);
    Ok((tracing::Dispatch::new(subscriber), out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use serde_json::Value;

    use super::*;

    /// Only cell events are written, one object per line with the fields at the top level, and
    /// every `f64` reads back to the same bits (`inspect`'s statistics depend on it).
    #[test]
    fn cell_events_become_json_lines_with_exact_numbers() {
        let path = std::env::temp_dir().join(format!("meta-nca-trace-test-{}.jsonl", std::process::id()));
        let (dispatch, file) = dispatch(&path).expect("trace file");
        let values: [f64; 5] = [0.1 + 0.2, -1.0 / 3.0, 5e-324, 1.7976931348623157e308, 0.0];
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!(target: TARGET, "cell", layer = 1);
            let _enter = span.enter();
            for (step, w) in values.iter().enumerate() {
                tracing::info!(target: TARGET, step, layer = 1u64, w, fired = true, "update");
            }
            tracing::info!(target: "meta_nca_sim::other", step = 99, "not a cell event");
        });
        file.lock().expect("not poisoned").flush().expect("flush");
        let text = std::fs::read_to_string(&path).expect("read trace");
        let _ = std::fs::remove_file(&path);
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        assert_eq!(lines.len(), values.len(), "{text}");
        for (step, (line, w)) in lines.iter().zip(values).enumerate() {
            assert_eq!(line["step"], step as u64, "{line}");
            assert_eq!(line["layer"], 1, "{line}");
            assert_eq!(line["fired"], true, "{line}");
            assert_eq!(line["message"], "update", "{line}");
            assert_eq!(line["w"].as_f64().map(f64::to_bits), Some(w.to_bits()), "{line}");
        }
    }
}
