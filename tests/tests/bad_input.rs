//! Bad input gets a clear error naming the problem, a non-zero exit and no panic, and leaves
//! nothing behind: impossible flag values and config values, resuming with another config, a
//! reused run folder, another robustness experiment of the same name, divergence, an edited
//! checkpoint, a code too narrow for a dataset, trace flags that would do nothing, and a config
//! too large for the machine's memory (meta-training, or a network on the actors).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meta_nca_tests::{Scratch, fails, ok, run as run_cli};

#[test]
fn impossible_flag_values_are_refused_by_name() {
    let tmp = Scratch::new("bad-flags");
    let run = tmp.arg("run");
    ok(&["train", "--config", "configs/smoke.toml", "--out", &run, "--quiet", "--eval-networks", "0"]);
    fails(&["check", "--run", &run, "--tol", "nan"], &["--tol", "positive and finite"]);
    fails(&["check", "--run", &run, "--tol", "-1"], &["--tol", "positive and finite"]);
    fails(&["bench", "--epochs", "0"], &["--epochs", "at least 1"]);
    fails(&["bench-actors", "--steps", "0"], &["--steps", "at least 1"]);
    fails(&["bench-actors", "--workers", "0"], &["--workers", "at least 1"]);
    fails(
        &["grow", "--run", &run, "--engine", "actors", "--batch-rows", "0", "--save", &tmp.arg("g.json")],
        &["--batch-rows", "at least 1"],
    );
    assert!(!tmp.path("g.json").exists(), "nothing written");
}

#[test]
fn impossible_config_values_are_refused_before_anything_is_written() {
    let tmp = Scratch::new("bad-config");
    let out = tmp.arg("run");
    for (set, key) in [
        ("train.meta-epochs=0", "train.meta-epochs"),
        ("grow.batch-size=0", "grow.batch-size"),
        ("train.loss-steps=0", "train.loss-steps"),
        ("train.loss-steps=5", "train.loss-steps"),
    ] {
        fails(&["train", "--config", "configs/smoke.toml", "--set", set, "--out", &out], &[key]);
        assert!(!tmp.path("run").exists(), "{set}: the run folder was created");
    }
}

/// Every file under `dir` (recursively) with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                out.insert(path, bytes);
            }
        }
    }
    out
}

/// Asserts that `dir` holds exactly the files of `before`, byte for byte.
fn unchanged(dir: &Path, before: &BTreeMap<PathBuf, Vec<u8>>, what: &str) {
    let now = files(dir);
    assert_eq!(now.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>(), "{what}: files came or went");
    for (path, bytes) in before {
        assert!(&now[path] == bytes, "{what}: {} changed", path.display());
    }
}

/// `train --config configs/smoke.toml --out DIR --quiet --eval-networks 0 extra..`.
fn train_smoke(dir: &str, extra: &[&str]) -> String {
    let mut args = vec!["train", "--config", "configs/smoke.toml", "--out", dir, "--quiet", "--eval-networks", "0"];
    args.extend_from_slice(extra);
    ok(&args)
}

#[test]
fn resume_reads_the_runs_own_config_and_refuses_other_changes() {
    let tmp = Scratch::new("resume-own-config");
    let (dir, run) = (tmp.arg("run"), tmp.path("run"));
    train_smoke(&dir, &["--set", "train.meta-epochs=5"]);
    let before = files(&run);
    // Different keys than train.* and grow.*, by --set or by another --config: refused by name.
    for (extra, needles) in [
        (&["--set", "seed=4"][..], &["seed", "the run has 1, given 4"][..]),
        (&["--set", "rule.hidden=[4]"], &["rule.hidden", "[8]", "[4]"]),
        (&["--config", "configs/prototype-readme.toml"], &["task.hidden", "only train.* and grow.*"]),
        (&["--set", "train.meta-epochs=3"], &["train.meta-epochs = 3", "5 meta-epochs"]),
    ] {
        let mut args = vec!["train", "--out", &dir, "--resume", "--quiet", "--eval-networks", "0"];
        args.extend_from_slice(extra);
        fails(&args, needles);
        unchanged(&run, &before, &format!("refused resume {extra:?}"));
    }
    // No --config: the run's own config.toml (smoke: 3 hidden neurons), with more meta-epochs.
    let out =
        ok(&["train", "--out", &dir, "--resume", "--quiet", "--eval-networks", "0", "--set", "train.meta-epochs=8"]);
    assert!(out.contains("train.meta-epochs: the run has 5, given 8"), "{out}");
    assert!(out.contains("8 (3 this invocation)"), "{out}");
    let config = std::fs::read_to_string(run.join("config.toml")).expect("config.toml");
    assert!(config.contains("hidden = [[3]]") && config.contains("meta-epochs = 8"), "{config}");
    // Nothing to resume, and no --out.
    fails(&["train", "--out", &tmp.arg("none"), "--resume", "--quiet"], &["no run to resume", "last.safetensors"]);
    fails(&["train", "--resume", "--quiet"], &["--resume needs --out"]);
    assert!(!tmp.path("none").exists());
}

#[test]
fn a_reused_run_folder_is_refused_unless_resumed_or_forced() {
    let tmp = Scratch::new("reused-folder");
    let (dir, run) = (tmp.arg("run"), tmp.path("run"));
    train_smoke(&dir, &["--set", "train.meta-epochs=5", "--snapshot-every", "5"]);
    let before = files(&run);
    fails(
        &["train", "--config", "configs/smoke.toml", "--out", &dir, "--quiet", "--set", "seed=2"],
        &["already holds a run", "--resume", "--force"],
    );
    unchanged(&run, &before, "a second train --out");
    // --force replaces the whole run: no snapshot of the first one is left behind.
    train_smoke(&dir, &["--set", "train.meta-epochs=5", "--set", "seed=2", "--force"]);
    assert!(!run.join("snapshots").exists(), "the old run's snapshots were left beside the new run");
    let config = std::fs::read_to_string(run.join("config.toml")).expect("config.toml");
    assert!(config.contains("seed = 2"), "{config}");
    // A folder with other things in it is never a run folder, and never cleared.
    let other = tmp.path("notes");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::write(other.join("notes.txt"), "keep me").expect("write");
    let before = files(&other);
    let other_arg = tmp.arg("notes");
    fails(&["train", "--config", "configs/smoke.toml", "--out", &other_arg, "--quiet"], &["not empty"]);
    fails(
        &["train", "--config", "configs/smoke.toml", "--out", &other_arg, "--quiet", "--force"],
        &["not a run folder"],
    );
    unchanged(&other, &before, "train --force on a folder that is not a run");
    fails(&["train", "--out", &dir, "--resume", "--force"], &["--force"]);
}

#[test]
fn a_robustness_experiment_does_not_replace_another() {
    let tmp = Scratch::new("robustness-names");
    let (dir, run) = (tmp.arg("run"), tmp.path("run"));
    train_smoke(&dir, &["--set", "train.meta-epochs=5"]);
    let prune =
        ["robustness", "--run", &dir, "--fractions", "0.5", "--networks", "1", "--recover", "1", "--fine-tune", "1"];
    ok(&prune);
    let before = files(&run);
    ok(&prune); // the same experiment again: allowed, and the same curves
    unchanged(&run, &before, "the same robustness experiment again");
    let other = [&prune[..], &["--fractions", "0.2"]].concat();
    fails(&other, &["robustness-prune-random", "different experiment", "--name"]);
    unchanged(&run, &before, "a different robustness experiment");
    ok(&[&other[..], &["--name", "prune-20"]].concat());
    assert!(run.join("robustness-prune-20.csv").is_file() && run.join("robustness-prune-20.toml").is_file());
    fails(&[&other[..], &["--name", "../x"]].concat(), &["--name"]);
}

#[test]
fn divergence_is_not_called_a_dead_network_and_names_only_written_checkpoints() {
    let tmp = Scratch::new("diverge");
    let err = fails(
        &["train", "--config", "configs/smoke.toml", "--out", &tmp.arg("run"), "--quiet", "--set", "train.lr=1e9"],
        &["diverged", "train.lr", "no checkpoint was written"],
    );
    assert!(!err.contains("networks are dead") && !err.contains("bias cells"), "{err}");
    // Diverging after a resume: the checkpoint it came from is named, and left as it was.
    let (dir, run) = (tmp.arg("run2"), tmp.path("run2"));
    train_smoke(&dir, &["--set", "train.meta-epochs=5"]);
    let last = std::fs::read(run.join("last.safetensors")).expect("last");
    fails(
        &["train", "--out", &dir, "--resume", "--quiet", "--set", "train.lr=1e9", "--set", "train.meta-epochs=10"],
        &["diverged", "last.safetensors", "meta-epoch 5"],
    );
    assert!(std::fs::read(run.join("last.safetensors")).expect("last") == last, "last.safetensors changed");
}

#[test]
fn an_edited_checkpoint_fails_its_checksum() {
    let tmp = Scratch::new("checksum");
    let (dir, run) = (tmp.arg("run"), tmp.path("run"));
    train_smoke(&dir, &["--set", "train.meta-epochs=5"]);
    let best = run.join("best.safetensors");
    let mut bytes = std::fs::read(&best).expect("best");
    let n = bytes.len();
    bytes[n - 8..].copy_from_slice(&(-1.7e307f64).to_le_bytes());
    std::fs::write(&best, &bytes).expect("write");
    let before = files(&run);
    fails(&["eval", "--run", &dir, "--networks", "2"], &["best.safetensors", "checksum", "corrupt"]);
    unchanged(&run, &before, "eval of a corrupt checkpoint");
}

#[test]
fn a_code_too_narrow_for_a_dataset_says_what_to_change() {
    let tmp = Scratch::new("narrow-dataset");
    let (dir, run) = (tmp.arg("run"), tmp.path("run"));
    train_smoke(&dir, &["--set", "train.meta-epochs=2"]);
    let before = files(&run);
    fails(
        &["eval", "--run", &dir, "--dataset", "breast-cancer", "--networks", "2"],
        &["does not fit", "rule.index-bits = ", "rule.index-code = false"],
    );
    unchanged(&run, &before, "eval on a dataset the code cannot hold");
}

#[test]
fn trace_flags_are_never_silently_ignored() {
    let tmp = Scratch::new("trace-flags");
    let (dir, run) = (tmp.arg("run"), tmp.path("run"));
    train_smoke(&dir, &["--set", "train.meta-epochs=2"]);
    let before = files(&run);
    let (save, trace) = (tmp.arg("g.json"), tmp.arg("t.jsonl"));
    let grow = ["grow", "--run", &dir, "--save", &save];
    fails(&[&grow[..], &["--trace-json", &trace]].concat(), &["--trace-json", "--engine actors"]);
    fails(&[&grow[..], &["--trace-cells", "0:0:0"]].concat(), &["--trace-cells", "--engine actors"]);
    let actors = [&grow[..], &["--engine", "actors"]].concat();
    fails(&[&actors[..], &["--trace-cells", "9:9:9", "--trace-json", &trace]].concat(), &["9:9:9", "no such cell"]);
    fails(&[&actors[..], &["--trace-json", &save]].concat(), &["same file"]);
    assert!(!tmp.path("g.json").exists() && !tmp.path("t.jsonl").exists(), "a refused grow wrote a file");
    unchanged(&run, &before, "refused trace flags");
    // A trace cut off in its last line (a killed run) is read up to its last whole line.
    ok(&[&actors[..], &["--trace-json", &trace, "--trace-cells", "0:*:*"]].concat());
    let text = std::fs::read(tmp.path("t.jsonl")).expect("trace");
    let whole = text.iter().filter(|&&b| b == b'\n').count();
    assert!(whole > 2, "a trace of {whole} lines");
    std::fs::write(tmp.path("cut.jsonl"), &text[..text.len() - 10]).expect("write");
    let o = run_cli(&["inspect", &tmp.arg("cut.jsonl")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("warning") && err.contains("cut off"), "{err}");
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("{} events", whole - 1)));
    // A bad line that is not the last is still an error.
    let mut bad = b"{not json}\n".to_vec();
    bad.extend_from_slice(&text);
    std::fs::write(tmp.path("bad.jsonl"), bad).expect("write");
    fails(&["inspect", &tmp.arg("bad.jsonl")], &["line 1", "not JSON"]);
}

#[test]
fn a_config_too_large_for_the_memory_is_refused_with_the_estimate() {
    let tmp = Scratch::new("too-large");
    if !Path::new("/proc/meminfo").exists() {
        return; // no MemAvailable to compare with: the guard is skipped
    }
    for set in ["task.hidden=[[10000000]]", "train.num-models=100000000"] {
        fails(
            &["train", "--config", "configs/smoke.toml", "--set", set, "--out", &tmp.arg("run"), "--quiet"],
            &["GB", "available", "--no-memory-check"],
        );
        assert!(!tmp.path("run").exists(), "{set}: the run folder was created");
    }
    // The actors keep every cell of a network alive: a network too large is refused before
    // anything is built, with the estimate.
    fails(&["bench-actors", "--cells", "100000000000"], &["actor simulation", "GB", "available"]);
    let (dir, run) = (tmp.arg("small"), tmp.path("small"));
    train_smoke(&dir, &["--set", "train.meta-epochs=2", "--set", "rule.index-code=false"]);
    let before = files(&run);
    for executor in ["tasks", "shards"] {
        fails(
            &["grow", "--run", &dir, "--engine", "actors", "--executor", executor, "--hidden", "100000,100000"]
                .into_iter()
                .chain(["--save", &tmp.arg("g.json")])
                .collect::<Vec<_>>(),
            &["actor simulation of 10000", "GB", "available", "smaller network"],
        );
    }
    unchanged(&run, &before, "an actor grow too large for the memory");
}

#[test]
fn help_and_missing_input_texts_say_what_is_true() {
    let help = ok(&["eval", "--help"]);
    assert!(help.contains("lowest mean training loss") && !help.contains("validation accuracy"), "{help}");
    fails(&["plot"], &["--run", "--grow", "--robustness", "--suite"]);
}
