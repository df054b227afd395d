//! Checkpoints: one safetensors file holding the rule's parameters and Adam's moments, with
//! everything needed to use or resume the rule (perception, hidden-state widths, rule sizes,
//! config, seed, meta-epoch) as JSON in the file's metadata. Writes are atomic: a temporary
//! file in the same folder, then a rename, so a crash never leaves a half-written checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ::safetensors::tensor::{Dtype as SDtype, SafeTensors, TensorView};
use dfdx::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::init::HiddenCode;
use crate::optim::Adam;
use crate::perception::PerceptionSpec;
use crate::pool::Pool;
use crate::rule::{RuleNet, RuleShape};
use crate::{Error, Result};

/// Version of the checkpoint layout.
pub const FORMAT: u32 = 1;
const META_KEY: &str = "meta-nca";
const OPTIMIZER_KEY: &str = "optimizer";
/// Metadata key of the tensors' checksum ([`checksum`]); checkpoints written before it
/// existed have none and load unchecked.
const CHECKSUM_KEY: &str = "checksum";

/// FNV-1a (64 bit) over every tensor's name, shape and little-endian bytes, in name order:
/// a fixed algorithm, so a checksum written by one build is checked by any other. It guards
/// against corruption and stray edits, not against tampering.
fn checksum<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [u8])>) -> String {
    let mut sorted: Vec<_> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (name, shape, data) in sorted {
        eat(name.as_bytes());
        eat(&[0]);
        for d in shape {
            eat(&(*d as u64).to_le_bytes());
        }
        eat(&(data.len() as u64).to_le_bytes());
        eat(data);
    }
    format!("fnv1a64:{h:016x}")
}

/// Everything about a rule that is not a tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleMeta {
    /// Checkpoint layout version ([`FORMAT`]).
    pub format: u32,
    /// What the rule perceives.
    pub perception: PerceptionSpec,
    /// Hidden-state layout the rule was created with.
    pub code: HiddenCode,
    /// Rule network sizes and output bound.
    pub shape: RuleShape,
    /// The resolved config of the training run.
    pub config: Config,
    /// Meta-epochs completed.
    pub meta_epoch: usize,
    /// Lowest mean training loss of the probe networks so far (what picks `best`).
    pub best_probe_loss: Option<f64>,
    /// The pool of partly grown networks (empty unless `train.pool-size > 0`).
    #[serde(default)]
    pub pool: Pool,
}

/// A rule with its metadata and optimiser state.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Metadata.
    pub meta: RuleMeta,
    /// The rule network.
    pub rule: RuleNet,
    /// Optimiser state for resuming.
    pub adam: Adam,
}

fn ckpt_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), message: message.into() }
}

fn to_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `bytes` to `path` atomically (temporary sibling, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

impl Checkpoint {
    /// Saves to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let params = self.rule.params_flat();
        let shapes = self.rule.param_shapes();
        let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (k, ((name, values), shape)) in params.iter().zip(shapes).enumerate() {
            named.push((name.clone(), shape.clone(), to_bytes(values)));
            named.push((format!("adam.m.{name}"), shape.clone(), to_bytes(&self.adam.m[k])));
            named.push((format!("adam.v.{name}"), shape, to_bytes(&self.adam.v[k])));
        }
        let views = named
            .iter()
            .map(|(n, s, b)| TensorView::new(SDtype::F64, s.clone(), b).map(|v| (n.clone(), v)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| ckpt_err(path, format!("cannot build tensor views: {e:?}")))?;
        // One metadata entry (rule metadata plus the optimiser's scalars), so identical
        // checkpoints are identical bytes.
        let mut meta = serde_json::to_value(&self.meta).map_err(|e| ckpt_err(path, e.to_string()))?;
        meta[OPTIMIZER_KEY] = serde_json::json!({
            "lr": self.adam.lr, "beta1": self.adam.beta1, "beta2": self.adam.beta2, "eps": self.adam.eps, "t": self.adam.t,
        });
        meta[CHECKSUM_KEY] = checksum(named.iter().map(|(n, s, b)| (n.as_str(), &s[..], &b[..]))).into();
        let info = HashMap::from([(META_KEY.to_string(), meta.to_string())]);
        let bytes = ::safetensors::tensor::serialize(views, &Some(info))
            .map_err(|e| ckpt_err(path, format!("cannot serialise: {e:?}")))?;
        write_atomic(path, &bytes)
    }

    /// Loads and validates a checkpoint; every mismatch is an error that says what is wrong.
    pub fn load(path: &Path) -> Result<Self> {
        let dev = Cpu::default();
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        let tensors = SafeTensors::deserialize(&bytes)
            .map_err(|e| ckpt_err(path, format!("not a readable safetensors file ({e:?})")))?;
        let (_, header) =
            SafeTensors::read_metadata(&bytes).map_err(|e| ckpt_err(path, format!("unreadable header ({e:?})")))?;
        let info = header.metadata().clone().unwrap_or_default();
        let meta_text =
            info.get(META_KEY).ok_or_else(|| ckpt_err(path, "no meta-nca metadata: not a meta-nca checkpoint"))?;
        let mut meta_json: serde_json::Value =
            serde_json::from_str(meta_text).map_err(|e| ckpt_err(path, format!("corrupt metadata: {e}")))?;
        let adam_info = meta_json
            .as_object_mut()
            .and_then(|m| m.remove(OPTIMIZER_KEY))
            .ok_or_else(|| ckpt_err(path, "metadata has no optimiser state"))?;
        let stored_checksum = meta_json.as_object_mut().and_then(|m| m.remove(CHECKSUM_KEY));
        let meta: RuleMeta =
            serde_json::from_value(meta_json).map_err(|e| ckpt_err(path, format!("corrupt metadata: {e}")))?;
        if meta.format != FORMAT {
            return Err(ckpt_err(path, format!("format {} is not supported (this build reads {FORMAT})", meta.format)));
        }
        if meta.shape.input != meta.perception.width() || meta.shape.output != meta.perception.state_width() {
            return Err(ckpt_err(
                path,
                format!(
                    "rule sizes {}→{} do not match the perception ({} features, state width {})",
                    meta.shape.input,
                    meta.shape.output,
                    meta.perception.width(),
                    meta.perception.state_width()
                ),
            ));
        }
        if meta.code.dim() + 1 != meta.perception.state_width() {
            return Err(ckpt_err(path, "hidden-state widths do not match the perception's state width"));
        }
        let mut rng = rand::rngs::mock::StepRng::new(0, 0);
        let mut rule = RuleNet::new(&dev, meta.shape.clone(), &mut rng);
        let read = |name: &str, want: &[usize]| -> Result<Vec<f64>> {
            let t = tensors.tensor(name).map_err(|_| ckpt_err(path, format!("tensor '{name}' is missing")))?;
            if t.dtype() != SDtype::F64 {
                return Err(ckpt_err(path, format!("tensor '{name}' is {:?}, expected F64", t.dtype())));
            }
            if t.shape() != want {
                return Err(ckpt_err(
                    path,
                    format!("tensor '{name}' has shape {:?}, the rule needs {want:?}", t.shape()),
                ));
            }
            Ok(t.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
        };
        let names: Vec<String> = rule.params_flat().into_iter().map(|(n, _)| n).collect();
        let mut params = Vec::new();
        let (mut m, mut v) = (Vec::new(), Vec::new());
        for (name, shape) in names.iter().zip(rule.param_shapes()) {
            params.push(read(name, &shape)?);
            m.push(read(&format!("adam.m.{name}"), &shape)?);
            v.push(read(&format!("adam.v.{name}"), &shape)?);
        }
        // After the tensors are read, so a missing or misshapen tensor is named as such.
        if let Some(stored) = stored_checksum {
            let all = tensors.tensors();
            let computed = checksum(all.iter().map(|(n, t)| (n.as_str(), t.shape(), t.data())));
            if stored.as_str() != Some(computed.as_str()) {
                return Err(ckpt_err(
                    path,
                    format!(
                        "its tensors do not match the checksum written with them (stored {}, computed {computed}): \
                         the file is corrupt or was edited; use another checkpoint of the run or retrain",
                        stored.as_str().unwrap_or("not a string")
                    ),
                ));
            }
        }
        if params.iter().flatten().any(|x| !x.is_finite()) {
            return Err(ckpt_err(path, "rule parameters are not finite"));
        }
        rule.set_params_flat(&params);
        let num = |k: &str| adam_info.get(k).and_then(serde_json::Value::as_f64);
        let adam = Adam {
            lr: num("lr").unwrap_or(meta.config.train.lr),
            beta1: num("beta1").unwrap_or(0.9),
            beta2: num("beta2").unwrap_or(0.999),
            eps: num("eps").unwrap_or(1e-8),
            t: adam_info.get("t").and_then(serde_json::Value::as_u64).unwrap_or(0),
            m,
            v,
        };
        Ok(Self { meta, rule, adam })
    }
}

/// The keys under `[rule]`, `[task]`, `[data]` and `[tasks]` where `config` differs from the config a rule was
/// trained with, as `key: trained vs given` lines (empty when compatible for resuming).
pub fn config_mismatches(trained: &Config, given: &Config) -> Vec<String> {
    let table = |c: &Config| toml::Value::try_from(c).ok().and_then(|v| v.as_table().cloned()).unwrap_or_default();
    let (a, b) = (table(trained), table(given));
    let mut out = Vec::new();
    for section in ["rule", "task", "data", "tasks"] {
        let (sa, sb) = (a.get(section).and_then(|v| v.as_table()), b.get(section).and_then(|v| v.as_table()));
        let mut keys: Vec<&String> = sa.into_iter().chain(sb).flat_map(|t| t.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let (va, vb) = (sa.and_then(|t| t.get(key)), sb.and_then(|t| t.get(key)));
            if va != vb {
                let show = |v: Option<&toml::Value>| v.map_or("(unset)".to_string(), |v| v.to_string());
                out.push(format!("{section}.{key}: checkpoint has {}, config has {}", show(va), show(vb)));
            }
        }
    }
    out
}
