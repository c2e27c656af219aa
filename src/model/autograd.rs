//! Hand-written backward passes attached to values computed without graph tracking.
//!
//! candle records every op on a tracked path and, for a matmul, always computes the gradient of
//! both operands, even a frozen weight's. Its fast LayerNorm and last-dim softmax have no
//! backward pass at all. [`with_backward`] fixes both: the forward value is computed on detached
//! inputs with the fastest kernel available, and a closure supplies the gradient with respect to
//! the one input that needs it.
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

type GradFn = dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync;

struct AttachBackward {
    grad_fn: Box<GradFn>,
}

impl CustomOp2 for AttachBackward {
    fn name(&self) -> &'static str {
        "kd-attach-backward"
    }

    // The op's value is its second argument (already computed); copying the storage is the price
    // of entering candle's graph, far cheaper than the matmuls it saves.
    fn cpu_fwd(
        &self,
        _s1: &CpuStorage,
        _l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        Ok((s2.try_clone(l2)?, l2.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _s1: &candle_core::CudaStorage,
        _l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        Ok((s2.try_clone(l2)?, l2.shape().clone()))
    }

    fn bwd(
        &self,
        _input: &Tensor,
        _value: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some((self.grad_fn)(grad)?), None))
    }
}

/// Returns `value` (computed from `input` outside the graph) as a node whose gradient with
/// respect to `input` is `grad_fn(upstream_grad)`.
///
/// When `input` is not tracked (e.g. the frozen embeddings before the first LoRA layer), the
/// value is returned as is and no graph node is created.
pub fn with_backward<F>(input: &Tensor, value: Tensor, grad_fn: F) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static,
{
    if !input.track_op() {
        return Ok(value);
    }
    // try_clone copies the whole buffer, so the value must start at offset 0 and be contiguous.
    let value = value.contiguous()?;
    let value = if value.layout().start_offset() != 0 {
        value.copy()?
    } else {
        value
    };
    input.apply_op2(
        &value,
        AttachBackward {
            grad_fn: Box::new(grad_fn),
        },
    )
}
