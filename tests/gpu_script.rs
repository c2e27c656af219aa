//! The GPU check (scripts/gpu_check.sh) dry-run on the CPU, so that the script a GPU session runs
//! in its few minutes cannot rot: every step must pass or say why it was skipped. Needs ../shared
//! (the real split and MiniLM-L3) and python3; without them the test says so and passes.
use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_gpu_check_dry_runs_on_the_cpu() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/models/paraphrase-MiniLM-L3-v2");
    if !shared.exists() {
        eprintln!("skipped: {} is absent", shared.display());
        return;
    }
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: no python3");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let run = Command::new("bash")
        .arg(root.join("scripts/gpu_check.sh"))
        .args(["--dry-run", "--kd", env!("CARGO_BIN_EXE_kd"), "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let log = std::fs::read_to_string(out.path().join("gpu_check.log")).unwrap_or_default();
    assert!(run.status.success(), "{stdout}\n--- log:\n{log}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("gpu_check.json")).unwrap())
            .unwrap();
    let steps = record["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    for want in [
        "1a selftest f32",
        "1b selftest bf16",
        "3 kill -9 and resume",
        "4 bench",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "{want} missing: {names:?}"
        );
    }
    for s in steps {
        let status = s["status"].as_str().unwrap();
        assert!(
            status == "ok" || status == "skipped",
            "{s}\n{stdout}\n{log}"
        );
    }
    // The resume on the CPU is bit-exact: same tensors, same logits.
    let resume = steps.iter().find(|s| s["step"] == "3 kill -9 and resume");
    let detail = resume.unwrap()["detail"].as_str().unwrap();
    assert!(
        detail.contains("adapter the same bits") && detail.contains("logits the same bits"),
        "{detail}\n{log}"
    );
}
