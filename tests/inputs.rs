//! How kd finds its inputs (Hub ids through the HF cache, JSONL datasets) and `kd bench`.
mod common;

use common::world::{fails, kd, ok, summary, World};
use std::path::Path;

/// A Hub id resolves from the standard HF cache layout, offline.
#[test]
fn hub_ids_resolve_from_the_local_cache() {
    let w = World::new(60, 20);
    let snapshot = w
        .dir
        .path()
        .join("hf/hub/models--kd-test--tiny-bert/snapshots/0123abc");
    std::fs::create_dir_all(&snapshot).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(w.dir.path().join("bert").join(f), snapshot.join(f)).unwrap();
    }
    let refs = w.dir.path().join("hf/hub/models--kd-test--tiny-bert/refs");
    std::fs::create_dir_all(&refs).unwrap();
    std::fs::write(refs.join("main"), "0123abc").unwrap();
    let hf_home = w.p("hf");
    let hf = [("HF_HOME", hf_home.as_str())];
    let quick = ["--max-steps", "2"];
    ok(w.run_training("teach", "kd-test/tiny-bert", "data", "t", &quick, &hf));
    let s = summary(Path::new(&w.p("t")));
    assert_eq!(s["model"], "kd-test/tiny-bert");
}

/// JSONL datasets are accepted like CSV.
#[test]
fn jsonl_datasets_work() {
    let w = World::new(60, 20);
    let dir = w.dir.path().join("jsonl");
    std::fs::create_dir_all(&dir).unwrap();
    for split in ["train", "test"] {
        let rows = kd::data::formats::read_examples(
            &w.dir.path().join(if split == "train" {
                "data/train.csv"
            } else {
                "data/test.csv.gz"
            }),
            true,
        )
        .unwrap();
        let lines: Vec<String> = rows
            .iter()
            .map(|r| serde_json::json!({"text": r.text, "label": r.label}).to_string())
            .collect();
        std::fs::write(dir.join(format!("{split}.jsonl")), lines.join("\n")).unwrap();
    }
    let bert = w.p("bert");
    ok(w.run_training("teach", &bert, "jsonl", "t", &["--max-steps", "2"], &[]));
    let o = w.p("t");
    assert!(summary(Path::new(&o))["test_accuracy"].is_number());
}

/// `kd bench` on a random model of a named shape: no weights needed, JSON on the last line.
#[test]
fn bench_measures_a_random_model_of_a_named_shape() {
    let w = World::new(40, 20);
    let test = format!("{}/test.csv.gz", w.p("data"));
    let out = ok(kd(
        &[
            "bench",
            "--shape",
            "small",
            "--tokenizer",
            &w.p("roberta"),
            "--data",
            &test,
            "--steps",
            "2",
            "--warmup-steps",
            "1",
            "--cache-rows",
            "30",
            "--cache-batch-size",
            "8",
            "--device",
            "cpu",
        ],
        &[],
    ));
    let line = out
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .expect("a RESULT line");
    let r: serde_json::Value = serde_json::from_str(&line["RESULT ".len()..]).unwrap();
    assert_eq!(r["layers"], 2);
    assert_eq!(r["train_samples"], 64);
    assert!(r["train_samples_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["train_tokens"].as_u64().unwrap() <= r["train_padded_tokens"].as_u64().unwrap());
    assert!(r["cache_samples_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["peak_mem_bytes"].as_u64().unwrap() > 0);
    let err = fails(kd(
        &[
            "bench",
            "--shape",
            "huge",
            "--tokenizer",
            &w.p("roberta"),
            "--data",
            &test,
            "--device",
            "cpu",
        ],
        &[],
    ));
    assert!(
        err.contains("known shapes are roberta-base, small"),
        "{err}"
    );
}
