//! Distillation over a transfer set: the teacher scores unlabelled rows into its cache, the
//! student learns from them with the KD term alone, and files that differ are refused.
mod common;

use common::world::{fails, ok, summary, World};
use std::path::Path;

/// `n` unlabelled rows ("title","description") in `dir/name`.
fn write_unlabelled(w: &World, name: &str, n: usize, seed: u64) -> String {
    let dir = w.dir.path().join(format!("gen-{name}"));
    common::write_dataset(&dir, n, 1, seed);
    let text = std::fs::read_to_string(dir.join("train.csv")).unwrap();
    let rows: String = text
        .lines()
        .map(|l| l.split_once(',').unwrap().1.to_string() + "\n")
        .collect();
    let path = w.dir.path().join(name);
    std::fs::write(&path, rows).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn teacher_scores_unlabelled_rows_and_the_student_learns_from_them() {
    let w = World::new(80, 20);
    let u = write_unlabelled(&w, "u.csv", 48, 11);
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
    let other = write_unlabelled(&w, "other.csv", 48, 12);
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
