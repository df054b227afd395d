//! End-to-end: meta-train the smoke config with class-incremental and drifting episodes, then
//! `meta-nca continual` on the rule: its tables and files, the same numbers on the actors as on
//! the reference path, refusing to overwrite, clear errors for bad experiment configs, and
//! its picture.

use meta_nca_tests::{Scratch, fails, ok};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not one JSON value ({e}):\n{text}"))
}

#[test]
fn train_with_schedules_then_continual_on_both_engines() {
    let tmp = Scratch::new("continual");
    let run = tmp.arg("run");
    std::fs::write(
        tmp.path("train.toml"),
        "seed = 2\n[task]\nhidden = [[3]]\n[rule]\nhidden = [8]\nindex-code = false\nperception = [\"self\", \"feedback\", \"hebbian\", \
         \"backward\", \"alignment\"]\n[grow]\nsteps = 4\n[train]\nmeta-epochs = 4\nnum-models = 2\n\
         continual-fraction = 0.5\n[[train.continual]]\nphase-steps = 2\n[[train.continual]]\n\
         kind = \"domain-incremental\"\nphase-steps = 2\ndrifts = 1\n",
    )
    .expect("write");
    let cfg = tmp.arg("train.toml");
    ok(&["train", "--config", &cfg, "--out", &run, "--quiet", "--eval-networks", "0"]);
    let written = std::fs::read_to_string(tmp.path("run").join("config.toml")).expect("config.toml");
    let parsed = meta_nca_rule::config::Config::from_toml(&written).expect("the run's config parses");
    assert_eq!(parsed.train.continual.len(), 2, "the schedules are in the run's config");

    std::fs::write(
        tmp.path("exp.toml"),
        "datasets = [\"iris\"]\ngenerated = 1\nnetworks = 2\n[schedule]\nphase-steps = 2\n[baseline]\nepochs = 10\n",
    )
    .expect("write");
    let exp = tmp.arg("exp.toml");
    let out = tmp.arg("out");
    let table = ok(&["continual", "--run", &run, "--config", &exp, "--out", &out]);
    for needle in ["iris: class-incremental", "backprop fine-tuned per phase", "backprop on all data", "seed 0"] {
        assert!(table.contains(needle), "{needle} missing:\n{table}");
    }
    for file in ["report.json", "curves.csv", "phases.csv", "summary.csv", "config.toml"] {
        assert!(tmp.path("out").join(file).is_file(), "{file}");
    }
    let summary = std::fs::read_to_string(tmp.path("out").join("summary.csv")).expect("summary");
    assert!(summary.starts_with("task,method,seen,first,forgetting\n"), "{summary}");
    assert_eq!(summary.lines().count(), 1 + 2 * 3, "iris and a generated task, three methods each");

    // The actors give the same report, through the output neurons they add.
    let on_reference = json(&ok(&["continual", "--run", &run, "--config", &exp, "--out", &tmp.arg("a"), "--json"]));
    let on_actors = json(&ok(&[
        "continual",
        "--run",
        &run,
        "--config",
        &exp,
        "--out",
        &tmp.arg("b"),
        "--json",
        "--engine",
        "actors",
    ]));
    let curve = |v: &serde_json::Value| -> Vec<f64> {
        v[0]["curve"].as_array().expect("curve").iter().map(|c| c["seen"].as_f64().expect("seen")).collect()
    };
    let (a, b) = (curve(&on_reference), curve(&on_actors));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-12), "{a:?}\n{b:?}");
    assert_eq!(on_actors[0]["engine"], "actors (task per cell)");

    // The resolved config reruns the experiment.
    let again = tmp.path("out").join("config.toml");
    let rerun = json(&ok(&[
        "continual",
        "--run",
        &run,
        "--config",
        &again.to_string_lossy(),
        "--out",
        &tmp.arg("c"),
        "--json",
    ]));
    assert_eq!(rerun, on_reference, "the written config.toml reproduces the experiment");

    let before = std::fs::read(tmp.path("out").join("report.json")).expect("report");
    fails(&["continual", "--run", &run, "--config", &exp, "--out", &out], &["exists", "--force"]);
    assert_eq!(std::fs::read(tmp.path("out").join("report.json")).expect("report"), before, "left alone");

    for (text, needle) in [
        ("datasets = [\"iris\"]\n[schedule]\nfirst-classes = 3\n", "first-classes"),
        ("datasets = [\"iris\"]\n[schedule]\nphase-steps = 0\n", "phase-steps"),
        ("datasets = [\"iris\"]\nnetwork = 3\n", "unknown field `network`"),
        ("datasets = []\n", "no dataset"),
    ] {
        std::fs::write(tmp.path("bad.toml"), text).expect("write");
        fails(&["continual", "--run", &run, "--config", &tmp.arg("bad.toml"), "--out", &tmp.arg("bad")], &[needle]);
    }

    let plotted = ok(&["plot", "--continual", &tmp.path("out").join("report.json").to_string_lossy()]);
    assert!(plotted.contains("report.png") && tmp.path("out").join("report.png").is_file(), "{plotted}");
}
