//! Checkpoints at library level: a saved trainer loads back bit-identically (parameters, Adam
//! moments, metadata), damaged or missing files are clear errors, and continuing from a loaded
//! checkpoint gives exactly the numbers of continuing the original trainer.

use std::path::Path;

use meta_nca_rule::Error;
use meta_nca_rule::checkpoint::Checkpoint;
use meta_nca_rule::config::{Config, HeadStart, LossStep};
use meta_nca_rule::experiment::Experiment;
use meta_nca_rule::train::{EpochMetrics, Trainer};

/// The smoke config (`configs/smoke.toml`), built here so the test does not depend on the file.
fn smoke() -> Config {
    let mut c = Config { seed: 1, ..Config::default() };
    c.task.hidden = vec![vec![3]];
    c.rule.hidden = vec![8];
    c.grow.steps = 4;
    c.train.meta_epochs = 20;
    c.train.num_models = 2;
    c
}

fn trainer(config: &Config) -> Trainer {
    Trainer::new(Experiment::new(config.clone()).expect("experiment")).expect("trainer")
}

use meta_nca_tests::Scratch;

fn bits(v: &[Vec<f64>]) -> Vec<Vec<u64>> {
    v.iter().map(|x| x.iter().map(|f| f.to_bits()).collect()).collect()
}

fn param_bits(c: &Checkpoint) -> Vec<(String, Vec<u64>)> {
    c.rule.params_flat().into_iter().map(|(n, v)| (n, v.iter().map(|f| f.to_bits()).collect())).collect()
}

/// Asserts two checkpoints hold bit-identical parameters, optimiser state and metadata.
fn assert_same(a: &Checkpoint, b: &Checkpoint) {
    assert!(param_bits(a) == param_bits(b), "parameters differ");
    assert!(bits(&a.adam.m) == bits(&b.adam.m), "Adam first moments differ");
    assert!(bits(&a.adam.v) == bits(&b.adam.v), "Adam second moments differ");
    assert_eq!(a.adam.t, b.adam.t);
    assert_eq!(
        [a.adam.lr, a.adam.beta1, a.adam.beta2, a.adam.eps].map(f64::to_bits),
        [b.adam.lr, b.adam.beta1, b.adam.beta2, b.adam.eps].map(f64::to_bits)
    );
    assert_eq!(a.meta, b.meta);
    assert_eq!(a.rule.shape, b.rule.shape);
}

/// A trainer after `epochs` meta-epochs, saved into `path`.
fn trained_and_saved(config: &Config, epochs: usize, path: &Path) -> Trainer {
    let mut t = trainer(config);
    for _ in 0..epochs {
        t.meta_epoch().expect("meta-epoch");
    }
    t.checkpoint().save(path).expect("save");
    t
}

#[test]
fn save_and_load_round_trip_bit_exactly() {
    let tmp = Scratch::new("round-trip");
    let path = tmp.path("rule.safetensors");
    let t = trained_and_saved(&smoke(), 2, &path);
    let saved = t.checkpoint();
    assert_eq!(saved.adam.t, 2, "two Adam steps");
    assert!(saved.adam.m.iter().flatten().any(|&m| m != 0.0), "moments are non-trivial");
    let loaded = Checkpoint::load(&path).expect("load");
    assert_same(&saved, &loaded);
    assert_eq!(loaded.meta.meta_epoch, 2);
    assert_eq!(loaded.meta.config, smoke());
    // Saving the loaded checkpoint again gives a file that loads to the same thing.
    let again = tmp.path("again.safetensors");
    loaded.save(&again).expect("save again");
    assert_same(&loaded, &Checkpoint::load(&again).expect("load again"));
    // Writes are atomic: no temporary file is left next to the checkpoints.
    let mut names: Vec<String> = std::fs::read_dir(tmp.dir())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["again.safetensors", "rule.safetensors"]);
}

/// Splits a safetensors file into its JSON header and its data.
fn split(bytes: &[u8]) -> (serde_json::Map<String, serde_json::Value>, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("JSON header");
    (header.as_object().expect("an object").clone(), bytes[8 + n..].to_vec())
}

/// Joins a header and data back into a safetensors file (header padded to 8 bytes).
fn join(header: &serde_json::Map<String, serde_json::Value>, data: &[u8]) -> Vec<u8> {
    let mut text = serde_json::to_string(header).expect("serialise");
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Removes tensor `name` from a split file: its bytes go, later tensors' offsets move down.
fn drop_tensor(
    header: &serde_json::Map<String, serde_json::Value>,
    data: &[u8],
    name: &str,
) -> (serde_json::Map<String, serde_json::Value>, Vec<u8>) {
    let range = |v: &serde_json::Value| {
        let o = &v["data_offsets"];
        (o[0].as_u64().expect("start") as usize, o[1].as_u64().expect("end") as usize)
    };
    let mut tensors: Vec<(&String, (usize, usize))> =
        header.iter().filter(|(k, _)| *k != "__metadata__").map(|(k, v)| (k, range(v))).collect();
    tensors.sort_by_key(|t| t.1);
    let mut out_header = header.clone();
    out_header.remove(name).expect("the tensor exists");
    let mut out_data = Vec::new();
    for (k, (start, end)) in tensors {
        if k == name {
            continue;
        }
        let at = out_data.len();
        out_data.extend_from_slice(&data[start..end]);
        out_header[k.as_str()]["data_offsets"] = serde_json::json!([at, out_data.len()]);
    }
    (out_header, out_data)
}

/// Loads `bytes` written to `name` and expects `Error::Checkpoint` naming the file and
/// mentioning `needle`.
fn expect_checkpoint_error(tmp: &Scratch, name: &str, bytes: &[u8], needle: &str) {
    let path = tmp.path(name);
    std::fs::write(&path, bytes).expect("write");
    match Checkpoint::load(&path) {
        Err(e @ Error::Checkpoint { .. }) => {
            let text = e.to_string();
            assert!(text.contains(name), "{name}: the error does not name the file: {text}");
            assert!(text.contains(needle), "{name}: the error does not mention '{needle}': {text}");
        }
        Err(other) => panic!("{name}: expected Error::Checkpoint, got {other:?}"),
        Ok(_) => panic!("{name}: a damaged checkpoint loaded"),
    }
    assert_eq!(std::fs::read(&path).expect("read"), bytes, "{name}: loading changed the file");
}

#[test]
fn damaged_and_missing_checkpoints_are_clear_errors() {
    let tmp = Scratch::new("damaged");
    let path = tmp.path("good.safetensors");
    trained_and_saved(&smoke(), 1, &path);
    let bytes = std::fs::read(&path).expect("read");
    let (header, data) = split(&bytes);

    // Control: re-joining the unchanged header gives a loadable file.
    std::fs::write(tmp.path("rejoined.safetensors"), join(&header, &data)).expect("write");
    assert_same(
        &Checkpoint::load(&path).expect("load"),
        &Checkpoint::load(&tmp.path("rejoined.safetensors")).expect("the re-joined control loads"),
    );

    expect_checkpoint_error(&tmp, "half.safetensors", &bytes[..bytes.len() / 2], "safetensors");
    expect_checkpoint_error(&tmp, "stub.safetensors", &bytes[..4], "safetensors");
    expect_checkpoint_error(&tmp, "empty.safetensors", &[], "safetensors");
    expect_checkpoint_error(&tmp, "last-byte.safetensors", &bytes[..bytes.len() - 1], "safetensors");

    let mut no_meta = header.clone();
    no_meta.remove("__metadata__").expect("the file has metadata");
    expect_checkpoint_error(&tmp, "no-metadata.safetensors", &join(&no_meta, &data), "metadata");

    let mut no_rule_meta = header.clone();
    let info = no_rule_meta["__metadata__"].as_object_mut().expect("metadata map");
    assert!(info.remove("meta-nca").is_some(), "the metadata has the meta-nca entry: {info:?}");
    expect_checkpoint_error(&tmp, "no-rule-meta.safetensors", &join(&no_rule_meta, &data), "metadata");

    let mut corrupt_meta = header.clone();
    corrupt_meta["__metadata__"]["meta-nca"] = serde_json::Value::String("{\"format\": 1,".into());
    expect_checkpoint_error(&tmp, "corrupt-meta.safetensors", &join(&corrupt_meta, &data), "metadata");

    let mut no_adam = header.clone();
    let mut rule_meta: serde_json::Value =
        serde_json::from_str(no_adam["__metadata__"]["meta-nca"].as_str().expect("a JSON string")).expect("JSON");
    assert!(rule_meta.as_object_mut().expect("object").remove("optimizer").is_some(), "optimiser state is stored");
    no_adam["__metadata__"]["meta-nca"] = serde_json::Value::String(rule_meta.to_string());
    expect_checkpoint_error(&tmp, "no-adam.safetensors", &join(&no_adam, &data), "optimiser");

    // A tensor missing from the file is named.
    let moment = header.keys().find(|k| k.starts_with("adam.v.")).expect("an Adam moment tensor").clone();
    let (no_tensor, less_data) = drop_tensor(&header, &data, &moment);
    expect_checkpoint_error(&tmp, "no-tensor.safetensors", &join(&no_tensor, &less_data), &moment);

    // A changed weight no longer matches the checksum stored with the tensors.
    let param = header.keys().find(|k| *k != "__metadata__" && !k.starts_with("adam.")).expect("a parameter").clone();
    let start = header[&param]["data_offsets"][0].as_u64().expect("offset") as usize;
    let mut edited = data.clone();
    edited[start..start + 8].copy_from_slice(&(-1.7e307f64).to_le_bytes());
    expect_checkpoint_error(&tmp, "edited.safetensors", &join(&header, &edited), "checksum");

    // A checkpoint written before checksums existed (no checksum in its metadata) still loads...
    let mut old = header.clone();
    let mut rule_meta: serde_json::Value =
        serde_json::from_str(old["__metadata__"]["meta-nca"].as_str().expect("a JSON string")).expect("JSON");
    assert!(rule_meta.as_object_mut().expect("object").remove("checksum").is_some(), "a checksum is stored");
    old["__metadata__"]["meta-nca"] = serde_json::Value::String(rule_meta.to_string());
    std::fs::write(tmp.path("old.safetensors"), join(&old, &data)).expect("write");
    assert_same(
        &Checkpoint::load(&path).expect("load"),
        &Checkpoint::load(&tmp.path("old.safetensors")).expect("a checkpoint without a checksum loads"),
    );
    // ...and a non-finite parameter in it is still refused.
    let mut nan = data.clone();
    nan[start..start + 8].copy_from_slice(&f64::NAN.to_le_bytes());
    expect_checkpoint_error(&tmp, "nan.safetensors", &join(&old, &nan), "finite");

    // A missing file is an I/O error naming it.
    let missing = tmp.path("missing.safetensors");
    match Checkpoint::load(&missing) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("missing.safetensors"), "{e}"),
        other => panic!("expected Error::Io, got {:?}", other.map(|_| ())),
    }
    // So is saving into a folder that does not exist; nothing is created.
    let t = trainer(&smoke());
    let nowhere = tmp.path("no-such-folder").join("rule.safetensors");
    match t.checkpoint().save(&nowhere) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("no-such-folder"), "{e}"),
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert!(!tmp.path("no-such-folder").exists());
}

/// Metrics without the wall-clock time.
fn timeless(mut m: EpochMetrics) -> EpochMetrics {
    m.seconds = 0.0;
    m
}

fn resume_is_exact(config: Config, test: &str) {
    let tmp = Scratch::new(test);
    let path = tmp.path("rule.safetensors");
    let mut original = trained_and_saved(&config, 2, &path);
    let mut resumed = Trainer::resume(
        Checkpoint::load(&path).expect("load"),
        Experiment::new(config.clone()).expect("experiment"),
        &path,
    )
    .expect("resume");
    assert_eq!(resumed.epoch, 2);
    for _ in 0..3 {
        let a = timeless(original.meta_epoch().expect("original"));
        let b = timeless(resumed.meta_epoch().expect("resumed"));
        assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "epoch {}", a.epoch);
        assert_eq!(a.grad_norm.to_bits(), b.grad_norm.to_bits(), "epoch {}", a.epoch);
        assert_eq!(a, b);
    }
    assert_eq!(original.probe().expect("probe"), resumed.probe().expect("probe"));
    assert_same(&original.checkpoint(), &resumed.checkpoint());
}

#[test]
fn resume_from_a_loaded_checkpoint_is_exact() {
    resume_is_exact(smoke(), "resume-last");
}

#[test]
fn resume_is_exact_with_random_tail_loss_and_two_architectures() {
    let mut c = smoke();
    c.train.loss_step = LossStep::RandomTail;
    c.task.hidden = vec![vec![3], vec![]];
    c.grow.fire_fraction = 0.5;
    resume_is_exact(c, "resume-tail");
}

#[test]
fn resume_is_exact_with_head_starts_held_out_rows_generated_tasks_and_minibatches() {
    let mut c = smoke();
    c.train.head_start = Some(HeadStart { fraction: 0.5, steps: [1, 6] });
    c.tasks.per_epoch = 2;
    c.tasks.features = [2, 5];
    c.tasks.rows = [60, 120];
    c.grow.batch_size = Some(16);
    c.train.held_out = 0.25;
    resume_is_exact(c, "resume-head-start");
}

#[test]
fn a_head_start_grows_the_networks_before_the_taped_unroll() {
    let mut c = smoke();
    let plain = trainer(&c).meta_epoch().expect("plain");
    c.train.head_start = Some(HeadStart { fraction: 1.0, steps: [30, 30] });
    let ahead = trainer(&c).meta_epoch().expect("head start");
    // Same rule, same networks, 30 more steps before the loss: a different loss.
    assert_ne!(plain.loss.to_bits(), ahead.loss.to_bits());
    assert_eq!(plain.loss_step, ahead.loss_step, "the taped unroll keeps its length");
}

#[test]
fn resume_refuses_a_different_rule_and_allows_different_training() {
    let tmp = Scratch::new("resume-config");
    let path = tmp.path("rule.safetensors");
    trained_and_saved(&smoke(), 1, &path);
    let mut other = smoke();
    other.rule.hidden = vec![4];
    let exp = Experiment::new(other).expect("experiment");
    match Trainer::resume(Checkpoint::load(&path).expect("load"), exp, &path) {
        Err(e @ Error::Checkpoint { .. }) => {
            let text = e.to_string();
            assert!(text.contains("rule.hidden") && text.contains("[8]") && text.contains("[4]"), "{text}");
        }
        other => panic!("expected Error::Checkpoint, got {:?}", other.map(|_| ())),
    }
    let mut longer = smoke();
    longer.train.meta_epochs = 50;
    longer.train.lr = 3e-3;
    let t = Trainer::resume(Checkpoint::load(&path).expect("load"), Experiment::new(longer).expect("exp"), &path)
        .expect("training length and rate may change");
    assert_eq!(t.adam.lr, 3e-3, "the new learning rate is used");
}

/// `train` probes on a second thread while the meta-epochs go on: its `best` and `last`
/// checkpoints must be exactly those of probing in place, one meta-epoch after another.
#[test]
fn probes_beside_training_save_the_checkpoints_of_probing_in_place() {
    let tmp = Scratch::new("probes-beside");
    let dir = tmp.arg("run");
    // Probes every 3 meta-epochs, last checkpoints every 4 (some on a probe's meta-epoch, some
    // not): the smoke rule's probe loss falls and rises, so `best` is not simply the last probe.
    let sets = ["seed=1", "train.meta-epochs=20", "train.probe-every=3", "train.checkpoint-every=4"];
    let mut args = vec!["train", "--config", "configs/smoke.toml", "--out", &dir, "--quiet", "--eval-networks", "0"];
    for s in &sets {
        args.extend(["--set", s]);
    }
    meta_nca_tests::ok(&args);
    let config = Config::from_toml(&std::fs::read_to_string(tmp.path("run").join("config.toml")).expect("config"))
        .expect("recorded config");
    let mut t = trainer(&config);
    let mut best = None;
    let mut bests = 0;
    while t.epoch < config.train.meta_epochs {
        t.meta_epoch().expect("meta-epoch");
        let probe_now = t.epoch.is_multiple_of(config.train.probe_every) || t.epoch == config.train.meta_epochs;
        if probe_now && t.probe().expect("probe").best {
            best = Some(t.checkpoint());
            bests += 1;
        }
    }
    assert!(bests >= 2, "the test needs a best probe that is later beaten ({bests})");
    let load = |name: &str| Checkpoint::load(&tmp.path("run").join(name)).expect(name);
    assert_same(&load("best.safetensors"), &best.expect("a best probe"));
    assert_same(&load("last.safetensors"), &t.checkpoint());
}
