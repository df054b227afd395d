//! End-to-end tests of `--json` on the commands that print a result table (`robustness`,
//! `sweep`, `check`, `bench`, `bench-actors`), each on a seconds-long case: stdout is one JSON
//! object on one line, and it holds what was asked (as many rows as seeds, fractions or cases;
//! accuracies in [0, 1]; the numbers the table and the files show).
//!
//! The binary is built and found by `meta_nca_tests::bin` (see `tests/src/lib.rs`).

use std::path::Path;

use meta_nca_tests::{Scratch, ok};
use serde_json::Value;

/// Trains `configs/smoke.toml` (seed 1, 4 grow steps, Iris, hidden [3]) into `dir`.
fn train_smoke(dir: &str) {
    ok(&["train", "--config", "configs/smoke.toml", "--out", dir, "--quiet", "--eval-networks", "0"]);
}

/// Runs `meta-nca args..` and parses its stdout, which must be one JSON object on one line.
fn json_of(args: &[&str]) -> Value {
    let out = ok(args);
    assert_eq!(out.lines().count(), 1, "meta-nca {args:?}: stdout is not one line:\n{out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("meta-nca {args:?}: not JSON ({e}):\n{out}"));
    assert!(v.is_object(), "meta-nca {args:?}: not an object:\n{out}");
    v
}

/// `v[path..]`, which must exist.
fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |node, key| node.get(key).unwrap_or_else(|| panic!("no {path:?} in {v}")))
}

fn num(v: &Value, path: &[&str]) -> f64 {
    at(v, path).as_f64().unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

fn arr<'a>(v: &'a Value, path: &[&str]) -> &'a Vec<Value> {
    at(v, path).as_array().unwrap_or_else(|| panic!("{path:?} is not an array in {v}"))
}

fn numbers(v: &Value, path: &[&str]) -> Vec<f64> {
    arr(v, path).iter().map(|x| x.as_f64().unwrap_or_else(|| panic!("{path:?} holds {x}"))).collect()
}

fn is_acc(v: f64) -> bool {
    (0.0..=1.0).contains(&v)
}

/// An accuracy summary `{mean, min, max}` in [0, 1], in order.
fn check_stats(v: &Value, path: &[&str]) {
    let stats = at(v, path);
    let (mean, min, max) = (num(stats, &["mean"]), num(stats, &["min"]), num(stats, &["max"]));
    assert!(is_acc(mean) && is_acc(min) && is_acc(max), "{path:?}: {mean} {min} {max}");
    // The mean is a sum divided by n: allow rounding in its last bits.
    assert!(min <= mean + 1e-12 && mean <= max + 1e-12, "{path:?}: min {min} mean {mean} max {max}");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn robustness_json_holds_the_curves_of_the_fractions_asked() {
    let tmp = Scratch::new("robustness-json");
    let run = tmp.arg("run");
    train_smoke(&run);
    let flags = ["--networks", "3", "--fractions", "0.5", "--recover", "2", "--fine-tune", "2"];
    let report = json_of(&[&["robustness", "--run", &run, "--json"][..], &flags].concat());
    assert_eq!(at(&report, &["plan", "experiment"]), "prune");
    assert_eq!(num(&report, &["plan", "networks"]), 3.0);
    assert_eq!(num(&report, &["plan", "steps"]), 4.0, "the run's grow steps");
    assert!(at(&report, &["plan"]).get("rates").is_none(), "keys of another experiment: {report}");
    let curves = arr(&report, &["curves"]);
    assert_eq!(curves.len(), 1, "one curve per fraction asked");
    let curve = &curves[0];
    assert_eq!(num(curve, &["fraction"]), 0.5);
    for key in ["grown_val", "grown_train"] {
        let points = numbers(curve, &[key]);
        assert_eq!(points.len(), 1 + 1 + 2, "{key}: before, right after, 2 recovery steps");
        assert!(points.iter().all(|&a| is_acc(a)), "{key}: {points:?}");
    }
    let baseline = numbers(curve, &["baseline_val"]);
    assert_eq!(baseline.len(), 3);
    assert!(baseline.iter().all(|&a| is_acc(a)), "{baseline:?}");

    // The files it names are written, and hold its numbers (rounded to 4 places).
    let csv = read(Path::new(at(&report, &["curves_file"]).as_str().expect("a path")));
    let val: Vec<f64> =
        csv.lines().skip(1).map(|l| l.rsplit(',').next().and_then(|v| v.parse().ok()).expect("a number")).collect();
    let grown_val = numbers(curve, &["grown_val"]);
    assert_eq!(val.len(), grown_val.len(), "{csv}");
    for (file, json) in val.iter().zip(&grown_val) {
        assert!((file - json).abs() <= 5e-5, "{file} in the CSV, {json} in the JSON");
    }
    assert!(Path::new(at(&report, &["baseline_file"]).as_str().expect("a path")).is_file());
    assert!(Path::new(at(&report, &["config_file"]).as_str().expect("a path")).is_file());

    // Without --json (the same experiment again), the table shows the same numbers.
    let table = ok(&[&["robustness", "--run", &run][..], &flags].concat());
    let row = table.lines().find(|l| l.starts_with("50%")).unwrap_or_else(|| panic!("no 50% row:\n{table}"));
    let printed: Vec<f64> = row.split_whitespace().skip(1).map(|v| v.parse().expect("a number")).collect();
    let best = grown_val[1..].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let want = [grown_val[0], grown_val[1], grown_val[3], best, baseline[0], baseline[1], baseline[2]];
    assert_eq!(printed.len(), want.len(), "{row}");
    for (p, w) in printed.iter().zip(want) {
        assert!((p - w).abs() <= 5e-5, "table {row:?}, JSON {want:?}");
    }
}

#[test]
fn sweep_json_has_one_row_per_seed() {
    let tmp = Scratch::new("sweep-json");
    let out = tmp.arg("sweep");
    let report = json_of(&[
        "sweep",
        "--config",
        "configs/smoke.toml",
        "--set",
        "train.meta-epochs=3",
        "--seeds",
        "2",
        "--first-seed",
        "5",
        "--networks",
        "3",
        "--out",
        &out,
        "--json",
    ]);
    let columns = arr(&report, &["columns"]);
    assert_eq!(columns.len(), 2, "the config's dataset, as given and permuted: {columns:?}");
    let seeds = arr(&report, &["seeds"]);
    let got: Vec<f64> = seeds.iter().map(|s| num(s, &["seed"])).collect();
    assert_eq!(got, [5.0, 6.0], "the seeds asked, in order");
    let mut means = Vec::new();
    for s in seeds {
        assert!(num(s, &["seconds"]) > 0.0);
        let reports = arr(s, &["reports"]);
        assert_eq!(reports.len(), columns.len());
        for r in reports {
            assert_eq!(num(r, &["networks"]), 3.0);
            assert_eq!(num(r, &["seed"]), num(s, &["seed"]), "each seed's rule is evaluated with its seed");
            check_stats(r, &["val_acc"]);
            check_stats(r, &["train_acc"]);
            assert!(is_acc(num(r, &["baseline", "val_acc"])));
        }
        means.push(num(&reports[0], &["val_acc", "mean"]));
    }
    // The summary is over the seeds' mean validation accuracies.
    let spread = &arr(&report, &["summary", "val_acc"])[0];
    let mean = means.iter().sum::<f64>() / 2.0;
    assert!((num(spread, &["mean"]) - mean).abs() <= 1e-12, "{spread} vs {means:?}");
    assert_eq!(num(spread, &["min"]), means.iter().copied().fold(f64::INFINITY, f64::min));
    assert!(num(spread, &["std"]) >= 0.0);
    assert!(arr(&report, &["failures"]).is_empty());
    for seed in ["seed-5", "seed-6"] {
        assert!(tmp.path("sweep").join(seed).join("config.toml").is_file(), "{seed}'s run");
    }
    assert!(read(&tmp.path("sweep").join("sweep.txt")).contains("backprop"), "the table is written all the same");
}

#[test]
fn check_json_reports_lockstep_per_step_and_async_runs() {
    let tmp = Scratch::new("check-json");
    let run = tmp.arg("run");
    train_smoke(&run);
    let report = json_of(&["check", "--run", &run, "--steps", "3", "--runs", "2", "--json"]);
    assert_eq!(num(&report, &["steps"]), 3.0);
    // Iris, hidden [3], bias: (4 + 1) * 3 + (3 + 1) * 3.
    assert_eq!(num(&report, &["cells"]), 27.0);
    let lockstep = at(&report, &["lockstep"]);
    assert_eq!(at(lockstep, &["ok"]), true);
    let tol = num(&report, &["tol"]);
    let executors = arr(lockstep, &["executors"]);
    let names: Vec<&str> = executors.iter().map(|e| at(e, &["executor"]).as_str().expect("a name")).collect();
    assert_eq!(names, ["tasks", "shards"]);
    for e in executors {
        let max_dw = numbers(e, &["max_dw"]);
        assert_eq!(max_dw.len(), 3, "one per step");
        assert!(max_dw.iter().chain([&num(e, &["final_diff"])]).all(|d| (0.0..=tol).contains(d)), "{e}");
        assert!(is_acc(num(e, &["train_acc"])) && is_acc(num(e, &["val_acc"])));
    }
    assert!(num(lockstep, &["worst"]) <= tol);
    let runs = at(&report, &["async"]);
    assert_eq!(num(runs, &["runs"]), 2.0);
    for key in ["lockstep_train_acc", "async_train_acc", "lockstep_val_acc", "async_val_acc", "agreement"] {
        check_stats(runs, &[key]);
    }
    let shares = numbers(runs, &["staleness_share"]);
    assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{shares:?}");
    for key in ["fired_lockstep", "fired_async"] {
        assert!(is_acc(num(runs, &[key])), "{key}");
    }
    assert!(num(runs, &["rule", "batches"]) >= 1.0);
}

#[test]
fn bench_json_times_the_configuration_asked() {
    let report = json_of(&["bench", "--only", "prototype", "--epochs", "2", "--json"]);
    assert_eq!(num(&report, &["epochs"]), 2.0);
    assert!(num(&report, &["cores"]) >= 1.0);
    let rows = arr(&report, &["meta_epochs"]);
    assert_eq!(rows.len(), 1, "--only prototype: {rows:?}");
    let row = &rows[0];
    assert!(at(row, &["name"]).as_str().is_some_and(|n| n.contains("prototype")), "{row}");
    // Iris [4, 3] with bias, one network.
    assert_eq!(num(row, &["cells"]), 15.0);
    let (p10, median, p90) = (num(row, &["p10_ms"]), num(row, &["median_ms"]), num(row, &["p90_ms"]));
    assert!(0.0 < p10 && p10 <= median && median <= p90, "{row}");
    assert!(arr(&report, &["grow_steps"]).is_empty(), "left out by --only");
    assert!(at(&report, &["rule_passes"]).is_null(), "left out by --only");
    assert!(at(&report, &["train_loop"]).is_null(), "left out by --only");
}

#[test]
fn bench_json_times_the_train_loop_against_the_bare_meta_epoch() {
    let report = json_of(&["bench", "--only", "train loop", "--json"]);
    assert!(arr(&report, &["meta_epochs"]).is_empty(), "left out by --only");
    let t = at(&report, &["train_loop"]);
    assert_eq!(num(t, &["runs"]), 5.0);
    assert_eq!(num(t, &["timing", "cells"]), 15.0);
    let (loop_ms, bare) = (num(t, &["timing", "median_ms"]), num(t, &["bare_ms"]));
    assert!(loop_ms > 0.0 && bare > 0.0, "{t}");
    assert!((num(t, &["ratio"]) - loop_ms / bare).abs() < 1e-12, "{t}");
}

#[test]
fn bench_actors_json_has_every_case_at_each_size() {
    let report = json_of(&["bench-actors", "--cells", "100", "--steps", "1", "--samples", "1", "--json"]);
    assert_eq!(num(&report, &["steps"]), 1.0);
    let limit = num(&report, &["limit", "limit"]);
    assert!(limit > 0.0 && num(&report, &["limit", "forward"]) > 0.0);
    let rows = arr(&report, &["rows"]);
    let cases: Vec<&str> = rows.iter().map(|r| at(r, &["case"]).as_str().expect("a case")).collect();
    assert_eq!(cases, ["floor", "tasks-lockstep", "tasks-async", "shards-lockstep", "shards-async"]);
    for r in rows {
        let cells = num(r, &["cells"]);
        // `[k, k, 10]` with bias cells, about 100 of them.
        assert!((50.0..=200.0).contains(&cells), "{r}");
        assert_eq!(num(r, &["cell_steps"]), cells, "one step of every cell");
        let (seconds, rate) = (num(r, &["seconds"]), num(r, &["rate"]));
        assert!(seconds > 0.0 && (rate * seconds - cells).abs() <= 1e-6 * cells, "{r}");
        let service = at(r, &["case"]) != "floor";
        assert_eq!(num(r, &["rule_seconds"]) >= 0.0, service, "{r}");
        assert_eq!(num(r, &["rule_rows"]) > 0.0, service, "{r}");
    }
}
