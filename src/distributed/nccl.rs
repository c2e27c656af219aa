//! The all-reduce of CUDA tensors over NCCL (cudarc's binding), set up as Horovod does: rank 0
//! makes the NCCL id (ncclGetUniqueId), MPI broadcasts its 128 bytes, and every rank joins the
//! communicator (ncclCommInitRank) on candle's own CUDA stream, so that the all-reduce runs
//! after the backward pass that wrote the gradients without a host synchronisation.
//!
//! Compiled under `--features cuda,mpi`; it has not yet run on a machine with two GPUs (see
//! README, "Data-parallel training").
use super::{Collective, DistributedError};
use crate::error::Result;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use cudarc::nccl::{Comm, Id, ReduceOp};
use std::ffi::c_char;

/// This rank's NCCL communicator.
pub struct Nccl {
    comm: Comm,
}

fn nccl_error(what: &str, e: impl std::fmt::Debug) -> DistributedError {
    DistributedError::Nccl(format!("{what}: {e:?}"))
}

impl Nccl {
    /// Joins every rank's GPU into one communicator (collective: every rank calls it at once);
    /// the id goes to the others over `world`'s own broadcast (MPI's, as Horovod hands it out).
    pub fn new(world: &dyn Collective, device: &Device) -> Result<Self> {
        let mut id = vec![0u8; 128];
        if world.rank() == 0 {
            let made = Id::new().map_err(|e| nccl_error("ncclGetUniqueId", e))?;
            id = made.internal().iter().map(|&c| c as u8).collect();
        }
        world.broadcast_bytes(&mut id)?;
        let mut internal = [0 as c_char; 128];
        for (d, s) in internal.iter_mut().zip(&id) {
            *d = *s as c_char;
        }
        let stream = device.as_cuda_device()?.cuda_stream();
        let comm = Comm::from_rank(stream, world.rank(), world.size(), Id::uninit(internal))
            .map_err(|e| nccl_error("ncclCommInitRank", e))?;
        tracing::info!(
            rank = world.rank(),
            size = world.size(),
            "NCCL communicator"
        );
        Ok(Self { comm })
    }

    /// The sum of `t` (as f32) over the ranks, on this rank's GPU.
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        let dtype = t.dtype();
        let t = t.to_dtype(DType::F32)?.contiguous()?;
        let summed = t.apply_op1_no_bwd(&SumOp { comm: &self.comm })?;
        Ok(summed.to_dtype(dtype)?)
    }
}

/// ncclAllReduce(sum) as a candle op, so that it reads and writes candle's device memory.
struct SumOp<'a> {
    comm: &'a Comm,
}

impl CustomOp1 for SumOp<'_> {
    fn name(&self) -> &'static str {
        "kd-nccl-all-reduce"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the NCCL all-reduce takes CUDA tensors only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let (start, end) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("NCCL all-reduce: not contiguous".into()))?;
        let src = s.as_cuda_slice::<f32>()?.slice(start..end);
        let device = s.device().clone();
        // SAFETY: every element is written by the all-reduce before anything reads it.
        let mut dst = unsafe { device.alloc::<f32>(end - start)? };
        self.comm
            .all_reduce(&src, &mut dst, &ReduceOp::Sum)
            .map_err(|e| candle_core::Error::Msg(format!("ncclAllReduce: {e:?}")))?;
        Ok((CudaStorage::wrap_cuda_slice(dst, device), l.shape().clone()))
    }
}
