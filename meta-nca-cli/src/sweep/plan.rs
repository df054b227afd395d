//! `meta-nca sweep --plan FILE`: a sweep for other machines. Nothing is trained; the sweep
//! folder gets the resolved config (`config.toml`, every `--set` applied) and the seeds planned
//! (`sweep-plan.toml`, what `--collect` expects), and FILE one self-contained shell command per
//! seed:
//!
//! ```text
//! /abs/meta-nca train --config /abs/sweep/config.toml --set seed=3 --out /abs/sweep/seed-3 --quiet --eval-networks 0
//! ```
//!
//! Line k (from 1) trains seed first+k-1, so a SLURM array task runs line
//! `$SLURM_ARRAY_TASK_ID+1`; the lines share nothing but the sweep folder, so they run in any
//! order and at once.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use meta_nca_rule::checkpoint::write_atomic;
use meta_nca_rule::config::Config;
use serde::{Deserialize, Serialize};

use super::{Args, seed_dir};
use crate::run_dir::check_new_folder;

/// Name of the file in the sweep folder that lists the seeds planned.
const MANIFEST: &str = "sweep-plan.toml";

/// `sweep-plan.toml`: what `--collect` needs to know besides the seed folders.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Manifest {
    /// Every seed planned into this folder (by one plan, or several of the same config): one
    /// without a finished run is reported missing, even when its folder was never made.
    pub seeds: BTreeSet<u64>,
}

/// The manifest of the sweep folder `dir`, if a `--plan` wrote one.
pub fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map(Some).with_context(|| format!("in {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the plan of `seeds` of `config` (sweep folder `out`) into `file`.
pub fn write(file: &Path, config: &Config, out: &Path, seeds: &[u64], args: &Args) -> Result<()> {
    if !args.force && std::fs::symlink_metadata(file).is_ok() {
        bail!("plan file {} already exists: replace it with --force, or pick another --plan", file.display());
    }
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty() && !p.is_dir()) {
        bail!("the folder of plan file {} does not exist", parent.display());
    }
    for &seed in seeds {
        check_new_folder(&seed_dir(out, seed), args.force)?;
    }
    let out = std::path::absolute(out).with_context(|| format!("the absolute path of {}", out.display()))?;
    let config_path = out.join("config.toml");
    let config_text = config.to_toml();
    let earlier = match std::fs::read_to_string(&config_path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", config_path.display())),
    };
    let same_config = earlier.as_deref() == Some(config_text.as_str());
    if earlier.is_some() && !same_config && !args.force {
        bail!(
            "sweep folder {} already holds another config.toml (an earlier plan with other settings): \
             replace it with --force, or pick another --out",
            out.display()
        );
    }
    // Seeds planned before into the same config stay expected; another config starts afresh.
    let mut manifest = if same_config { read_manifest(&out)?.unwrap_or_default() } else { Manifest::default() };
    manifest.seeds.extend(seeds);

    let exe = std::env::current_exe().context("finding this program's path for the plan's lines")?;
    let (exe, config_word) = (shell_word(&exe)?, shell_word(&config_path)?);
    let mut lines = String::new();
    for &seed in seeds {
        let _ = write!(
            lines,
            "{exe} train --config {config_word} --set seed={seed} --out {} --quiet --eval-networks 0",
            shell_word(&seed_dir(&out, seed))?
        );
        if args.no_memory_check {
            lines.push_str(" --no-memory-check");
        }
        if args.force {
            lines.push_str(" --force");
        }
        lines.push('\n');
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating sweep folder {}", out.display()))?;
    write_atomic(&config_path, config_text.as_bytes())?;
    let manifest_text = format!(
        "# Written by `meta-nca sweep --plan`: the seeds `meta-nca sweep --collect` expects here.\n{}",
        toml::to_string(&manifest).context("writing the seeds planned")?
    );
    write_atomic(&out.join(MANIFEST), manifest_text.as_bytes())?;
    write_atomic(file, lines.as_bytes())?;

    let mut collect = format!("{exe} sweep --collect {} --networks {}", shell_word(&out)?, args.networks);
    for d in &args.eval_datasets {
        let _ = write!(collect, " --eval-dataset {}", quote(d));
    }
    writeln!(
        std::io::stdout(),
        "wrote {} commands to {} (seeds {}-{}, config {}); run them in any order on machines that share {}, then:",
        seeds.len(),
        file.display(),
        seeds.first().copied().unwrap_or_default(),
        seeds.last().copied().unwrap_or_default(),
        config_path.display(),
        out.display()
    )?;
    writeln!(std::io::stdout(), "{collect}")?;
    Ok(())
}

/// A path as one shell word.
fn shell_word(path: &Path) -> Result<String> {
    let text = path.to_str().with_context(|| format!("{} is not UTF-8: it cannot go into a plan", path.display()))?;
    Ok(quote(text))
}

/// `text` as one POSIX shell word: as it is when it holds only characters no shell treats
/// specially, else in single quotes (a `'` inside as `'\''`).
fn quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./=:@%+,".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quotes_only_what_the_shell_would_split_or_expand() {
        assert_eq!(quote("/runs/depth-3-sweep/seed-1"), "/runs/depth-3-sweep/seed-1");
        assert_eq!(quote("/my runs/x"), "'/my runs/x'");
        assert_eq!(quote("it's $HOME"), r"'it'\''s $HOME'");
        assert_eq!(quote(""), "''");
    }
}
