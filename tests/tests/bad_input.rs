//! Bad input gets a clear error naming the problem, a non-zero exit and no panic, and leaves
//! nothing behind: impossible flag values and config values.

use meta_nca_tests::{Scratch, fails, ok};

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
