//! `kd report`: report.md with tables and pictures for run folders and sweep folders. The runs
//! are evaluated as `kd compare` evaluates them; the report folder is written staged and swapped
//! in whole.
use super::compare::{self, CompareRequest};
use crate::error::{KdError, Result};
use crate::report::{self, sweep, Report, REPORT_MD};
use crate::run::files::METRICS;
use crate::run::paths::{check_path_list, Output, Paths};
use crate::run::StagedRun;
use crate::training::log::read_history;
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};

/// What to report on.
pub struct ReportRequest {
    /// Run folders and sweep folders (those holding sweep.json), in the order given.
    pub folders: Vec<PathBuf>,
    /// The dataset whose test split the runs are evaluated on (default: the first run's).
    pub data: Option<String>,
    pub out: PathBuf,
    pub device: Device,
    pub dtype: DType,
    pub max_len: Option<usize>,
    /// Measure rows/s and latency (the accuracy-against-rows/s picture needs them).
    pub timing: bool,
    /// Also evaluate every run with its encoder layers in int8 ([`CompareRequest::int8`]).
    pub int8: bool,
}

/// Writes the report; returns the path of its report.md.
pub fn run(req: &ReportRequest) -> Result<PathBuf> {
    if req.folders.is_empty() {
        return Err(KdError::Config(
            "nothing to report: name run folders or sweep folders".into(),
        ));
    }
    check_out(&req.out, &req.folders)?;
    check_path_list("FOLDERS", &req.folders)?;
    req.folders
        .iter()
        .fold(Paths::new(), |p, f| {
            p.run("FOLDERS", "a folder reported on", f)
        })
        .local_opt("--data", req.data.as_deref())
        .output("--out", &req.out, Output::WholeFolder)
        .check()?;
    // Lock and stage the report folder before any evaluation: a refusal costs nothing.
    let staged = StagedRun::begin(&req.out)?;
    let (sweeps, runs): (Vec<&PathBuf>, Vec<&PathBuf>) = req
        .folders
        .iter()
        .partition(|f| f.join(sweep::SWEEP_JSON).is_file());
    let sweeps = sweeps
        .into_iter()
        .map(|dir| Ok((dir.display().to_string(), sweep::read(dir)?)))
        .collect::<Result<Vec<_>>>()?;
    let histories = runs
        .iter()
        .map(|dir| {
            let path = dir.join(METRICS);
            path.is_file().then(|| read_history(&path)).transpose()
        })
        .collect::<Result<Vec<_>>>()?;
    let comparison = if runs.is_empty() {
        None
    } else {
        Some(compare::run(&CompareRequest {
            runs: runs.into_iter().cloned().collect(),
            adapters: Vec::new(),
            model: None,
            data: req.data.clone(),
            device: req.device.clone(),
            dtype: req.dtype,
            max_len: req.max_len,
            timing: req.timing,
            int8: req.int8,
        })?)
    };
    report::write(
        &Report {
            comparison: comparison.as_ref(),
            histories,
            sweeps: sweeps.iter().map(|(n, s)| (n.clone(), s)).collect(),
        },
        staged.dir(),
    )?;
    staged.commit_whole()?;
    Ok(req.out.join(REPORT_MD))
}

/// The report replaces its folder whole, so --out must be new, empty, or an earlier report (a
/// report.md that kd wrote and nothing but pictures beside it), and must neither be, hold nor sit
/// inside a folder being reported on.
fn check_out(out: &Path, folders: &[PathBuf]) -> Result<()> {
    let refuse = |why: String| {
        Err(KdError::bad_file(
            out,
            format!("{why}: choose another --out"),
        ))
    };
    if out.is_dir() {
        let entries = std::fs::read_dir(out).map_err(|e| KdError::io(out, e))?;
        let mut any = false;
        for entry in entries {
            let name = entry.map_err(|e| KdError::io(out, e))?.file_name();
            let name = name.to_string_lossy();
            any = true;
            let picture = name.ends_with(".svg") || name.ends_with(".png");
            if name != REPORT_MD && !picture {
                return refuse(format!(
                    "holds `{name}`, which no kd report writes (the report replaces its folder whole)"
                ));
            }
        }
        let md = std::fs::read_to_string(out.join(REPORT_MD)).unwrap_or_default();
        if any && !md.starts_with(report::page::TITLE) {
            return refuse("is not a kd report (no report.md written by kd)".into());
        }
    }
    let resolved = |p: &Path| -> PathBuf {
        let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        abs.canonicalize().unwrap_or_else(|_| {
            let parent = abs.parent().and_then(|d| d.canonicalize().ok());
            match (parent, abs.file_name()) {
                (Some(d), Some(n)) => d.join(n),
                _ => abs.clone(),
            }
        })
    };
    let target = resolved(out);
    for folder in folders {
        let f = resolved(folder);
        if target.starts_with(&f) || f.starts_with(&target) {
            return refuse(format!(
                "is, holds or sits inside {}, which is being reported on",
                folder.display()
            ));
        }
    }
    Ok(())
}
