//! A caching pass shared out between processes: `--shard i/N` scores every N-th chunk of the
//! unlabelled rows into a part file beside the teacher folder
//! (`TEACHER.cache-parts/part-i-of-N.bin`), so N processes on any scheduler share the work
//! without talking to each other; merging interleaves the parts' chunks back into row order,
//! bit for bit what a single pass scores.
//!
//! A part is a [`block`](super::block): checksummed, and recording what scored it. A shard
//! keeps its finished chunks in `.part-i-of-N.chunks/` until its part is written, so a stopped
//! or killed shard resumes. The merge refuses a damaged part, one made for other rows, another
//! teacher run or chunk size, and parts scored differently from each other (f32 beside bf16,
//! other kernels, batch sizes or base model), since those would not merge to one pass's bits.
use super::block::{read_block, write_block, Block, Made};
use super::file::{fingerprint_hex, CacheHeader};
use super::pass::{Pass, CHUNK_ROWS, REPRESENTATIONS, ROWS, SCORED_BY, TEACHER_RUN};
use crate::error::{KdError, Result};
use crate::shard::Shard;
use std::path::{Path, PathBuf};

/// The field of a part's [`Made`] naming its shard, `i/N`.
const PART: &str = "part";

/// Where the part files of a sharded pass over `teacher` go.
pub fn parts_dir(teacher: &Path) -> PathBuf {
    let name = teacher.file_name().unwrap_or_default().to_string_lossy();
    teacher.with_file_name(format!("{name}.cache-parts"))
}

fn part_path(dir: &Path, shard: Shard) -> PathBuf {
    dir.join(format!("part-{}-of-{}.bin", shard.index, shard.count))
}

/// Scores `shard`'s chunks of the unlabelled rows (`pass` scores those rows alone, its chunks
/// made by `made`) into its part file in `dir`; returns the file and the rows it holds. Finished
/// chunks are kept until the part is written (`fresh` discards those of an earlier try).
pub fn write_part(
    dir: &Path,
    pass: &Pass,
    shard: Shard,
    made: &Made,
    fresh: bool,
) -> Result<(PathBuf, usize)> {
    let chunks = dir.join(format!(".part-{}-of-{}.chunks", shard.index, shard.count));
    if fresh && chunks.exists() {
        std::fs::remove_dir_all(&chunks).map_err(|e| KdError::io(&chunks, e))?;
    }
    let logits = pass.resumable(&chunks, made, shard)?;
    let part = part_path(dir, shard);
    let mut made = made.clone();
    made.insert(PART.into(), format!("{}/{}", shard.index, shard.count));
    let classes = pass.columns();
    write_block(&part, &made, classes, &logits)?;
    let _ = std::fs::remove_dir_all(&chunks);
    Ok((part, logits.len() / classes.max(1)))
}

/// Reads every part of a sharded pass and interleaves their chunks back into row order,
/// refusing parts that are missing, damaged, made for other rows, another teacher run or
/// another chunk size, or scored differently from the others. Each row holds its logits and,
/// when `repr_width` > 0, its representation (see [`Pass::columns`]).
pub fn merge_parts(
    dir: &Path,
    header: &CacheHeader,
    chunk_rows: usize,
    repr_width: usize,
) -> Result<Vec<f32>> {
    let parts = open_parts(dir, header, chunk_rows, repr_width)?;
    let count = parts.len();
    let total = header.rows - header.labelled;
    let classes = header.classes + repr_width;
    let mut out = Vec::with_capacity(total * classes);
    let mut next_row = vec![0usize; count];
    for (k, chunk_len) in (0..total)
        .step_by(chunk_rows.max(1))
        .map(|start| (start / chunk_rows.max(1), chunk_rows.min(total - start)))
    {
        let s = k % count;
        let (path, part) = &parts[s];
        if next_row[s] + chunk_len > part.rows {
            return Err(KdError::bad_file(path, "has fewer rows than its chunks"));
        }
        out.extend_from_slice(&part.logits[next_row[s] * classes..][..chunk_len * classes]);
        next_row[s] += chunk_len;
    }
    if let Some(s) = (0..count).find(|&s| next_row[s] != parts[s].1.rows) {
        return Err(KdError::bad_file(
            &parts[s].0,
            "has more rows than its chunks",
        ));
    }
    Ok(out)
}

/// The part files in `dir`, in shard order, each checked whole and to be one of a pass over the
/// unlabelled rows `header` describes, in chunks of `chunk_rows`, all scored alike.
fn open_parts(
    dir: &Path,
    header: &CacheHeader,
    chunk_rows: usize,
    repr_width: usize,
) -> Result<Vec<(PathBuf, Block)>> {
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
    let mut parts: Vec<(PathBuf, Block)> = Vec::new();
    for index in 0..count {
        let shard = Shard { index, count };
        let path = part_path(dir, shard);
        if !path.is_file() {
            return Err(KdError::NotFound(format!(
                "{}: missing (run kd cache --shard {index}/{count})",
                path.display()
            )));
        }
        let remedy = format!("score it again with kd cache --shard {index}/{count}");
        let part = read_block(&path, &remedy)?;
        check_made_for(&path, &part, header, (chunk_rows, repr_width), shard)?;
        if let Some((first, block)) = parts.first() {
            check_scored_alike(first, block, &path, &part)?;
        }
        parts.push((path, part));
    }
    Ok(parts)
}

/// Refuses a part of another pass: other rows, another run of the teacher, another chunk size
/// or shard, representations where the pass has none (or the other way round, or of another
/// width), another number of classes.
fn check_made_for(
    path: &Path,
    part: &Block,
    header: &CacheHeader,
    (chunk_rows, repr_width): (usize, usize),
    shard: Shard,
) -> Result<()> {
    let wanted = [
        (TEACHER_RUN, Some(header.run_id.clone().unwrap_or_default())),
        (ROWS, Some(fingerprint_hex(header.unlabelled_fingerprint))),
        (CHUNK_ROWS, Some(chunk_rows.to_string())),
        (PART, Some(format!("{}/{}", shard.index, shard.count))),
        (
            REPRESENTATIONS,
            (repr_width > 0).then(|| repr_width.to_string()),
        ),
    ];
    let none = || "(none)".to_string();
    let differs: Vec<String> = wanted
        .iter()
        .filter(|(k, v)| part.made.get(*k) != v.as_ref())
        .map(|(k, v)| {
            let was = part.made.get(*k).cloned().unwrap_or_else(none);
            format!("{k} {was}, this pass {}", v.clone().unwrap_or_else(none))
        })
        .collect();
    if differs.is_empty() && part.classes == header.classes + repr_width {
        return Ok(());
    }
    Err(KdError::bad_file(
        path,
        format!(
            "was made for other unlabelled rows, another run of the teacher or another chunk size ({}): score it again with kd cache --shard {}/{}",
            if differs.is_empty() { format!("{} classes, the teacher has {}", part.classes, header.classes) } else { differs.join("; ") },
            shard.index,
            shard.count
        ),
    ))
}

/// Refuses two parts scored differently: merged, they would not be the bits of one pass.
fn check_scored_alike(first: &Path, a: &Block, second: &Path, b: &Block) -> Result<()> {
    let differ: Vec<&str> = SCORED_BY
        .into_iter()
        .filter(|k| a.made.get(*k) != b.made.get(*k))
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    let by = |m: &Made| {
        differ
            .iter()
            .map(|k| format!("{k} {}", m.get(*k).map_or("(none)", String::as_str)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(KdError::PartsDiffer {
        first: first.to_path_buf(),
        first_by: by(&a.made),
        second: second.to_path_buf(),
        second_by: by(&b.made),
    })
}
