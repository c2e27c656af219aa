//! End to end through the `kd` binary on tiny random checkpoints and a synthetic dataset:
//! teach → distill → compare → predict, and the errors a user can run into.
mod common;

use candle_core::{DType, Device};
use kd::cache::LogitCache;
use kd::commands::evaluate::load_run;
use kd::commands::pipeline::tokenize_rows;
use kd::data::Dataset;
use kd::training::predict_logits;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kd(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kd"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env("HF_HUB_OFFLINE", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("kd runs")
}

fn ok(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kd failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(out: Output) -> String {
    assert!(!out.status.success(), "kd should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new(train: usize, test: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        common::write_roberta(&dir.path().join("roberta"), 1);
        common::write_bert(&dir.path().join("bert"), 2);
        common::write_dataset(&dir.path().join("data"), train, test, 3);
        Self { dir }
    }
    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
    fn teach(&self, out: &str, extra: &[&str]) -> Output {
        self.teach_seeded(out, "1", extra)
    }
    fn teach_seeded(&self, out: &str, seed: &str, extra: &[&str]) -> Output {
        let (m, d, o) = (self.p("roberta"), self.p("data"), self.p(out));
        let mut args = vec![
            "teach",
            "--model",
            &m,
            "--data",
            &d,
            "--out",
            &o,
            "--device",
            "cpu",
            "--epochs",
            "4",
            "--batch-size",
            "16",
            "--lr",
            "3e-3",
            "--max-len",
            "32",
            "--seed",
            seed,
        ];
        args.extend_from_slice(extra);
        kd(&args, &[])
    }
    fn distill(&self, teacher: &str, out: &str, extra: &[&str]) -> Output {
        let (m, d, t, o) = (self.p("bert"), self.p("data"), self.p(teacher), self.p(out));
        let mut args = vec![
            "distill",
            "--model",
            &m,
            "--data",
            &d,
            "--teacher",
            &t,
            "--out",
            &o,
            "--device",
            "cpu",
            "--epochs",
            "4",
            "--batch-size",
            "16",
            "--lr",
            "3e-3",
            "--max-len",
            "32",
            "--seed",
            "2",
            "--lora-r",
            "4",
            "--lora-alpha",
            "16",
        ];
        args.extend_from_slice(extra);
        kd(&args, &[])
    }
}

fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn teach_distill_compare_predict() {
    let w = World::new(480, 200);
    ok(w.teach("teacher", &[]));
    let teacher = PathBuf::from(w.p("teacher"));
    for f in [
        "config.toml",
        "adapter_config.json",
        "adapter_model.safetensors",
        "metrics.jsonl",
        "summary.json",
        "logits.bin",
    ] {
        assert!(teacher.join(f).is_file(), "teacher/{f} missing");
    }
    let metrics = std::fs::read_to_string(teacher.join("metrics.jsonl")).unwrap();
    assert!(metrics
        .lines()
        .any(|l| l.contains("\"eval\":\"validation\"")));

    // The cache holds exactly what the saved teacher predicts for every training row, in file order.
    let cache = LogitCache::open(&teacher.join("logits.bin")).unwrap();
    let run = load_run(&teacher, &Device::Cpu, DType::F32).unwrap();
    let data = Dataset::load(&Path::new(&w.p("data")).join("train.csv"), 0.05, 1).unwrap();
    assert_eq!(cache.header().rows, data.rows.len());
    cache.check_matches(&data.rows).unwrap();
    let batcher =
        tokenize_rows(&run.tokenizer, &data.rows, run.checkpoint.config.pad_id()).unwrap();
    let all: Vec<usize> = (0..data.rows.len()).collect();
    let eval_bs = run.run.as_ref().unwrap().train.eval_batch_size;
    let again = predict_logits(&run.model, &batcher, &all, eval_bs, "test").unwrap();
    assert_eq!(
        cache.gather(&all),
        again,
        "logits.bin does not round-trip exactly"
    );

    ok(w.distill(
        "teacher",
        "student",
        &["--temperature", "2", "--alpha", "0.5"],
    ));
    let student = summary(Path::new(&w.p("student")));
    let acc = student["test_accuracy"].as_f64().unwrap();
    assert!(
        acc > 0.6,
        "student test accuracy {acc} is not clearly above chance (0.25)"
    );
    assert_eq!(student["alpha"].as_f64(), Some(0.5));

    let json = w.p("compare.json");
    let table = ok(kd(
        &[
            "compare",
            &w.p("teacher"),
            &w.p("student"),
            "--json",
            &json,
            "--device",
            "cpu",
        ],
        &[],
    ));
    assert!(table.contains("agreement"), "{table}");
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(c["runs"].as_array().unwrap().len(), 2);
    assert!(c["runs"][1]["accuracy"].as_f64().unwrap() > 0.6);
    assert_eq!(c["runs"][1]["confusion"].as_array().unwrap().len(), 4);
    let agreement = c["agreement"][0]["agreement"].as_f64().unwrap();
    assert!(agreement > 0.5, "teacher/student agreement {agreement}");

    // A run folder is also a PEFT adapter folder.
    let bert = w.p("bert");
    let out = ok(kd(
        &[
            "compare",
            "--adapter",
            &w.p("student"),
            "--model",
            &bert,
            "--data",
            &w.p("data"),
            "--json",
            &w.p("adapter.json"),
            "--device",
            "cpu",
        ],
        &[],
    ));
    assert!(out.contains("student"), "{out}");

    let preds = w.p("preds.csv");
    let test = format!("{}/test.csv.gz", w.p("data"));
    ok(kd(
        &[
            "predict",
            &w.p("student"),
            "--input",
            &test,
            "--output",
            &preds,
            "--device",
            "cpu",
        ],
        &[],
    ));
    let text = std::fs::read_to_string(&preds).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "row,label,logit_0,logit_1,logit_2,logit_3,prob_0,prob_1,prob_2,prob_3"
    );
    assert_eq!(lines.len(), 201);
    for (i, l) in lines[1..].iter().enumerate() {
        let cells: Vec<&str> = l.split(',').collect();
        assert_eq!(cells[0], i.to_string());
        assert!(cells[1].parse::<u32>().unwrap() < 4);
    }
}

#[test]
fn distill_refuses_over_budget_and_foreign_caches() {
    let w = World::new(120, 40);
    ok(w.teach("teacher", &["--max-steps", "2"]));
    let err = fails(w.distill("teacher", "student", &["--budget", "1000"]));
    assert!(err.contains("over the budget of 1000"), "{err}");
    assert!(
        err.contains("classifier.dense") && err.contains("attention.self.query"),
        "{err}"
    );
    assert!(
        !Path::new(&w.p("student")).exists(),
        "a refused student must not create its run folder"
    );

    // Other training rows: the cache's fingerprint does not match.
    common::write_dataset(&w.dir.path().join("other"), 120, 40, 99);
    let (m, d, t, o) = (w.p("bert"), w.p("other"), w.p("teacher"), w.p("s2"));
    let err = fails(kd(
        &[
            "distill",
            "--model",
            &m,
            "--data",
            &d,
            "--teacher",
            &t,
            "--out",
            &o,
            "--device",
            "cpu",
            "--lora-r",
            "4",
        ],
        &[],
    ));
    assert!(
        err.contains("logits.bin") && err.contains("fingerprint"),
        "{err}"
    );

    // --alpha 0 trains without the teacher, so a missing cache is fine.
    let (t, o) = (w.p("no-teacher"), w.p("alone"));
    ok(kd(
        &[
            "distill",
            "--model",
            &m,
            "--data",
            &w.p("data"),
            "--teacher",
            &t,
            "--out",
            &o,
            "--device",
            "cpu",
            "--lora-r",
            "4",
            "--alpha",
            "0",
            "--max-steps",
            "2",
            "--epochs",
            "1",
        ],
        &[],
    ));
}

#[test]
fn bad_input_gets_one_clear_error() {
    let w = World::new(40, 20);
    let data = w.dir.path().join("data/train.csv");
    let mut text = std::fs::read_to_string(&data).unwrap();
    text = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 2 {
                "\"x\",\"bad\",\"row\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&data, text).unwrap();
    let err = fails(w.teach("t", &[]));
    assert!(
        err.contains("train.csv, row 3") && err.contains("class `x`"),
        "{err}"
    );

    let err = fails(kd(
        &[
            "teach",
            "--model",
            "no-such-org/no-such-model",
            "--data",
            &w.p("data"),
            "--out",
            &w.p("t"),
        ],
        &[],
    ));
    assert!(err.contains("pass a local folder"), "{err}");
}

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
    ok(kd(
        &[
            "teach",
            "--model",
            "kd-test/tiny-bert",
            "--data",
            &w.p("data"),
            "--out",
            &w.p("t"),
            "--device",
            "cpu",
            "--max-steps",
            "2",
            "--epochs",
            "1",
        ],
        &[("HF_HOME", &hf_home)],
    ));
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
    let (m, d, o) = (w.p("bert"), w.p("jsonl"), w.p("t"));
    ok(kd(
        &[
            "teach",
            "--model",
            &m,
            "--data",
            &d,
            "--out",
            &o,
            "--device",
            "cpu",
            "--max-steps",
            "2",
            "--epochs",
            "1",
        ],
        &[],
    ));
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

/// The same seed gives the same run: identical adapter and logit cache, byte for byte.
#[test]
fn runs_are_reproducible_from_the_seed() {
    let w = World::new(120, 20);
    ok(w.teach("a", &["--max-steps", "6"]));
    ok(w.teach("b", &["--max-steps", "6"]));
    ok(w.teach_seeded("c", "7", &["--max-steps", "6"]));
    let read = |run: &str, f: &str| std::fs::read(w.dir.path().join(run).join(f)).unwrap();
    let adapter = "adapter_model.safetensors";
    assert!(
        read("a", adapter) == read("b", adapter),
        "the adapter differs between two runs with one seed"
    );
    // logits.bin headers name their own run folder; the logits themselves must be equal.
    let logits = |run: &str| read(run, "logits.bin")[kd::cache::HEADER_LEN..].to_vec();
    assert!(
        logits("a") == logits("b"),
        "the cached logits differ between two runs with one seed"
    );
    assert!(
        read("a", adapter) != read("c", adapter),
        "another seed must give another run"
    );
}
