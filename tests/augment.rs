//! `kd augment`: variants of labelled and unlabelled rows written as an ordinary transfer file,
//! the same bytes from the same seed, scored by the teacher like any transfer set; bad input
//! refused before anything is written.
mod common;

use common::world::{fails, kd, ok, World};
use std::path::Path;

/// `kd augment INPUTS --out OUT --seed S --variants N` plus `extra`.
fn augment(
    inputs: &[&str],
    out: &str,
    seed: &str,
    variants: &str,
    extra: &[&str],
) -> std::process::Output {
    let flags = ["--out", out, "--seed", seed, "--variants", variants];
    let args = [&["augment"][..], inputs, &flags[..], extra].concat();
    kd(&args, &[])
}

/// Unlabelled rows in AG News' headerless two-column form ("title","description").
fn write_unlabelled(w: &World, name: &str) -> String {
    let rows = "\"Stocks rally\",\"as the bank reports record profit today\"\n\
                \"Coach quits\",\"after the league season ends in a loss\"\n\
                \"New chip\",\"the computer maker says its software ships next week\"\n";
    let path = w.p(name);
    std::fs::write(&path, rows).unwrap();
    path
}

#[test]
fn augmented_rows_are_reproducible_and_the_teacher_scores_them() {
    let w = World::new(40, 12);
    let (train, u) = (w.p("data/train.csv"), write_unlabelled(&w, "u.csv"));
    let out = w.p("aug.jsonl");
    let line = ok(augment(&[&train, &u], &out, "7", "4", &[]));
    assert!(
        line.contains("of 43 rows") && line.contains("kd cache"),
        "{line}"
    );
    let first = std::fs::read(&out).unwrap();
    let rows: Vec<serde_json::Value> = String::from_utf8(first.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        rows.len() > 40 * 3 && rows.len() <= 43 * 4,
        "{}",
        rows.len()
    );
    assert!(rows
        .iter()
        .all(|r| r.get("label").is_none() && r["text"].is_string()));
    // Same inputs and seed: the same bytes; another seed: other rows.
    ok(augment(&[&train, &u], &out, "7", "4", &[]));
    assert_eq!(std::fs::read(&out).unwrap(), first);
    let other = w.p("other.jsonl");
    ok(augment(&[&train, &u], &other, "8", "4", &[]));
    assert_ne!(std::fs::read(&other).unwrap(), first);

    // The teacher scores the variants as any transfer set, and a student learns from them.
    ok(w.teach("t", &["--max-steps", "2"]));
    let t = w.p("t");
    ok(kd(
        &["cache", &t, "--unlabelled", &out, "--device", "cpu"],
        &[],
    ));
    let header = kd::cache::read_header(&Path::new(&t).join("logits.bin")).unwrap();
    assert_eq!((header.labelled, header.rows), (40, 40 + rows.len()));
    ok(w.distill("t", "s", &["--unlabelled", &out, "--max-steps", "2"]));
    // A CSV transfer file reads back too.
    let csv = w.p("aug.csv");
    ok(augment(&[&u], &csv, "7", "2", &[]));
    ok(w.teach("t2", &["--unlabelled", &csv, "--max-steps", "1"]));
}

#[test]
fn bad_input_is_refused_before_anything_is_written() {
    let w = World::new(8, 4);
    let u = write_unlabelled(&w, "u.csv");
    let out = w.p("aug.jsonl");
    let refused = |inputs: &[&str], out: &str, variants: &str, extra: &[&str]| {
        let err = fails(augment(inputs, out, "1", variants, extra));
        assert!(!Path::new(out).exists(), "{out} written after: {err}");
        err
    };
    // A one-word row: nothing to augment, named by file and row; --skip-short counts it.
    let short = w.p("short.jsonl");
    std::fs::write(
        &short,
        "{\"text\": \"two words\"}\n\n{\"text\": \"  alone \"}\n",
    )
    .unwrap();
    let err = refused(&[&u, &short], &out, "2", &[]);
    assert!(
        err.contains("short.jsonl, row 3") && err.contains("nothing to augment"),
        "{err}"
    );
    let line = ok(augment(&[&short], &out, "1", "2", &["--skip-short"]));
    assert!(line.contains("1 one-word rows skipped"), "{line}");
    std::fs::remove_file(&out).unwrap();
    // An empty row.
    let empty = w.p("empty.jsonl");
    std::fs::write(&empty, "{\"text\": \"fine row\"}\n{\"text\": \" \"}\n").unwrap();
    let err = refused(&[&empty], &out, "2", &[]);
    assert!(err.contains("empty.jsonl, row 2: empty text"), "{err}");
    // A file without rows, and one whose every row is skipped: nothing to score.
    let none = w.p("none.jsonl");
    std::fs::write(&none, "\n\n").unwrap();
    assert!(refused(&[&none], &out, "2", &[]).contains("none.jsonl: no rows"));
    let only_short = w.p("only_short.jsonl");
    std::fs::write(&only_short, "{\"text\": \"alone\"}\n").unwrap();
    let err = refused(&[&only_short], &out, "2", &["--skip-short"]);
    assert!(err.contains("no row had a variant"), "{err}");
    // No variants, a probability outside [0, 1], masking and shuffles over one draw.
    assert!(refused(&[&u], &out, "0", &[]).contains("--variants"));
    let err = refused(&[&u], &out, "2", &["--mask-prob", "1.5"]);
    assert!(
        err.contains("--mask-prob") && err.contains("[0, 1]"),
        "{err}"
    );
    assert!(refused(&[&u], &out, "2", &["--ngram-prob", "-0.1"]).contains("--ngram-prob"));
    let err = refused(
        &[&u],
        &out,
        "2",
        &["--mask-prob", "0.7", "--shuffle-prob", "0.7"],
    );
    assert!(err.contains("over 1"), "{err}");
    // The output is an input (by another path), or not a format kd writes.
    let same = format!("{}/../u.csv", w.p("data"));
    let before = std::fs::read(&u).unwrap();
    let err = fails(augment(&[&u], &same, "1", "2", &[]));
    assert!(
        err.contains("--out") && err.contains("which this command reads"),
        "{err}"
    );
    assert_eq!(std::fs::read(&u).unwrap(), before);
    assert!(refused(&[&u], &w.p("aug.parquet"), "2", &[]).contains(".jsonl or .csv"));
    // Two text columns cannot be written back as one.
    let err = refused(
        &[&u],
        &out,
        "2",
        &["--text-column", "a", "--text-column", "b"],
    );
    assert!(err.contains("one text"), "{err}");
}
