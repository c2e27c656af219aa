//! Runs that survive: a run killed at any point (mid-epoch, between epochs, mid-cache) or
//! stopped by SIGINT resumes when the same command is run again, and ends with the same bits as
//! a run never interrupted; the previous run folder stays whole throughout.
mod common;

use common::world::{fails, ok, summary, World};
use std::path::Path;

/// The adapter's tensors (its metadata names the run, so files differ) and the logits.
fn outcome(run: &Path) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    let bytes = std::fs::read(run.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().to_vec()))
        .collect();
    tensors.sort();
    let logits = std::fs::read(run.join("logits.bin")).unwrap()[kd::cache::HEADER_LEN..].to_vec();
    (tensors, logits)
}

#[test]
fn a_run_killed_anywhere_resumes_to_the_same_bits() {
    let w = World::new(120, 20);
    let settings = [
        "--checkpoint-every",
        "3",
        "--cache-chunk-rows",
        "16",
        "--seed",
        "4",
    ];
    let teach = |out: &str, envs: &[(&str, &str)]| {
        w.run_training("teach", &w.p("roberta"), "data", out, &settings, envs)
    };
    ok(teach("ref", &[]));
    // The folder being replaced holds an earlier, finished run.
    ok(w.teach("t", &["--max-steps", "2"]));
    let previous = std::fs::read(Path::new(&w.p("t")).join("summary.json")).unwrap();
    let staging = w.dir.path().join(".t.kd-staging");
    // 114 training rows, batch 16: 8 steps an epoch, 4 epochs; 120 rows cached in 8 chunks.
    for (fault, at) in [
        ("KD_FAULT_AFTER_STEP", "5"),  // mid-epoch, last checkpoint at step 3
        ("KD_FAULT_AFTER_STEP", "13"), // mid-epoch again, from that checkpoint
        ("KD_FAULT_AFTER_EPOCH", "3"), // between epochs
        ("KD_FAULT_AFTER_CHUNK", "3"), // mid-cache
        ("KD_FAULT_AFTER_CHUNK", "6"),
    ] {
        fails(teach("t", &[(fault, at)]));
        assert_eq!(
            std::fs::read(Path::new(&w.p("t")).join("summary.json")).unwrap(),
            previous,
            "{fault}={at}: the previous run changed"
        );
        assert!(
            staging.join("checkpoint.safetensors").is_file(),
            "{fault}={at}"
        );
    }
    ok(teach("t", &[]));
    assert!(!staging.exists());
    assert!(
        outcome(Path::new(&w.p("t"))) == outcome(Path::new(&w.p("ref"))),
        "resumed run differs"
    );
    let lines = |run: &str| {
        std::fs::read_to_string(Path::new(&w.p(run)).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(
        lines("t"),
        lines("ref"),
        "the resumed metrics.jsonl has the same records"
    );
    let files: Vec<String> = std::fs::read_dir(w.p("t"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("checkpoint") || n.contains("chunk") || n.starts_with('.'))
        .collect();
    assert!(
        files.is_empty(),
        "resume files left in the run folder: {files:?}"
    );

    // A checkpoint of other settings (another seed) is set aside: the run starts over, with
    // nothing of the interrupted one (its cache chunks included).
    fails(teach("x", &[("KD_FAULT_AFTER_CHUNK", "2")]));
    let reseeded = [&settings[..4], &["--seed", "9"]].concat();
    ok(w.run_training("teach", &w.p("roberta"), "data", "x", &reseeded, &[]));
    ok(w.run_training("teach", &w.p("roberta"), "data", "ref9", &reseeded, &[]));
    assert!(outcome(Path::new(&w.p("x"))) == outcome(Path::new(&w.p("ref9"))));

    // A run whose --max-steps ends mid-epoch, killed in its caching pass: the resumed run
    // keeps the same (partial, third) epoch.
    let short = [&settings[..], &["--max-steps", "20"]].concat();
    ok(w.run_training("teach", &w.p("roberta"), "data", "ref20", &short, &[]));
    fails(w.run_training(
        "teach",
        &w.p("roberta"),
        "data",
        "m",
        &short,
        &[("KD_FAULT_AFTER_CHUNK", "2")],
    ));
    ok(w.run_training("teach", &w.p("roberta"), "data", "m", &short, &[]));
    assert!(outcome(Path::new(&w.p("m"))) == outcome(Path::new(&w.p("ref20"))));
    let kept = |run: &str| summary(Path::new(&w.p(run)))["kept_epoch"].clone();
    assert_eq!(kept("m"), kept("ref20"));
    assert_eq!(kept("m"), 3);

    // A stop request (what SIGINT does) checkpoints at that very step; --fresh starts over.
    let r = fails(teach("s", &[("KD_STOP_AFTER_STEP", "6")]));
    assert!(
        r.contains("interrupted during training at step 6")
            && r.contains("run the same command again"),
        "{r}"
    );
    ok(teach("s", &[]));
    assert!(outcome(Path::new(&w.p("s"))) == outcome(Path::new(&w.p("ref"))));
    let id = summary(Path::new(&w.p("s")))["run_id"].clone();
    ok(w.run_training(
        "teach",
        &w.p("roberta"),
        "data",
        "s",
        &[&settings[..], &["--fresh"]].concat(),
        &[],
    ));
    assert_ne!(summary(Path::new(&w.p("s")))["run_id"], id);
}

#[test]
fn sigint_stops_at_a_step_with_a_checkpoint_and_exit_130() {
    let w = World::new(400, 20);
    let out = w.p("t");
    let child = w.spawn_long_teach("t", &["--checkpoint-every", "1"], "checkpoint.safetensors");
    let checkpoint = w.dir.path().join(".t.kd-staging/checkpoint.safetensors");
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("run the same command again to resume"),
        "{stderr}"
    );
    assert!(checkpoint.is_file());
    assert!(!Path::new(&out).exists());
}
