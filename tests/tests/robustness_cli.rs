//! End-to-end tests of `meta-nca robustness --config FILE.toml` on small runs of
//! `configs/smoke.toml`: a config file runs and is copied into the run folder (and the copy
//! reproduces the run), flags override the file's keys, the shipped configs run, and unknown
//! keys or impossible values are clear errors that name the key and write nothing.
//!
//! The binary is built and found by `meta_nca_tests::bin` (see `tests/src/lib.rs`).

use std::path::Path;

use meta_nca_tests::{Scratch, fails, ok};

/// Trains `configs/smoke.toml` (seed 1, 4 grow steps) into `dir` with `extra` flags.
fn train_smoke(dir: &str, extra: &[&str]) {
    let mut args = vec!["train", "--config", "configs/smoke.toml", "--out", dir, "--quiet", "--eval-networks", "0"];
    args.extend_from_slice(extra);
    ok(&args);
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Data rows of a CSV as numbers, after checking the header.
fn csv_rows(path: &Path, header: &str) -> Vec<Vec<f64>> {
    let text = read(path);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(header), "{}", path.display());
    lines
        .map(|l| l.split(',').map(|v| v.parse::<f64>().unwrap_or_else(|_| panic!("{l:?} is not numeric"))).collect())
        .collect()
}

/// Files of the run folder whose name starts with `robustness-`.
fn robustness_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("the run folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("robustness-"))
        .collect();
    names.sort();
    names
}

const CURVES_HEADER: &str = "fraction,step,grown_train_acc,grown_val_acc";

/// A prune of 3 networks, 3 recovery steps, 2 fine-tune epochs.
const TINY_PRUNE: &str = "# a tiny prune\nexperiment = \"prune\"\nfractions = [0.2, 0.5]\nmode = \"magnitude\"\n\
                          recover = 3\nnetworks = 3\nfine-tune = 2\n";

#[test]
fn config_file_runs_and_its_resolved_copy_reproduces_the_run() {
    let tmp = Scratch::new("config-file");
    let dir = tmp.arg("run");
    let run_dir = tmp.path("run");
    train_smoke(&dir, &[]);
    std::fs::write(tmp.path("tiny.toml"), TINY_PRUNE).expect("write");
    let out = ok(&["robustness", "--run", &dir, "--config", &tmp.arg("tiny.toml")]);
    assert!(out.contains("(magnitude)") && out.contains("3 networks") && out.contains("3 recovery steps"), "{out}");
    assert!(out.contains("seed 1"), "the seed (the run's) is not printed:\n{out}");
    assert!(out.contains("20%") && out.contains("50%") && !out.contains("10%"), "{out}");
    assert_eq!(
        robustness_files(&run_dir),
        [
            "robustness-prune-magnitude-baseline.csv",
            "robustness-prune-magnitude.csv",
            "robustness-prune-magnitude.toml"
        ]
    );

    // Per fraction: before (-1), right after (0), 3 recovery steps.
    let rows = csv_rows(&run_dir.join("robustness-prune-magnitude.csv"), CURVES_HEADER);
    assert_eq!(rows.len(), 2 * 5);
    let keys: Vec<(f64, i64)> = rows.iter().map(|r| (r[0], r[1] as i64)).collect();
    let want: Vec<(f64, i64)> = [0.2, 0.5].iter().flat_map(|&q| (-1..=3).map(move |s| (q, s))).collect();
    assert_eq!(keys, want);
    let baseline = csv_rows(
        &run_dir.join("robustness-prune-magnitude-baseline.csv"),
        "fraction,fine_tune_epochs,before_val_acc,pruned_val_acc,fine_tuned_val_acc",
    );
    assert_eq!(baseline.len(), 2);
    for (row, q) in baseline.iter().zip([0.2, 0.5]) {
        assert_eq!((row[0], row[1]), (q, 2.0), "fraction and the config's fine-tune epochs");
        assert!(row[2..].iter().all(|v| (0.0..=1.0).contains(v)), "{row:?}");
    }
    // The printed backprop columns are the CSV's.
    let line = out.lines().find(|l| l.starts_with("50%")).expect("a 50% row");
    let printed: Vec<f64> = line.split_whitespace().skip(5).map(|v| v.parse().expect("number")).collect();
    assert_eq!(printed, baseline[1][2..].to_vec(), "{line}");

    // The copy holds every resolved key: the file's, and the run's steps, p and seed.
    let copy = run_dir.join("robustness-prune-magnitude.toml");
    let text = read(&copy);
    for key in [
        "experiment = \"prune\"",
        "mode = \"magnitude\"",
        "networks = 3",
        "recover = 3",
        "fine-tune = 2",
        "seed = 1",
        "steps = 4",
        "checkpoint = \"best\"",
    ] {
        assert!(text.contains(key), "the copy lacks `{key}`:\n{text}");
    }
    assert!(!text.contains("rates") && !text.contains("neurons"), "keys of other experiments in the copy:\n{text}");
    // Run again from the copy: the same output and the same curves.
    let csv = read(&run_dir.join("robustness-prune-magnitude.csv"));
    let again = ok(&["robustness", "--run", &dir, "--config", &copy.to_string_lossy()]);
    assert_eq!(again, out);
    assert_eq!(read(&run_dir.join("robustness-prune-magnitude.csv")), csv);
}

#[test]
fn flags_override_the_file() {
    let tmp = Scratch::new("config-override");
    let dir = tmp.arg("run");
    let run_dir = tmp.path("run");
    train_smoke(&dir, &[]);
    std::fs::write(tmp.path("tiny.toml"), TINY_PRUNE).expect("write");
    let config = tmp.arg("tiny.toml");
    let out = ok(&[
        "robustness",
        "--run",
        &dir,
        "--config",
        &config,
        "--networks",
        "2",
        "--fractions",
        "0.5",
        "--mode",
        "random",
        "--seed",
        "7",
        "--recover",
        "1",
    ]);
    assert!(
        out.contains("(random)")
            && out.contains("2 networks")
            && out.contains("seed 7")
            && out.contains("1 recovery steps"),
        "{out}"
    );
    let rows = csv_rows(&run_dir.join("robustness-prune-random.csv"), CURVES_HEADER);
    assert_eq!(rows.len(), 3, "one fraction, before + after + 1 step");
    assert!(rows.iter().all(|r| r[0] == 0.5));
    let copy = read(&run_dir.join("robustness-prune-random.toml"));
    for key in ["networks = 2", "fractions = [0.5]", "seed = 7", "mode = \"random\"", "recover = 1", "fine-tune = 2"] {
        assert!(copy.contains(key), "the copy lacks `{key}`:\n{copy}");
    }
    // The file's 3 networks without the flag: another run.
    let file_only = ok(&["robustness", "--run", &dir, "--config", &config]);
    assert!(file_only.contains("3 networks") && file_only.contains("(magnitude)"), "{file_only}");
    // A flag overrides an impossible value of the file too.
    std::fs::write(tmp.path("zero.toml"), "networks = 0\nfractions = [0.5]\nrecover = 1\nfine-tune = 1\n")
        .expect("write");
    fails(&["robustness", "--run", &dir, "--config", &tmp.arg("zero.toml")], &["networks"]);
    let zero = tmp.arg("zero.toml");
    let fixed = ["robustness", "--run", &dir, "--config", &zero, "--networks", "1"];
    // Another random prune than the first: its outputs are not silently replaced.
    let before = read(&run_dir.join("robustness-prune-random.csv"));
    fails(&fixed, &["robustness-prune-random.csv", "different experiment", "--name", "--force"]);
    assert_eq!(read(&run_dir.join("robustness-prune-random.csv")), before, "a refused run changed the curves");
    let fixed = ok(&[&fixed[..], &["--force"]].concat());
    assert!(fixed.contains("1 networks"), "{fixed}");
}

#[test]
fn shipped_configs_run_with_small_overrides() {
    let tmp = Scratch::new("shipped-configs");
    let dir = tmp.arg("run");
    // Layer-only code: new cells (neurons, churn) need no fresh indices.
    train_smoke(&dir, &["--set", "rule.index-code=false"]);
    for (config, stem, rows, experiment) in [
        ("configs/robustness-prune.toml", "robustness-prune-random", 4 * (2 + 2), "prune"),
        ("configs/robustness-neurons.toml", "robustness-neurons", 2 * (2 + 2), "neurons"),
        ("configs/robustness-churn.toml", "robustness-churn", 3 * (2 + 1), "churn"),
    ] {
        ok(&["robustness", "--run", &dir, "--config", config, "--networks", "2", "--recover", "2"]);
        let csv = read(&tmp.path("run").join(format!("{stem}.csv")));
        assert_eq!(csv.lines().count(), 1 + rows, "{config}:\n{csv}");
        let copy = read(&tmp.path("run").join(format!("{stem}.toml")));
        assert!(copy.contains(&format!("experiment = \"{experiment}\"")) && copy.contains("networks = 2"), "{copy}");
    }
}

#[test]
fn unknown_keys_and_values_are_named_and_nothing_is_written() {
    let tmp = Scratch::new("config-unknown");
    let dir = tmp.arg("run");
    train_smoke(&dir, &[]);
    for (i, (text, needles)) in [
        ("experiment = \"prune\"\nfractionz = [0.1]\n", &["fractionz"][..]),
        ("[prune]\nfractions = [0.1]\n", &["unknown field `prune`"][..]),
        ("mode = \"biggest\"\n", &["mode", "biggest"][..]),
        ("experiment = \"grow\"\n", &["experiment", "grow"][..]),
        ("networks = -3\n", &["networks"][..]),
        ("fractions = 0.1\n", &["fractions"][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let path = tmp.arg(&format!("bad{i}.toml"));
        std::fs::write(&path, text).expect("write");
        let mut needles = needles.to_vec();
        needles.push(&path);
        fails(&["robustness", "--run", &dir, "--config", &path], &needles);
    }
    let missing = tmp.arg("missing.toml");
    fails(&["robustness", "--run", &dir, "--config", &missing], &[&missing]);
    assert!(
        robustness_files(&tmp.path("run")).is_empty(),
        "a refused config wrote {:?}",
        robustness_files(&tmp.path("run"))
    );
}

#[test]
fn impossible_values_are_named_and_nothing_is_written() {
    let tmp = Scratch::new("config-impossible");
    let dir = tmp.arg("run");
    train_smoke(&dir, &[]);
    for (i, (text, needles)) in [
        ("networks = 0\n", &["networks", "at least 1"][..]),
        ("fractions = []\n", &["fractions", "at least one"][..]),
        ("fractions = [0.2, 1.5]\n", &["fractions", "1.5", "[0, 1]"][..]),
        ("fractions = [nan]\n", &["fractions", "NaN"][..]),
        ("experiment = \"churn\"\nrates = [-0.1]\n", &["rates", "-0.1"][..]),
        ("rates = []\n", &["rates"][..]),
        ("experiment = \"neurons\"\nneurons = [1, 0]\n", &["neurons", ">= 1"][..]),
        ("neurons = []\n", &["neurons"][..]),
        ("fire-fraction = 0.0\n", &["fire-fraction", "(0, 1]"][..]),
        ("steps = 0\n", &["steps", "at least 1"][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let path = tmp.arg(&format!("bad{i}.toml"));
        std::fs::write(&path, text).expect("write");
        fails(&["robustness", "--run", &dir, "--config", &path], needles);
    }
    // The same checks apply to flags.
    fails(&["robustness", "--run", &dir, "--networks", "0"], &["--networks"]);
    fails(&["robustness", "--run", &dir, "--p", "1.5"], &["--p", "1.5"]);
    assert!(
        robustness_files(&tmp.path("run")).is_empty(),
        "a refused config wrote {:?}",
        robustness_files(&tmp.path("run"))
    );
}

#[test]
fn the_curves_of_a_real_run_plot() {
    let tmp = Scratch::new("config-plot");
    let dir = tmp.arg("run");
    train_smoke(&dir, &[]);
    std::fs::write(tmp.path("tiny.toml"), TINY_PRUNE).expect("write");
    ok(&["robustness", "--run", &dir, "--config", &tmp.arg("tiny.toml")]);
    let out = ok(&["plot", "--robustness", &tmp.path("run").join("robustness-prune-magnitude.csv").to_string_lossy()]);
    let png = tmp.path("run").join("robustness-prune-magnitude.png");
    assert!(out.contains(&png.to_string_lossy().into_owned()), "{out}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).expect("the PNG exists")));
    let reader = decoder.read_info().expect("a PNG header");
    // Two panels: the curves and the backprop baseline.
    assert_eq!((reader.info().width, reader.info().height), (1640, 600));
}

/// Every experiment gives the same curves on the actor simulation (both executors) as on the
/// reference path: the engines share the topology operations and the state carry-over, and
/// lockstep actors reproduce the reference step.
#[test]
fn every_experiment_gives_the_same_curves_on_the_actors() {
    let tmp = Scratch::new("engines");
    let dir = tmp.arg("run");
    train_smoke(&dir, &["--set", "rule.index-code=false"]);
    for (config, stem) in [
        ("configs/robustness-prune.toml", "robustness-prune-random"),
        ("configs/robustness-neurons.toml", "robustness-neurons"),
        ("configs/robustness-churn.toml", "robustness-churn"),
    ] {
        let base = ["robustness", "--run", &dir, "--config", config, "--networks", "3", "--recover", "3"];
        let reference = ok(&base);
        assert!(reference.contains("engine: reference"), "{reference}");
        let curves = read(&tmp.path("run").join(format!("{stem}.csv")));
        for executor in ["tasks", "shards"] {
            // The second executor replaces the first one's files (another experiment by its plan).
            let out = ok(&[&base[..], &["--engine", "actors", "--executor", executor, "--force"]].concat());
            assert!(out.contains("engine: actors"), "{out}");
            let actors = read(&tmp.path("run").join(format!("{stem}-actors.csv")));
            assert_eq!(actors, curves, "{config} on {executor}: the actors' curves differ from the reference path's");
            let copy = read(&tmp.path("run").join(format!("{stem}-actors.toml")));
            assert!(
                copy.contains("engine = \"actors\"") && copy.contains(&format!("executor = \"{executor}\"")),
                "{copy}"
            );
        }
    }
    fails(&["robustness", "--run", &dir, "--engine", "actors", "--shards", "0"], &["shards"]);
}
