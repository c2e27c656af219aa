//! Hand-written backward passes attached to values computed without graph tracking.
//!
//! candle records every op on a tracked path and, for a matmul, always computes the gradient of
//! both operands, even a frozen weight's. Its fast LayerNorm and last-dim softmax have no
//! backward pass at all. [`with_backward`] fixes both: the forward value is computed on detached
//! inputs with the fastest kernel available (its intermediates are freed at once, never kept for
//! a backward pass), and a closure supplies the gradient with respect to the one input that
//! needs it.
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use std::sync::Mutex;

type GradFn = dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync;
/// The gradients of three inputs from the upstream gradient.
type GradFn3 = dyn Fn(&Tensor) -> Result<[Option<Tensor>; 3]> + Send + Sync;

struct AttachBackward<G: ?Sized> {
    /// The precomputed value, handed over to the graph by the forward pass and then dropped, so
    /// that the graph keeps one copy of it (the op's result), not two.
    value: Mutex<Option<Tensor>>,
    grad_fn: Box<G>,
}

impl<G: ?Sized> AttachBackward<G> {
    /// The precomputed value as the op's CPU result, its storage moved when nobody else holds it.
    fn hand_over(&self) -> Result<(CpuStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let value = self.take_value()?;
        let shape = value.shape().clone();
        // The value is usually held by nobody else: its storage moves into the graph as is
        // (kd's patch of candle); a shared or non-f32 one is copied.
        let value = match value.into_cpu_f32_storage() {
            Ok(storage) => return Ok((storage, shape)),
            Err(value) => value,
        };
        let (storage, layout) = value.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) => Ok((s.try_clone(layout)?, shape)),
            _ => candle_core::bail!("kd-attach-backward: value and input on different devices"),
        }
    }

    fn take_value(&self) -> Result<Tensor> {
        self.value
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("kd-attach-backward ran twice".into()))
    }
}

impl CustomOp1 for AttachBackward<GradFn> {
    fn name(&self) -> &'static str {
        "kd-attach-backward"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.hand_over()
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _s: &candle_core::CudaStorage,
        _l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let value = self.take_value()?;
        let (storage, layout) = value.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("kd-attach-backward: value and input on different devices"),
        }
    }

    fn bwd(&self, _input: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some((self.grad_fn)(grad, res)?))
    }
}

/// Returns `value` (computed from `input` outside the graph) as a node whose gradient with
/// respect to `input` is `grad_fn(upstream_grad, value)`.
///
/// When `input` is not tracked (frozen embeddings before the first LoRA layer, or inference
/// under `no_grad`), the value is returned as is and no graph node is created.
pub fn with_backward<F>(input: &Tensor, value: Tensor, grad_fn: F) -> Result<Tensor>
where
    F: Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
{
    if !input.track_op() {
        return Ok(value);
    }
    let value = whole_contiguous(value)?;
    input.apply_op1(AttachBackward::<GradFn> {
        value: Mutex::new(Some(value)),
        grad_fn: Box::new(grad_fn),
    })
}

/// `value` contiguous from offset 0 (the storage is handed over, or copied, whole). Taking it by
/// value matters: a tensor returned as is keeps no second handle alive, so its storage can move.
fn whole_contiguous(value: Tensor) -> Result<Tensor> {
    if !value.is_contiguous() {
        value.contiguous()
    } else if value.layout().start_offset() != 0 {
        value.copy()
    } else {
        Ok(value)
    }
}

impl CustomOp3 for AttachBackward<GradFn3> {
    fn name(&self) -> &'static str {
        "kd-attach-backward3"
    }

    fn cpu_fwd(
        &self,
        _s1: &CpuStorage,
        _l1: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
        _s3: &CpuStorage,
        _l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.hand_over()
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        _c: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [a, b, c] = (self.grad_fn)(grad)?;
        Ok((a, b, c))
    }
}

/// [`with_backward`] for a value computed from three inputs on the CPU: `grad_fn(upstream)`
/// gives each input's gradient (`None` for one that needs none). Untracked inputs: `value` as is.
pub fn with_backward3<F>(inputs: [&Tensor; 3], value: Tensor, grad_fn: F) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<[Option<Tensor>; 3]> + Send + Sync + 'static,
{
    let [a, b, c] = inputs;
    if !(a.track_op() || b.track_op() || c.track_op()) {
        return Ok(value);
    }
    let value = whole_contiguous(value)?;
    let op = AttachBackward::<GradFn3> {
        value: Mutex::new(Some(value)),
        grad_fn: Box::new(grad_fn),
    };
    a.apply_op3(b, c, op)
}

/// An op's gradient for `input` from its elements `grad`, or `None` when `input` is not tracked
/// (a frozen value needs none, and the graph would keep it to the step's end).
pub fn grad_if_tracked(grad: Vec<f32>, input: &Tensor) -> Result<Option<Tensor>> {
    match input.track_op() {
        true => Tensor::from_vec(grad, input.shape(), input.device()).map(Some),
        false => Ok(None),
    }
}
