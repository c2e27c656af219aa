//! The MPI world (rsmpi): the ranks `mpirun`/`srun` started. MPI is initialised "funneled": only
//! the thread that initialised it (main's) calls MPI, which every operation checks; the compute
//! threads (rayon) never do, and the watchdog only reads a mutex.
use super::watchdog::Waiting;
use super::{Collective, DistributedError};
use crate::error::Result;
#[cfg(feature = "cuda")]
use candle_core::Tensor;
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use std::thread::ThreadId;

/// MPI counts are C ints: larger buffers are sent in pieces of this many elements.
const PIECE: usize = 1 << 30;

/// The ranks of `MPI_COMM_WORLD`.
pub struct MpiWorld {
    comm: SimpleCommunicator,
    rank: usize,
    size: usize,
    owner: ThreadId,
    /// The NCCL communicator, made on the first all-reduce of a CUDA tensor.
    #[cfg(feature = "cuda")]
    nccl: std::sync::OnceLock<super::nccl::Nccl>,
}

// SAFETY: MPI handles are plain integers or pointers owned by the MPI library; every use goes
// through `MpiWorld::on_owner`, so MPI is only ever entered from the thread that initialised
// it (MPI_THREAD_FUNNELED), whichever thread holds the reference.
unsafe impl Send for MpiWorld {}
unsafe impl Sync for MpiWorld {}

impl MpiWorld {
    /// Initialises MPI (funneled) and returns its universe (finalised when dropped) and world.
    pub fn init() -> std::result::Result<(Universe, Self), DistributedError> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| DistributedError::Init("MPI was already initialised".into()))?;
        let comm = universe.world();
        let (rank, size) = (comm.rank() as usize, comm.size() as usize);
        let world = Self {
            comm,
            rank,
            size,
            owner: std::thread::current().id(),
            #[cfg(feature = "cuda")]
            nccl: std::sync::OnceLock::new(),
        };
        tracing::debug!(rank, size, "MPI world");
        Ok((universe, world))
    }

    pub fn rank_size(&self) -> (usize, usize) {
        (self.rank, self.size)
    }

    /// Refuses a call from another thread than MPI's.
    fn on_owner(&self) -> std::result::Result<(), DistributedError> {
        if std::thread::current().id() == self.owner {
            Ok(())
        } else {
            Err(DistributedError::WrongThread)
        }
    }

    /// Rank 0's `buf` on every rank, in pieces MPI's int counts can hold.
    fn broadcast_slice<T: Equivalence>(&self, buf: &mut [T]) {
        let root = self.comm.process_at_rank(0);
        for piece in buf.chunks_mut(PIECE) {
            root.broadcast_into(piece);
        }
    }

    /// Every rank's element count, in rank order.
    fn counts(&self, len: usize) -> Result<Vec<i32>> {
        let mine = i32::try_from(len).map_err(|_| {
            DistributedError::Mismatch(format!("a gather of {len} floats is past MPI's counts"))
        })?;
        let mut counts = vec![0i32; self.size];
        self.comm.all_gather_into(&mine, &mut counts[..]);
        Ok(counts)
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        self.on_owner()?;
        let _w = Waiting::on(format!("an all-reduce of {} floats", buf.len()));
        let send = buf.to_vec();
        for (s, r) in send.chunks(PIECE).zip(buf.chunks_mut(PIECE)) {
            self.comm.all_reduce_into(s, r, SystemOperation::sum());
        }
        Ok(())
    }

    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        self.on_owner()?;
        let _w = Waiting::on(format!("a gather of {} floats", local.len()));
        let counts = self.counts(local.len())?;
        let displs: Vec<i32> = counts
            .iter()
            .scan(0i32, |at, &c| {
                let d = *at;
                *at = at.saturating_add(c);
                Some(d)
            })
            .collect();
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total > i32::MAX as usize {
            return Err(DistributedError::Mismatch(format!(
                "a gather of {total} floats is past MPI's counts"
            ))
            .into());
        }
        let mut out = vec![0f32; total];
        let mut parts = PartitionMut::new(&mut out[..], &counts[..], &displs[..]);
        self.comm.all_gather_varcount_into(local, &mut parts);
        Ok(out)
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) -> Result<()> {
        self.on_owner()?;
        let _w = Waiting::on("a broadcast from rank 0");
        let mut len = bytes.len() as u64;
        self.comm.process_at_rank(0).broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        self.broadcast_slice(&mut bytes[..]);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.on_owner()?;
        let _w = Waiting::on("a barrier");
        self.comm.barrier();
        Ok(())
    }

    fn transport(&self) -> String {
        match cfg!(feature = "cuda") {
            true => "MPI (NCCL for CUDA tensors, its id sent over MPI)".into(),
            false => "MPI".into(),
        }
    }

    #[cfg(feature = "cuda")]
    fn all_reduce_tensor(&self, t: &Tensor) -> Result<Tensor> {
        if self.size == 1 || !t.device().is_cuda() {
            return host_all_reduce(self, t);
        }
        self.on_owner()?;
        if self.nccl.get().is_none() {
            let made = super::nccl::Nccl::new(self, t.device())?;
            let _ = self.nccl.set(made);
        }
        let nccl = self.nccl.get().expect("set above");
        let _w = Waiting::on(format!("an NCCL all-reduce of {} floats", t.elem_count()));
        nccl.all_reduce_sum(t)
    }

    fn abort(&self, code: i32) -> ! {
        self.comm.abort(code)
    }
}

/// The trait's host all-reduce (what a world without NCCL does with any tensor).
#[cfg(feature = "cuda")]
fn host_all_reduce(w: &MpiWorld, t: &Tensor) -> Result<Tensor> {
    let mut host = t
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?;
    w.all_reduce_sum(&mut host)?;
    Ok(Tensor::from_vec(host, t.shape(), t.device())?.to_dtype(t.dtype())?)
}
