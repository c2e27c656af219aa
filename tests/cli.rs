//! End to end through the `kd` binary on tiny random checkpoints and a synthetic dataset:
//! teach → distill → compare → predict, reproducibility, and the refusals a user can run into.
mod common;

use candle_core::Device;
use common::world::{fails, kd, ok, summary, World};
use kd::cache::LogitCache;
use kd::data::tokenize_rows;
use kd::data::{Dataset, SplitFiles};
use kd::model::predict_logits;
use kd::run::load_run;
use std::path::{Path, PathBuf};

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
    // The dtype the teacher ran in (`--dtype auto`: bf16 on a CPU with native bf16 kernels).
    let dtype = kd::device::weight_dtype("auto", &Device::Cpu).unwrap();
    let run = load_run(&teacher, &Device::Cpu, dtype).unwrap();
    let data = Dataset::load(
        &SplitFiles::single(&Path::new(&w.p("data")).join("train.csv")),
        None,
        0.05,
        1,
    )
    .unwrap();
    assert_eq!(cache.header().rows, data.rows.len());
    cache.check_matches(&data.rows, &[], &[]).unwrap();
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
    assert!(table.contains("rows/s @32"), "serving cost: {table}");
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(c["runs"].as_array().unwrap().len(), 2);
    let rows_per_s = &c["runs"][1]["serving"]["timing"]["rows_per_s"];
    assert!(rows_per_s.as_f64().unwrap() > 0.0, "{rows_per_s}");
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
        "row,label,label_name,logit_0,logit_1,logit_2,logit_3,prob_0,prob_1,prob_2,prob_3"
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
        err.contains("bert.pooler.dense") && err.contains("attention.self.query"),
        "{err}"
    );
    assert!(
        !Path::new(&w.p("student")).exists(),
        "a refused student must not create its run folder"
    );

    // Other training rows: the cache's fingerprint does not match.
    common::write_dataset(&w.dir.path().join("other"), 120, 40, 99);
    let err = fails(w.distill_on("other", "teacher", "s2", &[]));
    assert!(
        err.contains("logits.bin") && err.contains("fingerprint"),
        "{err}"
    );

    // --alpha 0 trains without the teacher, so a missing cache is fine.
    ok(w.distill("no-teacher", "alone", &["--alpha", "0", "--max-steps", "2"]));
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

/// The same seed gives the same run: identical adapter and logit cache, byte for byte.
#[test]
fn runs_are_reproducible_from_the_seed() {
    let w = World::new(120, 20);
    ok(w.teach("a", &["--max-steps", "6"]));
    ok(w.teach("b", &["--max-steps", "6"]));
    ok(w.teach_seeded("c", "7", &["--max-steps", "6"]));
    let read = |run: &str, f: &str| std::fs::read(w.dir.path().join(run).join(f)).unwrap();
    // The adapter's metadata names its run; its tensors must be equal bit for bit.
    let adapter = |run: &str| -> Vec<(String, Vec<u8>)> {
        let bytes = read(run, "adapter_model.safetensors");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut t: Vec<_> = st
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, view.data().to_vec()))
            .collect();
        t.sort();
        t
    };
    assert!(
        adapter("a") == adapter("b"),
        "the adapter differs between two runs with one seed"
    );
    // logits.bin headers name their own run; the logits themselves must be equal.
    let logits = |run: &str| read(run, "logits.bin")[kd::cache::HEADER_LEN..].to_vec();
    assert!(
        logits("a") == logits("b"),
        "the cached logits differ between two runs with one seed"
    );
    assert!(
        adapter("a") != adapter("c"),
        "another seed must give another run"
    );
}
