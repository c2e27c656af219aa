//! Reused work is reused only when it was made from the same inputs, and only when it is whole:
//! a staged checkpoint, a kept cache chunk, a shard's part and a finished sweep point each carry
//! the fingerprints of what made them (base model, rows, teachers, dtype and kernels) and a
//! checksum. `kd cache` stops on SIGTERM/SIGINT with its chunks kept, as training does.
mod common;

use common::world::{fails, kd, ok, summary, World};
use std::path::{Path, PathBuf};

/// The adapter's tensors by name, and the logits (when the run has them).
type Outcome = (Vec<(String, Vec<u8>)>, Option<Vec<u8>>);

/// A change made to a file's bytes.
type Change = Box<dyn Fn(&mut Vec<u8>)>;

/// The adapter's tensors (its metadata names the run, so files differ) and the logits.
fn outcome(run: &Path) -> Outcome {
    let bytes = std::fs::read(run.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().to_vec()))
        .collect();
    tensors.sort();
    let logits = std::fs::read(run.join("logits.bin"))
        .ok()
        .map(|b| b[kd::cache::HEADER_LEN..].to_vec());
    (tensors, logits)
}

/// Rewrites `path` with `change` applied to its bytes.
fn damage(path: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    change(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

/// A copy of the world's RoBERTa checkpoint at `name`, to change in place.
fn copy_model(w: &World, name: &str) -> PathBuf {
    let (from, to) = (w.dir.path().join("roberta"), w.dir.path().join(name));
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    to
}

/// Changes one weight of a checkpoint slightly, in place (same size, still loadable).
fn nudge_weights(model: &Path) {
    damage(&model.join("model.safetensors"), |b| {
        let at = b.len() - 7;
        b[at] ^= 0x01;
    });
}

#[test]
fn a_damaged_staged_checkpoint_is_refused_naming_it() {
    let w = World::new(120, 20);
    let settings = ["--checkpoint-every", "3", "--seed", "4"];
    let teach = |envs: &[(&str, &str)], extra: &[&str]| {
        let args = [&settings[..], extra].concat();
        w.run_training("teach", &w.p("roberta"), "data", "t", &args, envs)
    };
    let checkpoint = w.dir.path().join(".t.kd-staging/checkpoint.safetensors");
    fails(teach(&[("KD_FAULT_AFTER_STEP", "5")], &[]));
    let good = std::fs::read(&checkpoint).unwrap();
    // One flipped bit in a tensor, in the state's metadata (step 3 read as step 2), and a
    // truncated file: each refused, naming the file and --fresh; the checkpoint is kept.
    let cases: [(&str, Change); 3] = [
        ("checksum", Box::new(|b| *b.last_mut().unwrap() ^= 0x01)),
        (
            "checksum",
            Box::new(|b| {
                let at = find(b, br#"\"step\":3,"#) + 9;
                b[at] ^= 0x01;
            }),
        ),
        ("truncated", Box::new(|b| b.truncate(b.len() - 100))),
    ];
    for (what, change) in cases {
        std::fs::write(&checkpoint, &good).unwrap();
        damage(&checkpoint, change);
        let err = fails(teach(&[], &[]));
        assert!(
            err.contains("checkpoint.safetensors") && err.contains(what) && err.contains("--fresh"),
            "{err}"
        );
        assert!(checkpoint.is_file() && !Path::new(&w.p("t")).exists());
    }
    // Whole again, it resumes; --fresh starts over from a damaged one.
    std::fs::write(&checkpoint, &good).unwrap();
    ok(teach(&[], &[]));
    fails(teach(&[("KD_FAULT_AFTER_STEP", "5")], &[]));
    damage(&checkpoint, |b| *b.last_mut().unwrap() ^= 0x01);
    ok(teach(&[], &["--fresh"]));
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{} not found", String::from_utf8_lossy(needle)))
}

#[test]
fn a_resume_onto_changed_inputs_starts_over_saying_what_changed() {
    let w = World::new(120, 20);
    let base = copy_model(&w, "base");
    let base = base.to_str().unwrap();
    let settings = ["--checkpoint-every", "3", "--seed", "4"];
    let teach = |out: &str, envs: &[(&str, &str)]| {
        w.run_training("teach", base, "data", out, &settings, envs)
    };
    // The base model's weights change in place under a killed teacher.
    fails(teach("t", &[("KD_FAULT_AFTER_STEP", "5")]));
    nudge_weights(Path::new(base));
    let out = teach("t", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    assert!(
        stderr.contains("made from other inputs")
            && stderr.contains("model.safetensors")
            && stderr.contains("starting over"),
        "{stderr}"
    );
    ok(teach("ref", &[]));
    assert!(outcome(Path::new(&w.p("t"))) == outcome(Path::new(&w.p("ref"))));

    // A killed student whose teacher is retrained in place starts over from the new teacher.
    ok(w.teach("teacher", &["--max-steps", "2"]));
    let student = ["--checkpoint-every", "1", "--max-steps", "6"];
    let distill = |out: &str, envs: &[(&str, &str)]| {
        let t = w.p("teacher");
        let lora = ["--lora-r", "4", "--lora-alpha", "16"];
        let args = [
            &["--teacher", t.as_str(), "--seed", "2"][..],
            &lora,
            &student,
        ]
        .concat();
        w.run_training("distill", &w.p("bert"), "data", out, &args, envs)
    };
    fails(distill("s", &[("KD_FAULT_AFTER_STEP", "3")]));
    ok(w.teach_seeded("teacher", "5", &["--max-steps", "2"]));
    let out = distill("s", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    assert!(
        stderr.contains("the teacher's logits") && stderr.contains("starting over"),
        "{stderr}"
    );
    ok(distill("s_ref", &[]));
    assert!(outcome(Path::new(&w.p("s"))) == outcome(Path::new(&w.p("s_ref"))));
    // The student's summary records what it learned from.
    let inputs = &summary(Path::new(&w.p("s")))["inputs"];
    assert!(
        inputs["teachers"][0].as_str().unwrap().contains("CRC-32"),
        "{inputs}"
    );
    assert!(inputs["model"]["model.safetensors"].is_string(), "{inputs}");
}

#[test]
fn a_sweep_rerun_retrains_the_points_whose_teacher_or_data_changed() {
    let w = World::new(80, 20);
    ok(w.teach("t", &["--max-steps", "2"]));
    let (bert, data, t, out) = (w.p("bert"), w.p("data"), w.p("t"), w.p("sw"));
    let (bert, data, t, out) = (bert.as_str(), data.as_str(), t.as_str(), out.as_str());
    let sweep = || {
        let args = [
            "sweep",
            "--model",
            bert,
            "--data",
            data,
            "--teacher",
            t,
            "--out",
            out,
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
        ];
        kd(&args, &[])
    };
    assert!(ok(sweep()).contains("trained 2 of 2 runs"));
    assert!(ok(sweep()).contains("trained 0 of 2 runs"));
    // The teacher retrained in place: the α = 0.5 point learned from the old one; α = 0 did not
    // use it.
    ok(w.teach_seeded("t", "7", &["--max-steps", "2"]));
    let run = sweep();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(ok(run).contains("trained 1 of 2 runs"));
    assert!(
        stderr.contains("T2_a0.5_s1") && stderr.contains("the teacher's logits"),
        "{stderr}"
    );
    // The test split edited in place: both points' test scores would be stale.
    let test = Path::new(&data).join("test.csv.gz");
    let text = {
        use std::io::Read;
        let mut s = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&test).unwrap())
            .read_to_string(&mut s)
            .unwrap();
        s
    };
    let edited = text.replacen("\"1\"", "\"2\"", 1);
    assert_ne!(edited, text);
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&test).unwrap(),
        flate2::Compression::default(),
    );
    std::io::Write::write_all(&mut gz, edited.as_bytes()).unwrap();
    gz.finish().unwrap();
    let run = sweep();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(ok(run).contains("trained 2 of 2 runs"));
    assert!(stderr.contains("the test split"), "{stderr}");
}

#[test]
fn a_damaged_kept_chunk_is_refused_naming_it() {
    let w = World::new(120, 20);
    let settings = ["--checkpoint-every", "3", "--cache-chunk-rows", "16"];
    let teach = |out: &str, envs: &[(&str, &str)], extra: &[&str]| {
        let args = [&settings[..], extra].concat();
        w.run_training("teach", &w.p("roberta"), "data", out, &args, envs)
    };
    ok(teach("ref", &[], &[]));
    fails(teach("t", &[("KD_FAULT_AFTER_CHUNK", "3")], &[]));
    let chunk = w.dir.path().join(".t.kd-staging/cache-chunk-1.bin");
    let good = std::fs::read(&chunk).unwrap();
    for (what, change) in [
        (
            "checksum",
            Box::new(|b: &mut Vec<u8>| *b.last_mut().unwrap() ^= 0x10) as Change,
        ),
        (
            "truncated",
            Box::new(|b: &mut Vec<u8>| b.truncate(b.len() - 6)),
        ),
    ] {
        std::fs::write(&chunk, &good).unwrap();
        damage(&chunk, change);
        let err = fails(teach("t", &[], &[]));
        assert!(
            err.contains("cache-chunk-1.bin") && err.contains(what) && err.contains("--fresh"),
            "{err}"
        );
    }
    std::fs::write(&chunk, &good).unwrap();
    ok(teach("t", &[], &[]));
    assert!(outcome(Path::new(&w.p("t"))) == outcome(Path::new(&w.p("ref"))));
}

/// `kd cache TEACHER --unlabelled U --chunk-rows 8 --device cpu EXTRA…`.
fn cache(w: &World, u: &str, extra: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let t = w.p("t");
    let args = [
        &[
            "cache",
            t.as_str(),
            "--unlabelled",
            u,
            "--chunk-rows",
            "8",
            "--device",
            "cpu",
        ][..],
        extra,
    ]
    .concat();
    kd(&args, envs)
}

#[test]
fn kd_cache_stops_at_a_chunk_and_resumes_to_the_same_bits() {
    let w = World::new(80, 20);
    let u = w.write_unlabelled("u.csv", 50, 21);
    ok(w.teach("t", &["--max-steps", "3"]));
    let logits = Path::new(&w.p("t")).join("logits.bin");
    ok(cache(&w, &u, &[], &[]));
    let single = std::fs::read(&logits).unwrap();
    let staging = w.dir.path().join(".t.kd-staging");

    // A stop request (what SIGINT and SIGTERM set) after chunk 3 of 7.
    let stopped = cache(&w, &u, &[], &[("KD_STOP_AFTER_CHUNK", "3")]);
    assert_eq!(stopped.status.code(), Some(130));
    let err = String::from_utf8_lossy(&stopped.stderr);
    assert!(
        err.contains("chunk 4 of 7") && err.contains("run the same command again"),
        "{err}"
    );
    assert!(staging.join("cache-chunk-2.bin").is_file());
    assert!(
        std::fs::read(&logits).unwrap() == single,
        "the teacher changed"
    );
    ok(cache(&w, &u, &[], &[]));
    assert!(std::fs::read(&logits).unwrap() == single);
    assert!(!staging.exists());

    // Chunks kept by a pass with another batch size are scored again, saying why.
    fails(cache(
        &w,
        &u,
        &["--batch-size", "4"],
        &[("KD_STOP_AFTER_CHUNK", "2")],
    ));
    let run = cache(&w, &u, &[], &[]);
    let err = String::from_utf8_lossy(&run.stderr).into_owned();
    ok(run);
    assert!(err.contains("batch size: 4 → 128"), "{err}");
    assert!(std::fs::read(&logits).unwrap() == single);
    // A damaged kept chunk is refused; --fresh scores every row again.
    fails(cache(&w, &u, &[], &[("KD_STOP_AFTER_CHUNK", "2")]));
    damage(&staging.join("cache-chunk-1.bin"), |b| b[40] ^= 0x01);
    let err = fails(cache(&w, &u, &[], &[]));
    assert!(
        err.contains("cache-chunk-1.bin") && err.contains("--fresh"),
        "{err}"
    );
    ok(cache(&w, &u, &["--fresh"], &[]));
    assert!(std::fs::read(&logits).unwrap() == single);

    // The base model changed in place since the teacher was trained: refused.
    let config = std::fs::read_to_string(Path::new(&w.p("t")).join("config.toml")).unwrap();
    let model = config
        .lines()
        .find_map(|l| l.strip_prefix("model = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let before = std::fs::read(Path::new(&model).join("model.safetensors")).unwrap();
    nudge_weights(Path::new(&model));
    let err = fails(cache(&w, &u, &[], &[]));
    assert!(
        err.contains("model.safetensors") && err.contains("retrain the teacher"),
        "{err}"
    );
    std::fs::write(Path::new(&model).join("model.safetensors"), before).unwrap();
}

#[test]
fn kd_cache_stops_on_sigterm_with_its_chunks_kept() {
    let w = World::new(80, 20);
    let u = w.write_unlabelled("big.csv", 6000, 41);
    ok(w.teach("t", &["--max-steps", "2"]));
    let t = w.p("t");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_kd"))
        .args([
            "cache",
            &t,
            "--unlabelled",
            &u,
            "--chunk-rows",
            "8",
            "--batch-size",
            "4",
        ])
        .args(["--device", "cpu"])
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let first = w.dir.path().join(".t.kd-staging/cache-chunk-0.bin");
    let started = std::time::Instant::now();
    while !first.exists() {
        assert!(started.elapsed().as_secs() < 60, "no chunk was kept");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted during the caching pass"),
        "{stderr}"
    );
    assert!(first.is_file());
    let header = kd::cache::read_header(&Path::new(&t).join("logits.bin")).unwrap();
    assert_eq!(header.rows, header.labelled, "the teacher is untouched");
    ok(cache(&w, &u, &["--batch-size", "4"], &[]));
    let header = kd::cache::read_header(&Path::new(&t).join("logits.bin")).unwrap();
    assert_eq!(header.rows, 80 + 6000);
}

#[test]
fn kd_cache_parts_are_checked_whole_and_scored_alike_before_merging() {
    let w = World::new(80, 20);
    let u = w.write_unlabelled("u.csv", 50, 21);
    ok(w.teach("t", &["--max-steps", "3"]));
    // In f32 throughout (--dtype auto is bf16 on CPUs with native bf16 products), but one part.
    let cache = |w: &World, u: &str, extra: &[&str], envs: &[(&str, &str)]| {
        cache(w, u, &[extra, &["--dtype", "f32"]].concat(), envs)
    };
    let logits = Path::new(&w.p("t")).join("logits.bin");
    ok(cache(&w, &u, &[], &[]));
    let single = std::fs::read(&logits).unwrap();
    let parts = w.dir.path().join("t.cache-parts");
    // Shard 0 (chunks 0, 3, 6) stopped after its first chunk resumes from it.
    let stopped = cache(&w, &u, &["--shard", "0/3"], &[("KD_STOP_AFTER_CHUNK", "1")]);
    assert_eq!(stopped.status.code(), Some(130));
    assert!(parts
        .join(".part-0-of-3.chunks/cache-chunk-0.bin")
        .is_file());
    for i in 0..3 {
        ok(cache(&w, &u, &["--shard", &format!("{i}/3")], &[]));
    }
    assert!(!parts.join(".part-0-of-3.chunks").exists());
    let part = parts.join("part-1-of-3.bin");
    let good = std::fs::read(&part).unwrap();
    // A flipped byte, a truncated part: refused, naming the part and how to make it again.
    for change in [
        Box::new(|b: &mut Vec<u8>| *b.last_mut().unwrap() ^= 0x02) as Change,
        Box::new(|b: &mut Vec<u8>| b.truncate(b.len() - 4)),
    ] {
        std::fs::write(&part, &good).unwrap();
        damage(&part, change);
        let err = fails(cache(&w, &u, &["--merge"], &[]));
        assert!(
            err.contains("part-1-of-3.bin") && err.contains("--shard 1/3"),
            "{err}"
        );
    }
    std::fs::write(&part, &good).unwrap();
    // A part scored in bf16 among f32 ones, or with another batch size: refused, naming both.
    let t = w.p("t");
    let bf16 = [
        "cache",
        &t,
        "--unlabelled",
        &u,
        "--chunk-rows",
        "8",
        "--shard",
        "2/3",
    ];
    ok(kd(
        &[&bf16[..], &["--device", "cpu", "--dtype", "bf16"]].concat(),
        &[],
    ));
    let err = fails(cache(&w, &u, &["--merge"], &[]));
    assert!(
        err.contains("part-0-of-3.bin")
            && err.contains("part-2-of-3.bin")
            && err.contains("F32")
            && err.to_lowercase().contains("bf16"),
        "{err}"
    );
    ok(cache(&w, &u, &["--shard", "2/3", "--batch-size", "5"], &[]));
    let err = fails(cache(&w, &u, &["--merge"], &[]));
    assert!(
        err.contains("batch size 128") && err.contains("batch size 5"),
        "{err}"
    );
    ok(cache(&w, &u, &["--shard", "2/3"], &[]));
    ok(cache(&w, &u, &["--merge"], &[]));
    assert!(std::fs::read(&logits).unwrap() == single);
}
