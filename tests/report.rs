//! `kd report`: report.md with tables and pictures for runs and a sweep; the folder is replaced
//! whole by the next report, and a folder that is not a report is refused.
mod common;
use common::world::{fails, kd, ok, World};
use std::path::Path;

#[test]
fn a_report_shows_runs_and_a_sweep_and_replaces_only_reports() {
    let w = World::new(80, 20);
    ok(w.teach(
        "t",
        &["--max-steps", "4", "--calibrate", "--val-fraction", "0.25"],
    ));
    ok(w.distill("t", "s", &["--max-steps", "2"]));
    let (bert, data, t, sw) = (w.p("bert"), w.p("data"), w.p("t"), w.p("sw"));
    ok(kd(
        &[
            "sweep",
            "--model",
            &bert,
            "--data",
            &data,
            "--teacher",
            &t,
            "--out",
            &sw,
            "--device",
            "cpu",
            "--max-steps",
            "2",
            "--batch-size",
            "16",
            "--max-len",
            "32",
            "--lora-r",
            "4",
            "--lora-alpha",
            "16",
            "--temperature",
            "2",
            "--alpha",
            "0,0.5",
            "--seeds",
            "1",
        ],
        &[],
    ));
    let rep = w.p("rep");
    let report = |folders: &[&str]| {
        let mut args = vec!["report", "--out", &rep, "--device", "cpu"];
        args.extend_from_slice(folders);
        kd(&args, &[])
    };
    let s = w.p("s");
    let stdout = ok(report(&[&t, &s, &sw]));
    assert!(stdout.contains("report.md"), "{stdout}");
    let md = std::fs::read_to_string(Path::new(&rep).join("report.md")).unwrap();
    for picture in [
        "training-loss",
        "validation-accuracy",
        "confusion-1-t",
        "confusion-2-s",
        "reliability-1-t",
        "reliability-2-s",
        "sweep-1-sw",
        "accuracy-vs-rows-per-s",
    ] {
        assert!(
            md.contains(&format!("]({picture}.svg)")),
            "{picture} in {md}"
        );
        for ext in ["svg", "png"] {
            let path = Path::new(&rep).join(format!("{picture}.{ext}"));
            assert!(path.metadata().unwrap().len() > 1000, "{}", path.display());
        }
    }
    // The calibrated teacher's diagram shows both temperatures; the tables name every run.
    let teacher_reliability =
        std::fs::read_to_string(Path::new(&rep).join("reliability-1-t.svg")).unwrap();
    assert!(teacher_reliability.contains("before: T = 1"));
    assert!(md.contains(&format!("| `{t}` |")) && md.contains(&format!("| `{s}` |")));
    assert!(md.contains("| 2 | 0.5 |"), "the sweep's table: {md}");
    assert!(
        md.contains("## Serving cost") && md.contains("| rows/s @32 |"),
        "{md}"
    );

    // A second report replaces the first whole: no picture of the student survives (nor,
    // untimed, the accuracy-against-rows/s picture).
    ok(report(&["--no-timing", &t]));
    assert!(!Path::new(&rep).join("confusion-2-s.png").exists());
    assert!(!Path::new(&rep).join("accuracy-vs-rows-per-s.png").exists());
    assert!(Path::new(&rep).join("confusion-1-t.png").exists());

    // A folder that is not a report is never replaced; nothing to report is an error.
    let notes = w.p("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(Path::new(&notes).join("todo.txt"), "mine").unwrap();
    let err = fails(kd(&["report", "--out", &notes, &t], &[]));
    assert!(err.contains("holds `todo.txt`"), "{err}");
    assert_eq!(
        std::fs::read_to_string(Path::new(&notes).join("todo.txt")).unwrap(),
        "mine"
    );
    // Nor is a report folder holding the user's notes, a run folder, or a folder inside a run.
    std::fs::write(Path::new(&rep).join("notes.txt"), "mine").unwrap();
    let err = fails(report(&[&t]));
    assert!(err.contains("holds `notes.txt`"), "{err}");
    std::fs::remove_file(Path::new(&rep).join("notes.txt")).unwrap();
    std::fs::write(Path::new(&t).join("report.md"), "# kd report\n").unwrap();
    let err = fails(kd(&["report", "--out", &t, &s], &[]));
    assert!(err.contains("holds `"), "{err}");
    let inside = format!("{t}/report");
    let err = fails(kd(&["report", "--out", &inside, &t], &[]));
    assert!(err.contains("being reported on"), "{err}");
    assert!(Path::new(&t).join("adapter_model.safetensors").exists());
    let err = fails(kd(&["report", "--out", &rep], &[]));
    assert!(err.contains("FOLDERS") || err.contains("required"), "{err}");
}
