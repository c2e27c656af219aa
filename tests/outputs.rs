//! Outputs never land on inputs or inside a run folder, whatever form their path takes; list
//! flags name each thing once; a predict CSV's header is never a row; and the messages for a
//! bad quote, an empty metrics.jsonl and an output under a file say what is wrong.
mod common;

use common::world::{fails, kd, ok, World};
use std::path::Path;

/// The error of a refused command: one line, naming what is wrong.
fn refused(out: std::process::Output) -> String {
    let err = fails(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got:\n{err}");
    err
}

/// A world with a finished teacher `t`.
fn world_with_teacher() -> World {
    let w = World::new(40, 20);
    ok(w.teach("t", &["--max-steps", "2"]));
    w
}

#[test]
fn predict_never_writes_into_a_run_or_over_its_input() {
    let w = world_with_teacher();
    let t = w.p("t");
    let logits = Path::new(&t).join("logits.bin");
    let before = std::fs::read(&logits).unwrap();
    let input = w.p("in.csv");
    std::fs::write(&input, "\"shares profit\",\"market bank\"\n").unwrap();
    let predict = |output: &str| {
        refused(kd(
            &[
                "predict", &t, "--input", &input, "--output", output, "--device", "cpu",
            ],
            &[],
        ))
    };
    // The run's own file: by its path, through `..`, through a symlink to the folder.
    let link = w.p("link");
    std::os::unix::fs::symlink(&t, &link).unwrap();
    for path in [
        format!("{t}/logits.bin"),
        format!("{t}/../t/logits.bin"),
        format!("{link}/logits.bin"),
    ] {
        let err = predict(&path);
        assert!(
            err.contains("would overwrite the run's own logits.bin"),
            "{err}"
        );
    }
    // Any other file inside it, and a hard link to one of its files.
    let err = predict(&format!("{link}/preds.csv"));
    assert!(err.contains("lies inside the run folder"), "{err}");
    let hard = w.p("hard.bin");
    std::fs::hard_link(&logits, &hard).unwrap();
    let err = predict(&hard);
    assert!(err.contains("under another name"), "{err}");
    assert_eq!(std::fs::read(&logits).unwrap(), before, "the run is whole");
    // The input itself, a path under a file, a folder.
    let err = predict(&input);
    assert!(err.contains("is --input"), "{err}");
    let err = predict(&format!("{input}/preds.csv"));
    assert!(
        err.contains("in.csv is a file, not a folder") && !err.contains("os error"),
        "{err}"
    );
    let err = predict(&w.p("data"));
    assert!(err.contains("is a folder"), "{err}");
    assert!(w.predict("t", "\"a\",\"b\"\n", &[]).starts_with("row,"));
}

#[test]
fn runs_sweeps_exports_and_reports_stay_out_of_run_folders() {
    let w = world_with_teacher();
    let t = w.p("t");
    let err = refused(w.distill("t", "t/student", &[]));
    assert!(err.contains("lies inside the run folder"), "{err}");
    let err = refused(w.teach("t/sub", &[]));
    assert!(err.contains("lies inside the run folder"), "{err}");
    let sub = format!("{t}/sub");
    let err = refused(kd(&["export", &t, "--out", &sub], &[]));
    assert!(err.contains("lies inside the run folder"), "{err}");
    let json = format!("{t}/compare.json");
    let err = refused(kd(&["compare", &t, "--json", &json], &[]));
    assert!(err.contains("lies inside the run folder"), "{err}");
    // A folder kd recognises as a run by its files, though no command names it.
    let copy = w.p("copy");
    std::fs::create_dir(&copy).unwrap();
    // (its config beside what a run writes: a config.toml alone is a user's copy, no run)
    for f in ["config.toml", "summary.json"] {
        std::fs::copy(Path::new(&t).join(f), Path::new(&copy).join(f)).unwrap();
    }
    let report = format!("{copy}/report");
    let err = refused(kd(&["report", &t, "--out", &report], &[]));
    assert!(err.contains("lies inside the run folder"), "{err}");
    let (bert, data) = (w.p("bert"), w.p("data"));
    let sweep = |out: &str| {
        let args = ["sweep", "--model", &bert, "--data", &data, "--teacher", &t];
        let grid = ["--temperature", "2", "--alpha", "0.5", "--seeds", "0"];
        refused(kd(&[&args[..], &["--out", out], &grid[..]].concat(), &[]))
    };
    let err = sweep(&t);
    assert!(err.contains("is the teacher's run folder"), "{err}");
    let err = sweep(&w.p("copy"));
    assert!(err.contains("is a run folder"), "{err}");
    // An output on an input, holding one, or under a file.
    let err = refused(w.teach("data", &[]));
    assert!(err.contains("is --data"), "{err}");
    let err = refused(w.teach("", &[]));
    assert!(err.contains("holds --model"), "{err}");
    let err = refused(w.teach("t/config.toml/x", &[]));
    assert!(err.contains("config.toml is a file, not a folder"), "{err}");
    for gone in ["t/student", "t/sub", "t/compare.json", "copy/report"] {
        assert!(!w.dir.path().join(gone).exists(), "{gone}");
    }
    assert!(!w.dir.path().join("t/sweep.json").exists());
}

#[test]
fn list_flags_name_each_thing_once() {
    let w = world_with_teacher();
    let t = w.p("t");
    let err = refused(w.distill("t", "s", &["--teacher", &format!("{t}/../t")]));
    assert!(
        err.contains("--teacher names") && err.contains("twice"),
        "{err}"
    );
    // An empty path: clap refuses it on the command line, kd in a config file.
    let err = fails(w.teach("r", &["--unlabelled", ""]));
    assert!(err.contains("--unlabelled"), "{err}");
    let config = w.p("empty-unlabelled.toml");
    let teacher = std::fs::read_to_string("configs/teacher.toml").unwrap();
    std::fs::write(&config, format!("unlabelled = [\"\"]\n{teacher}")).unwrap();
    let err = refused(w.teach("r", &["--config", &config]));
    assert!(err.contains("--unlabelled is empty"), "{err}");
    let err = refused(w.teach("r", &["--label-names", "a,,b,c"]));
    assert!(
        err.contains("--label-names has an empty entry (number 2 of 4)"),
        "{err}"
    );
    let err = refused(w.teach("r", &["--label-names", "a,b,a,c"]));
    assert!(err.contains("--label-names names `a` twice"), "{err}");
    let err = refused(w.teach("r", &["--targets", "query,query"]));
    assert!(err.contains("--targets names `query` twice"), "{err}");
    let err = refused(kd(&["compare", &t, &t], &[]));
    assert!(err.contains("RUNS names"), "{err}");
    let u = w.p("u.csv");
    std::fs::write(&u, "\"a\",\"b\"\n").unwrap();
    let err = refused(kd(
        &["cache", &t, "--unlabelled", &u, "--unlabelled", &u],
        &[],
    ));
    assert!(err.contains("--unlabelled names"), "{err}");
    let (bert, data) = (w.p("bert"), w.p("data"));
    let args = ["sweep", "--model", &bert, "--data", &data, "--teacher", &t];
    let grid = ["--temperature", "2", "--alpha", "0.5", "--seeds", "0,0"];
    let out = w.p("sw");
    let err = refused(kd(&[&args[..], &["--out", &out], &grid[..]].concat(), &[]));
    assert!(err.contains("--seeds names `0` twice"), "{err}");
    for gone in ["r", "s", "sw"] {
        assert!(!w.dir.path().join(gone).exists(), "{gone}");
    }
}

#[test]
fn a_predict_header_is_never_a_row() {
    let w = world_with_teacher();
    let plain = "\"shares profit\",\"market bank\"\n\"football coach\",\"league goal\"\n";
    let without = w.predict("t", plain, &[]);
    assert_eq!(without.lines().count(), 3, "{without}");
    for header in ["title,description\n", "\"Title\",\"Description\"\n"] {
        let with = w.predict("t", &format!("{header}{plain}"), &[]);
        assert_eq!(with, without, "{header}");
    }
    let one = w.predict("t", "text\nfootball coach league\n", &[]);
    assert_eq!(one.lines().count(), 2, "{one}");
    // Declared: --no-header reads it as a row, --header skips whatever the first row says.
    let as_row = w.predict("t", "text\nfootball coach league\n", &["--no-header"]);
    assert_eq!(as_row.lines().count(), 3, "{as_row}");
    let skipped = w.predict("t", &format!("\"x\",\"y\"\n{plain}"), &["--header"]);
    assert_eq!(skipped, without);
    // A header alone is no rows.
    let input = w.p("header-only.csv");
    std::fs::write(&input, "title,description\n").unwrap();
    let out = w.p("header-only-preds.csv");
    let err = refused(kd(
        &[
            "predict",
            &w.p("t"),
            "--input",
            &input,
            "--output",
            &out,
            "--device",
            "cpu",
        ],
        &[],
    ));
    assert!(
        err.contains("holds only a header row (`title,description`)"),
        "{err}"
    );
    assert!(!Path::new(&out).exists());
}

#[test]
fn a_bad_quote_and_an_empty_log_are_named_as_what_they_are() {
    let w = world_with_teacher();
    let bad = w.dir.path().join("badq");
    std::fs::create_dir(&bad).unwrap();
    let mut train = std::fs::read_to_string(w.dir.path().join("data/train.csv")).unwrap();
    train.push_str("\"2,\"odd\",\"row\"\n");
    std::fs::write(bad.join("train.csv"), &train).unwrap();
    let err = refused(w.run_training("teach", &w.p("roberta"), "badq", "q", &[], &[]));
    assert!(err.contains("train.csv, row 41: unbalanced quote"), "{err}");
    // An empty metrics.jsonl is damage, not a second run.
    let metrics = Path::new(&w.p("t")).join("metrics.jsonl");
    std::fs::write(&metrics, "").unwrap();
    let input = w.p("in.csv");
    std::fs::write(&input, "\"a\",\"b\"\n").unwrap();
    let out = w.p("preds.csv");
    let err = refused(kd(
        &[
            "predict",
            &w.p("t"),
            "--input",
            &input,
            "--output",
            &out,
            "--device",
            "cpu",
        ],
        &[],
    ));
    assert!(
        err.contains("metrics.jsonl: is empty") && !err.contains("different runs"),
        "{err}"
    );
}
