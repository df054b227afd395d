//! Which cells are traced. A traced cell gets its own `tracing` span (`cell{layer,i,j}`) and
//! emits one event per round on target `meta_nca_sim::cell` with the fields `step, layer, i,
//! j, index, w, dw, fired, staleness` (`i, j`: its place now, which moves when neurons come and
//! go; `index`: its stable index in the layer), and, when the perception has the local error
//! messages, what the cell received in that round: `back, delta` (batch means of `a_pre·δ_post`
//! and `δ_post`, `backward`) and `align, delta_fa` (the same through the feedback weights,
//! `alignment`); untraced cells emit nothing, so tracing a few cells of a million costs
//! nothing for the rest.

use meta_nca_rule::topology::CellId;

use crate::{Error, Result};

/// The target of the per-update events.
pub const TARGET: &str = "meta_nca_sim::cell";

/// One pattern `layer:i:j`, each part a number or `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pattern([Option<usize>; 3]);

/// A set of cell patterns, e.g. `0:1:2,1:*:*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CellFilter {
    patterns: Vec<Pattern>,
}

impl CellFilter {
    /// Traces no cell.
    pub fn none() -> Self {
        Self::default()
    }

    /// Traces every cell.
    pub fn all() -> Self {
        Self { patterns: vec![Pattern([None; 3])] }
    }

    /// Parses `layer:i:j[,layer:i:j..]` where each part is a number or `*`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |message: String| Error::Config { key: "trace-cells", message };
        let mut patterns = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let parts: Vec<&str> = item.split(':').collect();
            if parts.len() != 3 {
                return Err(bad(format!("'{item}' is not layer:i:j")));
            }
            let mut p = [None; 3];
            for (k, part) in parts.iter().enumerate() {
                p[k] = match part.trim() {
                    "*" => None,
                    n => Some(n.parse().map_err(|_| bad(format!("'{n}' in '{item}' is neither a number nor *")))?),
                };
            }
            patterns.push(Pattern(p));
        }
        Ok(Self { patterns })
    }

    /// Whether `id` is traced.
    pub fn matches(&self, id: &CellId) -> bool {
        let v = [id.layer, id.pre, id.post];
        self.patterns.iter().any(|p| p.0.iter().zip(v).all(|(want, got)| want.is_none_or(|w| w == got)))
    }

    /// Whether no cell is traced.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let f = CellFilter::parse("0:1:2, 1:*:*").expect("valid");
        let id = |layer, pre, post| CellId { layer, pre, post, index: 0 };
        assert!(f.matches(&id(0, 1, 2)));
        assert!(!f.matches(&id(0, 1, 3)));
        assert!(f.matches(&id(1, 7, 0)));
        assert!(CellFilter::parse("0:1").is_err());
        assert!(CellFilter::parse("0:x:1").is_err());
        assert!(!CellFilter::none().matches(&id(0, 0, 0)));
    }
}
