//! `kd cache`: score unlabelled rows with a finished teacher, without retraining it (they
//! replace the unlabelled rows it scored before).
//!
//! The labelled rows' logits are kept from the teacher's cache; the unlabelled rows are scored
//! chunk by chunk, each chunk kept as soon as it is scored, so that a pass stopped by Ctrl-C or
//! SIGTERM (or killed) resumes when the same command is run again (`--fresh` starts over).
//! `--shard i/N` scores every N-th chunk into a part file beside the teacher folder, so N
//! processes on any scheduler share the work without talking to each other; `--merge` joins
//! the parts into the cache, bit for bit the one a single process writes (see
//! [`crate::cache::merge`]).
//!
//! A teacher that cached its representations (`kd teach --cache-representations`) has them
//! scored for the new rows in the same pass, so that `representations.bin` always describes
//! the rows `logits.bin` does; `--representations` adds them to a teacher that has none (its
//! labelled rows' representations are then scored too, in the same process).
use crate::cache::{self, fingerprint_hex, split_rows, CacheHeader, LogitCache, Pass, Shard};
use crate::cache::{ReprCache, ReprHeader};
use crate::data::{tokenize_rows, Dataset, Example};
use crate::error::{KdError, Result};
use crate::model::predict_rows;
use crate::run::folder::files;
use crate::run::identity::{base_model_id, kernels, model_files};
use crate::run::load::{check_one_run, read_summary};
use crate::run::load_data;
use crate::run::{load_run, LoadedModel, RunConfig, StagedRun};
use candle_core::{DType, Device};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `kd cache` was asked to do.
pub struct CacheRequest {
    pub teacher: PathBuf,
    pub unlabelled: Vec<PathBuf>,
    /// Score only this shard's chunks into a part file.
    pub shard: Option<Shard>,
    /// Join the part files of a sharded pass into the cache.
    pub merge: bool,
    /// Discard the chunks an interrupted pass kept, and score every row again.
    pub fresh: bool,
    pub chunk_rows: usize,
    pub batch_size: usize,
    /// Add `representations.bin` to a teacher that has none (one that has one keeps it in step
    /// anyway).
    pub representations: bool,
    pub device: Device,
    pub dtype: DType,
}

/// What scoring made: every unlabelled row's values (logits, then the representation when
/// `width` > 0) and, when kd cache adds representations to a teacher that had none, the
/// labelled rows' representations; or (for a shard) the line saying which part file it wrote.
enum Scored {
    All {
        values: Vec<f32>,
        width: usize,
        labelled: Option<Vec<f32>>,
    },
    Part(String),
}

/// Which representations the pass scores: none, those of a teacher that has them (this
/// width), or new ones for a teacher that has none (`--representations`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reprs {
    None,
    Keep(usize),
    Add,
}

/// Runs the request; returns one line saying what was written.
pub fn run(req: &CacheRequest) -> Result<String> {
    if req.unlabelled.is_empty() {
        return Err(KdError::Config(
            "kd cache needs --unlabelled FILE (the rows to score)".into(),
        ));
    }
    crate::run::check_cache(&req.teacher, &req.unlabelled)?;
    let teacher = std::fs::canonicalize(&req.teacher).map_err(|e| KdError::io(&req.teacher, e))?;
    // Shards run side by side and only read the teacher; the single pass and the merge change
    // it, so they hold its lock from before they read it to the commit.
    let staged = match req.shard {
        Some(_) => None,
        None => Some(StagedRun::begin_update(&teacher, !req.fresh)?),
    };
    let Teacher {
        config,
        data,
        old,
        old_repr,
        header,
    } = read_teacher(&teacher, &req.unlabelled)?;
    let reprs = wanted_reprs(req, &teacher, old_repr.as_ref())?;
    let (header, (labelled, unlabelled)) = (&header, data.parts());
    let parts = cache::parts_dir(&teacher);
    let (values, width, new_labelled) = if req.merge {
        let width = old_repr.as_ref().map_or(0, |r| r.header().width);
        (
            cache::merge_parts(&parts, header, req.chunk_rows, width)?,
            width,
            None,
        )
    } else {
        let staged_dir = staged.as_ref().map(StagedRun::dir);
        match score(
            req,
            &teacher,
            header,
            (labelled, unlabelled, reprs),
            staged_dir,
        )? {
            Scored::All {
                values,
                width,
                labelled,
            } => (values, width, labelled),
            Scored::Part(line) => return Ok(line),
        }
    };
    let (logits, new_reprs) = split_rows(&values, header.classes, width);
    // Replace logits.bin (and representations.bin) and record the files in config.toml, as one
    // change to the run folder.
    let staged = staged.expect("locked unless sharded");
    cache::write(
        &staged.dir().join(files::LOGITS),
        header,
        &old.with_unlabelled(logits),
    )?;
    if width > 0 {
        let mut all = match (new_labelled, &old_repr) {
            (Some(scored), _) => scored,
            (None, Some(old)) => old.gather(&(0..header.labelled).collect::<Vec<_>>()),
            (None, None) => {
                return Err(KdError::Internal(
                    "representations of no labelled rows".into(),
                ))
            }
        };
        all.extend(new_reprs);
        let path = staged.dir().join(files::REPRESENTATIONS);
        cache::repr::write(&path, &ReprHeader::of(header, width), &all)?;
    }
    drop((old, old_repr));
    let recorded = RunConfig {
        unlabelled: req.unlabelled.clone(),
        ..config
    };
    recorded.save(&staged.dir().join(files::CONFIG))?;
    staged.commit()?;
    if req.merge {
        let _ = std::fs::remove_dir_all(&parts);
    }
    Ok(format!(
        "{}: {} labelled + {} unlabelled rows{}",
        teacher.join(files::LOGITS).display(),
        header.labelled,
        unlabelled.len(),
        if width > 0 {
            format!(
                ", and their representations ({width} wide) in {}",
                files::REPRESENTATIONS
            )
        } else {
            String::new()
        }
    ))
}

/// The representations this pass scores: an existing representations.bin is always kept in
/// step; `--representations` adds one, in a single process (a shard cannot score the labelled
/// rows, which only one process should).
fn wanted_reprs(req: &CacheRequest, teacher: &Path, old: Option<&ReprCache>) -> Result<Reprs> {
    match (old, req.representations) {
        (Some(r), _) => Ok(Reprs::Keep(r.header().width)),
        (None, false) => Ok(Reprs::None),
        (None, true) if req.shard.is_some() || req.merge => Err(KdError::Config(format!(
            "--representations adds {} to {}, which has none, scoring its labelled rows too: run kd cache --representations once without --shard/--merge (later sharded passes keep it in step)",
            files::REPRESENTATIONS,
            teacher.display()
        ))),
        (None, true) => Ok(Reprs::Add),
    }
}

/// Scores the `unlabelled` rows with the teacher (with their representations as `reprs` says,
/// and the `labelled` rows' representations when it adds them): all of them, resumably in
/// `staged` (the staging folder), or one shard's chunks into its part file.
fn score(
    req: &CacheRequest,
    teacher: &Path,
    header: &CacheHeader,
    (labelled, rows, reprs): (&[Example], &[Example], Reprs),
    staged: Option<&Path>,
) -> Result<Scored> {
    let loaded = load_run(teacher, &req.device, req.dtype)?;
    let base = model_files(&loaded.checkpoint)?;
    check_base_model(teacher, &base)?;
    let hidden = loaded.model.hidden_size();
    let width = match reprs {
        Reprs::None => 0,
        Reprs::Add => hidden,
        Reprs::Keep(w) if w == hidden => w,
        Reprs::Keep(w) => {
            return Err(KdError::bad_file(
                teacher.join(files::REPRESENTATIONS),
                format!("holds representations of width {w}, the teacher's hidden size is {hidden}: rerun kd teach with --cache-representations"),
            ))
        }
    };
    let pad_id = loaded.checkpoint.config.pad_id();
    let batcher = tokenize_rows(&loaded.tokenizer, rows, pad_id)?;
    let pass = Pass {
        model: &loaded.model,
        batcher: &batcher,
        rows: rows.len(),
        batch_size: req.batch_size,
        chunk_rows: req.chunk_rows,
        representations: width > 0,
    };
    let made = pass.made(
        header.run_id.as_deref().unwrap_or_default(),
        &base_model_id(&base),
        &fingerprint_hex(header.unlabelled_fingerprint),
        &kernels(&req.device, req.dtype),
    );
    match (req.shard, staged) {
        (Some(shard), _) => {
            let parts = cache::parts_dir(teacher);
            let (part, n) = cache::write_part(&parts, &pass, shard, &made, req.fresh)?;
            Ok(Scored::Part(format!(
                "wrote {} ({n} of {} unlabelled rows): join the parts with kd cache --merge",
                part.display(),
                rows.len()
            )))
        }
        (None, Some(dir)) => Ok(Scored::All {
            values: pass.resumable(dir, &made, Shard::ALL)?,
            width,
            labelled: match reprs {
                Reprs::Add => Some(labelled_reprs(&loaded, labelled, req.batch_size)?),
                _ => None,
            },
        }),
        (None, None) => Err(KdError::Internal(
            "kd cache without a staging folder".into(),
        )),
    }
}

/// The representations of the labelled rows, for a teacher that cached none: its labelled
/// rows' logits stay those it cached when it was trained.
fn labelled_reprs(loaded: &LoadedModel, rows: &[Example], batch_size: usize) -> Result<Vec<f32>> {
    let pad_id = loaded.checkpoint.config.pad_id();
    let batcher = tokenize_rows(&loaded.tokenizer, rows, pad_id)?;
    let all: Vec<usize> = (0..rows.len()).collect();
    let values = predict_rows(&loaded.model, &batcher, &all, batch_size, "labelled", true)?;
    let classes = loaded.model.num_labels();
    Ok(split_rows(&values, classes, loaded.model.hidden_size()).1)
}

/// Refuses to score with a base model whose files changed since the teacher was trained on it
/// (as its summary records): the new rows' logits would come from another model than the
/// cached ones. Teachers trained before kd recorded its inputs are not checked.
fn check_base_model(teacher: &Path, now: &BTreeMap<String, String>) -> Result<()> {
    let Some(then) = read_summary(teacher)?.and_then(|s| s.inputs) else {
        return Ok(());
    };
    let current = crate::run::identity::Inputs {
        model: now.clone(),
        ..then.clone()
    };
    match current.changes_since(&then, false).first() {
        None => Ok(()),
        Some(what) => Err(KdError::bad_file(
            teacher,
            format!("{what} changed since this teacher was trained: its new logits would come from another model than its cached ones; restore the base model or retrain the teacher with kd teach"),
        )),
    }
}

/// A finished teacher about to score new unlabelled rows.
struct Teacher {
    config: RunConfig,
    /// Its labelled rows (as it read them) with the new unlabelled rows.
    data: Dataset,
    /// Its cache, checked against those labelled rows.
    old: LogitCache,
    /// Its representations, when it cached them (checked against `old`).
    old_repr: Option<ReprCache>,
    /// The header of the cache that scores the new rows.
    header: CacheHeader,
}

/// The finished teacher at `teacher`, with the new `unlabelled` rows.
fn read_teacher(teacher: &Path, unlabelled: &[PathBuf]) -> Result<Teacher> {
    check_one_run(teacher)?;
    let config = RunConfig::from_file(&teacher.join(files::CONFIG))?;
    let run_id = config.run_id.clone().ok_or_else(|| {
        KdError::bad_file(
            teacher,
            "was written before run ids: run kd teach again to add unlabelled rows to it",
        )
    })?;
    let (_, data) = load_data(&config, unlabelled)?;
    let old = LogitCache::open(&teacher.join(files::LOGITS))?;
    let (labelled, new_rows) = data.parts();
    old.check_matches(labelled, &[], &[])?;
    let h = old.header();
    let header = CacheHeader::new(labelled, new_rows, h.classes, h.teacher.clone(), &run_id);
    let repr_path = teacher.join(files::REPRESENTATIONS);
    let old_repr = match repr_path.is_file() {
        true => Some(ReprCache::open(&repr_path)?),
        false => None,
    };
    if let Some(r) = &old_repr {
        r.check_matches(&old)?;
    }
    Ok(Teacher {
        config,
        data,
        old,
        old_repr,
        header,
    })
}
