//! Running the `kd` binary in tests: a temporary world with tiny checkpoints and a dataset.
use super::{write_bert, write_dataset, write_roberta};
use std::path::Path;
use std::process::{Command, Output};

pub fn kd(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = kd_command(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("kd runs")
}

/// The `kd` command with `args`, quiet, offline and with no proxy, for a test to add to.
pub fn kd_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kd"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env("HF_HUB_OFFLINE", "1");
    // Tests only ever talk to 127.0.0.1 (the mock Hub): a proxy from the environment must not
    // intercept that.
    for proxy in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(proxy);
    }
    cmd
}

pub fn ok(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kd failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn fails(out: Output) -> String {
    assert!(!out.status.success(), "kd should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new(train: usize, test: usize) -> Self {
        Self::in_dir(tempfile::tempdir().unwrap(), train, test)
    }
    /// A world in a new folder under `parent`: for a world that a static shares between a
    /// file's tests (statics are never dropped, so it stays; under CARGO_TARGET_TMPDIR, cargo
    /// clean removes it).
    pub fn new_in(parent: &Path, train: usize, test: usize) -> Self {
        std::fs::create_dir_all(parent).unwrap();
        Self::in_dir(tempfile::tempdir_in(parent).unwrap(), train, test)
    }
    fn in_dir(dir: tempfile::TempDir, train: usize, test: usize) -> Self {
        write_roberta(&dir.path().join("roberta"), 1);
        write_bert(&dir.path().join("bert"), 2);
        write_dataset(&dir.path().join("data"), train, test, 3);
        Self { dir }
    }
    pub fn p(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
    /// `kd COMMAND --model MODEL --data DATA --out <world folder>` with small, fast training
    /// settings, then `extra`. DATA names a world folder, or else is passed as given (a Hub id).
    pub fn run_training(
        &self,
        command: &str,
        model: &str,
        data: &str,
        out: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Output {
        let d = if self.dir.path().join(data).exists() {
            self.p(data)
        } else {
            data.to_string()
        };
        let o = self.p(out);
        let mut args = vec![command, "--model", model, "--data", &d, "--out", &o];
        args.extend_from_slice(&[
            "--device",
            "cpu",
            "--epochs",
            "4",
            "--batch-size",
            "16",
            "--lr",
            "3e-3",
            "--max-len",
            "32",
        ]);
        args.extend_from_slice(extra);
        kd(&args, envs)
    }
    /// The RoBERTa teacher on the world's dataset, seed 1.
    pub fn teach(&self, out: &str, extra: &[&str]) -> Output {
        self.teach_seeded(out, "1", extra)
    }
    pub fn teach_seeded(&self, out: &str, seed: &str, extra: &[&str]) -> Output {
        let args = [&["--seed", seed], extra].concat();
        self.run_training("teach", &self.p("roberta"), "data", out, &args, &[])
    }
    /// The BERT student (r=4, α=16, seed 2) on the world's dataset.
    pub fn distill(&self, teacher: &str, out: &str, extra: &[&str]) -> Output {
        self.distill_on("data", teacher, out, extra)
    }
    /// The BERT student on the world folder `data`.
    pub fn distill_on(&self, data: &str, teacher: &str, out: &str, extra: &[&str]) -> Output {
        let t = self.p(teacher);
        let student = [
            "--teacher",
            &t,
            "--seed",
            "2",
            "--lora-r",
            "4",
            "--lora-alpha",
            "16",
        ];
        let args = [&student[..], extra].concat();
        self.run_training("distill", &self.p("bert"), data, out, &args, &[])
    }
}

impl World {
    /// `n` unlabelled rows ("title","description") in the world file `name`.
    pub fn write_unlabelled(&self, name: &str, n: usize, seed: u64) -> String {
        let dir = self.dir.path().join(format!("gen-{name}"));
        super::write_dataset(&dir, n, 1, seed);
        let text = std::fs::read_to_string(dir.join("train.csv")).unwrap();
        let rows: String = text
            .lines()
            .map(|l| l.split_once(',').unwrap().1.to_string() + "\n")
            .collect();
        let path = self.dir.path().join(name);
        std::fs::write(&path, rows).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// `kd predict RUN` on a file holding `input` (plus `extra` flags); returns the CSV written.
    pub fn predict(&self, run: &str, input: &str, extra: &[&str]) -> String {
        let (path, out) = (self.p("predict-in.csv"), self.p("predict-out.csv"));
        std::fs::write(&path, input).unwrap();
        let run = self.p(run);
        let args = [
            &[
                "predict",
                run.as_str(),
                "--input",
                &path,
                "--output",
                &out,
                "--device",
                "cpu",
            ],
            extra,
        ]
        .concat();
        ok(kd(&args, &[]));
        std::fs::read_to_string(&out).unwrap()
    }

    /// A long `kd teach` (400 rows × 30 epochs on the tiny RoBERTa) into `out`, in the background,
    /// with its stderr piped; returns once its staging folder holds `wait_for` (a file name).
    pub fn spawn_long_teach(
        &self,
        out: &str,
        extra: &[&str],
        wait_for: &str,
    ) -> std::process::Child {
        let (model, data, o) = (self.p("roberta"), self.p("data"), self.p(out));
        let child = Command::new(env!("CARGO_BIN_EXE_kd"))
            .args([
                "teach",
                "--model",
                &model,
                "--data",
                &data,
                "--out",
                &o,
                "--device",
                "cpu",
                "--epochs",
                "30",
                "--batch-size",
                "8",
                "--max-len",
                "32",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kd starts");
        let file = self
            .dir
            .path()
            .join(format!(".{out}.kd-staging"))
            .join(wait_for);
        let started = std::time::Instant::now();
        while !file.exists() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "{} never appeared",
                file.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child
    }
}

pub fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}
