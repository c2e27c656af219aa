//! `kd cache`: score unlabelled rows with a finished teacher, without retraining it (they
//! replace the unlabelled rows it scored before).
//!
//! The labelled rows' logits are kept from the teacher's cache; the unlabelled rows are scored
//! chunk by chunk. `--shard i/N` scores every N-th chunk into a part file beside the teacher
//! folder (`TEACHER.cache-parts/part-i-of-N.bin`), so N processes on any scheduler share the work
//! without talking to each other; `--merge` joins the parts into the cache, bit for bit the one
//! a single process writes.
use super::pipeline::load_data;
use crate::cache::{self, CacheHeader, LogitCache};
use crate::data::tokenize_rows;
use crate::error::{KdError, Result};
use crate::run::folder::files;
use crate::run::load::check_one_run;
use crate::run::{load_run, RunConfig, StagedRun};
use crate::training::{cache_logits, Shard};
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};

/// What `kd cache` was asked to do.
pub struct CacheRequest {
    pub teacher: PathBuf,
    pub unlabelled: Vec<PathBuf>,
    /// Score only this shard's chunks into a part file.
    pub shard: Option<Shard>,
    /// Join the part files of a sharded pass into the cache.
    pub merge: bool,
    pub chunk_rows: usize,
    pub batch_size: usize,
    pub device: Device,
    pub dtype: DType,
}

/// Runs the request; returns one line saying what was written.
pub fn run(req: &CacheRequest) -> Result<String> {
    if req.unlabelled.is_empty() {
        return Err(KdError::Config(
            "kd cache needs --unlabelled FILE (the rows to score)".into(),
        ));
    }
    let teacher = std::fs::canonicalize(&req.teacher).map_err(|e| KdError::io(&req.teacher, e))?;
    // Shards run side by side and only read the teacher; the single pass and the merge change
    // it, so they hold its lock from before they read it to the commit.
    let staged = match req.shard {
        Some(_) => None,
        None => Some(StagedRun::begin_update(&teacher)?),
    };
    check_one_run(&teacher)?;
    let config = RunConfig::from_file(&teacher.join(files::CONFIG))?;
    let run_id = config.run_id.clone().ok_or_else(|| {
        KdError::bad_file(
            &teacher,
            "was written before run ids: run kd teach again to add unlabelled rows to it",
        )
    })?;
    // The teacher's labelled rows, as it read them, and the new unlabelled rows.
    let (_, data) = load_data(&config, &req.unlabelled)?;
    let cache_path = teacher.join(files::LOGITS);
    let old = LogitCache::open(&cache_path)?;
    let (labelled, unlabelled) = data.parts();
    old.check_matches(labelled, &[], &[])?;
    let header = CacheHeader {
        rows: data.rows.len(),
        classes: old.header().classes,
        fingerprint: old.header().fingerprint,
        labelled: labelled.len(),
        unlabelled_fingerprint: cache::fingerprint(unlabelled),
        teacher: old.header().teacher.clone(),
        run_id: Some(run_id.clone()),
    };
    let parts = parts_dir(&teacher);
    let scored = if req.merge {
        merge_parts(&parts, &header, req.chunk_rows)?
    } else {
        let loaded = load_run(&teacher, &req.device, req.dtype)?;
        let batcher = tokenize_rows(
            &loaded.tokenizer,
            unlabelled,
            loaded.checkpoint.config.pad_id(),
        )?;
        let rows: Vec<usize> = (0..unlabelled.len()).collect();
        let shard = req.shard.unwrap_or(Shard::ALL);
        let logits = cache_logits(
            &loaded.model,
            &batcher,
            &rows,
            req.batch_size,
            req.chunk_rows,
            shard,
        )?;
        if req.shard.is_some() {
            let part = part_path(&parts, shard);
            let part_header = CacheHeader {
                rows: logits.len() / header.classes,
                labelled: 0,
                teacher: part_tag(shard, req.chunk_rows, unlabelled.len()),
                ..header.clone()
            };
            cache::write(&part, &part_header, &logits)?;
            return Ok(format!(
                "wrote {} ({} of {} unlabelled rows): join the parts with kd cache --merge",
                part.display(),
                part_header.rows,
                unlabelled.len()
            ));
        }
        logits
    };
    let mut all = old.gather(&(0..labelled.len()).collect::<Vec<_>>());
    all.extend(scored);
    drop(old);
    // Replace logits.bin and record the files in config.toml, as one change to the run folder.
    let staged = staged.expect("locked unless sharded");
    cache::write(&staged.dir().join(files::LOGITS), &header, &all)?;
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
        "{}: {} labelled + {} unlabelled rows",
        cache_path.display(),
        labelled.len(),
        unlabelled.len()
    ))
}

/// Where the part files of a sharded pass over `teacher` go.
fn parts_dir(teacher: &Path) -> PathBuf {
    let name = teacher.file_name().unwrap_or_default().to_string_lossy();
    teacher.with_file_name(format!("{name}.cache-parts"))
}

fn part_path(dir: &Path, shard: Shard) -> PathBuf {
    dir.join(format!("part-{}-of-{}.bin", shard.index, shard.count))
}

/// What a part file is, in its header's id field.
fn part_tag(shard: Shard, chunk_rows: usize, total: usize) -> String {
    format!(
        "part {} of {}, chunks of {chunk_rows} rows, {total} rows",
        shard.index, shard.count
    )
}

/// Reads every part of a sharded pass and interleaves their chunks back into row order,
/// refusing parts that are missing or were made for other rows, another teacher run or another
/// chunk size.
fn merge_parts(dir: &Path, header: &CacheHeader, chunk_rows: usize) -> Result<Vec<f32>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| KdError::io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("part-") && n.ends_with(".bin"))
        .collect();
    names.sort();
    let count = names
        .first()
        .and_then(|n| {
            n.trim_end_matches(".bin")
                .rsplit("-of-")
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| KdError::NotFound(format!("{}: no part files", dir.display())))?;
    let total = header.rows - header.labelled;
    let mut parts = Vec::new();
    for index in 0..count {
        let shard = Shard { index, count };
        let path = part_path(dir, shard);
        if !path.is_file() {
            return Err(KdError::NotFound(format!(
                "{}: missing (run kd cache --shard {index}/{count})",
                path.display()
            )));
        }
        let part = LogitCache::open(&path)?;
        let h = part.header();
        let made_for = (&h.run_id, h.unlabelled_fingerprint, &h.teacher);
        let wanted = (
            &header.run_id,
            header.unlabelled_fingerprint,
            &part_tag(shard, chunk_rows, total),
        );
        if made_for != wanted || h.classes != header.classes {
            return Err(KdError::bad_file(
                &path,
                "was made for other unlabelled rows, another run of the teacher or another chunk size",
            ));
        }
        parts.push(part);
    }
    let classes = header.classes;
    let mut out = Vec::with_capacity(total * classes);
    let mut next_row = vec![0usize; count];
    for (k, chunk_len) in (0..total)
        .step_by(chunk_rows.max(1))
        .map(|start| (start / chunk_rows.max(1), chunk_rows.min(total - start)))
    {
        let s = k % count;
        let rows: Vec<usize> = (next_row[s]..next_row[s] + chunk_len).collect();
        if next_row[s] + chunk_len > parts[s].header().rows {
            return Err(KdError::bad_file(
                parts[s].path(),
                "has fewer rows than its chunks",
            ));
        }
        out.extend(parts[s].gather(&rows));
        next_row[s] += chunk_len;
    }
    if let Some(s) = (0..count).find(|&s| next_row[s] != parts[s].header().rows) {
        return Err(KdError::bad_file(
            parts[s].path(),
            "has more rows than its chunks",
        ));
    }
    Ok(out)
}
