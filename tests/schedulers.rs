//! `--shard auto` as a scheduler runs it: `kd cache` and `kd sweep` take their shard from a SLURM
//! job array's or a Kubernetes Indexed Job's variables, and the merged result is the one a
//! single process makes.
mod common;

use common::world::{fails, kd_command, ok, World};
use std::path::Path;
use std::process::Output;

/// Every variable `--shard auto` reads, removed from the child before `vars` are set, so that a
/// test run inside a real SLURM or Kubernetes job sees only its own.
const SCHEDULER_VARS: [&str; 7] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
    "JOB_COMPLETION_INDEX",
    "KD_SHARD_COUNT",
];

/// `kd ARGS` with exactly the scheduler variables `vars`.
fn scheduled(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = kd_command(args);
    for var in SCHEDULER_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(vars.iter().copied());
    cmd.output().expect("kd runs")
}

/// The variables of task `i` of `--array=1-N` (SLURM numbers this array from 1).
fn slurm_task(i: usize, n: usize) -> Vec<(&'static str, String)> {
    vec![
        ("SLURM_ARRAY_TASK_ID", (i + 1).to_string()),
        ("SLURM_ARRAY_TASK_MIN", "1".into()),
        ("SLURM_ARRAY_TASK_MAX", n.to_string()),
        ("SLURM_ARRAY_TASK_COUNT", n.to_string()),
        ("RUST_LOG", "kd=info".into()),
    ]
}

fn pairs<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn kd_cache_shard_auto_from_slurm_or_kubernetes_merges_to_the_unsharded_bits() {
    let w = World::new(80, 20);
    let u = w.write_unlabelled("u.csv", 50, 21);
    ok(w.teach("t", &["--max-steps", "3"]));
    let t = w.p("t");
    let cache = |extra: &[&str], vars: &[(&str, &str)]| {
        let base = ["cache", &t, "--unlabelled", &u, "--chunk-rows", "8"];
        scheduled(&[&base[..], &["--device", "cpu"], extra].concat(), vars)
    };
    let logits = Path::new(&t).join("logits.bin");
    ok(cache(&[], &[]));
    let single = std::fs::read(&logits).unwrap();
    let parts = w.dir.path().join("t.cache-parts");

    // A SLURM array numbered from 1: task ID 1 and 2 are shards 0/2 and 1/2, and say so.
    for i in 0..2 {
        let out = cache(&["--shard", "auto"], &pairs(&slurm_task(i, 2)));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        ok(out);
        let from = format!("shard {i}/2 from SLURM_ARRAY_TASK_ID={}", i + 1);
        assert!(stderr.contains(&from), "{stderr}");
        assert!(parts.join(format!("part-{i}-of-2.bin")).is_file());
    }
    ok(cache(&["--merge"], &[]));
    assert!(std::fs::read(&logits).unwrap() == single, "SLURM shards");
    assert!(!parts.exists());

    // A Kubernetes Indexed Job: the index from JOB_COMPLETION_INDEX, the count from the manifest.
    for i in ["0", "1"] {
        let vars = [("JOB_COMPLETION_INDEX", i), ("KD_SHARD_COUNT", "2")];
        ok(cache(&["--shard", "auto"], &vars));
    }
    ok(cache(&["--merge"], &[]));
    assert!(
        std::fs::read(&logits).unwrap() == single,
        "Kubernetes shards"
    );

    // No scheduler, or an index past the count: one line, before anything is scored.
    let err = fails(cache(&["--shard", "auto"], &[]));
    assert!(
        err.contains("SLURM_ARRAY_TASK_ID") && err.contains("JOB_COMPLETION_INDEX"),
        "{err}"
    );
    let vars = [("JOB_COMPLETION_INDEX", "2"), ("KD_SHARD_COUNT", "2")];
    let err = fails(cache(&["--shard", "auto"], &vars));
    assert!(err.contains("gives shard 2/2"), "{err}");
    let err = fails(cache(
        &["--shard", "auto"],
        &[("JOB_COMPLETION_INDEX", "1")],
    ));
    assert!(err.contains("KD_SHARD_COUNT is not"), "{err}");
    assert!(!parts.exists(), "a refused shard writes nothing");
}

/// sweep.json without `trained` (a merge trains nothing), and sweep.md.
fn results(out: &str) -> (serde_json::Value, String) {
    let dir = Path::new(out);
    let text = std::fs::read_to_string(dir.join("sweep.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json.as_object_mut().unwrap().remove("trained");
    (json, std::fs::read_to_string(dir.join("sweep.md")).unwrap())
}

/// What a point's run scored: validation NLL and accuracy, test scores, in full precision.
fn scores(point: &Path) -> Vec<serde_json::Value> {
    let s = common::world::summary(point);
    [
        "val_loss",
        "val_accuracy",
        "test_accuracy",
        "test_macro_f1",
        "test_calibration",
        "steps",
    ]
    .map(|k| s[k].clone())
    .to_vec()
}

#[test]
fn a_sweep_in_two_shards_merges_to_the_sweep_of_one_process() {
    let w = World::new(80, 20);
    ok(w.teach("t", &["--max-steps", "4"]));
    let (bert, data, t) = (w.p("bert"), w.p("data"), w.p("t"));
    let sweep = |out: &str, extra: &[&str], vars: &[(&str, &str)]| {
        let args = [
            "sweep",
            "--model",
            &bert,
            "--data",
            &data,
            "--teacher",
            &t,
            "--out",
            out,
            "--device",
            "cpu",
            "--epochs",
            "3",
            "--lr",
            "3e-3",
            "--batch-size",
            "16",
            "--max-len",
            "32",
            "--lora-r",
            "4",
            "--lora-alpha",
            "16",
            "--temperature",
            "2,4",
            "--alpha",
            "0,0.5",
            "--seeds",
            "1,2",
        ];
        scheduled(&[&args[..], extra].concat(), vars)
    };
    // Points, in sweep.json's order: 0 a0_s1, 1 a0_s2, 2 T2_a0.5_s1, 3 T2_a0.5_s2, 4 T4_a0.5_s1,
    // 5 T4_a0.5_s2; shard 0/2 takes the even ones.
    let names = [
        "a0_s1",
        "a0_s2",
        "T2_a0.5_s1",
        "T2_a0.5_s2",
        "T4_a0.5_s1",
        "T4_a0.5_s2",
    ];
    let (whole, sharded) = (w.p("whole"), w.p("sharded"));
    assert!(ok(sweep(&whole, &[], &[])).contains("trained 6 of 6 runs"));

    let line = ok(sweep(&sharded, &["--shard", "0/2"], &[]));
    assert!(
        line.contains("shard 0/2: trained 3 of its 3 runs (of 6)"),
        "{line}"
    );
    let dir = Path::new(&sharded);
    for (p, name) in names.iter().enumerate() {
        assert_eq!(dir.join(name).is_dir(), p % 2 == 0, "{name}");
    }
    assert!(
        !dir.join("sweep.json").exists(),
        "a shard writes no sweep.json"
    );
    let err = fails(sweep(&sharded, &["--merge"], &[]));
    assert!(
        err.contains("3 of 6 points cannot be merged")
            && err.contains("point 1 a0_s2 (not finished)")
            && err.contains("point 5 T4_a0.5_s2")
            && err.contains("p % N = i"),
        "{err}"
    );
    assert!(!dir.join("sweep.json").exists());
    let task = slurm_task(1, 2);
    let line = ok(sweep(&sharded, &["--shard", "auto"], &pairs(&task)));
    assert!(
        line.contains("shard 1/2: trained 3 of its 3 runs"),
        "{line}"
    );
    assert!(ok(sweep(&sharded, &["--merge"], &[])).contains("trained 0 of 6 runs"));
    // The same runs to the last bit of every score, so the same sweep.json and sweep.md.
    for name in names {
        let (a, b) = (Path::new(&whole).join(name), dir.join(name));
        assert_eq!(scores(&a), scores(&b), "{name}");
    }
    let (json, md) = results(&whole);
    assert_eq!(results(&sharded), (json.clone(), md));
    assert!(
        json["points"][0]["accuracy_sd"].is_number(),
        "two seeds: {json}"
    );

    // A shard rerun keeps its finished points; a merge after the teacher was retrained in place
    // refuses the points that learned from the old one, naming them (α = 0 did not).
    let line = ok(sweep(&sharded, &["--shard", "0/2"], &[]));
    assert!(line.contains("trained 0 of its 3 runs"), "{line}");
    ok(w.teach_seeded("t", "7", &["--max-steps", "4"]));
    let err = fails(sweep(&sharded, &["--merge"], &[]));
    assert!(
        err.contains("4 of 6 points cannot be merged")
            && err.contains("point 2 T2_a0.5_s1 (the teacher's logits")
            && err.contains("point 5 T4_a0.5_s2")
            && !err.contains("a0_s1 ("),
        "{err}"
    );
}
