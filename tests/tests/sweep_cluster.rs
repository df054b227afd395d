//! End-to-end test of a sweep beyond one machine: `sweep --plan` writes one `meta-nca train`
//! line per seed, the lines run in parallel through `xargs -P 2` from another directory (as a
//! job array would), and `sweep --collect` tabulates the finished runs as a sweep on one
//! machine does; a missing or unfinished seed is named and fails the command; an existing plan
//! file is refused.
//!
//! The binary is built and found by `meta_nca_tests::bin` (see `tests/src/lib.rs`); the plan's
//! lines call it by its absolute path.

use std::path::Path;
use std::process::Command;

use meta_nca_tests::{Scratch, fails, ok, run, stderr, stdout};
use serde_json::Value;

/// `configs/smoke.toml` cut to 5 meta-epochs (its checkpoint interval): seconds per seed.
const SMOKE: [&str; 4] = ["--config", "configs/smoke.toml", "--set", "train.meta-epochs=5"];

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not one JSON value ({e}):\n{text}"))
}

fn seeds_of(report: &Value) -> Vec<u64> {
    let rows = report["seeds"].as_array().unwrap_or_else(|| panic!("no seeds array in {report}"));
    rows.iter().map(|r| r["seed"].as_u64().unwrap_or_else(|| panic!("a row without a seed: {r}"))).collect()
}

/// Each seed's evaluations (everything but the training time).
fn reports(report: &Value) -> Vec<Value> {
    let rows = report["seeds"].as_array().unwrap_or_else(|| panic!("no seeds array in {report}"));
    rows.iter().map(|r| r["reports"].clone()).collect()
}

/// Runs every line of `plan` with `xargs -P 2` (two at a time) from `cwd`.
fn run_plan(plan: &Path, cwd: &Path) {
    let file = std::fs::File::open(plan).unwrap_or_else(|e| panic!("{}: {e}", plan.display()));
    let out = Command::new("xargs")
        .args(["-d", "\n", "-P", "2", "-I{}", "sh", "-c", "{}"])
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdin(file)
        .output()
        .expect("running xargs");
    assert!(
        out.status.success(),
        "the plan's lines failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn planned_seeds_run_anywhere_and_collect_into_the_sweep_table() {
    let tmp = Scratch::new("plan");
    // A space in the folder: the lines must quote their paths.
    let (dir, plan) = (tmp.arg("my sweep"), tmp.arg("plan.sh"));
    let mut args = vec!["sweep"];
    args.extend(SMOKE);
    args.extend(["--seeds", "3", "--first-seed", "4", "--networks", "2", "--out", &dir, "--plan", &plan]);
    let printed = ok(&args);
    assert!(printed.contains("wrote 3 commands"), "{printed}");
    assert!(printed.contains("sweep --collect"), "the collect command is printed:\n{printed}");
    let lines = std::fs::read_to_string(tmp.path("plan.sh")).expect("the plan file");
    assert_eq!(lines.lines().count(), 3, "one line per seed:\n{lines}");
    for (line, seed) in lines.lines().zip(4..) {
        assert!(line.contains(" train ") && line.contains(&format!("--set seed={seed} ")), "{line}");
        assert!(line.contains(&format!("'{dir}/seed-{seed}'")), "the run folder, quoted: {line}");
    }
    assert!(tmp.path("my sweep").join("config.toml").is_file(), "the resolved config is written once");
    for seed in 4..7 {
        assert!(!tmp.path("my sweep").join(format!("seed-{seed}")).exists(), "--plan trains nothing");
    }

    // An existing plan file is refused, and left as it was.
    fails(&args, &["plan.sh", "already exists", "--force"]);
    assert_eq!(std::fs::read_to_string(tmp.path("plan.sh")).expect("the plan file"), lines);

    // The lines run from anywhere (here the scratch folder's parent), two at a time.
    run_plan(&tmp.path("plan.sh"), tmp.dir().parent().unwrap_or(tmp.dir()));
    let report = json(&ok(&["sweep", "--collect", &dir, "--networks", "2", "--json"]));
    assert_eq!(seeds_of(&report), [4, 5, 6], "{report}");
    assert_eq!(report["failures"].as_array().map(Vec::len), Some(0), "{report}");
    assert_eq!(report["columns"].as_array().map(Vec::len), Some(2), "iris as given and permuted");
    assert!(
        std::fs::read_to_string(tmp.path("my sweep").join("sweep.txt")).is_ok_and(|t| t.contains("backprop")),
        "the table is written to sweep.txt"
    );

    // The same rules, evaluated the same way, as a sweep that trains its seeds here.
    let local = tmp.arg("local");
    let mut args = vec!["sweep"];
    args.extend(SMOKE);
    args.extend(["--seeds", "3", "--first-seed", "4", "--networks", "2", "--out", &local, "--json"]);
    let here = json(&ok(&args));
    assert_eq!(reports(&here), reports(&report), "local {here}\ncollected {report}");

    // Seed 5's run is gone and seed 6's is unfinished (its config now asks for more epochs).
    std::fs::remove_dir_all(tmp.path("my sweep").join("seed-5")).expect("removing seed-5");
    let config = tmp.path("my sweep").join("seed-6").join("config.toml");
    let text = std::fs::read_to_string(&config).expect("seed-6's config");
    assert!(text.contains("meta-epochs = 5"), "{text}");
    std::fs::write(&config, text.replace("meta-epochs = 5", "meta-epochs = 10")).expect("editing seed-6's config");

    let table = run(&["sweep", "--collect", &dir, "--networks", "2"]);
    let (out, err) = (stdout(&table), stderr(&table));
    assert!(!table.status.success() && table.status.code().is_some(), "collect must fail:\n{out}\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("seed 5: missing") && err.contains("seed 6: unfinished: 5 of 10"), "{err}");
    assert!(out.lines().any(|l| l.starts_with("4 ")), "the finished seed's row is printed:\n{out}");
    assert!(!out.lines().any(|l| l.starts_with("5 ") || l.starts_with("6 ")), "{out}");

    let partial = run(&["sweep", "--collect", &dir, "--networks", "2", "--json"]);
    assert!(!partial.status.success());
    let report = json(&stdout(&partial));
    assert_eq!(seeds_of(&report), [4], "{report}");
    let failures: Vec<&str> = report["failures"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    assert_eq!(failures.len(), 2, "{report}");
    assert!(failures[0].starts_with("seed 5:") && failures[1].starts_with("seed 6:"), "{failures:?}");
}

#[test]
fn plan_and_collect_are_refused_together_and_collect_needs_a_sweep() {
    let tmp = Scratch::new("refused");
    let (dir, plan) = (tmp.arg("sweep"), tmp.arg("plan.sh"));
    let o = run(&["sweep", "--collect", &dir, "--plan", &plan]);
    assert_eq!(o.status.code(), Some(2), "a usage error:\n{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    assert!(!tmp.path("plan.sh").exists());
    let o = run(&["sweep", "--collect", &dir, "--config", "configs/smoke.toml"]);
    assert_eq!(o.status.code(), Some(2), "--collect reads each run's config:\n{}", stderr(&o));
    fails(&["sweep", "--collect", &dir], &["does not exist"]);
    std::fs::create_dir_all(tmp.path("sweep")).expect("an empty folder");
    fails(&["sweep", "--collect", &dir], &["no seeds to collect"]);
}
