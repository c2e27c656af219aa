//! Distillation over a transfer set: the teacher scores unlabelled rows into its cache, the
//! student learns from them with the KD term alone, and files that differ are refused.
mod common;

use common::world::{fails, kd, ok, summary, World};
use std::path::Path;

#[test]
fn teacher_scores_unlabelled_rows_and_the_student_learns_from_them() {
    let w = World::new(80, 20);
    let u = w.write_unlabelled("u.csv", 48, 11);
    ok(w.teach("t", &["--unlabelled", &u, "--max-steps", "4"]));
    let header = kd::cache::read_header(&Path::new(&w.p("t")).join("logits.bin")).unwrap();
    assert_eq!((header.labelled, header.rows), (80, 128));

    // Four epochs (the test world's setting), each one pass over the labelled training rows (76 of 80) and the 48 unlabelled.
    ok(w.distill("t", "s", &["--unlabelled", &u]));
    let s = summary(Path::new(&w.p("s")));
    assert_eq!(s["steps"], 4 * (76 + 48usize).div_ceil(16));
    // Without the transfer set the same teacher still serves the labelled rows.
    ok(w.distill("t", "s2", &[]));
    assert_eq!(
        summary(Path::new(&w.p("s2")))["steps"],
        4 * 76usize.div_ceil(16)
    );

    // Other unlabelled rows than the teacher scored: refused, naming the file.
    let other = w.write_unlabelled("other.csv", 48, 12);
    let err = fails(w.distill("t", "s3", &["--unlabelled", &other]));
    assert!(
        err.contains("other.csv") && err.contains("not those the teacher scored"),
        "{err}"
    );
    // A teacher that scored none.
    ok(w.teach("plain", &["--max-steps", "2"]));
    let err = fails(w.distill("plain", "s4", &["--unlabelled", &u]));
    assert!(err.contains("scored no unlabelled rows"), "{err}");
    // --alpha 0 cannot use unlabelled rows.
    let err = fails(w.distill("t", "s5", &["--unlabelled", &u, "--alpha", "0"]));
    assert!(
        err.contains("--alpha 0") && err.contains("unlabelled"),
        "{err}"
    );
    assert!(!Path::new(&w.p("s3")).exists() && !Path::new(&w.p("s5")).exists());
}

#[test]
fn kd_cache_scores_a_transfer_set_and_shards_merge_to_the_same_bits() {
    let w = World::new(80, 20);
    let u = w.write_unlabelled("u.csv", 50, 21);
    ok(w.teach("t", &["--max-steps", "3"]));
    let t = w.p("t");
    let cache = |extra: &[&str]| {
        let args = [
            &[
                "cache",
                t.as_str(),
                "--unlabelled",
                &u,
                "--chunk-rows",
                "8",
                "--device",
                "cpu",
            ],
            extra,
        ]
        .concat();
        kd(&args, &[])
    };
    let labelled_before = std::fs::read(Path::new(&t).join("logits.bin")).unwrap();
    ok(cache(&[]));
    let single = std::fs::read(Path::new(&t).join("logits.bin")).unwrap();
    let header = kd::cache::read_header(&Path::new(&t).join("logits.bin")).unwrap();
    assert_eq!((header.labelled, header.rows), (80, 130));
    // The labelled rows' logits are kept as they were.
    let h = kd::cache::HEADER_LEN;
    assert_eq!(single[h..h + 80 * 16], labelled_before[h..]);
    let config = std::fs::read_to_string(Path::new(&t).join("config.toml")).unwrap();
    assert!(config.contains("u.csv"), "{config}");
    ok(w.distill("t", "s", &["--unlabelled", &u, "--max-steps", "2"]));

    // Three shards (seven chunks of 8 rows: 3 + 2 + 2) merge into the same file.
    for i in 0..3 {
        let shard = format!("{i}/3");
        ok(cache(&["--shard", &shard]));
    }
    let parts = w.dir.path().join("t.cache-parts");
    std::fs::rename(parts.join("part-2-of-3.bin"), w.dir.path().join("held")).unwrap();
    let err = fails(cache(&["--merge"]));
    assert!(
        err.contains("part-2-of-3.bin") && err.contains("--shard 2/3"),
        "{err}"
    );
    std::fs::rename(w.dir.path().join("held"), parts.join("part-2-of-3.bin")).unwrap();
    ok(cache(&["--merge"]));
    assert!(std::fs::read(Path::new(&t).join("logits.bin")).unwrap() == single);
    assert!(!parts.exists(), "the parts are removed once merged");
}

#[test]
fn a_student_learns_from_an_ensemble_of_teachers_with_other_backbones() {
    let w = World::new(80, 20);
    let u = w.write_unlabelled("u.csv", 32, 31);
    ok(w.teach("rt", &["--unlabelled", &u, "--max-steps", "3"]));
    let bert = w.p("bert");
    ok(w.run_training(
        "teach",
        &bert,
        "data",
        "bt",
        &["--unlabelled", &u, "--max-steps", "3"],
        &[],
    ));
    let bt = w.p("bt");
    ok(w.distill(
        "rt",
        "s",
        &["--teacher", &bt, "--unlabelled", &u, "--max-steps", "3"],
    ));
    let config = std::fs::read_to_string(Path::new(&w.p("s")).join("config.toml")).unwrap();
    assert!(config.contains("rt") && config.contains("bt"), "{config}");
    // A teacher that scored other unlabelled rows cannot join the ensemble.
    let other = w.write_unlabelled("o.csv", 32, 32);
    ok(w.run_training(
        "teach",
        &bert,
        "data",
        "ot",
        &["--unlabelled", &other, "--max-steps", "3"],
        &[],
    ));
    let ot = w.p("ot");
    let err = fails(w.distill("rt", "s2", &["--teacher", &ot, "--unlabelled", &u]));
    assert!(
        err.contains("ot") && err.contains("not those the teacher scored"),
        "{err}"
    );
}

#[test]
fn a_sweep_trains_each_point_once_and_pairs_against_alpha_zero() {
    let w = World::new(80, 20);
    ok(w.teach("t", &["--max-steps", "2"]));
    let (bert, data, t, out) = (w.p("bert"), w.p("data"), w.p("t"), w.p("sw"));
    let sweep = |steps: &str| {
        kd(
            &[
                "sweep",
                "--model",
                &bert,
                "--data",
                &data,
                "--teacher",
                &t,
                "--out",
                &out,
                "--device",
                "cpu",
                "--max-steps",
                steps,
                "--batch-size",
                "16",
                "--max-len",
                "32",
                "--lora-r",
                "4",
                "--lora-alpha",
                "16",
                "--temperature",
                "1,2",
                "--alpha",
                "0,0.5",
                "--seeds",
                "1,2",
            ],
            &[],
        )
    };
    let stdout = ok(sweep("2"));
    assert!(stdout.contains("trained 6 of 6 runs"), "{stdout}");
    let json = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(Path::new(&out).join(p)).unwrap()).unwrap()
    };
    let s = json("sweep.json");
    let points = s["points"].as_array().unwrap();
    assert_eq!(points.len(), 3, "α=0 once, then T=1 and T=2 at α=0.5");
    assert!(points[0]["temperature"].is_null() && points[0]["vs_alpha0_mean"].is_null());
    // The paired difference is the mean of per-seed differences.
    let acc = |run: &str| {
        summary(&Path::new(&out).join(run))["test_accuracy"]
            .as_f64()
            .unwrap()
    };
    let want = ((acc("T2_a0.5_s1") - acc("a0_s1")) + (acc("T2_a0.5_s2") - acc("a0_s2"))) / 2.0;
    assert!((points[2]["vs_alpha0_mean"].as_f64().unwrap() - want).abs() < 1e-12);
    assert!(std::fs::read_to_string(Path::new(&out).join("sweep.md"))
        .unwrap()
        .contains("| 2 | 0.5 |"));
    // Interrupted: one point is missing. The rerun trains it alone.
    let kept = summary(&Path::new(&out).join("T1_a0.5_s1"))["run_id"].clone();
    std::fs::remove_dir_all(Path::new(&out).join("T2_a0.5_s2")).unwrap();
    let stdout = ok(sweep("2"));
    assert!(stdout.contains("trained 1 of 6 runs"), "{stdout}");
    assert_eq!(summary(&Path::new(&out).join("T1_a0.5_s1"))["run_id"], kept);
    // Other settings (a longer run) are not taken for finished points.
    assert!(ok(sweep("3")).contains("trained 6 of 6 runs"));
}
