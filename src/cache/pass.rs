//! The caching pass: a teacher scores rows chunk by chunk. A chunk is batched on its own, so
//! its logits do not depend on the rows outside it; that lets a pass resume at the first
//! unfinished chunk and lets N processes each score every N-th chunk.
//!
//! A kept chunk is a [`block`](super::block) that records what scored it: it is reused only by a
//! pass of the same teacher run, base model, rows, chunk size, kernels and batch size (else it
//! is scored again, with a warning), and a damaged one is refused by name.
//!
//! A pass that also caches the teacher's representations (`kd teach --cache-representations`)
//! keeps each row's logits and representation side by side in its blocks (classes + hidden
//! values a row), so resuming and sharding carry them unchanged; they are split into
//! `logits.bin` and `representations.bin` at the end.
use super::block::{changes, read_block, write_block, Made};
use super::file::{write, CacheHeader};
use super::repr::{self, ReprHeader};
use crate::data::Batcher;
use crate::distributed::{watchdog, Collective};
use crate::error::{KdError, Result};
use crate::interrupt::{fault_point, stop_point_after, stop_requested};
use crate::model::{predict_rows, TextClassifier};
use crate::shard::Shard;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Rows per caching chunk. The caching pass batches each chunk of rows on its own, so a chunk's
/// logits do not depend on the rows outside it: N processes that each score every N-th chunk
/// (`kd cache --shard i/N`) produce, merged, the very bits one process does.
pub const CACHE_CHUNK_ROWS: usize = 4096;

/// The fields of a chunk's [`Made`]: the run whose weights scored it, …
pub(crate) const TEACHER_RUN: &str = "teacher run";
/// … the fingerprint of the rows of the whole pass, the chunk size and the chunk's number, …
pub(crate) const ROWS: &str = "rows";
pub(crate) const CHUNK_ROWS: &str = "chunk rows";
const CHUNK: &str = "chunk";
/// … and how it was scored: base model files, dtype and kernels, batch size (a batch's padding
/// changes the products' shapes, so their rounding).
pub(crate) const SCORED_BY: [&str; 3] = ["base model", "kernels", "batch size"];
/// Present only in the blocks of a pass that caches representations: their width. Blocks of a
/// logits-only pass keep the fields they always had.
pub(crate) const REPRESENTATIONS: &str = "representations";

/// What to do about a damaged kept chunk.
const FRESH: &str = "rerun with --fresh to start over";

/// A teacher scoring every row of a batcher, in row order, `chunk_rows` rows to a chunk
/// (batched by length within the chunk).
pub struct Pass<'a> {
    pub model: &'a TextClassifier,
    pub batcher: &'a Batcher,
    /// How many rows the batcher holds (all of them are scored).
    pub rows: usize,
    pub batch_size: usize,
    pub chunk_rows: usize,
    /// Whether each row's representation is scored too (after its logits).
    pub representations: bool,
}

impl Pass<'_> {
    /// How many chunks the pass has.
    pub fn chunks(&self) -> usize {
        self.rows.div_ceil(self.chunk_rows.max(1))
    }

    fn chunk_range(&self, k: usize) -> std::ops::Range<usize> {
        let chunk_rows = self.chunk_rows.max(1);
        k * chunk_rows..((k + 1) * chunk_rows).min(self.rows)
    }

    /// The width of the representations the pass scores (0 when it scores logits alone).
    pub fn repr_width(&self) -> usize {
        if self.representations {
            self.model.hidden_size()
        } else {
            0
        }
    }

    /// The values each row gets: its logits, then its representation.
    pub fn columns(&self) -> usize {
        self.model.num_labels() + self.repr_width()
    }

    /// The values of chunk `k`'s rows (rows × [`Self::columns`]).
    pub fn chunk(&self, k: usize) -> Result<Vec<f32>> {
        let rows: Vec<usize> = self.chunk_range(k).collect();
        let (model, batcher) = (self.model, self.batcher);
        predict_rows(
            model,
            batcher,
            &rows,
            self.batch_size,
            "cache",
            self.representations,
        )
    }

    /// What this pass's chunks are made from: the teacher run `run_id` (its trained weights) on
    /// the base model `base_model` (see `run::identity`), the rows (`rows`, a fingerprint),
    /// scored with `kernels`; the chunk size and batch size are the pass's own.
    pub fn made(&self, run_id: &str, base_model: &str, rows: &str, kernels: &str) -> Made {
        let [base, kern, batch] = SCORED_BY;
        let mut made = Made::from([
            (TEACHER_RUN.into(), run_id.into()),
            (ROWS.into(), rows.into()),
            (CHUNK_ROWS.into(), self.chunk_rows.to_string()),
            (base.into(), base_model.into()),
            (kern.into(), kernels.into()),
            (batch.into(), self.batch_size.to_string()),
        ]);
        if self.representations {
            made.insert(REPRESENTATIONS.into(), self.repr_width().to_string());
        }
        made
    }

    /// The chunks `shard` owns, concatenated in chunk order, in chunks that survive an
    /// interruption: chunk `k`'s logits are kept in `dir/cache-chunk-k.bin` as soon as they are
    /// scored, and a resumed pass scores only the chunks it does not find made by `made`. Stops
    /// (with [`KdError::Interrupted`]) between chunks when asked.
    pub fn resumable(&self, dir: &Path, made: &Made, shard: Shard) -> Result<Vec<f32>> {
        let chunks = self.chunks();
        let mut all = Vec::new();
        for k in (0..chunks).filter(|&k| shard.owns(k)) {
            let path = chunk_path(dir, k);
            let made = chunk_made(made, k);
            if let Some(kept) = self.kept_chunk(&path, k, &made)? {
                all.extend(kept);
                continue;
            }
            if stop_requested() {
                return Err(KdError::Interrupted {
                    what: format!("the caching pass at chunk {} of {chunks}", k + 1),
                });
            }
            let logits = self.chunk(k)?;
            write_block(&path, &made, self.columns(), &logits)?;
            all.extend(logits);
            fault_point("KD_FAULT_AFTER_CHUNK", k + 1);
            stop_point_after("KD_STOP_AFTER_CHUNK", k + 1);
        }
        Ok(all)
    }

    /// The logits of chunk `k` kept at `path`, if they were made by `made`. A chunk made from
    /// other inputs is scored again (with a warning); a damaged one is refused.
    fn kept_chunk(&self, path: &Path, k: usize, made: &Made) -> Result<Option<Vec<f32>>> {
        if !path.exists() {
            return Ok(None);
        }
        let block = read_block(path, FRESH)?;
        if block.made != *made {
            tracing::warn!(
                "{} was scored from other inputs ({}): scoring its rows again",
                path.display(),
                changes(&block.made, made)
            );
            return Ok(None);
        }
        let (rows, classes) = (self.chunk_range(k).len(), self.columns());
        if (block.rows, block.classes) != (rows, classes) {
            return Err(KdError::Damaged {
                path: path.to_path_buf(),
                problem: format!(
                    "holds {} rows × {} classes, where chunk {k} has {rows} × {classes}",
                    block.rows, block.classes
                ),
                remedy: FRESH.into(),
            });
        }
        Ok(Some(block.logits))
    }

    /// Scores every row, resumably (finished chunks kept in `dir`, see [`Pass::resumable`]),
    /// and writes the cache to `path` under `header`, and the representations (when the pass
    /// scores them) to `repr_path`; returns the rows scored per second.
    pub fn write_resumable(
        &self,
        dir: &Path,
        made: &Made,
        header: &CacheHeader,
        path: &Path,
        repr_path: &Path,
    ) -> Result<f64> {
        let started = Instant::now();
        let values = self.resumable(dir, made, Shard::ALL)?;
        let rate = self.rows as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let width = self.repr_width();
        let (logits, reprs) = split_rows(&values, header.classes, width);
        write(path, header, &logits)?;
        if width > 0 {
            repr::write(repr_path, &ReprHeader::of(header, width), &reprs)?;
        }
        Ok(rate)
    }
}

/// Splits rows of `classes + width` values into their logits and their representations.
pub fn split_rows(values: &[f32], classes: usize, width: usize) -> (Vec<f32>, Vec<f32>) {
    if width == 0 {
        return (values.to_vec(), Vec::new());
    }
    let rows = values.len() / (classes + width);
    let (mut logits, mut reprs) = (
        Vec::with_capacity(rows * classes),
        Vec::with_capacity(rows * width),
    );
    for row in values.chunks_exact(classes + width) {
        logits.extend_from_slice(&row[..classes]);
        reprs.extend_from_slice(&row[classes..]);
    }
    (logits, reprs)
}

/// Where rank 0 keeps a pass shared by several ranks: its staging folder, what made its chunks,
/// and the cache file to write with its header.
pub struct Keep<'a> {
    pub dir: &'a Path,
    pub made: &'a Made,
    pub header: &'a CacheHeader,
    pub path: &'a Path,
    /// Where the representations go, when the pass scores them.
    pub repr_path: &'a Path,
}

impl Pass<'_> {
    /// [`Pass::write_resumable`] shared by the ranks of `world` (`keep` is rank 0's, None on
    /// the others): the chunks rank 0 does not find kept are dealt out in rounds, one chunk per
    /// rank, and gathered; rank 0 keeps each as it arrives and writes the cache. A chunk is
    /// scored whole by one rank, so the cache holds the bits one process writes. Returns the
    /// rows scored per second.
    pub fn write_shared(&self, world: &dyn Collective, keep: Option<Keep>) -> Result<f64> {
        if world.size() == 1 {
            let k = keep.ok_or_else(|| KdError::Internal("one rank must keep the pass".into()))?;
            return self.write_resumable(k.dir, k.made, k.header, k.path, k.repr_path);
        }
        let started = Instant::now();
        let mut chunks: Vec<Option<Vec<f32>>> = vec![None; self.chunks()];
        let mut todo = Vec::new();
        if let Some(k) = &keep {
            for (c, slot) in chunks.iter_mut().enumerate() {
                *slot = self.kept_chunk(&chunk_path(k.dir, c), c, &chunk_made(k.made, c))?;
            }
            let missing = chunks.iter().enumerate().filter(|(_, c)| c.is_none());
            todo = missing
                .flat_map(|(c, _)| (c as u64).to_le_bytes())
                .collect();
        }
        world.broadcast_bytes(&mut todo)?;
        let todo: Vec<usize> = todo
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .collect();
        for round in todo.chunks(world.size()) {
            let (first, all) = (round[0] + 1, self.chunks());
            watchdog::set_phase(format!("the caching pass, chunk {first} of {all}"));
            if world.any(stop_requested())? {
                return Err(KdError::Interrupted {
                    what: format!("the caching pass at chunk {first} of {all}"),
                });
            }
            let mine = match round.get(world.rank()) {
                Some(&c) => self.chunk(c)?,
                None => Vec::new(),
            };
            let gathered = world.all_gather(&mine)?;
            if let Some(k) = &keep {
                self.keep_round(k, round, &gathered, &mut chunks)?;
            }
            for &c in round {
                fault_point("KD_FAULT_AFTER_CHUNK", c + 1);
                stop_point_after("KD_STOP_AFTER_CHUNK", c + 1);
            }
        }
        if let Some(k) = keep {
            let values: Vec<f32> = chunks.into_iter().flatten().flatten().collect();
            let width = self.repr_width();
            let (logits, reprs) = split_rows(&values, k.header.classes, width);
            write(k.path, k.header, &logits)?;
            if width > 0 {
                repr::write(k.repr_path, &ReprHeader::of(k.header, width), &reprs)?;
            }
        }
        Ok(self.rows as f64 / started.elapsed().as_secs_f64().max(1e-9))
    }

    /// Keeps the chunks of one round (gathered in rank order, so in `round` order).
    fn keep_round(
        &self,
        k: &Keep,
        round: &[usize],
        gathered: &[f32],
        chunks: &mut [Option<Vec<f32>>],
    ) -> Result<()> {
        let classes = self.columns();
        let mut at = 0;
        for &c in round {
            let n = self.chunk_range(c).len() * classes;
            let logits = gathered
                .get(at..at + n)
                .ok_or_else(|| KdError::Internal(format!("chunk {c}: too few logits gathered")))?
                .to_vec();
            write_block(
                &chunk_path(k.dir, c),
                &chunk_made(k.made, c),
                classes,
                &logits,
            )?;
            chunks[c] = Some(logits);
            at += n;
        }
        Ok(())
    }
}

/// What made chunk `k` of a pass made by `made`.
fn chunk_made(made: &Made, k: usize) -> Made {
    let mut made = made.clone();
    made.insert(CHUNK.into(), k.to_string());
    made
}

/// Whether `name` is a chunk file of an unfinished resumable pass (a finished run folder does
/// not keep them).
pub fn is_chunk_file(name: &str) -> bool {
    name.starts_with("cache-chunk-") && name.ends_with(".bin")
}

fn chunk_path(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("cache-chunk-{k}.bin"))
}
