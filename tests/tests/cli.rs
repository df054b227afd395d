//! End-to-end tests of the `meta-nca` binary: train / eval / grow on `configs/smoke.toml`,
//! determinism, resume, and bad input (clear errors on stderr, non-zero exit, no panics,
//! nothing overwritten).
//!
//! The binary is built and found by `meta_nca_tests::bin` (see `tests/src/lib.rs`).

use std::path::Path;

use meta_nca_tests::{Scratch, fails, ok};

/// `train --config configs/smoke.toml --out DIR --quiet --eval-networks 0 extra..`.
fn train_smoke(dir: &str, extra: &[&str]) -> String {
    let mut args = vec!["train", "--config", "configs/smoke.toml", "--out", dir, "--quiet", "--eval-networks", "0"];
    args.extend_from_slice(extra);
    ok(&args)
}

/// Data rows of a `metrics.csv`, each as its fields; checks the header and field count.
fn metrics(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header line").split(',').collect();
    assert_eq!(header.len(), 7, "header {header:?}");
    assert_eq!(header[0], "epoch");
    assert_eq!(header[6], "seconds");
    lines
        .map(|l| {
            let fields: Vec<String> = l.split(',').map(str::to_string).collect();
            assert_eq!(fields.len(), 7, "row {l:?}");
            for f in &fields {
                let v: f64 = f.parse().unwrap_or_else(|_| panic!("field {f:?} of row {l:?} is not a number"));
                assert!(v.is_finite(), "row {l:?}");
            }
            fields
        })
        .collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not one JSON value ({e}):\n{text}"))
}

fn num(v: &serde_json::Value, path: &[&str]) -> f64 {
    let mut node = v;
    for key in path {
        node = node.get(key).unwrap_or_else(|| panic!("no {path:?} in {v}"));
    }
    node.as_f64().unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

#[test]
fn smoke_train_eval_grow() {
    let tmp = Scratch::new("smoke");
    let run_dir = tmp.arg("run");
    let out = ok(&["train", "--config", "configs/smoke.toml", "--out", &run_dir, "--quiet", "--eval-networks", "5"]);
    assert!(out.contains("seed 1"), "the seed is not printed:\n{out}");
    for f in ["config.toml", "metrics.csv", "best.safetensors", "last.safetensors"] {
        assert!(tmp.path("run").join(f).is_file(), "{f} missing from the run folder");
    }
    let rows = metrics(&tmp.path("run").join("metrics.csv"));
    assert_eq!(rows.len(), 20);
    for (k, r) in rows.iter().enumerate() {
        assert_eq!(r[0], k.to_string(), "epochs in order");
    }
    // The resolved config in the run folder is a valid config that names the smoke settings.
    let config = std::fs::read_to_string(tmp.path("run").join("config.toml")).expect("config.toml");
    let parsed = meta_nca_rule::config::Config::from_toml(&config).expect("the run's config.toml parses");
    assert_eq!((parsed.seed, parsed.grow.steps, parsed.train.meta_epochs), (1, 4, 20));

    let report = json(&ok(&["eval", "--run", &run_dir, "--networks", "10", "--json"]));
    assert!(report.is_object(), "{report}");
    for set in ["val_acc", "train_acc"] {
        let (mean, min, max) = (num(&report, &[set, "mean"]), num(&report, &[set, "min"]), num(&report, &[set, "max"]));
        for v in [mean, min, max] {
            assert!((0.0..=1.0).contains(&v), "{set} = {v}");
        }
        // The mean is a sum divided by n: allow rounding in its last bits.
        assert!(min <= mean + 1e-12 && mean <= max + 1e-12, "{set}: min {min} mean {mean} max {max}");
    }
    for key in ["val_acc", "train_acc"] {
        let v = num(&report, &["baseline", key]);
        assert!((0.0..=1.0).contains(&v), "baseline.{key} = {v}");
    }

    // Growth past K: `--horizons` scores the same grows after each step count; without a
    // minibatch, step t fires the same cells whatever the grow's length, so each horizon
    // equals a plain eval of that many steps (the smoke run's K is 4).
    let past = json(&ok(&["eval", "--run", &run_dir, "--networks", "10", "--horizons", "K,3K,2", "--json"]));
    let horizons = past["horizons"].as_array().expect("horizons");
    let steps: Vec<u64> = horizons.iter().map(|h| h["steps"].as_u64().expect("steps")).collect();
    assert_eq!(steps, [2, 4, 12]);
    assert_eq!(past["steps"].as_u64(), Some(12));
    assert_eq!(past["val_acc"], horizons[2]["val_acc"], "the main scores are the last horizon's");
    assert_eq!(report["horizons"].as_array().map(Vec::len), Some(1), "{report}");
    for (h, n) in horizons.iter().zip(["2", "4", "12"]) {
        let plain = json(&ok(&["eval", "--run", &run_dir, "--networks", "10", "--steps", n, "--json"]));
        assert_eq!(h["val_acc"], plain["val_acc"], "{n} steps");
        assert_eq!(h["train_acc"], plain["train_acc"], "{n} steps");
    }
    fails(&["eval", "--run", &run_dir, "--horizons", "K", "--steps", "3"], &["--horizons and --steps"]);
    fails(&["eval", "--run", &run_dir, "--horizons", "K,x"], &["--horizons", "'x'"]);

    let grow_file = tmp.arg("g.json");
    ok(&["grow", "--run", &run_dir, "--steps", "3", "--save", &grow_file]);
    let record = json(&String::from_utf8(read(&tmp.path("g.json"))).expect("utf-8"));
    let cells = record["cells"].as_array().expect("cells").len();
    // Iris, hidden [3], bias: (4 + 1) * 3 + (3 + 1) * 3.
    assert_eq!(cells, 27);
    let steps = record["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 4, "start + 3 steps");
    for (k, s) in steps.iter().enumerate() {
        assert_eq!(s["step"].as_u64(), Some(k as u64));
        assert_eq!(s["weights"].as_array().expect("weights").len(), cells, "step {k}");
        assert_eq!(s["hidden"].as_array().expect("hidden").len(), cells, "step {k}");
    }
}

/// The columns of a metrics file without the wall-clock seconds.
fn without_seconds(rows: &[Vec<String>]) -> Vec<Vec<String>> {
    rows.iter().map(|r| r[..6].to_vec()).collect()
}

#[test]
fn same_seed_same_metrics_other_seed_other_losses() {
    let tmp = Scratch::new("determinism");
    train_smoke(&tmp.arg("a"), &[]);
    train_smoke(&tmp.arg("b"), &[]);
    train_smoke(&tmp.arg("c"), &["--set", "seed=2"]);
    let a = metrics(&tmp.path("a").join("metrics.csv"));
    let b = metrics(&tmp.path("b").join("metrics.csv"));
    let c = metrics(&tmp.path("c").join("metrics.csv"));
    assert_eq!(a.len(), 20);
    assert_eq!(without_seconds(&a), without_seconds(&b), "same config and seed, different metrics");
    let losses = |rows: &[Vec<String>]| rows.iter().map(|r| r[2].clone()).collect::<Vec<_>>();
    assert_ne!(losses(&a), losses(&c), "seed 2 gives the same losses as seed 1");
    // The checkpoints of identical runs are identical too.
    let (ca, cb) = (load(&tmp.path("a").join("last.safetensors")), load(&tmp.path("b").join("last.safetensors")));
    assert!(
        ca.rule.params_flat() == cb.rule.params_flat() && ca.adam == cb.adam && ca.meta == cb.meta,
        "same config and seed, different checkpoints"
    );
    assert!(
        read(&tmp.path("a").join("last.safetensors")) == read(&tmp.path("b").join("last.safetensors")),
        "identical runs wrote different checkpoint bytes"
    );
}

#[test]
fn resume_continues_where_it_stopped() {
    let tmp = Scratch::new("resume");
    let dir = tmp.arg("run");
    train_smoke(&dir, &["--set", "train.meta-epochs=10"]);
    assert_eq!(metrics(&tmp.path("run").join("metrics.csv")).len(), 10);
    train_smoke(&dir, &["--resume", "--set", "train.meta-epochs=20"]);
    let rows = metrics(&tmp.path("run").join("metrics.csv"));
    assert_eq!(rows.len(), 20, "10 + 10 rows after the resume");
    let epochs: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
    let want: Vec<String> = (0..20).map(|k| k.to_string()).collect();
    assert_eq!(epochs, want);
    // Resuming is exact: the same numbers as one uninterrupted run of 20 meta-epochs.
    let whole = tmp.arg("whole");
    train_smoke(&whole, &[]);
    assert_eq!(without_seconds(&rows), without_seconds(&metrics(&tmp.path("whole").join("metrics.csv"))));
}

#[test]
fn unknown_config_key_is_named() {
    let tmp = Scratch::new("unknown-key");
    std::fs::write(tmp.path("bad.toml"), "seed = 1\n[train]\nmeta-epochz = 3\n").expect("write");
    fails(&["train", "--config", &tmp.arg("bad.toml"), "--out", &tmp.arg("run"), "--quiet"], &["meta-epochz"]);
    assert!(!tmp.path("run").exists(), "a failed train created its run folder");
}

#[test]
fn impossible_value_is_named() {
    let tmp = Scratch::new("impossible");
    fails(
        &[
            "train",
            "--config",
            "configs/smoke.toml",
            "--set",
            "grow.fire-fraction=1.5",
            "--out",
            &tmp.arg("run"),
            "--quiet",
        ],
        &["grow.fire-fraction", "1.5"],
    );
    assert!(!tmp.path("run").exists(), "a failed train created its run folder");
}

#[test]
fn override_without_equals_sign() {
    let tmp = Scratch::new("no-equals");
    fails(
        &["train", "--config", "configs/smoke.toml", "--set", "train.lr", "--out", &tmp.arg("run"), "--quiet"],
        &["train.lr", "key=value"],
    );
}

#[test]
fn unknown_override_key_is_named() {
    let tmp = Scratch::new("unknown-override");
    fails(
        &["train", "--config", "configs/smoke.toml", "--set", "train.nope=1", "--out", &tmp.arg("run"), "--quiet"],
        &["nope"],
    );
}

#[test]
fn missing_config_file_is_named() {
    let tmp = Scratch::new("missing-config");
    let path = tmp.arg("does-not-exist.toml");
    fails(&["train", "--config", &path, "--out", &tmp.arg("run"), "--quiet"], &[&path]);
}

/// Trains on the CSV `text` (saved as `data.csv`) and expects a clean failure mentioning each
/// of `needles`.
fn bad_csv(test: &str, text: &str, needles: &[&str]) {
    let tmp = Scratch::new(test);
    std::fs::write(tmp.path("data.csv"), text).expect("write");
    let set = format!("data.dataset={}", tmp.arg("data.csv"));
    fails(&["train", "--config", "configs/smoke.toml", "--set", &set, "--out", &tmp.arg("run"), "--quiet"], needles);
    assert!(!tmp.path("run").exists(), "a failed train created its run folder");
}

const CSV_HEAD: &str = "a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n";

#[test]
fn csv_ragged_row() {
    bad_csv("csv-ragged", &format!("{CSV_HEAD}9,10,y,extra\n"), &["data.csv", "line 6", "expected 3 fields, found 4"]);
}

#[test]
fn csv_non_numeric_cell() {
    bad_csv("csv-non-numeric", &format!("{CSV_HEAD}9,ten,y\n"), &["data.csv", "line 6", "'ten' is not a number"]);
}

#[test]
fn csv_missing_value() {
    bad_csv("csv-missing", &format!("{CSV_HEAD}9,,y\n"), &["data.csv", "line 6", "missing value", "'b'"]);
}

#[test]
fn csv_single_class() {
    // The message names the dataset by its file stem ("data"), not its path.
    bad_csv("csv-one-class", "a,b,label\n1,2,x\n3,4,x\n5,6,x\n", &["data", "only one class"]);
}

#[test]
fn csv_missing_file() {
    let tmp = Scratch::new("csv-missing-file");
    let path = tmp.arg("nowhere.csv");
    fails(
        &[
            "train",
            "--config",
            "configs/smoke.toml",
            "--set",
            &format!("data.dataset={path}"),
            "--out",
            &tmp.arg("run"),
            "--quiet",
        ],
        &[&path],
    );
}

#[test]
fn eval_missing_run_folder() {
    let tmp = Scratch::new("eval-missing");
    let dir = tmp.arg("no-such-run");
    fails(&["eval", "--run", &dir], &[&dir, "does not exist"]);
    fails(&["grow", "--run", &dir, "--save", &tmp.arg("g.json")], &[&dir]);
    assert!(!tmp.path("g.json").exists());
}

#[test]
fn eval_corrupt_checkpoint_is_reported_and_kept() {
    let tmp = Scratch::new("eval-corrupt");
    let dir = tmp.arg("run");
    train_smoke(&dir, &[]);
    let best = tmp.path("run").join("best.safetensors");
    let garbage: Vec<u8> = (0..4096u32).map(|k| (k.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&best, &garbage).expect("write");
    fails(&["eval", "--run", &dir, "--networks", "3"], &["best.safetensors"]);
    fails(&["grow", "--run", &dir, "--save", &tmp.arg("g.json")], &["best.safetensors"]);
    assert_eq!(read(&best), garbage, "the corrupt checkpoint was overwritten");
    assert!(!tmp.path("g.json").exists());
    // A truncated checkpoint (valid prefix) is an error too.
    let last = tmp.path("run").join("last.safetensors");
    let bytes = read(&last);
    std::fs::write(&last, &bytes[..bytes.len() / 2]).expect("write");
    fails(&["eval", "--run", &dir, "--checkpoint", "last", "--networks", "3"], &["last.safetensors"]);
    assert_eq!(read(&last), bytes[..bytes.len() / 2].to_vec());
}

#[test]
fn grow_rejects_zero_width_and_bad_p() {
    let tmp = Scratch::new("grow-bad");
    let dir = tmp.arg("run");
    train_smoke(&dir, &[]);
    let save = tmp.arg("g.json");
    fails(&["grow", "--run", &dir, "--hidden", "0", "--save", &save], &["--hidden", "width 0"]);
    fails(&["grow", "--run", &dir, "--hidden", "3,x", "--save", &save], &["--hidden", "'x'"]);
    fails(&["grow", "--run", &dir, "--p", "0", "--save", &save], &["--p"]);
    // Architectures the rule's hidden-state code cannot address are a clear error.
    fails(&["grow", "--run", &dir, "--hidden", "10", "--save", &save], &["does not fit", "index bits"]);
    fails(&["grow", "--run", &dir, "--hidden", "3,3,3", "--save", &save], &["does not fit", "layer bits"]);
    fails(&["eval", "--run", &dir, "--networks", "0"], &["--networks"]);
    assert!(!tmp.path("g.json").exists());
    // `--hidden ""` asks for no hidden layer: one weight matrix, features -> classes.
    let flat = tmp.arg("flat.json");
    ok(&["grow", "--run", &dir, "--hidden", "", "--steps", "1", "--save", &flat]);
    let grow: serde_json::Value = serde_json::from_slice(&read(&tmp.path("flat.json"))).expect("grow JSON");
    assert_eq!(grow["sizes"].as_array().map(Vec::len), Some(2), "{}", grow["sizes"]);
}

#[test]
fn resume_with_changed_rule_is_refused_and_changes_nothing() {
    let tmp = Scratch::new("resume-mismatch");
    let dir = tmp.arg("run");
    train_smoke(&dir, &["--set", "train.meta-epochs=5"]);
    let files = ["last.safetensors", "best.safetensors", "metrics.csv", "config.toml"];
    let before: Vec<Vec<u8>> = files.iter().map(|f| read(&tmp.path("run").join(f))).collect();
    fails(
        &["train", "--config", "configs/smoke.toml", "--out", &dir, "--quiet", "--resume", "--set", "rule.hidden=[4]"],
        &["rule.hidden", "[8]", "[4]"],
    );
    for (f, b) in files.iter().zip(&before) {
        assert_eq!(&read(&tmp.path("run").join(f)), b, "{f} changed by a refused resume");
    }
}

#[test]
fn resume_without_a_checkpoint_names_it() {
    let tmp = Scratch::new("resume-none");
    fails(
        &["train", "--config", "configs/smoke.toml", "--out", &tmp.arg("run"), "--quiet", "--resume"],
        &["last.safetensors"],
    );
}

/// A run whose metrics.csv got ahead of its last checkpoint (what a `Training` error mid-run
/// leaves: the CLI flushes the rows and says the checkpoints are from before the failure; or a
/// kill after BufWriter flushed rows past the last checkpoint). Simulated by putting back the
/// epoch-5 `last.safetensors` after a run to epoch 7. Resuming must not write epochs 5 and 6
/// twice.
#[test]
fn resume_after_metrics_got_ahead_of_the_checkpoint_keeps_epochs_unique() {
    let tmp = Scratch::new("resume-ahead");
    let dir = tmp.arg("run");
    let last = tmp.path("run").join("last.safetensors");
    train_smoke(&dir, &["--set", "train.meta-epochs=5"]);
    let epoch5 = read(&last);
    train_smoke(&dir, &["--resume", "--set", "train.meta-epochs=7"]);
    std::fs::write(&last, &epoch5).expect("write");
    train_smoke(&dir, &["--resume", "--set", "train.meta-epochs=10"]);
    let epochs: Vec<String> = metrics(&tmp.path("run").join("metrics.csv")).iter().map(|r| r[0].clone()).collect();
    let want: Vec<String> = (0..10).map(|k| k.to_string()).collect();
    assert_eq!(epochs, want);
}

#[test]
fn index_code_too_narrow_for_the_architecture_fails_cleanly() {
    let tmp = Scratch::new("narrow-code");
    fails(
        &["train", "--config", "configs/smoke.toml", "--set", "rule.index-bits=1", "--out", &tmp.arg("run"), "--quiet"],
        &["does not fit", "1 index bits"],
    );
}

/// The code widths are known from the config before training starts, so a too-narrow code
/// should be refused like any impossible config value: before a run folder is created, and
/// without claiming "the checkpoints in DIR are from before the failure" when there are none.
#[test]
fn index_code_too_narrow_is_refused_before_the_run_folder_is_created() {
    let tmp = Scratch::new("narrow-code-early");
    let err = fails(
        &["train", "--config", "configs/smoke.toml", "--set", "rule.index-bits=1", "--out", &tmp.arg("run"), "--quiet"],
        &["index"],
    );
    assert!(!err.contains("checkpoints in"), "{err}");
    assert!(!tmp.path("run").exists(), "a refused config created its run folder");
}

/// `Error::Io`'s message already ends with the I/O error, and the error is also its `source`,
/// so anyhow's `{:#}` chain prints it twice ("...: No such file or directory (os error 2): No
/// such file or directory (os error 2)").
#[test]
fn io_errors_are_printed_once() {
    let tmp = Scratch::new("io-twice");
    let dir = tmp.arg("run");
    train_smoke(&dir, &["--set", "train.meta-epochs=1"]);
    let save = tmp.path("missing-folder").join("g.json");
    let err = fails(&["grow", "--run", &dir, "--save", &save.to_string_lossy()], &["missing-folder"]);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}

fn load(path: &Path) -> meta_nca_rule::checkpoint::Checkpoint {
    meta_nca_rule::checkpoint::Checkpoint::load(path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn robustness_prunes_grown_networks_and_writes_curves() {
    let tmp = Scratch::new("robustness");
    let dir = tmp.arg("run");
    train_smoke(&dir, &["--set", "train.damage={fraction=0.2, recover=2}"]);
    let out = ok(&[
        "robustness",
        "--run",
        &dir,
        "--networks",
        "4",
        "--fractions",
        "0.2,0.5",
        "--recover",
        "3",
        "--mode",
        "magnitude",
    ]);
    assert!(out.contains("20%") && out.contains("50%"), "{out}");
    let csv = std::fs::read_to_string(tmp.path("run").join("robustness-prune-magnitude.csv")).expect("curves written");
    let rows: Vec<Vec<f64>> =
        csv.lines().skip(1).map(|l| l.split(',').map(|v| v.parse::<f64>().expect("numeric")).collect()).collect();
    // Per fraction: before (-1), right after (0), then 3 recovery steps.
    assert_eq!(rows.len(), 2 * (3 + 2));
    assert!(rows.iter().all(|r| r.len() == 4 && (0.0..=1.0).contains(&r[2]) && (0.0..=1.0).contains(&r[3])));
    let steps: Vec<i64> = rows.iter().take(5).map(|r| r[1] as i64).collect();
    assert_eq!(steps, vec![-1, 0, 1, 2, 3]);
    // The same fraction gives the same damage whatever else is listed.
    let alone = ok(&[
        "robustness",
        "--run",
        &dir,
        "--networks",
        "4",
        "--fractions",
        "0.5",
        "--recover",
        "3",
        "--mode",
        "magnitude",
        "--name",
        "alone",
    ]);
    let line = |text: &str| text.lines().find(|l| l.starts_with("50%")).map(str::to_string);
    assert_eq!(line(&out), line(&alone));
    fails(&["robustness", "--run", &dir, "--fractions", "1.5"], &["1.5"]);
    fails(
        &[
            "train",
            "--config",
            "configs/smoke.toml",
            "--set",
            "train.damage={fraction=1.0, recover=2}",
            "--out",
            &tmp.arg("bad"),
            "--quiet",
        ],
        &["train.damage"],
    );
}

#[test]
fn robustness_adds_hidden_neurons_or_says_why_not() {
    let tmp = Scratch::new("neurons");
    let dir = tmp.arg("run");
    train_smoke(&dir, &["--set", "rule.index-bits=6"]);
    let out = ok(&[
        "robustness",
        "--run",
        &dir,
        "--experiment",
        "neurons",
        "--neurons",
        "1,3",
        "--networks",
        "3",
        "--recover",
        "5",
    ]);
    assert!(out.contains("+5 steps"), "{out}");
    let csv = std::fs::read_to_string(tmp.path("run").join("robustness-neurons.csv")).expect("curves written");
    assert_eq!(csv.lines().count(), 1 + 2 * (5 + 2));
    // A rule whose index code is too narrow for the new cells says so.
    let narrow = tmp.arg("narrow");
    train_smoke(&narrow, &[]);
    fails(&["robustness", "--run", &narrow, "--experiment", "neurons", "--neurons", "1"], &["does not fit"]);
    fails(&["robustness", "--run", &dir, "--experiment", "neurons", "--neurons", "0"], &["--neurons"]);
}

#[test]
fn robustness_churn_replaces_connections_every_step() {
    let tmp = Scratch::new("churn");
    let dir = tmp.arg("run");
    train_smoke(&dir, &["--set", "rule.index-code=false"]);
    let out = ok(&[
        "robustness",
        "--run",
        &dir,
        "--experiment",
        "churn",
        "--rates",
        "0.1,0.3",
        "--networks",
        "3",
        "--recover",
        "4",
    ]);
    assert!(out.contains("10%") && out.contains("30%"), "{out}");
    let csv = std::fs::read_to_string(tmp.path("run").join("robustness-churn.csv")).expect("curves written");
    assert_eq!(csv.lines().count(), 1 + 2 * (4 + 1));
    // With a per-cell index code, new cells soon run out of indices: a clear error.
    let coded = tmp.arg("coded");
    train_smoke(&coded, &[]);
    fails(
        &[
            "robustness",
            "--run",
            &coded,
            "--experiment",
            "churn",
            "--rates",
            "0.3",
            "--networks",
            "2",
            "--recover",
            "10",
        ],
        &["does not fit"],
    );
    fails(&["robustness", "--run", &dir, "--experiment", "churn", "--rates", "2"], &["--rates"]);
}

/// `grow --change`: connections and neurons removed and added between steps, on the reference
/// path and on the actors (both executors, lockstep): the same record to 1e-9, each step in
/// the order of its own network; impossible changes are clear errors and write nothing.
#[test]
fn grow_with_topology_changes_on_both_engines() {
    let tmp = Scratch::new("grow-changes");
    let run_dir = tmp.arg("run");
    train_smoke(&run_dir, &["--set", "rule.index-bits=6"]);
    let changes = ["--change", "1@remove:0:2:1", "--change", "2@remove-neuron:1:0", "--change", "2@add-neuron:1"];
    let grow = |engine: &[&str], file: &str| {
        let path = tmp.arg(file);
        let out = ok(&[&["grow", "--run", &run_dir, "--steps", "4", "--save", &path][..], &changes, engine].concat());
        assert!(out.contains("2@remove-neuron:1:0"), "{out}");
        json(&String::from_utf8(read(&tmp.path(file))).expect("utf-8"))
    };
    let reference = grow(&[], "reference.json");
    let steps = reference["steps"].as_array().expect("steps");
    // Start: (4 + 1) * 3 + (3 + 1) * 3 = 27 cells; one connection removed after step 1; after
    // step 2 a hidden neuron goes with its 5 + 3 cells and a new one comes with 5 + 3.
    let sizes: Vec<usize> = steps.iter().map(|s| s["weights"].as_array().expect("weights").len()).collect();
    assert_eq!(sizes, [27, 27, 26, 26, 26]);
    assert!(steps[2]["topology"].is_object() && steps[3]["topology"].is_object(), "changed steps carry their network");
    assert!(steps[1].get("topology").is_none() && steps[4].get("topology").is_none());
    assert_eq!(reference["changes"].as_array().map(Vec::len), Some(3));
    for executor in ["tasks", "shards"] {
        let actors = grow(&["--engine", "actors", "--executor", executor], &format!("{executor}.json"));
        assert!(actors["engine"].as_str().is_some_and(|e| e.starts_with("actors")), "{}", actors["engine"]);
        for (a, b) in steps.iter().zip(actors["steps"].as_array().expect("steps")) {
            assert_eq!(a["topology"], b["topology"]);
            for (x, y) in a["weights"].as_array().expect("w").iter().zip(b["weights"].as_array().expect("w")) {
                let (x, y) = (x.as_f64().expect("number"), y.as_f64().expect("number"));
                assert!((x - y).abs() <= 1e-9, "{executor}: step {}: {x} vs {y}", a["step"]);
            }
        }
    }
    let bad = tmp.arg("bad.json");
    let base = ["grow", "--run", &run_dir, "--steps", "4", "--save", &bad];
    for (change, needles) in [
        ("1@remove:0:9:0", &["1@remove:0:9:0", "outside W_0"][..]),
        ("1@add:0:1:1", &["already live"][..]),
        ("2@remove-neuron:2:0", &["output layer", "meta-nca continual"][..]),
        ("4@add-neuron:1", &["before the last"][..]),
        ("1@cut:0:1:1", &["unknown operation 'cut'"][..]),
        ("one@remove:0:1:1", &["not a number of steps"][..]),
    ] {
        fails(&[&base[..], &["--change", change]].concat(), needles);
        assert!(!tmp.path("bad.json").exists(), "{change}: nothing is written");
    }
    fails(
        &[&base[..], &["--change", "1@add-neuron:1", "--engine", "actors", "--mode", "async"]].concat(),
        &["lockstep"],
    );
    // A trace follows each cell by its stable index through the changes: the 12 cells of W_1,
    // the 3 out of the removed neuron among them, and 3 out of the added one.
    let trace = tmp.arg("trace.jsonl");
    let traced = ["--engine", "actors", "--trace-cells", "1:*:*", "--trace-json", &trace];
    grow(&traced, "traced.json");
    let summary = ok(&["inspect", &trace]);
    assert!(summary.contains(" 15 cells, 4 steps"), "{summary}");
    assert!(summary.contains("* moved when neurons were removed or added"), "{summary}");
    fails(
        &["plot", "--grow", &tmp.arg("reference.json"), "--out", &tmp.arg("pictures")],
        &["changes during this grow"],
    );
}

/// A reader that stops early (`meta-nca inspect trace.jsonl | head`) ends the program quietly,
/// with SIGPIPE's status 141 and no panic report.
#[test]
fn a_closed_stdout_ends_quietly() {
    let tmp = Scratch::new("broken-pipe");
    let run_dir = tmp.arg("run");
    train_smoke(&run_dir, &["--set", "rule.index-code=false"]);
    // Hidden width 600: one line per traced cell, far more than a pipe buffer holds.
    let trace = tmp.arg("trace.jsonl");
    ok(&[
        "grow",
        "--run",
        &run_dir,
        "--hidden",
        "600",
        "--steps",
        "1",
        "--engine",
        "actors",
        "--trace-json",
        &trace,
        "--save",
        &tmp.arg("g.json"),
    ]);
    // The reading end is closed before the program starts, so its first write finds no reader
    // whatever the timing (no race with the pipe buffer). The result tables of the other
    // commands end the same way.
    let other_run = tmp.arg("other-run");
    for args in [
        &["inspect", &trace][..],
        &["eval", "--run", &run_dir, "--networks", "2"],
        &["bench", "--only", "prototype", "--epochs", "2"],
        &["train", "--config", "configs/smoke.toml", "--out", &other_run, "--quiet"],
    ] {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let out = std::process::Command::new(meta_nca_tests::bin())
            .current_dir(meta_nca_tests::root())
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("meta-nca runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked") && !err.contains("error"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
    }
}
