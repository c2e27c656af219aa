//! Runs that survive: a run folder is replaced whole or not at all, one writer at a time, and a
//! folder whose files come from different runs is refused.
mod common;

use common::world::{fails, kd, ok, summary, World};
use std::path::Path;

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

#[test]
fn a_failed_rerun_leaves_the_previous_run_whole() {
    let w = World::new(80, 20);
    ok(w.teach("t", &["--max-steps", "3"]));
    let t = Path::new(&w.p("t")).to_path_buf();
    let files = || -> Vec<Vec<u8>> {
        [
            "summary.json",
            "logits.bin",
            "adapter_model.safetensors",
            "metrics.jsonl",
        ]
        .iter()
        .map(|n| read(&t, n))
        .collect()
    };
    let before = files();
    // The run names the kd that wrote it, with the commit build.rs read.
    let written: serde_json::Value = serde_json::from_slice(&before[0]).unwrap();
    let by = written["kd"].as_str().unwrap();
    assert!(
        by.starts_with(concat!(env!("CARGO_PKG_VERSION"), " (")),
        "{by}"
    );
    // A test split with a class the training split lacks: refused before training, by row.
    let data = Path::new(&w.p("data")).to_path_buf();
    std::fs::remove_file(data.join("test.csv.gz")).unwrap();
    std::fs::write(
        data.join("test.csv"),
        "\"2\",\"a\",\"b\"\n\"7\",\"c\",\"d\"\n",
    )
    .unwrap();
    let err = fails(w.teach_seeded("t", "5", &[]));
    assert!(
        err.contains("test.csv, row 2") && err.contains("label 6"),
        "{err}"
    );
    // A run that diverges mid-training.
    std::fs::write(data.join("test.csv"), "\"2\",\"a\",\"b\"\n").unwrap();
    let (model, data_dir, out) = (w.p("roberta"), w.p("data"), w.p("t"));
    let err = fails(kd(
        &[
            "teach",
            "--model",
            &model,
            "--data",
            &data_dir,
            "--out",
            &out,
            "--device",
            "cpu",
            "--lr",
            "1e30",
            "--max-len",
            "32",
            "--batch-size",
            "16",
            "--seed",
            "5",
        ],
        &[],
    ));
    assert!(err.contains("loss became"), "{err}");
    assert!(before == files(), "the previous run changed");
    let siblings: Vec<String> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("kd-staging") || n.contains("kd-old"))
        .collect();
    assert!(siblings.is_empty(), "left behind: {siblings:?}");
    // A successful rerun replaces every file, and they share one run id.
    ok(w.teach_seeded("t", "9", &["--max-steps", "3"]));
    let id = summary(&t)["run_id"].as_str().unwrap().to_string();
    let config = String::from_utf8(read(&t, "config.toml")).unwrap();
    assert!(config.contains(&format!("run_id = \"{id}\"")), "{config}");
    assert!(String::from_utf8(read(&t, "metrics.jsonl"))
        .unwrap()
        .starts_with(&format!("{{\"run_id\":\"{id}\"}}")));
    assert_eq!(
        kd::cache::read_header(&t.join("logits.bin"))
            .unwrap()
            .run_id
            .as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        kd::model::adapter::read_run_id(&t).unwrap().as_deref(),
        Some(id.as_str())
    );
}

#[test]
fn a_second_writer_is_refused_at_once_naming_the_first() {
    let w = World::new(400, 20);
    let out = w.p("t");
    let mut first = w.spawn_long_teach("t", &[], ".run_id");
    let err = fails(w.teach("t", &[]));
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        err.contains("another kd process") && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    // Killed mid-run: no run folder appeared, and the next run starts cleanly.
    assert!(!Path::new(&out).exists());
    ok(w.teach("t", &["--max-steps", "3"]));
}

#[test]
fn a_folder_mixing_two_runs_is_refused() {
    let w = World::new(80, 20);
    ok(w.teach("a", &["--max-steps", "3"]));
    ok(w.teach_seeded("b", "3", &["--max-steps", "3"]));
    let (a, b) = (
        Path::new(&w.p("a")).to_path_buf(),
        Path::new(&w.p("b")).to_path_buf(),
    );
    std::fs::copy(b.join("logits.bin"), a.join("logits.bin")).unwrap();
    let err = fails(w.distill("a", "s", &["--max-steps", "3"]));
    assert!(
        err.contains("come from different runs") && err.contains("logits.bin"),
        "{err}"
    );
    std::fs::copy(
        b.join("adapter_model.safetensors"),
        a.join("adapter_model.safetensors"),
    )
    .unwrap();
    let err = fails(kd(
        &[
            "compare",
            &w.p("a"),
            "--data",
            &w.p("data"),
            "--device",
            "cpu",
        ],
        &[],
    ));
    assert!(err.contains("come from different runs"), "{err}");
}
