//! Transactional run folders: a run writes into a staging folder beside its target and replaces
//! the target in one step when it has finished, so that until then the previous run is untouched
//! and whole, and a failed or killed run never leaves a folder half old, half new.
//!
//! ```text
//! parent/
//!   teacher/                  the finished run (replaced only by `commit`)
//!   .teacher.kd-staging/      the run being written
//!   .teacher.kd-lock          held (flock) by the one process writing `teacher/`
//! ```
//!
//! On Linux the target is swapped with the staging folder by `renameat2(RENAME_EXCHANGE)`, one
//! atomic step; elsewhere (or on a file system without it) by two renames through
//! `.teacher.kd-old`, which the next run puts back if a crash fell between the two.
use super::checkpoints::is_resume_file;
use super::identity::Inputs;
use crate::cache::is_chunk_file;
use crate::error::{KdError, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A run being written: its staging folder, its id, and the lock on its target.
#[derive(Debug)]
pub struct StagedRun {
    target: PathBuf,
    staging: PathBuf,
    old: PathBuf,
    run_id: String,
    _lock: File,
    committed: bool,
    /// Whether commit carries the old target's foreign files (a README) into the new one.
    carry: bool,
    /// What a training run is made from, recorded in its summary.
    inputs: Option<Inputs>,
}

impl StagedRun {
    /// Locks `target` for this process (refusing at once if another holds it), clears what an
    /// interrupted run left, and creates an empty staging folder.
    pub fn begin(target: &Path) -> Result<Self> {
        Ok(Self::begin_resumable(target, false)?.0)
    }

    /// [`StagedRun::begin`], but with `resume` a staging folder that holds an interrupted run's
    /// checkpoint is kept, with its run id; the bool says whether one was.
    pub fn begin_resumable(target: &Path, resume: bool) -> Result<(Self, bool)> {
        let name = target
            .file_name()
            .ok_or_else(|| KdError::Config(format!("{}: not a folder name", target.display())))?
            .to_string_lossy()
            .into_owned();
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| KdError::io(&parent, e))?;
        let sibling = |suffix: &str| parent.join(format!(".{name}.kd-{suffix}"));
        let lock = take_lock(&sibling("lock"), target)?;
        let (staging, old) = (sibling("staging"), sibling("old"));
        // A crash between the two renames of a fallback commit: the previous run is in `old`.
        if old.exists() {
            if !target.exists() {
                std::fs::rename(&old, target).map_err(|e| KdError::io(target, e))?;
            } else {
                remove_dir(&old)?;
            }
        }
        check_replaceable(target)?;
        let id_file = staging.join(RUN_ID_FILE);
        let kept = resume && holds_resume_files(&staging) && id_file.is_file();
        let run_id = if kept {
            for entry in std::fs::read_dir(&staging).map_err(|e| KdError::io(&staging, e))? {
                let entry = entry.map_err(|e| KdError::io(&staging, e))?;
                if is_temp_file(&entry.file_name().to_string_lossy()) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            std::fs::read_to_string(&id_file).map_err(|e| KdError::io(&id_file, e))?
        } else {
            if staging.exists() {
                remove_dir(&staging)?;
            }
            std::fs::create_dir(&staging).map_err(|e| KdError::io(&staging, e))?;
            let id = new_run_id();
            crate::fsutil::write_bytes_atomic(&id_file, id.as_bytes())?;
            id
        };
        let run = Self {
            target: target.to_path_buf(),
            staging,
            old,
            run_id,
            _lock: lock,
            committed: false,
            carry: true,
            inputs: None,
        };
        Ok((run, kept))
    }

    /// Like [`StagedRun::begin`], for a change to a finished run (`kd cache`): the staging
    /// folder starts as a copy of the target (hard links: files are only ever replaced by
    /// rename, never written in place) and the run keeps the id its config.toml records, read
    /// under the lock. With `resume`, the chunks an interrupted `kd cache` scored are kept (the
    /// pass checks what made each before reusing it); anything else staged is not.
    pub fn begin_update(target: &Path, resume: bool) -> Result<Self> {
        let (mut run, kept) = Self::begin_resumable(target, resume)?;
        if kept {
            for entry in
                std::fs::read_dir(&run.staging).map_err(|e| KdError::io(&run.staging, e))?
            {
                let entry = entry.map_err(|e| KdError::io(&run.staging, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !is_chunk_file(&name) && name != RUN_ID_FILE {
                    let path = entry.path();
                    std::fs::remove_file(&path).map_err(|e| KdError::io(&path, e))?;
                }
            }
        }
        let config = target.join(super::files::CONFIG);
        let run_id = super::config::RunConfig::from_file(&config)?
            .run_id
            .ok_or_else(|| {
                KdError::bad_file(
                    target,
                    "was written before run ids: run kd teach again to change it",
                )
            })?;
        for entry in std::fs::read_dir(target).map_err(|e| KdError::io(target, e))? {
            let entry = entry.map_err(|e| KdError::io(target, e))?;
            let dest = run.staging.join(entry.file_name());
            if std::fs::hard_link(entry.path(), &dest).is_err() {
                std::fs::copy(entry.path(), &dest).map_err(|e| KdError::io(&dest, e))?;
            }
        }
        run.run_id = run_id.to_string();
        Ok(run)
    }

    /// Empties the staging folder and gives the run a new id (a kept checkpoint that turned out
    /// to belong to other settings: nothing of that run may leak into this one).
    pub fn reset(&mut self) -> Result<()> {
        remove_dir(&self.staging)?;
        std::fs::create_dir(&self.staging).map_err(|e| KdError::io(&self.staging, e))?;
        self.run_id = new_run_id();
        crate::fsutil::write_bytes_atomic(&self.staging.join(RUN_ID_FILE), self.run_id.as_bytes())
    }

    /// Records what the run is made from (see [`Inputs`]), for its summary.
    pub fn set_inputs(&mut self, inputs: Inputs) {
        self.inputs = Some(inputs);
    }

    /// What the run is made from, when it is a training run.
    pub fn inputs(&self) -> Option<&Inputs> {
        self.inputs.as_ref()
    }

    /// Where the run's files are written until [`StagedRun::commit`].
    pub fn dir(&self) -> &Path {
        &self.staging
    }

    /// The id every file of this run records.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// [`StagedRun::commit`] for a folder kd owns whole (a report): nothing of the old target is
    /// carried over, so no file of a previous report outlives it.
    pub fn commit_whole(mut self) -> Result<()> {
        self.carry = false;
        self.commit()
    }

    /// Makes the staged run the target, in one step. Files in the old target that no run writes
    /// (a README, notes) are carried over by hard link first.
    pub fn commit(mut self) -> Result<()> {
        let staging = self.staging.clone();
        for entry in std::fs::read_dir(&staging).map_err(|e| KdError::io(&staging, e))? {
            let name = entry.map_err(|e| KdError::io(&staging, e))?.file_name();
            let name = name.to_string_lossy();
            if name == RUN_ID_FILE || is_resume_file(&name) || is_temp_file(&name) {
                let path = staging.join(&*name);
                std::fs::remove_file(&path).map_err(|e| KdError::io(&path, e))?;
            }
        }
        sync_dir_files(&staging)?;
        if self.target.exists() {
            if self.carry {
                carry_foreign_files(&self.target, &staging)?;
            }
            if exchange(&staging, &self.target).is_ok() {
                // `staging` now holds the previous run; the new one is in place whatever happens
                // to its removal.
                let _ = std::fs::remove_dir_all(&staging);
            } else {
                rename(&self.target, &self.old)?;
                if let Err(e) = rename(&staging, &self.target) {
                    // Put the previous run back rather than leave no run folder at all.
                    let _ = std::fs::rename(&self.old, &self.target);
                    return Err(e);
                }
                let _ = std::fs::remove_dir_all(&self.old);
            }
        } else {
            rename(&staging, &self.target)?;
        }
        if let Some(parent) = self.target.parent() {
            // Make the rename durable; failing to sync a directory is not worth an error.
            let _ = File::open(parent).and_then(|d| d.sync_all());
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedRun {
    /// A run that failed leaves no staging folder behind, unless it holds a checkpoint to resume
    /// from (an interrupted run); the target was never touched either way.
    fn drop(&mut self) {
        if !self.committed && !holds_resume_files(&self.staging) {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// The staging folder's record of its run id (removed at commit).
const RUN_ID_FILE: &str = ".run_id";

/// A half-written file of a process killed mid-write (see `fsutil::write_atomic`).
fn is_temp_file(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

fn holds_resume_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| is_resume_file(&e.file_name().to_string_lossy()))
    })
}

/// The files a run writes; anything else in a run folder belongs to the user.
fn written_by_runs(name: &str) -> bool {
    use super::files;
    use crate::model::adapter::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
    [
        files::CONFIG,
        files::METRICS,
        files::SUMMARY,
        files::LOGITS,
        files::REPRESENTATIONS,
        ADAPTER_CONFIG,
        ADAPTER_WEIGHTS,
    ]
    .contains(&name)
}

/// Refuses to replace what is not a run folder: a file, a folder holding sub-folders, or one
/// holding files a run writes (a PEFT adapter downloaded from the Hub, say) without a kd
/// config.toml. Files no run writes (a README) are kept anyway.
fn check_replaceable(target: &Path) -> Result<()> {
    if !target.exists() {
        return Ok(());
    }
    if !target.is_dir() {
        return Err(KdError::bad_file(
            target,
            "exists and is not a folder: choose another --out",
        ));
    }
    for entry in std::fs::read_dir(target).map_err(|e| KdError::io(target, e))? {
        let entry = entry.map_err(|e| KdError::io(target, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if written_by_runs(&name) && !is_kd_run(target) {
            return Err(KdError::bad_file(
                target,
                format!("holds `{name}` but is not a kd run folder (no kd config.toml): choose another --out"),
            ));
        }
        if entry.path().is_dir() {
            return Err(KdError::bad_file(
                target,
                format!(
                    "holds the folder `{}`, which no kd run writes: this is not a run folder, choose another --out",
                    entry.file_name().to_string_lossy()
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `dir` holds a config.toml that kd wrote.
fn is_kd_run(dir: &Path) -> bool {
    super::config::RunConfig::from_file(&dir.join(super::files::CONFIG)).is_ok()
}

fn carry_foreign_files(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).map_err(|e| KdError::io(from, e))? {
        let entry = entry.map_err(|e| KdError::io(from, e))?;
        let name = entry.file_name();
        let dest = to.join(&name);
        if written_by_runs(&name.to_string_lossy()) || dest.exists() {
            continue;
        }
        if std::fs::hard_link(entry.path(), &dest).is_err() {
            std::fs::copy(entry.path(), &dest).map_err(|e| KdError::io(&dest, e))?;
        }
    }
    Ok(())
}

/// Takes the advisory lock on `path` (released by the kernel when the process ends, however it
/// ends), or names the process that holds it.
fn take_lock(path: &Path, target: &Path) -> Result<File> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| KdError::io(path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(KdError::Busy {
                path: target.to_path_buf(),
                holder: holder.trim().to_string(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(KdError::io(path, e)),
    }
    let me = format!(
        "pid {} ({})",
        std::process::id(),
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    file.set_len(0)
        .and_then(|()| file.write_all(me.as_bytes()))
        .map_err(|e| KdError::io(path, e))?;
    Ok(file)
}

/// A fresh run id: time, process and randomness, so that two runs never share one.
fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:012x}-{:08x}",
        (nanos / 1_000_000) as u64,
        rand::random::<u32>() ^ std::process::id()
    )
}

fn sync_dir_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| KdError::io(dir, e))? {
        let path = entry.map_err(|e| KdError::io(dir, e))?.path();
        if path.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| KdError::io(&path, e))?;
        }
    }
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| KdError::io(to, e))
}

fn remove_dir(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).map_err(|e| KdError::io(dir, e))
}

/// Swaps two folders atomically (Linux `renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder that a finished kd run wrote: a config.toml kd can read, and `files`.
    fn kd_run(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        let config = "model = \"m\"\ndata = \"d\"\nout = \"o\"\n[lora]\nr = 4\nalpha = 8.0\ntargets = [\"query\"]\n";
        std::fs::write(dir.join("config.toml"), config).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn a_commit_replaces_the_target_whole_and_keeps_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("teacher");
        kd_run(
            &target,
            &[
                ("summary.json", "old"),
                ("logits.bin", "old"),
                ("README.md", "mine"),
            ],
        );
        let run = StagedRun::begin(&target).unwrap();
        std::fs::write(run.dir().join("summary.json"), "new").unwrap();
        // Until the commit the previous run is whole.
        assert_eq!(
            std::fs::read_to_string(target.join("logits.bin")).unwrap(),
            "old"
        );
        run.commit().unwrap();
        let read = |n: &str| std::fs::read_to_string(target.join(n)).ok();
        assert_eq!(read("summary.json").as_deref(), Some("new"));
        assert_eq!(read("logits.bin"), None, "the old run's cache went with it");
        assert_eq!(read("README.md").as_deref(), Some("mine"));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "target and lock file only: {left:?}");
    }

    #[test]
    fn a_failed_run_leaves_the_target_untouched_and_a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("student");
        kd_run(&target, &[("summary.json", "old")]);
        let run = StagedRun::begin(&target).unwrap();
        std::fs::write(run.dir().join("summary.json"), "new").unwrap();
        let err = StagedRun::begin(&target).unwrap_err().to_string();
        assert!(
            err.contains("another kd process")
                && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(run);
        assert_eq!(
            std::fs::read_to_string(target.join("summary.json")).unwrap(),
            "old"
        );
        assert!(!dir.path().join(".student.kd-staging").exists());
        // The lock went with the run.
        StagedRun::begin(&target).unwrap();
    }

    #[test]
    fn an_interrupted_fallback_commit_is_put_back_and_non_runs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        let old = dir.path().join(".t.kd-old");
        kd_run(&old, &[("summary.json", "previous")]);
        drop(StagedRun::begin(&target).unwrap());
        assert_eq!(
            std::fs::read_to_string(target.join("summary.json")).unwrap(),
            "previous"
        );
        std::fs::create_dir(target.join("photos")).unwrap();
        let err = StagedRun::begin(&target).unwrap_err().to_string();
        assert!(
            err.contains("photos") && err.contains("not a run folder"),
            "{err}"
        );
    }
}
