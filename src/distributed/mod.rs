//! Data-parallel training across processes: the [`Collective`] operations a rank needs (sum,
//! gather, broadcast, barrier), the world this process belongs to, and how a launcher's ranks
//! are found.
//!
//! `mpirun -np N kd teach …` (or `srun --mpi=pmix kd teach …`) starts N copies of kd. Built with
//! the `mpi` feature, each reads its rank from the MPI world ([`init`]); every other build, and
//! a plain `kd teach`, runs as the one rank of a [`Single`] world, whose operations do nothing.
//! The training loop, validation, the test scores and the caching pass ask [`world`] how to
//! share their work (see `training::data_parallel`, `model::inference::predict_logits_shared`,
//! `cache::pass`); rank 0 alone writes files.
//!
//! Every operation of a multi-rank world runs under a [`watchdog`]: a rank left waiting longer
//! than `KD_COLLECTIVE_TIMEOUT` seconds (600 by default) says which operation hung and exits, and
//! the launcher then stops the others. Nothing half-written is left: the run folder is only
//! ever replaced whole (see `run::staging`).
mod launch;
#[cfg(feature = "mpi")]
mod mpi_world;
#[cfg(all(feature = "mpi", feature = "cuda"))]
mod nccl;
pub mod watchdog;

use candle_core::Tensor;
use std::ops::Range;
use std::sync::OnceLock;

pub use launch::{init, Session};

// Defined beside KdError (which wraps it), so that this room imports the error room and not
// the other way round.
pub use crate::error::DistributedError;

/// What a rank does with the others. All ranks call the same operations in the same order with
/// buffers of the same length (except [`Collective::all_gather`], whose parts may differ).
pub trait Collective: Send + Sync {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;
    /// How many ranks the world has.
    fn size(&self) -> usize;
    /// Sums `buf` elementwise over the ranks; every rank ends with the sum.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> crate::Result<()>;
    /// Every rank's `local`, concatenated in rank order, on every rank.
    fn all_gather(&self, local: &[f32]) -> crate::Result<Vec<f32>>;
    /// Rank 0's `bytes` on every rank (the others' are replaced).
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) -> crate::Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> crate::Result<()>;
    /// The transport, for logs and summaries ("MPI", "single process").
    fn transport(&self) -> String;

    /// [`Collective::all_reduce_sum`] of a tensor, on its device. Through the host by default;
    /// the NCCL world sums CUDA tensors on the GPUs.
    fn all_reduce_tensor(&self, t: &Tensor) -> crate::Result<Tensor> {
        if self.size() == 1 {
            return Ok(t.clone());
        }
        let mut host = t
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?;
        self.all_reduce_sum(&mut host)?;
        Ok(Tensor::from_vec(host, t.shape(), t.device())?.to_dtype(t.dtype())?)
    }

    /// The mean over the ranks of `buf`, on every rank.
    fn all_reduce_mean(&self, buf: &mut [f32]) -> crate::Result<()> {
        self.all_reduce_sum(buf)?;
        let n = self.size() as f32;
        buf.iter_mut().for_each(|v| *v /= n);
        Ok(())
    }

    /// Whether `flag` holds on any rank (a stop request seen by one rank stops them all at the
    /// same step).
    fn any(&self, flag: bool) -> crate::Result<bool> {
        let mut v = [f32::from(u8::from(flag))];
        self.all_reduce_sum(&mut v)?;
        Ok(v[0] > 0.0)
    }

    /// Ends every rank's process with `code` (MPI_Abort): an error on one rank that the others
    /// would otherwise wait on forever.
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }

    /// Whether this rank writes files: rank 0.
    fn leads(&self) -> bool {
        self.rank() == 0
    }
}

/// The world of one process: every operation is the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _: &mut [f32]) -> crate::Result<()> {
        Ok(())
    }
    fn all_gather(&self, local: &[f32]) -> crate::Result<Vec<f32>> {
        Ok(local.to_vec())
    }
    fn broadcast_bytes(&self, _: &mut Vec<u8>) -> crate::Result<()> {
        Ok(())
    }
    fn barrier(&self) -> crate::Result<()> {
        Ok(())
    }
    fn transport(&self) -> String {
        "single process".into()
    }
}

static WORLD: OnceLock<Box<dyn Collective>> = OnceLock::new();

/// The world this process belongs to: the one [`init`] installed, else a [`Single`] one.
pub fn world() -> &'static dyn Collective {
    match WORLD.get() {
        Some(w) => w.as_ref(),
        None => &Single,
    }
}

/// Makes `w` the process's world (once; [`init`] calls it).
#[cfg(feature = "mpi")]
pub(crate) fn install(w: Box<dyn Collective>) -> Result<(), DistributedError> {
    WORLD
        .set(w)
        .map_err(|_| DistributedError::Init("the world was already set".into()))
}

/// Rank `rank`'s contiguous share of `n` items split over `size` ranks: the shares differ by at
/// most one item, and a rank's share may be empty when `n < size`.
pub fn share(n: usize, rank: usize, size: usize) -> Range<usize> {
    let size = size.max(1);
    n * rank / size..n * (rank + 1) / size
}

/// This rank's index among the ranks of its node, as the launcher sets it (0 for one
/// process): `--device cuda` is `cuda:<local rank>`, one GPU per rank.
pub fn local_rank() -> usize {
    if world().size() == 1 {
        return 0;
    }
    let vars = [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
        "PMIX_LOCAL_RANK",
    ];
    vars.iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

/// "rank 1 of 2: " in a multi-rank world, "" otherwise: the prefix of a rank's own messages.
pub fn rank_prefix() -> String {
    let w = world();
    if w.size() > 1 {
        format!("rank {} of {}: ", w.rank(), w.size())
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_item_once_and_differ_by_at_most_one() {
        for n in [0usize, 1, 5, 20, 32, 33] {
            for size in 1..=4 {
                let parts: Vec<Range<usize>> = (0..size).map(|r| share(n, r, size)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[size - 1].end, n);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
                let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
                assert!(hi - lo <= 1, "n={n} size={size}: {lens:?}");
            }
        }
        assert_eq!(share(32, 1, 2), 16..32);
    }

    #[test]
    fn the_single_world_is_the_identity() -> crate::Result<()> {
        let w = Single;
        let mut buf = [1.0f32, 2.0];
        w.all_reduce_mean(&mut buf)?;
        assert_eq!(buf, [1.0, 2.0]);
        assert_eq!(w.all_gather(&buf)?, vec![1.0, 2.0]);
        assert!(w.any(true)? && !w.any(false)?);
        let t = Tensor::new(&[3.0f32], &candle_core::Device::Cpu)?;
        assert_eq!(w.all_reduce_tensor(&t)?.to_vec1::<f32>()?, [3.0]);
        assert!(w.leads());
        Ok(())
    }
}
