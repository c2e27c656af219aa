//! Where a command may write, checked before any work: an output never lands on what the
//! command reads, nor inside a run folder, whatever form its path takes (symlinks, `..`, a hard
//! link to the same file). A run folder is one run, replaced whole by the command that made it:
//! a file written into it overwrites the run's own or mixes with them, and an output that lands
//! on an input destroys what the command is reading (`kd predict --output RUN/logits.bin` used
//! to do both and exit 0). The same place refuses list flags that name nothing or one thing
//! twice (`--teacher A --teacher A` would weigh A twice in the ensemble).
use super::config::RunConfig;
use super::files;
pub use super::lists::check_path_list;
use super::lists::{check_list, check_lists};
use super::resolved::{is_empty, linked_into, resolve, same_file};
use crate::error::{KdError, Result};
use std::path::{Path, PathBuf};

/// What a command writes at an output path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A file, written whole (predict's CSV, compare's JSON).
    File,
    /// A run folder, replaced whole by its run (teach, distill) or updated (cache).
    Run,
    /// A folder that is not a run, written into (a sweep's folder).
    Folder,
    /// A folder that is not a run, created or replaced whole (an export, a report).
    WholeFolder,
}

/// One command's paths: what it writes and what it reads, each with the flag that named it.
#[derive(Default)]
pub struct Paths {
    outputs: Vec<(String, PathBuf, Output)>,
    inputs: Vec<(String, PathBuf)>,
    /// Run (or adapter) folders read: flag, what the folder is, path.
    runs: Vec<(String, String, PathBuf)>,
}

impl Paths {
    pub fn new() -> Self {
        Self::default()
    }

    /// A path the command writes.
    pub fn output(mut self, flag: &str, path: &Path, kind: Output) -> Self {
        self.outputs.push((flag.into(), path.into(), kind));
        self
    }

    /// A file or folder the command reads.
    pub fn input(mut self, flag: &str, path: &Path) -> Self {
        self.inputs.push((flag.into(), path.into()));
        self
    }

    /// A model or dataset named by a local path or a Hub id: only a local path can be landed on.
    pub fn local(self, flag: &str, id: &str) -> Self {
        if id.is_empty() || Path::new(id).exists() {
            self.input(flag, Path::new(id))
        } else {
            self
        }
    }

    /// [`Paths::local`] for a flag that may be absent.
    pub fn local_opt(self, flag: &str, id: Option<&str>) -> Self {
        match id {
            Some(id) => self.local(flag, id),
            None => self,
        }
    }

    /// A run (or PEFT adapter) folder the command reads; `what` names it in messages ("the
    /// teacher's run folder").
    pub fn run(mut self, flag: &str, what: &str, path: &Path) -> Self {
        self.runs.push((flag.into(), what.into(), path.into()));
        self
    }

    /// The trained model a command loads: a run folder, or an adapter folder and its base model.
    pub fn source(self, source: &super::ModelSource) -> Self {
        match source {
            super::ModelSource::Run(dir) => self.run("RUN", "the run folder", dir),
            super::ModelSource::Adapter { dir, model } => self
                .run("--adapter", "the adapter folder", dir)
                .local_opt("--model", model.as_deref()),
        }
    }

    /// Refuses, in one line naming the flag, any output that is empty, lies under a file, is an
    /// input or read run folder (by path or as a hard link), replaces a folder holding one, lies
    /// inside a run folder, or is a run folder where the command does not write runs.
    pub fn check(&self) -> Result<()> {
        let named = self.inputs.iter().map(|(f, p)| (f, p));
        let runs = self.runs.iter().map(|(f, _, p)| (f, p));
        let outs = self.outputs.iter().map(|(f, p, _)| (f, p));
        if let Some((flag, _)) = named.chain(runs).chain(outs).find(|(_, p)| is_empty(p)) {
            return refuse(format!("{flag} is empty: name a file or folder"));
        }
        for (flag, path, kind) in &self.outputs {
            self.check_output(flag, path, *kind)?;
        }
        Ok(())
    }

    fn check_output(&self, flag: &str, out: &Path, kind: Output) -> Result<()> {
        let target = resolve(out);
        check_place(flag, out, &target, kind)?;
        self.check_reads(flag, out, &target, kind)?;
        if let Some(folder) = target.ancestors().skip(1).find(|a| is_kd_folder(a)) {
            return refuse(inside(flag, out, folder));
        }
        if kind != Output::Run {
            if let Some(marker) = run_marker(&target) {
                return refuse(format!(
                    "{flag} {} is a run folder (it holds kd's {marker}), and this command does not write runs: choose another {flag}",
                    out.display()
                ));
            }
        }
        Ok(())
    }

    /// `out` (resolved: `target`) against every input and read run folder: not one of them,
    /// not holding one when it is replaced whole, not inside a read run folder.
    fn check_reads(&self, flag: &str, out: &Path, target: &Path, kind: Output) -> Result<()> {
        let whole = matches!(kind, Output::Run | Output::WholeFolder);
        let is = |what: String, path: &Path| {
            refuse(format!(
                "{flag} {} is {what} {}, which this command reads: choose another {flag}",
                out.display(),
                path.display()
            ))
        };
        for (iflag, input) in &self.inputs {
            let read = resolve(input);
            if read == *target || same_file(out, input) {
                return is(iflag.clone(), input);
            }
            if whole && read.starts_with(target) {
                return refuse(holds(flag, out, iflag, input));
            }
        }
        for (rflag, what, run) in &self.runs {
            let read = resolve(run);
            if read == *target {
                return is(format!("{what} ({rflag})"), run);
            }
            if whole && read.starts_with(target) {
                return refuse(holds(flag, out, rflag, run));
            }
            if target.starts_with(&read) {
                return refuse(inside(flag, out, &read));
            }
            if linked_into(out, &read) {
                return is(
                    format!("a file of {what} ({rflag}) under another name:"),
                    run,
                );
            }
        }
        Ok(())
    }
}

/// Whether anything of `kind` can be written at `out` (resolved: `target`): its closest
/// existing ancestor is a folder (not a file: `File exists (os error 17)` otherwise), and a
/// file is not a folder nor a folder a file.
fn check_place(flag: &str, out: &Path, target: &Path, kind: Output) -> Result<()> {
    let shown = out.display();
    if let Some(above) = target.ancestors().skip(1).find(|a| a.exists()) {
        if !above.is_dir() {
            return refuse(format!(
                "{flag} {shown}: {} is a file, not a folder, so nothing can be written under it: choose another {flag}",
                above.display()
            ));
        }
    }
    match (kind, target.is_dir(), target.is_file()) {
        (Output::File, true, _) => refuse(format!(
            "{flag} {shown} is a folder: name the file to write"
        )),
        (Output::Folder | Output::WholeFolder | Output::Run, _, true) => {
            refuse(format!("{flag} {shown} is a file: name a folder"))
        }
        _ => Ok(()),
    }
}

/// Teach and distill: `--out` (a run) against the model, data, unlabelled files and teachers,
/// and the list flags of `cfg`.
pub fn check_run(cfg: &RunConfig) -> Result<()> {
    check_lists(cfg)?;
    reads(cfg).output("--out", &cfg.out, Output::Run).check()
}

/// Sweep: `--out` (a folder of runs) against what its students read, and the grid's lists.
pub fn check_sweep(
    base: &RunConfig,
    out: &Path,
    temperatures: &[f64],
    alphas: &[f64],
    seeds: &[u64],
) -> Result<()> {
    check_lists(base)?;
    check_list("--temperature", temperatures)?;
    check_list("--alpha", alphas)?;
    check_list("--seeds", seeds)?;
    reads(base).output("--out", out, Output::Folder).check()
}

/// Cache: the teacher (a run it updates) against the unlabelled files it scores.
pub fn check_cache(teacher: &Path, unlabelled: &[PathBuf]) -> Result<()> {
    check_path_list("--unlabelled", unlabelled)?;
    unlabelled
        .iter()
        .fold(Paths::new(), |p, u| p.input("--unlabelled", u))
        .output("TEACHER", teacher, Output::Run)
        .check()
}

/// Compare: `--json` against the runs, adapters, model and data it reads.
pub fn check_compare(
    json: &Path,
    runs: &[PathBuf],
    adapters: &[PathBuf],
    model: Option<&str>,
    data: Option<&str>,
) -> Result<()> {
    check_path_list("RUNS", runs)?;
    check_path_list("--adapter", adapters)?;
    let mut p = Paths::new().output("--json", json, Output::File);
    for r in runs {
        p = p.run("RUNS", "a run folder", r);
    }
    for a in adapters {
        p = p.run("--adapter", "an adapter folder", a);
    }
    p.local_opt("--model", model)
        .local_opt("--data", data)
        .check()
}

/// What a training run reads (the run folders of its teachers included).
fn reads(cfg: &RunConfig) -> Paths {
    let mut p = Paths::new()
        .local("--model", &cfg.model)
        .local("--data", &cfg.data);
    for u in &cfg.unlabelled {
        p = p.input("--unlabelled", u);
    }
    for t in cfg.distill.iter().flat_map(|d| &d.teacher) {
        p = p.run("--teacher", "the teacher's run folder", t);
    }
    p
}

/// The file that shows `dir` to be a kd run folder: a config.toml, summary.json or logits.bin
/// that kd wrote (other tools' files of those names do not count).
pub fn run_marker(dir: &Path) -> Option<&'static str> {
    if !dir.is_dir() {
        return None;
    }
    // A config.toml alone is no run: users keep copies of configs/teacher.toml in project
    // folders. A run folder holds its config beside what the run wrote.
    let wrote = [
        files::SUMMARY,
        files::METRICS,
        files::LOGITS,
        crate::model::adapter::ADAPTER_CONFIG,
    ]
    .iter()
    .any(|f| dir.join(f).is_file());
    if wrote && RunConfig::from_file(&dir.join(files::CONFIG)).is_ok() {
        Some(files::CONFIG)
    } else if super::load::read_summary(dir).ok().flatten().is_some() {
        Some(files::SUMMARY)
    } else if crate::cache::read_header(&dir.join(files::LOGITS)).is_ok() {
        Some(files::LOGITS)
    } else {
        None
    }
}

/// A run folder, or the staging folder (`.NAME.kd-staging`, `.NAME.kd-old`) of one.
fn is_kd_folder(dir: &Path) -> bool {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let staging =
        name.starts_with('.') && [".kd-staging", ".kd-old"].iter().any(|s| name.ends_with(s));
    staging || run_marker(dir).is_some()
}

fn refuse(message: String) -> Result<()> {
    Err(KdError::Config(message))
}

fn holds(flag: &str, out: &Path, iflag: &str, input: &Path) -> String {
    format!(
        "{flag} {} holds {iflag} {}, which this command reads, and the folder is replaced whole: choose another {flag}",
        out.display(),
        input.display()
    )
}

fn inside(flag: &str, out: &Path, folder: &Path) -> String {
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    use crate::model::adapter::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
    let own = [
        files::CONFIG,
        files::METRICS,
        files::SUMMARY,
        files::LOGITS,
        files::REPRESENTATIONS,
        ADAPTER_CONFIG,
        ADAPTER_WEIGHTS,
    ]
    .into_iter()
    .any(|f| f == name);
    let what = if own {
        format!("would overwrite the run's own {name} in")
    } else {
        "lies inside the run folder".to_string()
    };
    format!(
        "{flag} {} {what} {}: kd never writes into a run folder (a run replaces its folder whole); choose a path outside it",
        out.display(),
        folder.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_with_only_a_config_toml_is_no_run() {
        let dir = tempfile::tempdir().unwrap();
        let config = include_str!("../../configs/teacher.toml");
        std::fs::write(dir.path().join(files::CONFIG), config).unwrap();
        assert_eq!(
            run_marker(dir.path()),
            None,
            "a copied config.toml made a run"
        );
        std::fs::write(dir.path().join(files::METRICS), "").unwrap();
        assert_eq!(run_marker(dir.path()), Some(files::CONFIG));
    }
}
