//! End-to-end: meta-train the smoke config on a mixture with generated tasks, then run the
//! quick learning suite on the rule: tables, JSON, the files it writes, refusing to overwrite
//! them, its picture, and clear errors for impossible `[tasks]` values and horizons.

use meta_nca_tests::{Scratch, fails, ok};

/// The smoke config with two small generated tasks per meta-epoch.
const MIXTURE: [&str; 8] = [
    "--set",
    "tasks.per-epoch=2",
    "--set",
    "tasks.features=[2, 8]",
    "--set",
    "tasks.rows=[100, 200]",
    "--set",
    "tasks.classes=[2, 4]",
];

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not one JSON value ({e}):\n{text}"))
}

fn acc(v: &serde_json::Value) -> f64 {
    let a = v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"));
    assert!((0.0..=1.0).contains(&a), "accuracy {a}");
    a
}

#[test]
fn train_on_generated_tasks_then_quick_suite() {
    let tmp = Scratch::new("suite");
    let run = tmp.arg("run");
    let mut args = vec!["train", "--config", "configs/smoke.toml", "--out", &run, "--quiet", "--eval-networks", "0"];
    args.extend_from_slice(&MIXTURE);
    ok(&args);
    let config = std::fs::read_to_string(tmp.path("run").join("config.toml")).expect("config.toml");
    let parsed = meta_nca_rule::config::Config::from_toml(&config).expect("the run's config parses");
    assert_eq!((parsed.tasks.per_epoch, parsed.tasks.features, parsed.tasks.rows), (2, [2, 8], [100, 200]));

    let report = json(&ok(&["suite", "--run", &run, "--quick", "--quiet", "--json"]));
    let tasks = report["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 4, "3 generated tasks and iris: {report}");
    let kinds: Vec<&str> = tasks.iter().map(|t| t["kind"].as_str().expect("kind")).collect();
    assert_eq!(kinds, ["mixture", "teacher", "xor", "dataset"]);
    assert_eq!(tasks[3]["seen"], true, "iris is in the smoke config's data");
    for t in tasks {
        let steps: Vec<u64> =
            t["horizons"].as_array().expect("horizons").iter().map(|h| h["steps"].as_u64().expect("steps")).collect();
        assert_eq!(steps, [4, 8, 20], "K, 2K and 5K of the smoke config's K = 4");
        for h in t["horizons"].as_array().expect("horizons") {
            for key in ["grown_val", "permuted_val", "grown_train"] {
                acc(&h[key]["mean"]);
            }
            acc(&h["adam"]["val"]);
            acc(&h["adam_xavier"]["val"]);
            let grown_loss = h["grown_train_loss"]["mean"].as_f64().expect("grown training loss");
            assert!(grown_loss.is_finite() && grown_loss > 0.0, "{h}");
        }
        acc(&t["backprop"]["val"]);
        acc(&t["logistic"]["val"]);
        // Cross-entropy from all-zero weights is ln C; backprop trained to convergence fits below it.
        let chance = (t["classes"].as_u64().expect("classes") as f64).ln();
        let bp_loss = t["backprop"]["train_loss"].as_f64().expect("backprop training loss");
        assert!(bp_loss > 0.0 && bp_loss < chance, "{t}");
    }
    assert!(report["adam_lr"].as_f64().is_some_and(|lr| lr > 0.0), "{report}");
    assert_eq!(report["adam_lr_grid"].as_array().expect("grid").len(), 2);
    assert!(report["adam_xavier_lr"].as_f64().is_some_and(|lr| lr > 0.0), "{report}");
    assert_eq!(report["adam_xavier_lr_grid"].as_array().expect("grid").len(), 2);

    let csv = std::fs::read_to_string(tmp.path("run").join("suite.csv")).expect("suite.csv");
    let mut lines = csv.lines();
    let header = lines.next().expect("header");
    assert!(header.starts_with("task,kind,features,classes"), "{header}");
    assert!(header.contains(",grown_train_loss,") && header.contains(",backprop_train_loss"), "{header}");
    assert_eq!(lines.count(), 4 * 3 + 3, "a row per task and step count, then the means");
    assert!(tmp.path("run").join("suite.json").is_file());

    let json_path = tmp.path("run").join("suite.json");
    let plotted = ok(&["plot", "--suite", &json_path.to_string_lossy()]);
    assert!(plotted.contains("suite.png") && tmp.path("run").join("suite.png").is_file(), "{plotted}");
    // A suite.json written before the Xavier-start baseline existed still plots.
    let mut older = report.clone();
    older.as_object_mut().expect("report").remove("adam_xavier_lr");
    for t in older["tasks"].as_array_mut().expect("tasks") {
        for h in t["horizons"].as_array_mut().expect("horizons") {
            h.as_object_mut().expect("horizon").remove("adam_xavier");
        }
    }
    let older_path = tmp.path("older").join("suite.json");
    std::fs::create_dir_all(tmp.path("older")).expect("folder");
    std::fs::write(&older_path, serde_json::to_string(&older).expect("json")).expect("write");
    let plotted = ok(&["plot", "--suite", &older_path.to_string_lossy()]);
    assert!(tmp.path("older").join("suite.png").is_file(), "{plotted}");

    // The held-out tasks, exported, are the suite's tasks to the last bit, and a rule grows on one alone.
    let exported = tmp.arg("tasks");
    ok(&["suite", "--run", &run, "--quick", "--quiet", "--force", "--name", "again", "--export-tasks", &exported]);
    let held_out = meta_nca_rule::suite::held_out_datasets(&meta_nca_rule::suite::SuiteSpec::quick(vec![4]));
    assert_eq!(held_out.len(), 3);
    for (d, t) in held_out.iter().zip(tasks) {
        assert_eq!(t["name"].as_str(), Some(d.name.as_str()));
        let path = tmp.path("tasks").join(format!("{}.csv", d.name));
        let back = meta_nca_rule::data::Dataset::from_csv_path(&path, None).expect("an exported task loads");
        assert_eq!((&back.x, &back.y, &back.class_names), (&d.x, &d.y, &d.class_names), "{}", path.display());
        let rows = t["train_rows"].as_u64().expect("rows") + t["val_rows"].as_u64().expect("rows");
        assert_eq!(rows as usize, back.x.len());
    }
    let one = tmp.path("tasks").join(format!("{}.csv", held_out[0].name));
    let grown = ok(&["eval", "--run", &run, "--dataset", &one.to_string_lossy(), "--networks", "3", "--json"]);
    assert_eq!(json(&grown)["dataset"].as_str(), Some(held_out[0].name.as_str()));

    fails(&["suite", "--run", &run, "--quick", "--quiet"], &["suite.", "--force"]);
    let table = ok(&["suite", "--run", &run, "--quick", "--quiet", "--force", "--horizons", "K,3"]);
    assert!(table.contains("growth past K") && table.contains("iris"), "{table}");
    fails(&["suite", "--run", &run, "--quick", "--quiet", "--force", "--horizons", "K,x"], &["--horizons", "'x'"]);

    // Wider, latent held-out tasks, written next to the standard suite under another name.
    let wide = ["suite", "--run", &run, "--quick", "--quiet", "--datasets", "", "--horizons", "K"];
    let latent =
        json(&ok(&[&wide[..], &["--features", "20,40", "--latent", "1", "--name", "wide", "--json"]].concat()));
    for t in latent["tasks"].as_array().expect("tasks") {
        let features = t["features"].as_u64().expect("features");
        assert!((20..=40).contains(&features), "{t}");
        let kind = t["kind"].as_str().expect("kind");
        assert!(kind.contains('/'), "a latent task's kind names its latent dimensions: {kind}");
    }
    assert!(tmp.path("run").join("wide.json").is_file() && tmp.path("run").join("wide.csv").is_file());
    fails(&[&wide[..], &["--features", "9,2"]].concat(), &["--features", "above"]);
    fails(&[&wide[..], &["--classes", "1,3", "--force"]].concat(), &["tasks.classes"]);
    fails(&[&wide[..], &["--latent", "2", "--force"]].concat(), &["tasks.latent"]);
    fails(&[&wide[..], &["--name", "../x"]].concat(), &["--name", "file stem"]);
}

#[test]
fn impossible_task_ranges_are_named() {
    let tmp = Scratch::new("suite-bad-ranges");
    let run = tmp.arg("run");
    fails(
        &["train", "--config", "configs/smoke.toml", "--out", &run, "--quiet", "--set", "tasks.classes=[5, 3]"],
        &["tasks.classes"],
    );
    fails(
        &[
            "train",
            "--config",
            "configs/smoke.toml",
            "--out",
            &run,
            "--quiet",
            "--set",
            "tasks.per-epoch=1",
            "--set",
            "rule.index-bits=4",
        ],
        &["rule.index-bits", "tasks.features"],
    );
    assert!(!tmp.path("run").exists(), "a failed train created its run folder");
}
