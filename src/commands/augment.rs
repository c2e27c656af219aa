//! `kd augment`: N variants of every row of some files (Tang et al.'s masking and n-gram
//! sampling, with local shuffles: see [`crate::data::augment`]), written as an ordinary
//! unlabelled transfer file. The teacher scores it like any other (`kd cache TEACHER
//! --unlabelled aug.jsonl`), so the cache, its fingerprint, resume and shards need nothing new.
use crate::data::augment::{augmentable, row_rng, variants, Augmentation};
use crate::data::formats::read_numbered;
use crate::data::transfer_file::{self, TransferFormat};
use crate::data::{Columns, Example};
use crate::error::{KdError, Result};
use crate::run::paths::{check_path_list, Output, Paths};
use std::path::PathBuf;

/// What `kd augment` was asked to do.
pub struct AugmentRequest {
    /// Labelled or unlabelled files (labels are read past, not written).
    pub inputs: Vec<PathBuf>,
    /// The transfer file to write (.jsonl or .csv).
    pub out: PathBuf,
    /// The columns the inputs are read with and the output is written with: the teacher's.
    pub columns: Columns,
    pub augmentation: Augmentation,
    pub seed: u64,
    /// Leave out rows with nothing to augment (counted) instead of refusing them.
    pub skip_short: bool,
}

/// What `kd augment` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Augmented {
    pub out: PathBuf,
    /// Rows read, over every input.
    pub rows: usize,
    /// Rows left out for having one word (`--skip-short`).
    pub skipped: usize,
    /// Variants written.
    pub written: usize,
    /// Variants asked for but not written: a short row has fewer distinct variants.
    pub short: usize,
}

impl std::fmt::Display for Augmented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (rows, out) = (self.rows, self.out.display());
        write!(f, "wrote {} variants of {rows} rows to {out}", self.written)?;
        if self.short > 0 {
            write!(
                f,
                " ({} fewer than asked: rows with fewer distinct variants)",
                self.short
            )?;
        }
        if self.skipped > 0 {
            write!(f, " ({} one-word rows skipped)", self.skipped)?;
        }
        write!(f, "; score them with kd cache TEACHER --unlabelled {out}")
    }
}

/// Checks everything, reads every input, then writes the variants in one atomic step: a
/// refusal leaves nothing written.
pub fn run(req: &AugmentRequest) -> Result<Augmented> {
    let format = check(req)?;
    let inputs = read_inputs(req)?;
    let mut done = Augmented {
        out: req.out.clone(),
        rows: inputs.iter().map(Vec::len).sum(),
        skipped: 0,
        written: 0,
        short: 0,
    };
    let mut out = Vec::with_capacity(done.rows * req.augmentation.variants);
    for (file, rows) in inputs.iter().enumerate() {
        for (i, row) in rows.iter().enumerate() {
            if !augmentable(row) {
                done.skipped += 1;
                continue;
            }
            let mut rng = row_rng(req.seed, file, i);
            let (made, short) = variants(row, &req.augmentation, &mut rng);
            done.short += short;
            out.extend(made);
        }
    }
    done.written = out.len();
    if out.is_empty() {
        return Err(KdError::Config(
            "no row had a variant to write: nothing to score".into(),
        ));
    }
    crate::fsutil::write_atomic(&req.out, |tmp| {
        transfer_file::write(tmp, &out, &req.columns, format)
    })?;
    Ok(done)
}

/// The flags, the columns, the output's name and place (never an input, never inside a run
/// folder): all before any file is read.
fn check(req: &AugmentRequest) -> Result<TransferFormat> {
    req.augmentation.check()?;
    transfer_file::check_columns(&req.columns)?;
    if req.inputs.is_empty() {
        return Err(KdError::Config(
            "kd augment needs at least one INPUT file".into(),
        ));
    }
    check_path_list("INPUT", &req.inputs)?;
    let format = TransferFormat::of(&req.out, "--out")?;
    req.inputs
        .iter()
        .fold(Paths::new(), |p, i| p.input("INPUT", i))
        .output("--out", &req.out, Output::File)
        .check()?;
    Ok(format)
}

/// Every input's rows, read as `kd teach --unlabelled` reads them; a row with nothing to
/// augment is refused naming its file and row, unless `--skip-short`.
fn read_inputs(req: &AugmentRequest) -> Result<Vec<Vec<Example>>> {
    let mut all = Vec::with_capacity(req.inputs.len());
    for path in &req.inputs {
        let (rows, lines) = read_numbered(path, false, &req.columns)?;
        if let Some(i) = rows.iter().position(|r| !augmentable(r)) {
            if !req.skip_short {
                let what = if rows[i].pair.is_some() {
                    "each text has at most"
                } else {
                    "it has"
                };
                return Err(KdError::BadRow {
                    path: path.clone(),
                    row: lines[i],
                    message: format!(
                        "{what} one word: nothing to augment (masking would empty it, shuffles and n-grams leave it as it is); remove the row or pass --skip-short to leave such rows out"
                    ),
                });
            }
        }
        all.push(rows);
    }
    Ok(all)
}
