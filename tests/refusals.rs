//! Every input checked before the first step: each refusal is one line naming what is wrong,
//! and no run folder is created.
mod common;

use common::world::{fails, ok, World};
use std::path::Path;

/// Fails `kd teach` with `extra` on the world's RoBERTa, returns its error, and checks that it
/// is one line and that no run folder appeared.
fn refused(w: &World, model: &str, data: &str, extra: &[&str]) -> String {
    let out = w.run_training("teach", model, data, "r", extra, &[]);
    let err = fails(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got:\n{err}");
    assert!(
        !Path::new(&w.p("r")).exists(),
        "a refused run must not create its folder"
    );
    err
}

#[test]
fn stray_labels_classes_and_flags_are_refused_up_front() {
    let w = World::new(40, 20);
    let roberta = w.p("roberta");
    let data = w.dir.path().join("data");
    // A stray class 9 among 1..4 (AG News CSV is 1-based).
    let bad = w.dir.path().join("stray");
    std::fs::create_dir(&bad).unwrap();
    let mut train = std::fs::read_to_string(data.join("train.csv")).unwrap();
    train.push_str("\"9\",\"odd\",\"row\"\n");
    std::fs::write(bad.join("train.csv"), &train).unwrap();
    let err = refused(&w, &roberta, "stray", &[]);
    assert!(
        err.contains("train.csv, row 41") && err.contains("label 8") && err.contains("stray"),
        "{err}"
    );
    // --num-labels 9 takes it as declared, but then classes 4..7 have no rows.
    let err = refused(&w, &roberta, "stray", &["--num-labels", "9"]);
    assert!(
        err.contains("4, 5, 6, 7 of 9 have no training rows"),
        "{err}"
    );
    // A JSONL label of 1000000 is refused at once, not allocated for.
    let jsonl = w.dir.path().join("huge");
    std::fs::create_dir(&jsonl).unwrap();
    std::fs::write(
        jsonl.join("train.jsonl"),
        "{\"text\": \"a b\", \"label\": 0}\n{\"text\": \"c d\", \"label\": 1000000}\n",
    )
    .unwrap();
    let err = refused(&w, &roberta, "huge", &[]);
    assert!(
        err.contains("train.jsonl, row 2") && err.contains("label 1000000"),
        "{err}"
    );
    // Flags that would train something other than asked.
    let err = refused(&w, &roberta, "data", &["--targets", "nosuchmodule"]);
    assert!(err.contains("match no module"), "{err}");
    let err = refused(&w, &roberta, "data", &["--layers", "7"]);
    assert!(
        err.contains("--layers 7") && err.contains("2 layers"),
        "{err}"
    );
    let err = refused(&w, &roberta, "data", &["--max-steps", "0"]);
    assert!(err.contains("--max-steps 0"), "{err}");
    // A config.json listing fewer layers than the weights hold.
    let short = w.dir.path().join("short");
    std::fs::create_dir(&short).unwrap();
    for f in std::fs::read_dir(&roberta).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), short.join(f.file_name())).unwrap();
    }
    let config = std::fs::read_to_string(short.join("config.json")).unwrap();
    let config = config.replace("\"num_hidden_layers\":2", "\"num_hidden_layers\":1");
    assert!(config.contains("\"num_hidden_layers\":1"), "{config}");
    std::fs::write(short.join("config.json"), config).unwrap();
    let err = refused(&w, short.to_str().unwrap(), "data", &[]);
    assert!(
        err.contains("holds encoder layer 1") && err.contains("num_hidden_layers = 1"),
        "{err}"
    );
}

#[test]
fn distill_flags_that_do_nothing_or_overflow_are_refused() {
    let w = World::new(40, 20);
    ok(w.teach("t", &["--max-steps", "2"]));
    let err = fails(w.distill("t", "s", &["--temperature", "1e30"]));
    assert!(
        err.contains("--temperature 1000000000000000000000000000000 is not in (0, 100]"),
        "{err}"
    );
    let err = fails(w.distill("t", "s", &["--alpha", "0", "--temperature", "4"]));
    assert!(err.contains("no effect with --alpha 0"), "{err}");
    assert!(!Path::new(&w.p("s")).exists());
    // A student written over its teacher would delete the logits it learns from.
    let err = fails(w.distill("t", "t", &[]));
    assert!(err.contains("is the teacher's run folder"), "{err}");
    assert!(Path::new(&w.p("t")).join("logits.bin").is_file());
}

#[test]
fn predict_honours_max_len_for_run_folders() {
    let w = World::new(40, 20);
    ok(w.teach("t", &["--max-steps", "2"]));
    let long = "shares profit and market earnings today for the bank with more stocks ".repeat(3);
    let input = format!("\"{long}\"\n");
    let predict = |extra: &[&str]| w.predict("t", &input, extra);
    assert_ne!(
        predict(&[]),
        predict(&["--max-len", "4"]),
        "--max-len must change the input"
    );
}
