//! Representation distillation end to end on tiny random models: a RoBERTa teacher (hidden 48,
//! byte-level BPE) caches its representations, a BERT student (hidden 32, WordPiece) matches
//! them through a projection, and kd cache keeps them in step with the logits, sharded or not.
//! Every bad input is refused before any work, naming the file or flag.
mod common;

use common::world::{fails, kd, ok, summary, World};
use common::{write_roberta_shaped, TinyShape};
use kd::cache::repr::{read_header, ReprHeader};
use kd::cache::{LogitCache, ReprCache};
use std::path::Path;

const WIDE: TinyShape = TinyShape {
    hidden: 48,
    layers: 2,
    heads: 4,
    ffn: 96,
};

/// A world with a 48-wide RoBERTa (`wide`) beside the 32-wide BERT student, and `u.csv`.
fn world() -> (World, String) {
    let w = World::new(48, 12);
    write_roberta_shaped(&w.dir.path().join("wide"), 5, &WIDE);
    let u = w.write_unlabelled("u.csv", 20, 7);
    (w, u)
}

/// `kd teach` of the wide RoBERTa into `out`, two steps (seed 1 unless `extra` names one).
fn teach(w: &World, out: &str, extra: &[&str]) -> std::process::Output {
    let seed: &[&str] = if extra.contains(&"--seed") {
        &[]
    } else {
        &["--seed", "1"]
    };
    let args = [seed, &["--max-steps", "2"], extra].concat();
    w.run_training("teach", &w.p("wide"), "data", out, &args, &[])
}

fn tensor_names(run: &Path) -> Vec<String> {
    let bytes = std::fs::read(run.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.names().into_iter().map(str::to_string).collect()
}

#[test]
fn a_roberta_teacher_teaches_a_narrower_bert_student_through_its_representations() {
    let (w, u) = world();
    ok(teach(
        &w,
        "t",
        &["--unlabelled", &u, "--cache-representations"],
    ));
    let t = Path::new(&w.p("t")).to_path_buf();
    let reprs = ReprCache::open(&t.join("representations.bin")).unwrap();
    let logits = LogitCache::open(&t.join("logits.bin")).unwrap();
    assert_eq!(reprs.header().width, 48);
    assert_eq!(reprs.header().rows, logits.header().rows);
    reprs.check_matches(&logits).unwrap();
    // The rows are distinct sentences: their representations differ.
    assert_ne!(reprs.gather(&[0]), reprs.gather(&[1]));

    let student = ["--unlabelled", &u, "--max-steps", "6", "--repr-weight", "1"];
    ok(w.distill("t", "s", &student));
    let s = Path::new(&w.p("s")).to_path_buf();
    assert!(
        tensor_names(&s)
            .iter()
            .all(|n| !n.contains("repr_projection")),
        "the projection is not part of the exported student"
    );
    let sum = summary(&s);
    let teachers = sum["inputs"]["teachers"][0].as_str().unwrap().to_string();
    assert!(teachers.contains("representations CRC-32"), "{teachers}");
    assert_eq!(
        (sum["repr_weight"].as_f64(), sum["repr_loss"].as_str()),
        (Some(1.0), Some("cosine"))
    );
    // The exported student counts its own tensors only, as a β = 0 student does.
    ok(w.distill("t", "plain", &["--unlabelled", &u, "--max-steps", "1"]));
    assert_eq!(
        sum["trainable_params"],
        summary(Path::new(&w.p("plain")))["trainable_params"]
    );
    let mse = [&student[..], &["--repr-loss", "mse"]].concat();
    ok(w.distill("t", "s_mse", &mse));
}

#[test]
fn a_student_matching_representations_resumes_to_the_same_bits() {
    let (w, u) = world();
    ok(teach(
        &w,
        "t",
        &["--unlabelled", &u, "--cache-representations"],
    ));
    let args = [
        "--unlabelled",
        &u,
        "--repr-weight",
        "2",
        "--checkpoint-every",
        "2",
        "--max-steps",
        "8",
    ];
    ok(w.distill("t", "ref", &args));
    // Killed after step 3: the checkpoint of step 2 holds the projection and its moments.
    fails(
        w.run_training(
            "distill",
            &w.p("bert"),
            "data",
            "s",
            &[
                &[
                    "--teacher",
                    &w.p("t"),
                    "--seed",
                    "2",
                    "--lora-r",
                    "4",
                    "--lora-alpha",
                    "16",
                ],
                &args[..],
            ]
            .concat(),
            &[("KD_FAULT_AFTER_STEP", "3")],
        ),
    );
    // The checkpoint keeps the projection beside the student's tensors, and is resumed.
    let ckpt = w.dir.path().join(".s.kd-staging/checkpoint.safetensors");
    let b = std::fs::read(&ckpt).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&b).unwrap();
    let state = &meta.metadata().as_ref().unwrap()["kd"];
    assert!(state.contains("\"kd.repr_projection.weight\""), "{state}");
    let resumed = w.distill("t", "s", &args);
    let stderr = String::from_utf8_lossy(&resumed.stderr).into_owned();
    ok(resumed);
    assert!(!stderr.contains("starting over"), "{stderr}");
    let bytes = |run: &str| {
        let b = std::fs::read(Path::new(&w.p(run)).join("adapter_model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&b).unwrap();
        let mut t: Vec<_> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.data().to_vec()))
            .collect();
        t.sort();
        t
    };
    assert!(bytes("s") == bytes("ref"), "the resumed student differs");
}

#[test]
fn kd_cache_keeps_the_representations_in_step_sharded_or_not() {
    let (w, u) = world();
    ok(teach(
        &w,
        "t",
        &["--unlabelled", &u, "--cache-representations"],
    ));
    let t = Path::new(&w.p("t")).to_path_buf();
    let labelled = LogitCache::open(&t.join("logits.bin"))
        .unwrap()
        .header()
        .labelled;
    let before = ReprCache::open(&t.join("representations.bin")).unwrap();
    let kept: Vec<usize> = (0..labelled).collect();
    let old_rows = before.gather(&kept);
    drop(before);
    // A copy of the teacher folder, to score the same rows in shards.
    let copy = Path::new(&w.p("t2")).to_path_buf();
    std::fs::create_dir_all(&copy).unwrap();
    for e in std::fs::read_dir(&t).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
    }
    let u2 = w.write_unlabelled("u2.csv", 30, 8);
    let cache = |teacher: &str, extra: &[&str]| {
        let args = [
            &[
                "cache",
                teacher,
                "--unlabelled",
                &u2,
                "--device",
                "cpu",
                "--chunk-rows",
                "8",
            ],
            extra,
        ]
        .concat();
        kd(&args, &[])
    };
    ok(cache(&w.p("t"), &[]));
    let after = ReprCache::open(&t.join("representations.bin")).unwrap();
    let logits = LogitCache::open(&t.join("logits.bin")).unwrap();
    after.check_matches(&logits).unwrap();
    assert_eq!(after.header().rows, labelled + 30);
    assert_eq!(after.gather(&kept), old_rows, "the labelled rows' are kept");
    for shard in ["0/2", "1/2"] {
        ok(cache(&w.p("t2"), &["--shard", shard]));
    }
    ok(cache(&w.p("t2"), &["--merge"]));
    for file in ["logits.bin", "representations.bin"] {
        assert!(
            std::fs::read(t.join(file)).unwrap() == std::fs::read(copy.join(file)).unwrap(),
            "{file}: the merged shards differ from one pass"
        );
    }
}

#[test]
fn kd_cache_adds_representations_to_a_teacher_that_has_none() {
    let (w, u) = world();
    ok(teach(&w, "t", &["--unlabelled", &u]));
    let t = Path::new(&w.p("t")).to_path_buf();
    let logits_before = std::fs::read(t.join("logits.bin")).unwrap();
    let teacher = w.p("t");
    let cache = |extra: &[&str]| {
        let args = [
            &["cache", &teacher, "--unlabelled", &u, "--device", "cpu"],
            extra,
        ]
        .concat();
        kd(&args, &[])
    };
    let err = fails(cache(&["--representations", "--shard", "0/2"]));
    assert!(err.contains("without --shard/--merge"), "{err}");
    let line = ok(cache(&["--representations"]));
    assert!(line.contains("48 wide"), "{line}");
    let reprs = ReprCache::open(&t.join("representations.bin")).unwrap();
    let logits = LogitCache::open(&t.join("logits.bin")).unwrap();
    reprs.check_matches(&logits).unwrap();
    assert_eq!(reprs.header().rows, logits.header().rows);
    // The labelled rows' logits are kept as the teacher cached them when it was trained.
    let before = &logits_before[kd::cache::HEADER_LEN..][..logits.header().labelled * 4 * 4];
    let after = std::fs::read(t.join("logits.bin")).unwrap();
    assert!(&after[kd::cache::HEADER_LEN..][..before.len()] == before);
    ok(w.distill(
        "t",
        "s",
        &["--unlabelled", &u, "--repr-weight", "1", "--max-steps", "2"],
    ));
}

/// `kd distill` of the BERT student from `teacher` must fail before writing anything.
fn refused(w: &World, teacher: &str, extra: &[&str]) -> String {
    let err = fails(w.distill(teacher, "s", extra));
    assert!(
        !Path::new(&w.p("s")).exists(),
        "a refused run wrote its folder"
    );
    assert!(!w.dir.path().join(".s.kd-staging").exists(), "{err}");
    err
}

#[test]
fn bad_representation_inputs_are_refused_before_training() {
    let (w, u) = world();
    ok(teach(&w, "plain", &["--unlabelled", &u]));
    ok(teach(
        &w,
        "t",
        &["--unlabelled", &u, "--cache-representations"],
    ));
    ok(teach(
        &w,
        "other",
        &["--unlabelled", &u, "--cache-representations", "--seed", "3"],
    ));
    let beta = ["--unlabelled", &u, "--repr-weight", "1"];

    // β > 0 with no representation cache.
    let err = refused(&w, "plain", &beta);
    assert!(
        err.contains("no representations.bin") && err.contains("--cache-representations"),
        "{err}"
    );
    // β with the labels alone, with an ensemble, out of range; --repr-loss without β.
    let err = refused(&w, "t", &["--alpha", "0", "--repr-weight", "1"]);
    assert!(err.contains("--repr-weight needs a teacher"), "{err}");
    let err = refused(
        &w,
        "t",
        &[&beta[..], &["--teacher", &w.p("other")]].concat(),
    );
    assert!(err.contains("2 teachers"), "{err}");
    let err = refused(&w, "t", &["--repr-weight", "-1"]);
    assert!(
        err.contains("--repr-weight -1 is not in [0, 1000]"),
        "{err}"
    );
    assert!(refused(&w, "t", &["--repr-loss", "mse"]).contains("--repr-loss has no effect"));

    // Another teacher's representations, copied in beside this teacher's logits.
    let t = Path::new(&w.p("t")).to_path_buf();
    let mine = std::fs::read(t.join("representations.bin")).unwrap();
    std::fs::copy(
        Path::new(&w.p("other")).join("representations.bin"),
        t.join("representations.bin"),
    )
    .unwrap();
    let err = refused(&w, "t", &beta);
    assert!(
        err.contains("representations.bin") && err.contains("different runs"),
        "{err}"
    );

    // This teacher's run and rows, but another width than its hidden size.
    let narrow = ReprHeader {
        width: 7,
        ..read_header_of(&mine, &t)
    };
    kd::cache::repr::write(
        &t.join("representations.bin"),
        &narrow,
        &vec![0.5; narrow.rows * 7],
    )
    .unwrap();
    let err = refused(&w, "t", &beta);
    assert!(
        err.contains("width 7") && err.contains("hidden size is 48"),
        "{err}"
    );

    // This teacher's run id, but other rows.
    let other_rows = ReprHeader {
        fingerprint: 1,
        ..read_header_of(&mine, &t)
    };
    let values = vec![0.5; other_rows.rows * 48];
    kd::cache::repr::write(&t.join("representations.bin"), &other_rows, &values).unwrap();
    let err = refused(&w, "t", &beta);
    assert!(
        err.contains("comes from another teacher or other rows"),
        "{err}"
    );

    // A partial file.
    std::fs::write(t.join("representations.bin"), &mine[..mine.len() - 3]).unwrap();
    let err = refused(&w, "t", &beta);
    assert!(err.contains("truncated"), "{err}");
    std::fs::write(t.join("representations.bin"), &mine).unwrap();
}

/// The header of the representation file `bytes` (written into `dir` to be read).
fn read_header_of(bytes: &[u8], dir: &Path) -> ReprHeader {
    let path = dir.join("header-probe.bin");
    std::fs::write(&path, bytes).unwrap();
    let h = read_header(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    h
}

#[test]
fn the_projection_counts_against_the_budget_while_training() {
    let (w, u) = world();
    ok(teach(
        &w,
        "t",
        &["--unlabelled", &u, "--cache-representations"],
    ));
    let beta = ["--unlabelled", &u, "--repr-weight", "1"];
    let err = refused(&w, "t", &[&beta[..], &["--budget", "1"]].concat());
    // "… N trainable parameters while training (M of its own, …": M is what it exports.
    let own: usize = err
        .split(" while training (")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(err.contains("kd.repr_projection (training only)"), "{err}");
    // 32 → 48 plus the bias.
    assert!(err.contains(&format!("{}", 32 * 48 + 48)), "{err}");
    let just_over = (own + 1).to_string();
    let err = refused(&w, "t", &[&beta[..], &["--budget", &just_over]].concat());
    assert!(err.contains("over the budget"), "{err}");
    // The same student without the projection fits.
    ok(w.distill(
        "t",
        "s",
        &[
            "--unlabelled",
            &u,
            "--budget",
            &just_over,
            "--max-steps",
            "1",
        ],
    ));
}
