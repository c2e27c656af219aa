//! A caching pass shared out between processes: `--shard i/N` scores every N-th chunk of the
//! unlabelled rows into a part file beside the teacher folder
//! (`TEACHER.cache-parts/part-i-of-N.bin`), so N processes on any scheduler share the work
//! without talking to each other; merging interleaves the parts' chunks back into row order,
//! bit for bit what a single pass scores.
use super::file::{write, CacheHeader, LogitCache};
use super::pass::{Pass, Shard};
use crate::error::{KdError, Result};
use std::path::{Path, PathBuf};

/// Where the part files of a sharded pass over `teacher` go.
pub fn parts_dir(teacher: &Path) -> PathBuf {
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

/// Scores `shard`'s chunks of the unlabelled rows (`pass` scores those rows alone) of the cache
/// `header` describes into its part file in `dir`; returns the file and the rows it holds.
pub fn write_part(
    dir: &Path,
    pass: &Pass,
    shard: Shard,
    header: &CacheHeader,
) -> Result<(PathBuf, usize)> {
    let logits = pass.shard(shard)?;
    let part = part_path(dir, shard);
    let part_header = CacheHeader {
        rows: logits.len() / header.classes,
        labelled: 0,
        teacher: part_tag(shard, pass.chunk_rows, pass.rows),
        ..header.clone()
    };
    write(&part, &part_header, &logits)?;
    Ok((part, part_header.rows))
}

/// Reads every part of a sharded pass and interleaves their chunks back into row order,
/// refusing parts that are missing or were made for other rows, another teacher run or another
/// chunk size.
pub fn merge_parts(dir: &Path, header: &CacheHeader, chunk_rows: usize) -> Result<Vec<f32>> {
    let parts = open_parts(dir, header, chunk_rows)?;
    let count = parts.len();
    let total = header.rows - header.labelled;
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

/// The part files in `dir`, in shard order, each checked to be one of a pass over the
/// unlabelled rows `header` describes, in chunks of `chunk_rows`.
fn open_parts(dir: &Path, header: &CacheHeader, chunk_rows: usize) -> Result<Vec<LogitCache>> {
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
    Ok(parts)
}
