//! Records which commit kd is built from, so that `kd --version` (and the records that quote
//! it) name the code that produced a figure: `0.1.0 (abc1234)`, `+modified` when the sources
//! differ from that commit, `unknown` outside a git checkout (a crates.io build).
use std::process::Command;

fn git(args: &[&str]) -> Option<std::process::Output> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
}

fn main() {
    let commit = git(&["rev-parse", "--short=7", "HEAD"])
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let modified = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "src",
        "vendor",
    ])
    .is_some_and(|o| !o.stdout.is_empty());
    let text = match commit {
        Some(c) if modified => format!("{c}+modified"),
        Some(c) => c,
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=KD_GIT_COMMIT={text}");
    for path in [".git/HEAD", ".git/index", "src", "vendor"] {
        println!("cargo:rerun-if-changed={path}");
    }
}
