//! The caching pass: a teacher scores rows chunk by chunk. A chunk is batched on its own, so
//! its logits do not depend on the rows outside it; that lets a pass resume at the first
//! unfinished chunk and lets N processes each score every N-th chunk.
use super::file::{write, CacheHeader};
use crate::data::Batcher;
use crate::error::{KdError, Result};
use crate::fsutil::write_bytes_atomic;
use crate::interrupt::{fault_point, stop_requested};
use crate::model::{predict_logits, TextClassifier};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Rows per caching chunk. The caching pass batches each chunk of rows on its own, so a chunk's
/// logits do not depend on the rows outside it: N processes that each score every N-th chunk
/// (`kd cache --shard i/N`) produce, merged, the very bits one process does.
pub const CACHE_CHUNK_ROWS: usize = 4096;

/// Which chunks of a caching pass one process scores: shard `index` of `count` takes chunks
/// `index`, `index + count`, … (all chunks for 0 of 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole pass.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether chunk `k` belongs to this shard.
    pub fn owns(&self, k: usize) -> bool {
        k % self.count == self.index
    }
}

/// A teacher scoring every row of a batcher, in row order, `chunk_rows` rows to a chunk
/// (batched by length within the chunk).
pub struct Pass<'a> {
    pub model: &'a TextClassifier,
    pub batcher: &'a Batcher,
    /// How many rows the batcher holds (all of them are scored).
    pub rows: usize,
    pub batch_size: usize,
    pub chunk_rows: usize,
}

impl Pass<'_> {
    /// How many chunks the pass has.
    pub fn chunks(&self) -> usize {
        self.rows.div_ceil(self.chunk_rows.max(1))
    }

    /// The logits of chunk `k`.
    pub fn chunk(&self, k: usize) -> Result<Vec<f32>> {
        let chunk_rows = self.chunk_rows.max(1);
        let rows: Vec<usize> = (k * chunk_rows..((k + 1) * chunk_rows).min(self.rows)).collect();
        predict_logits(self.model, self.batcher, &rows, self.batch_size, "cache")
    }

    /// The logits of the chunks `shard` owns, concatenated in chunk order.
    pub fn shard(&self, shard: Shard) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for k in (0..self.chunks()).filter(|&k| shard.owns(k)) {
            out.extend(self.chunk(k)?);
        }
        Ok(out)
    }

    /// The whole pass in chunks that survive an interruption: chunk `k`'s logits are kept in
    /// `dir/cache-chunk-k.bin` as soon as they are scored, and a resumed pass scores only the
    /// chunks it does not find. Stops (with [`KdError::Interrupted`]) between chunks when asked.
    pub fn resumable(&self, dir: &Path) -> Result<Vec<f32>> {
        let chunks = self.chunks();
        let mut all = Vec::new();
        for k in 0..chunks {
            let path = chunk_path(dir, k);
            if let Ok(bytes) = std::fs::read(&path) {
                all.extend(
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))),
                );
                continue;
            }
            if stop_requested() {
                return Err(KdError::Interrupted {
                    what: format!("the caching pass at chunk {} of {chunks}", k + 1),
                });
            }
            let logits = self.chunk(k)?;
            let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
            write_bytes_atomic(&path, &bytes)?;
            all.extend(logits);
            fault_point("KD_FAULT_AFTER_CHUNK", k + 1);
        }
        Ok(all)
    }

    /// Scores every row, resumably (finished chunks kept in `dir`), and writes the cache to
    /// `path` under `header`; returns the rows scored per second.
    pub fn write_resumable(&self, dir: &Path, header: &CacheHeader, path: &Path) -> Result<f64> {
        let started = Instant::now();
        let logits = self.resumable(dir)?;
        let rate = self.rows as f64 / started.elapsed().as_secs_f64().max(1e-9);
        write(path, header, &logits)?;
        Ok(rate)
    }
}

/// Whether `name` is a chunk file of an unfinished resumable pass (a finished run folder does
/// not keep them).
pub fn is_chunk_file(name: &str) -> bool {
    name.starts_with("cache-chunk-") && name.ends_with(".bin")
}

fn chunk_path(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("cache-chunk-{k}.bin"))
}
