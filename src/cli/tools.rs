//! The flags of the tool commands: `kd cache` (scoring transfer rows, in shards) and `kd bench`.
use super::device::DeviceArgs;
use clap::Args;
use kd::cache::CACHE_CHUNK_ROWS;
use kd::commands::bench::{BenchRequest, BenchSettings};
use kd::commands::cache::CacheRequest;
use kd::run::limits::{whole, COUNT};
use kd::shard::{Shard, ShardSpec};
use std::path::PathBuf;

#[derive(Args)]
pub struct CacheArgs {
    /// The teacher's run folder
    pub teacher: PathBuf,
    /// Unlabelled file to score (repeatable; formats as for kd teach --unlabelled)
    #[arg(long, required = true)]
    pub unlabelled: Vec<PathBuf>,
    /// Score only every N-th chunk, starting at chunk i, into a part file (i/N, 0 ≤ i < N; auto:
    /// i and N from SLURM_ARRAY_TASK_ID/COUNT, or JOB_COMPLETION_INDEX and KD_SHARD_COUNT)
    #[arg(long, value_parser = parse_shard, conflicts_with = "merge", allow_hyphen_values = true)]
    pub shard: Option<ShardSpec>,
    /// Join the part files of a sharded pass into the teacher's cache
    #[arg(long)]
    pub merge: bool,
    /// Discard the chunks an interrupted kd cache kept, and score every row again
    #[arg(long)]
    pub fresh: bool,
    /// Also write the teacher's sentence representations (representations.bin, as kd teach
    /// --cache-representations does) for a teacher that has none, scoring its labelled rows'
    /// too (not with --shard/--merge). A teacher that has them keeps them in step without it
    #[arg(long)]
    pub representations: bool,
    /// Rows per caching chunk (must be the same for every shard and the merge)
    #[arg(long, default_value_t = CACHE_CHUNK_ROWS, hide = true,
          value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub chunk_rows: usize,
    #[arg(long, default_value_t = 128, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub batch_size: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub settings: BenchSettings,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Also write the report as JSON here
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl CacheArgs {
    pub fn into_request(self) -> anyhow::Result<CacheRequest> {
        let (device, dtype) = self.device.select()?;
        Ok(CacheRequest {
            teacher: self.teacher,
            unlabelled: self.unlabelled,
            shard: resolve_shard(self.shard)?,
            merge: self.merge,
            fresh: self.fresh,
            chunk_rows: self.chunk_rows,
            batch_size: self.batch_size,
            representations: self.representations,
            device,
            dtype,
        })
    }
}

impl BenchArgs {
    pub fn to_request(&self) -> anyhow::Result<BenchRequest> {
        let (device, dtype) = self.device.select()?;
        Ok(BenchRequest {
            settings: self.settings.clone(),
            device,
            dtype,
        })
    }
}

/// Parses `--shard`: `i/N` with 0 ≤ i < N, or `auto`.
pub fn parse_shard(s: &str) -> Result<ShardSpec, String> {
    s.parse().map_err(|e: kd::shard::ShardError| e.to_string())
}

/// The shard `--shard` names, `auto` read from this process's environment before any work.
pub fn resolve_shard(spec: Option<ShardSpec>) -> anyhow::Result<Option<Shard>> {
    // A value that is not UTF-8 is read (lossily) and refused as no number, not skipped.
    let env = |var: &str| std::env::var_os(var).map(|v| v.to_string_lossy().into_owned());
    Ok(spec.map(|s| s.resolve(env)).transpose()?)
}
