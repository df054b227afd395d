//! Changes between grow steps: what a [`Change`] does to a [`Topology`], written and parsed as
//! text, [`Scheduled`] after a number of steps, and which state rows survive it.

use serde::{Deserialize, Serialize};

use super::Topology;
use crate::{Error, Result};

/// One topology operation between grow steps: the same in meaning for the reference path
/// and the actor simulation (both apply it with [`Topology::apply`]; a cell keeps its state row
/// when it keeps its layer and stable index, see [`Topology::rows_in`]). Written
/// `remove:L:I:J`, `add:L:I:J` (connection `I -> J` of weight matrix `L`), `remove-neuron:L:I`,
/// `add-neuron:L` (hidden or output layer `L`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Change {
    /// Remove the live connection `pre -> post` of `W_layer`.
    RemoveConnection {
        /// Weight matrix.
        layer: usize,
        /// Row (pre-neuron; the bias row is the layer's size).
        pre: usize,
        /// Column (post-neuron).
        post: usize,
    },
    /// Add connection `pre -> post` of `W_layer` as a fresh cell.
    AddConnection {
        /// Weight matrix.
        layer: usize,
        /// Row.
        pre: usize,
        /// Column.
        post: usize,
    },
    /// Remove neuron `idx` of layer `layer` (hidden, or the output layer: a class retires)
    /// with all its connections.
    RemoveNeuron {
        /// Hidden or output layer.
        layer: usize,
        /// Neuron.
        idx: usize,
    },
    /// Add a neuron to layer `layer` (hidden, or the output layer: a class arrives),
    /// connected to all neurons of the adjacent layers.
    AddNeuron {
        /// Hidden or output layer.
        layer: usize,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Change::RemoveConnection { layer, pre, post } => write!(f, "remove:{layer}:{pre}:{post}"),
            Change::AddConnection { layer, pre, post } => write!(f, "add:{layer}:{pre}:{post}"),
            Change::RemoveNeuron { layer, idx } => write!(f, "remove-neuron:{layer}:{idx}"),
            Change::AddNeuron { layer } => write!(f, "add-neuron:{layer}"),
        }
    }
}

impl std::str::FromStr for Change {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Topology(format!(
                "'{text}' is not a topology change ({why}); expected remove:L:I:J, add:L:I:J, remove-neuron:L:I or add-neuron:L"
            ))
        };
        let mut parts = text.trim().split(':');
        let op = parts.next().unwrap_or_default();
        let numbers = parts
            .map(|p| p.trim().parse::<usize>().map_err(|_| bad(&format!("'{p}' is not a non-negative number"))))
            .collect::<Result<Vec<_>>>()?;
        match (op, numbers.as_slice()) {
            ("remove", &[layer, pre, post]) => Ok(Change::RemoveConnection { layer, pre, post }),
            ("add", &[layer, pre, post]) => Ok(Change::AddConnection { layer, pre, post }),
            ("remove-neuron", &[layer, idx]) => Ok(Change::RemoveNeuron { layer, idx }),
            ("add-neuron", &[layer]) => Ok(Change::AddNeuron { layer }),
            ("remove" | "add" | "remove-neuron" | "add-neuron", _) => Err(bad("wrong number of indices")),
            _ => Err(bad(&format!("unknown operation '{op}'"))),
        }
    }
}

impl From<Change> for String {
    fn from(change: Change) -> String {
        change.to_string()
    }
}

impl TryFrom<String> for Change {
    type Error = Error;

    fn try_from(text: String) -> Result<Self> {
        text.parse()
    }
}

/// A topology change scheduled between grow steps: applied after `after` rule steps. Written
/// `AFTER@CHANGE`, e.g. `5@remove:0:1:2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheduled {
    /// Rule steps done before the change.
    pub after: usize,
    /// The change.
    pub change: Change,
}

impl std::fmt::Display for Scheduled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.after, self.change)
    }
}

impl std::str::FromStr for Scheduled {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let (after, change) = text.split_once('@').ok_or_else(|| {
            Error::Topology(format!("'{text}' is not a scheduled change; expected AFTER@CHANGE, e.g. 5@remove:0:1:2"))
        })?;
        let after = after
            .trim()
            .parse()
            .map_err(|_| Error::Topology(format!("'{text}': '{after}' is not a number of steps")))?;
        Ok(Self { after, change: change.parse()? })
    }
}

impl Topology {
    /// For every cell of this network, in [`Self::cells`] order: its row in `old`'s cell order
    /// (the cell with the same layer and stable index), or `None` for a cell `old` did not have.
    /// What a change between grow steps keeps of the state; new cells start afresh.
    pub fn rows_in(&self, old: &Topology) -> Vec<Option<usize>> {
        let rows: std::collections::HashMap<(usize, usize), usize> =
            old.cells().enumerate().map(|(r, c)| ((c.layer, c.index), r)).collect();
        self.cells().map(|cell| rows.get(&(cell.layer, cell.index)).copied()).collect()
    }

    /// Applies `change`; an error, and nothing changed, if it names something that does
    /// not exist (or a connection that is already live).
    pub fn apply(&mut self, change: &Change) -> Result<()> {
        match *change {
            Change::RemoveConnection { layer, pre, post } => self.remove_connection(layer, pre, post).map(drop),
            Change::AddConnection { layer, pre, post } => self.add_connection(layer, pre, post).map(drop),
            Change::RemoveNeuron { layer, idx } => self.remove_neuron(layer, idx).map(drop),
            Change::AddNeuron { layer } => self.add_neuron(layer).map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse_print_and_apply() {
        let mut t = Topology::dense(&[2, 3, 2], true).expect("valid");
        for text in ["remove:0:1:2", "add:0:1:2", "remove-neuron:1:0", "add-neuron:1"] {
            let change: Change = text.parse().expect("parses");
            assert_eq!(change.to_string(), text);
            t.apply(&change).expect("applies");
        }
        assert_eq!(t.sizes(), &[2, 3, 2]);
        for bad in ["remove:0:1", "cut:0:1:2", "add-neuron:x", "", "remove:0:1:-2"] {
            assert!(bad.parse::<Change>().is_err(), "{bad}");
        }
        let at: Scheduled = "3@remove-neuron:1:0".parse().expect("parses");
        assert_eq!((at.after, at.to_string()), (3, "3@remove-neuron:1:0".to_string()));
        let json = serde_json::to_string(&at).expect("serialises");
        assert_eq!(json, r#"{"after":3,"change":"remove-neuron:1:0"}"#);
        assert_eq!(serde_json::from_str::<Scheduled>(&json).expect("reads back"), at);
        for bad in ["remove:0:1:2", "x@remove:0:1:2", "3@cut"] {
            assert!(bad.parse::<Scheduled>().is_err(), "{bad}");
        }
        let before = t.clone();
        for change in ["remove:0:9:0", "remove-neuron:3:0", "add-neuron:0", "remove:5:0:0"] {
            assert!(t.apply(&change.parse().expect("parses")).is_err(), "{change}");
            assert_eq!(t, before, "a refused change leaves the topology alone");
        }
    }
}
