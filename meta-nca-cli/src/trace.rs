//! Cell traces as JSON lines: the writer, a `tracing` layer that `--trace-json` puts under the
//! actors (`meta-nca inspect` reads what it writes).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use meta_nca_sim::trace::TARGET;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context as LayerContext, Layer, SubscriberExt};

/// An open JSON-lines trace file, flushed on demand.
pub type TraceFile = Arc<Mutex<std::io::BufWriter<std::fs::File>>>;

/// A layer that writes every event of target [`TARGET`] as one JSON object per line.
pub struct JsonLines {
    out: TraceFile,
}

struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), serde_json::json!(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

impl<S: tracing::Subscriber> Layer<S> for JsonLines {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: LayerContext<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{}", Value::Object(fields.0));
        }
    }
}

impl JsonLines {
    /// A dispatcher writing the cell events to `path` (created or truncated), and the file
    /// handle to flush when the run is over.
    pub fn dispatch(path: &Path) -> Result<(tracing::Dispatch, TraceFile)> {
        let file = File::create(path).with_context(|| format!("creating trace file {}", path.display()))?;
        let out: TraceFile = Arc::new(Mutex::new(BufWriter::new(file)));
        let subscriber = tracing_subscriber::registry().with(JsonLines { out: out.clone() });
        Ok((tracing::Dispatch::new(subscriber), out))
    }
}
