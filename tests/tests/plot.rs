//! `meta-nca plot` end to end on synthetic inputs: the PNGs and GIFs decode, have the expected
//! size and frame count, are not blank, and their pixels follow the data (a changed weight
//! changes exactly the frames that show it; the colour scale is fixed and symmetric; dead
//! connections are drawn distinctly).
//!
//! The binary is built and found by `meta_nca_tests::bin` (see `tests/src/lib.rs`).

use std::fs::File;
use std::path::Path;

use meta_nca_tests::{Scratch, fails, ok};

/// A decoded PNG: width, height, RGB bytes.
fn png_rgb(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(File::open(path).expect("the PNG exists")));
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("a PNG size")];
    let info = reader.next_frame(&mut buf).expect("PNG data");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// A decoded GIF: width, height and every frame composed onto the previous ones, as RGB.
fn gif_frames(path: &Path) -> (u32, u32, Vec<Vec<u8>>) {
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    let mut d = opts.read_info(File::open(path).expect("the GIF exists")).expect("a GIF header");
    let (w, h) = (d.width() as usize, d.height() as usize);
    let mut canvas = vec![255u8; w * h * 3];
    let mut frames = Vec::new();
    while let Some(f) = d.read_next_frame().expect("a GIF frame") {
        assert!(
            f.left as usize + f.width as usize <= w && f.top as usize + f.height as usize <= h,
            "frame inside the screen"
        );
        assert_ne!(f.dispose, gif::DisposalMethod::Background, "frames build on each other");
        for y in 0..f.height as usize {
            for x in 0..f.width as usize {
                let src = &f.buffer[(y * f.width as usize + x) * 4..][..4];
                if src[3] > 0 {
                    let dst = ((f.top as usize + y) * w + f.left as usize + x) * 3;
                    canvas[dst..dst + 3].copy_from_slice(&src[..3]);
                }
            }
        }
        frames.push(canvas.clone());
    }
    (w as u32, h as u32, frames)
}

fn count(rgb: &[u8], c: [u8; 3]) -> usize {
    rgb.chunks_exact(3).filter(|p| *p == c).count()
}

fn has_color(rgb: &[u8], c: [u8; 3]) -> bool {
    count(rgb, c) > 0
}

/// Not blank: many pixels are not white, and there are many distinct colours.
fn assert_drawn(rgb: &[u8], what: &str) {
    let pixels = rgb.len() / 3;
    let ink = rgb.chunks_exact(3).filter(|p| p != &[255, 255, 255]).count();
    let colors: std::collections::HashSet<&[u8]> = rgb.chunks_exact(3).collect();
    assert!(ink * 50 > pixels, "{what}: only {ink} of {pixels} pixels drawn");
    assert!(colors.len() > 20, "{what}: only {} colours", colors.len());
}

/// A synthetic `metrics.csv` of `n` rows; `bump` shifts the loss curve.
fn metrics_csv(n: usize, bump: f64) -> String {
    let mut s = String::from("epoch,loss_step,loss,train_acc,val_acc,grad_norm,seconds\n");
    for e in 0..n {
        let t = e as f64 / n as f64;
        let loss = 1.1 * (-3.0 * t).exp() + 0.05 + bump * t;
        s.push_str(&format!(
            "{e},10,{loss:.6},{:.4},{:.4},{:.6},{:.6}\n",
            0.33 + 0.6 * t,
            0.3 + 0.6 * t,
            0.5 + (e % 7) as f64,
            0.001 + 1e-4 * (e % 3) as f64
        ));
    }
    s
}

#[test]
fn training_curves_png_follows_the_metrics() {
    let tmp = Scratch::new("curves");
    let mut pictures = Vec::new();
    for (name, bump) in [("a", 0.0), ("b", 0.8)] {
        std::fs::create_dir_all(tmp.path(name)).expect("run folder");
        std::fs::write(tmp.path(name).join("metrics.csv"), metrics_csv(60, bump)).expect("metrics.csv");
        let out = ok(&["plot", "--run", &tmp.arg(name)]);
        let png = tmp.path(name).join("plots").join("training.png");
        assert!(out.contains("training.png"), "the written file is reported:\n{out}");
        let (w, h, rgb) = png_rgb(&png);
        assert_eq!((w, h), (1200, 860));
        assert_drawn(&rgb, "training.png");
        pictures.push(rgb);
    }
    assert_ne!(pictures[0], pictures[1], "a different loss curve draws a different picture");
}

/// A grow record of a `[2, 3, 2]` network with bias cells over `steps + 1` states; layer 0
/// lacks the connection (0, 1) (dead). Weights follow `w(step, k)`.
fn grow_json(steps: usize, w: impl Fn(usize, usize) -> f64) -> String {
    let sizes = [2usize, 3, 2];
    let mut cells = Vec::new();
    for layer in 0..2 {
        let index_cols = sizes[layer + 1];
        for pre in 0..=sizes[layer] {
            for post in 0..sizes[layer + 1] {
                if (layer, pre, post) != (0, 0, 1) {
                    cells.push(
                        serde_json::json!({"layer": layer, "pre": pre, "post": post, "index": pre * index_cols + post}),
                    );
                }
            }
        }
    }
    let n = cells.len();
    let states: Vec<serde_json::Value> = (0..=steps)
        .map(|s| {
            serde_json::json!({
                "step": s,
                "weights": (0..n).map(|k| w(s, k)).collect::<Vec<f64>>(),
                "hidden": (0..n).map(|k| vec![(s * k) as f64 * 0.1, -(k as f64)]).collect::<Vec<_>>(),
                "fired": if s == 0 { vec![] } else { (0..n).map(|k| (k + s) % 2 == 0).collect::<Vec<bool>>() },
                "train_loss": 1.0 / (s + 1) as f64,
                "train_acc": 0.5,
                "val_acc": 0.5,
            })
        })
        .collect();
    serde_json::json!({"sizes": sizes, "bias": true, "seed": 7, "fire_fraction": 0.5, "cells": cells, "steps": states})
        .to_string()
}

/// The weights of the synthetic grows: they grow with the step, alternate in sign, and reach
/// exactly ±2 at the last step (so the symmetric scale is ±2).
fn base_w(steps: usize) -> impl Fn(usize, usize) -> f64 {
    move |s, k| {
        let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
        sign * 2.0 * s as f64 / steps as f64 * ((k % 3) as f64 + 1.0) / 3.0
    }
}

#[test]
fn weight_gifs_have_a_frame_per_step_and_follow_the_weights() {
    let tmp = Scratch::new("grow");
    let steps = 4;
    std::fs::write(tmp.path("a.json"), grow_json(steps, base_w(steps))).expect("a.json");
    // b: the same grow, but one weight of layer 0 differs at step 2 only.
    let w = base_w(steps);
    std::fs::write(tmp.path("b.json"), grow_json(steps, move |s, k| if (s, k) == (2, 0) { -1.5 } else { w(s, k) }))
        .expect("b.json");
    for name in ["a", "b"] {
        let out = ok(&["plot", "--grow", &tmp.arg(&format!("{name}.json"))]);
        for f in ["layer0.gif", "layer1.gif", "hidden.png"] {
            assert!(out.contains(&format!("{name}-{f}")), "{f} is reported:\n{out}");
        }
    }
    let mut layer0 = Vec::new();
    for name in ["a", "b"] {
        let mut dead_pixels = Vec::new();
        for layer in 0..2 {
            let (w, h, frames) = gif_frames(&tmp.path(&format!("{name}-layer{layer}.gif")));
            assert_eq!(frames.len(), steps + 1, "one frame per recorded state");
            assert!(w >= 600 && h >= 300, "{w}×{h}");
            for (i, f) in frames.iter().enumerate() {
                assert_drawn(f, &format!("{name} layer {layer} frame {i}"));
            }
            // Fixed symmetric scale ±2: the extreme weights take the colour map's end colours
            // in the last frame, and every frame draws some weights.
            let last = &frames[steps];
            assert!(has_color(last, [0x67, 0x00, 0x1f]), "+max is the darkest red");
            assert!(has_color(last, [0x05, 0x30, 0x61]), "-max is the darkest blue");
            // Dead connections (one in layer 0) are hatched grey: far more of that grey than
            // the legend's swatch alone (layer 1).
            dead_pixels.push(count(last, [0x9a, 0x9a, 0x9a]));
            // The weights change every step, so every frame differs from the one before.
            for i in 1..frames.len() {
                assert_ne!(frames[i - 1], frames[i], "{name} layer {layer}: frame {i} repeats frame {}", i - 1);
            }
            if layer == 0 {
                layer0.push(frames);
            }
        }
        assert!(dead_pixels[0] > dead_pixels[1] + 1000, "dead grey pixels per layer: {dead_pixels:?}");
        let (w, h, rgb) = png_rgb(&tmp.path(&format!("{name}-hidden.png")));
        assert!(w >= 600 && h >= 300, "{w}×{h}");
        assert_drawn(&rgb, "hidden.png");
    }
    // Only the frame whose weight changed differs between a and b.
    for (s, (a, b)) in layer0[0].iter().zip(&layer0[1]).enumerate() {
        assert_eq!(a != b, s == 2, "frame {s}");
    }
}

#[test]
fn debug_frames_and_a_fixed_scale() {
    let tmp = Scratch::new("frames");
    std::fs::write(tmp.path("g.json"), grow_json(2, base_w(2))).expect("g.json");
    let out_dir = tmp.arg("out");
    ok(&["plot", "--grow", &tmp.arg("g.json"), "--out", &out_dir, "--debug-frames", "--scale", "4"]);
    let (w, h, frames) = gif_frames(&tmp.path("out").join("g-layer0.gif"));
    let frame_dir = tmp.path("out").join("g-layer0-frames");
    for (i, f) in frames.iter().enumerate() {
        let (pw, ph, rgb) = png_rgb(&frame_dir.join(format!("frame-{i:04}.png")));
        assert_eq!((pw, ph), (w, h));
        // The GIF holds the same picture over a 224-colour palette that contains every colour
        // the heatmap uses: most pixels survive exactly.
        let same = rgb.chunks_exact(3).zip(f.chunks_exact(3)).filter(|(a, b)| a == b).count();
        assert!(same * 10 > rgb.len() / 3 * 9, "frame {i}: only {same} pixels equal");
    }
    // At ±4 the weights (at most 2) never reach the end colours.
    assert!(!has_color(&frames[2], [0x67, 0x00, 0x1f]));
}

#[test]
fn bad_inputs_fail_cleanly() {
    let tmp = Scratch::new("bad");
    fails(&["plot", "--grow", &tmp.arg("missing.json")], &["missing.json"]);
    std::fs::write(tmp.path("bad.json"), "{\"sizes\": [2]}").expect("bad.json");
    fails(&["plot", "--grow", &tmp.arg("bad.json")], &["not a grow record"]);
    let mut broken: serde_json::Value = serde_json::from_str(&grow_json(1, base_w(1))).expect("json");
    broken["steps"][1]["weights"] = serde_json::json!([1.0]);
    std::fs::write(tmp.path("short.json"), broken.to_string()).expect("short.json");
    fails(&["plot", "--grow", &tmp.arg("short.json")], &["weights"]);
    fails(&["plot", "--run", &tmp.arg("nope")], &["does not exist"]);
    std::fs::create_dir_all(tmp.path("empty")).expect("empty run");
    fails(&["plot", "--run", &tmp.arg("empty")], &["metrics.csv"]);
    std::fs::write(tmp.path("empty").join("metrics.csv"), "epoch,loss_step,loss,train_acc,val_acc,grad_norm,seconds\n")
        .expect("metrics.csv");
    fails(&["plot", "--run", &tmp.arg("empty")], &["no rows"]);
    fails(&["plot", "--grow", &tmp.arg("g.json"), "--scale", "0"], &["--scale"]);
}

#[test]
fn snapshots_of_a_real_run_animate_over_meta_epochs() {
    let tmp = Scratch::new("snapshots");
    let dir = tmp.arg("run");
    // configs/smoke.toml: 20 meta-epochs, sizes [4, 3, 3] (two weight matrices).
    let train = ["train", "--config", "configs/smoke.toml", "--out", &dir, "--quiet", "--eval-networks", "0"];
    ok(&[&train[..], &["--snapshot-every", "5"]].concat());
    let mut epochs: Vec<String> = std::fs::read_dir(tmp.path("run").join("snapshots"))
        .expect("a snapshots folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    epochs.sort();
    let expected: Vec<String> = [0, 5, 10, 15, 20].iter().map(|e| format!("epoch-{e:05}.safetensors")).collect();
    assert_eq!(epochs, expected);
    let out = ok(&["plot", "--run", &dir]);
    let plots = tmp.path("run").join("plots");
    assert!(out.contains("training.png"), "{out}");
    let (w, h, rgb) = png_rgb(&plots.join("training.png"));
    assert_eq!((w, h), (1200, 860));
    assert_drawn(&rgb, "training.png of a real run");
    for layer in 0..2 {
        let (_, _, frames) = gif_frames(&plots.join(format!("epochs-layer{layer}.gif")));
        assert_eq!(frames.len(), 5, "one frame per snapshot");
        assert_ne!(frames[0], frames[4], "the rule changed over 20 meta-epochs");
    }
    assert!(!plots.join("epochs-layer2.gif").exists());
    fails(&[&train[..], &["--snapshot-every", "0"]].concat(), &["snapshot-every"]);
}

/// A synthetic robustness CSV: one curve per key, accuracies 0.95 before, `0.95 - dip * key`
/// right after, recovering over `steps` steps; the first step is `first`.
fn robustness_csv(column: &str, keys: &[f64], first: i64, steps: usize, dip: f64) -> String {
    let mut s = format!("{column},step,grown_train_acc,grown_val_acc\n");
    for &key in keys {
        for k in 0..=steps + 1 {
            let step = first + k as i64;
            let val = if step < 0 { 0.95 } else { 0.95 - dip * key * (-(step as f64) / 3.0).exp() };
            s.push_str(&format!("{key},{step},{:.4},{val:.4}\n", (val + 0.02).min(1.0)));
        }
    }
    s
}

/// A synthetic prune baseline for `keys`, fine-tuned to `tuned`.
fn baseline_csv(keys: &[f64], tuned: f64) -> String {
    let mut s = String::from("fraction,fine_tune_epochs,before_val_acc,pruned_val_acc,fine_tuned_val_acc\n");
    for &q in keys {
        s.push_str(&format!("{q},20,0.9667,{:.4},{tuned:.4}\n", 0.9667 - q / 4.0));
    }
    s
}

#[test]
fn robustness_png_follows_the_curves_and_the_baseline() {
    let tmp = Scratch::new("robustness");
    let keys = [0.1, 0.3, 0.5];
    let mut pictures = Vec::new();
    for (name, dip) in [("a", 0.4), ("b", 0.8)] {
        std::fs::create_dir_all(tmp.path(name)).expect("run folder");
        let csv = tmp.path(name).join("robustness-prune-random.csv");
        std::fs::write(&csv, robustness_csv("fraction", &keys, -1, 10, dip)).expect("csv");
        let out = ok(&["plot", "--robustness", &csv.to_string_lossy()]);
        assert!(out.contains("robustness-prune-random.png"), "{out}");
        let (w, h, rgb) = png_rgb(&tmp.path(name).join("robustness-prune-random.png"));
        assert_eq!((w, h), (820, 600), "one panel without a baseline file");
        assert_drawn(&rgb, "robustness-prune-random.png");
        // One colour per fraction (Tableau blue, orange, green), no fourth.
        for c in [[0x1f, 0x77, 0xb4], [0xff, 0x7f, 0x0e], [0x2c, 0xa0, 0x2c]] {
            assert!(count(&rgb, c) > 200, "colour {c:?} is missing");
        }
        assert_eq!(count(&rgb, [0xd6, 0x27, 0x28]), 0, "a fourth curve is drawn");
        pictures.push(rgb);
    }
    assert_ne!(pictures[0], pictures[1], "a deeper dip draws a different picture");

    // With the baseline next to it: a second panel, which follows the baseline's numbers.
    let csv = tmp.path("a").join("robustness-prune-random.csv");
    let baseline = tmp.path("a").join("robustness-prune-random-baseline.csv");
    let mut with_baseline = Vec::new();
    for tuned in [0.9, 0.8] {
        std::fs::write(&baseline, baseline_csv(&keys, tuned)).expect("baseline");
        ok(&["plot", "--robustness", &csv.to_string_lossy(), "--out", &tmp.arg("out")]);
        let (w, h, rgb) = png_rgb(&tmp.path("out").join("robustness-prune-random.png"));
        assert_eq!((w, h), (1640, 600), "two panels with a baseline file");
        // Below the title (centred over the whole width), the left panel is the picture
        // without the baseline (same curves, same axes as long as the baseline stays inside).
        let left: Vec<u8> = rgb.chunks_exact(1640 * 3).skip(40).flat_map(|row| row[..800 * 3].to_vec()).collect();
        let alone: Vec<u8> =
            pictures[0].chunks_exact(820 * 3).skip(40).flat_map(|row| row[..800 * 3].to_vec()).collect();
        let same = left.chunks_exact(3).zip(alone.chunks_exact(3)).filter(|(a, b)| a == b).count();
        assert!(same * 100 > left.len() / 3 * 95, "the curves panel changed: only {same} pixels equal");
        with_baseline.push(rgb);
    }
    assert_ne!(with_baseline[0], with_baseline[1], "another fine-tuned accuracy draws the same picture");

    // Neurons and churn files are told apart by their first column.
    for (file, column, first) in [("robustness-neurons.csv", "added", -1), ("robustness-churn.csv", "rate", 0)] {
        std::fs::write(tmp.path(file), robustness_csv(column, &[1.0, 2.0], first, 5, 0.1)).expect("csv");
        ok(&["plot", "--robustness", &tmp.arg(file)]);
        let (w, _, rgb) = png_rgb(&tmp.path(&file.replace(".csv", ".png")));
        assert_eq!(w, 820);
        assert_drawn(&rgb, file);
    }
}

#[test]
fn robustness_plot_bad_inputs_fail_cleanly() {
    let tmp = Scratch::new("robustness-bad");
    fails(&["plot", "--robustness", &tmp.arg("missing.csv")], &["missing.csv"]);
    std::fs::write(tmp.path("metrics.csv"), metrics_csv(5, 0.0)).expect("metrics.csv");
    fails(&["plot", "--robustness", &tmp.arg("metrics.csv")], &["'epoch'"]);
    std::fs::write(tmp.path("r-baseline.csv"), baseline_csv(&[0.1], 0.9)).expect("baseline");
    fails(&["plot", "--robustness", &tmp.arg("r-baseline.csv")], &["baseline"]);
    std::fs::write(tmp.path("r.csv"), "fraction,step,grown_train_acc,grown_val_acc\n0.1,-1,0.9,0.9\n0.1,0,x,0.8\n")
        .expect("csv");
    fails(&["plot", "--robustness", &tmp.arg("r.csv")], &["line 3"]);
    std::fs::write(tmp.path("r.csv"), "fraction,step,grown_val_acc\n0.1,-1,0.9\n").expect("csv");
    fails(&["plot", "--robustness", &tmp.arg("r.csv")], &["grown_train_acc"]);
    assert!(!tmp.path("r.png").exists());
}

/// An async grow on the actors is saved as a grow record: `plot --grow` animates it, a frame
/// per round (and the starting state), like a lockstep grow.
#[test]
fn an_async_actor_grow_plots_like_any_grow() {
    let tmp = Scratch::new("async-grow");
    let dir = tmp.arg("run");
    ok(&["train", "--config", "configs/smoke.toml", "--out", &dir, "--quiet", "--eval-networks", "0"]);
    let save = tmp.arg("async.json");
    let grow = ["grow", "--run", &dir, "--engine", "actors", "--mode", "async", "--steps", "4", "--save", &save];
    ok(&grow);
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path("async.json")).expect("the record")).expect("JSON");
    assert_eq!(record["steps"].as_array().map(Vec::len), Some(5), "the start and 4 rounds");
    assert!(record["engine"].as_str().is_some_and(|e| e.contains("async")), "{}", record["engine"]);
    let out_dir = tmp.arg("pics");
    ok(&["plot", "--grow", &save, "--out", &out_dir]);
    for layer in 0..2 {
        let (_, _, frames) = gif_frames(&tmp.path("pics").join(format!("async-layer{layer}.gif")));
        assert_eq!(frames.len(), 5, "a frame per recorded state");
    }
    assert!(tmp.path("pics").join("async-hidden.png").is_file());
}
