//! Teachers worth learning from: which epoch a run keeps (validation split, slice size, --select)
//! and BERT's own head (pooler + classifier) in run folders.
mod common;

use common::world::{fails, ok, summary, World};
use std::path::Path;

fn metrics(run: &Path) -> String {
    std::fs::read_to_string(run.join("metrics.jsonl")).unwrap()
}

#[test]
fn a_validation_split_is_used_and_a_small_one_keeps_the_last_epoch() {
    let w = World::new(80, 30);
    let data = std::path::PathBuf::from(w.p("data"));
    std::fs::copy(data.join("test.csv.gz"), data.join("validation.csv.gz")).unwrap();
    ok(w.teach("t", &["--select", "accuracy"]));
    let s = summary(Path::new(&w.p("t")));
    let sel = &s["selection"];
    assert_eq!(sel["rule"], "accuracy");
    // The 30 rows of validation.csv, not 5% of train: too few to choose by.
    let reason = sel["reason"].as_str().unwrap();
    assert!(
        reason.contains("(30 rows)") && reason.contains("too small"),
        "{reason}"
    );
    assert_eq!(s["kept_epoch"], 4);
    assert_eq!(sel["epoch"], 4);
    let m = metrics(Path::new(&w.p("t")));
    let evals = m
        .lines()
        .filter(|l| l.contains("\"eval\":\"validation\""))
        .count();
    assert_eq!(evals, 4, "{m}");
    assert!(
        m.contains("\"loss\""),
        "validation lines carry the NLL: {m}"
    );
    // The validation rows are part of the rows the teacher scored (110 = 80 + 30).
    let cache = kd::cache::LogitCache::open(&Path::new(&w.p("t")).join("logits.bin")).unwrap();
    assert_eq!(cache.header().rows, 110);
    // A validation row with a class the training split does not have is refused by row.
    std::fs::remove_file(data.join("validation.csv.gz")).unwrap();
    std::fs::write(
        data.join("validation.csv"),
        "\"1\",\"a\",\"b\"\n\"9\",\"c\",\"d\"\n",
    )
    .unwrap();
    let err = fails(w.teach("t2", &[]));
    assert!(
        err.contains("validation.csv, row 2") && err.contains("label 8"),
        "{err}"
    );
}

#[test]
fn val_fraction_zero_trains_every_row_and_keeps_the_last_epoch() {
    let w = World::new(80, 20);
    let out = ok(w.teach("t", &["--val-fraction", "0"]));
    assert!(out.contains("kept epoch 4: no validation rows"), "{out}");
    let s = summary(Path::new(&w.p("t")));
    assert_eq!(s["selection"]["rule"], "loss", "loss is the default");
    assert!(s["val_accuracy"].is_null());
    assert!(!metrics(Path::new(&w.p("t"))).contains("validation"));
}

#[test]
fn bert_runs_have_berts_head_and_the_pooler_can_be_frozen() {
    let w = World::new(60, 20);
    let adapter_keys = |run: &str| -> Vec<String> {
        let path = Path::new(&w.p(run)).join("adapter_model.safetensors");
        let t = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
        let mut keys: Vec<String> = t.into_keys().filter(|k| !k.contains("lora_")).collect();
        keys.sort();
        keys
    };
    let bert = w.p("bert");
    ok(w.run_training("teach", &bert, "data", "b", &[], &[]));
    assert_eq!(
        adapter_keys("b"),
        [
            "base_model.model.bert.pooler.dense.bias",
            "base_model.model.bert.pooler.dense.weight",
            "base_model.model.classifier.bias",
            "base_model.model.classifier.weight",
        ]
    );
    let config = std::fs::read_to_string(Path::new(&w.p("b")).join("adapter_config.json")).unwrap();
    assert!(config.contains("\"pooler\""), "{config}");
    ok(w.run_training("teach", &bert, "data", "f", &["--pooler", "frozen"], &[]));
    assert_eq!(
        adapter_keys("f"),
        [
            "base_model.model.classifier.bias",
            "base_model.model.classifier.weight"
        ]
    );
    let (trained, frozen) = (summary(Path::new(&w.p("b"))), summary(Path::new(&w.p("f"))));
    let h = 32; // the tiny BERT's hidden size
    assert_eq!(
        trained["trainable_params"].as_u64().unwrap()
            - frozen["trainable_params"].as_u64().unwrap(),
        h * h + h
    );
    // A frozen-pooler run predicts through its own folder (config + adapter agree).
    ok(common::world::kd(
        &[
            "compare",
            &w.p("f"),
            "--data",
            &w.p("data"),
            "--device",
            "cpu",
            "--json",
            &w.p("c.json"),
        ],
        &[],
    ));
    // A checkpoint without pooler weights: training says the pooler starts fresh; evaluating
    // the finished run (its adapter holds the trained pooler) does not.
    let bare = w.dir.path().join("bert-bare");
    std::fs::create_dir_all(&bare).unwrap();
    for entry in std::fs::read_dir(&bert).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), bare.join(entry.file_name())).unwrap();
    }
    let weights = bare.join("model.safetensors");
    let mut t = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).unwrap();
    t.retain(|k, _| !k.contains("pooler"));
    candle_core::safetensors::save(&t, &weights).unwrap();
    let bare = bare.to_string_lossy().into_owned();
    let out = w.run_training("teach", &bare, "data", "nb", &[], &[]);
    let warned = String::from_utf8_lossy(&out.stderr).contains("no pooler.dense weights");
    ok(out);
    assert!(
        warned,
        "training from a checkpoint without a pooler says so"
    );
    let out = common::world::kd(
        &[
            "compare",
            &w.p("nb"),
            "--device",
            "cpu",
            "--json",
            &w.p("c2.json"),
        ],
        &[],
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("no pooler.dense"));
    ok(out);
    // RoBERTa's head has no pooler to freeze.
    let err = fails(w.teach("r", &["--pooler", "frozen"]));
    assert!(
        err.contains("RoBERTa's classification head has no pooler"),
        "{err}"
    );
}
