//! Differentiable building blocks: LayerNorm, softmax, frozen linear layers and dropout.
//!
//! Each forward pass runs candle's fused kernel on detached inputs and attaches the gradient with
//! respect to the activations by hand (see [`super::autograd`]). Frozen weights never receive a
//! gradient, so no work is spent on one. Normalisation and softmax run in f32 whatever the
//! activation dtype, as mixed-precision training requires.
use super::autograd::with_backward;
use super::cpu::attention_softmax::{MaskedSoftmax, MaskedSoftmaxGrad};
use super::cpu::native_linear::NativeLinear;
use candle_core::{DType, Device, Result, Tensor, D};
use rand::Rng;
use std::sync::Arc;

/// The precision normalisation, softmax and losses run in: f32, or f64 for an f64 model
/// (finite-difference tests).
pub fn compute_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// The dtype activations flow in for frozen weights of `weight_dtype` on `device`: f32 for bf16
/// weights on a CPU with a native bf16 kernel (products in bf16 there, everything else in f32,
/// as under PyTorch's CPU autocast); the weights' dtype otherwise.
pub fn activation_dtype(weight_dtype: DType, device: &Device) -> DType {
    match super::cpu::native_linear::kernel_for(weight_dtype, device) {
        Some(_) => DType::F32,
        None => weight_dtype,
    }
}

/// LayerNorm over the last dimension with frozen `weight` and `bias`, differentiable in `x`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let cd = compute_dtype(dtype);
    let saved = x.detach();
    let x32 = saved.to_dtype(cd)?;
    let w32 = weight.to_dtype(cd)?;
    let b32 = bias.to_dtype(cd)?;
    let value = if cd == DType::F64 {
        candle_nn::ops::layer_norm_slow(&x32, &w32, &b32, eps as f32)?
    } else {
        candle_nn::ops::layer_norm(&x32.contiguous()?, &w32, &b32, eps as f32)?
    }
    // Consumed here, so no second handle keeps the value's storage from moving into the graph.
    .to_dtype(dtype)?;
    drop(x32);
    // The backward recomputes the statistics from `x` (which the graph keeps anyway) rather
    // than holding an f32 copy of it.
    with_backward(x, value, move |grad, _| {
        let x32 = saved.to_dtype(cd)?;
        layer_norm_input_grad(&x32, &w32, eps, &grad.to_dtype(cd)?)?.to_dtype(dtype)
    })
}

/// d LayerNorm(x) / dx applied to `grad`:
/// dx = (g − mean(g) − x̂·mean(g·x̂)) / σ, with g = grad·γ and x̂ = (x − μ)/σ.
fn layer_norm_input_grad(x: &Tensor, weight: &Tensor, eps: f64, grad: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let inv_std = (var + eps)?.sqrt()?.recip()?;
    let x_hat = centered.broadcast_mul(&inv_std)?;
    let g = grad.broadcast_mul(weight)?;
    let g_mean = g.mean_keepdim(D::Minus1)?;
    let gx_mean = (&g * &x_hat)?.mean_keepdim(D::Minus1)?;
    g.broadcast_sub(&g_mean)?
        .sub(&x_hat.broadcast_mul(&gx_mean)?)?
        .broadcast_mul(&inv_std)
}

/// Attention probabilities softmax(scale·scores + mask_bias) over the last dimension, computed
/// in f32 and differentiable in `scores`. Scaling and masking happen inside the detached forward,
/// so the graph keeps only the scores and the probabilities.
pub fn masked_softmax(scores: &Tensor, scale: f64, mask_bias: &Tensor) -> Result<Tensor> {
    if scores.device().is_cpu() && scores.dtype() == DType::F32 {
        return fused_masked_softmax(scores, scale as f32, mask_bias);
    }
    let dtype = scores.dtype();
    let cd = compute_dtype(dtype);
    let logits =
        (scores.detach().to_dtype(cd)? * scale)?.broadcast_add(&mask_bias.to_dtype(cd)?)?;
    let probs = candle_nn::ops::softmax_last_dim(&logits)?;
    drop(logits);
    // In f32 the op's result is exactly the probabilities; in bf16 keep an f32 copy for the
    // backward so the gradient is not computed from rounded probabilities.
    let saved = (dtype != cd).then(|| probs.clone());
    let value = probs.to_dtype(dtype)?;
    with_backward(scores, value, move |grad, res| {
        // d/ds = scale · p · (g − Σ g·p)
        let p = match &saved {
            Some(p) => p.clone(),
            None => res.clone(),
        };
        let g = grad.to_dtype(cd)?;
        let dot = (&g * &p)?.sum_keepdim(D::Minus1)?;
        ((g.broadcast_sub(&dot)? * &p)? * scale)?.to_dtype(dtype)
    })
}

/// [`masked_softmax`] for f32 on the CPU: one pass per row each way
/// ([`super::attention_softmax`]). The mask must be (batch, 1, 1, keys), as
/// `encoder::attention_bias` builds it; the other paths broadcast any shape.
fn fused_masked_softmax(scores: &Tensor, scale: f32, mask_bias: &Tensor) -> Result<Tensor> {
    let mask = mask_bias.to_dtype(DType::F32)?.contiguous()?;
    let value = scores
        .detach()
        .contiguous()?
        .apply_op2_no_bwd(&mask, &MaskedSoftmax { scale })?;
    with_backward(scores, value, move |grad, probs| {
        grad.contiguous()?
            .apply_op2_no_bwd(probs, &MaskedSoftmaxGrad { scale })
    })
}

/// A linear layer whose weight and bias are frozen: y = x·Wᵀ + b, differentiable in `x` only.
#[derive(Clone, Debug)]
pub struct FrozenLinear {
    weight: Weight,
    bias: Option<Tensor>,
}

/// Where a frozen layer's (out, in) weight lives: one copy, either way.
#[derive(Clone, Debug)]
enum Weight {
    /// A tensor, for candle's matmul.
    Tensor(Tensor),
    /// Packed for the CPU's native bf16 kernel (bf16 weights on a CPU that has one), and nowhere
    /// else (keeping the tensor too cost roberta-base 170 MB).
    Native(Arc<NativeLinear>),
}

impl FrozenLinear {
    /// Wraps a weight of shape (out, in) and an optional bias of shape (out,).
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let weight = match NativeLinear::for_weight(&weight, bias.as_ref())? {
            Some(native) => Weight::Native(native),
            None => Weight::Tensor(weight),
        };
        Ok(Self { weight, bias })
    }

    /// Loads `weight` and `bias` under `vb` (HF's nn.Linear names).
    pub fn load(vb: candle_nn::VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = vb.get(out_dim, "bias")?;
        Self::new(weight, Some(bias))
    }

    /// The (out, in) weight (unpacked from the native kernel's layout where only that holds it).
    pub fn weight(&self) -> Result<Tensor> {
        match &self.weight {
            Weight::Tensor(w) => Ok(w.clone()),
            Weight::Native(native) => native.weight(),
        }
    }

    /// The weight's dtype.
    pub fn dtype(&self) -> DType {
        match &self.weight {
            Weight::Tensor(w) => w.dtype(),
            Weight::Native(_) => DType::BF16,
        }
    }

    /// The device the weight is on.
    pub fn device(&self) -> Device {
        match &self.weight {
            Weight::Tensor(w) => w.device().clone(),
            Weight::Native(_) => Device::Cpu,
        }
    }

    /// The (out,) bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The weight packed for the CPU's native bf16 kernel, when it runs on one.
    pub fn native(&self) -> Option<&Arc<NativeLinear>> {
        match &self.weight {
            Weight::Native(native) => Some(native),
            Weight::Tensor(_) => None,
        }
    }

    /// Input and output widths.
    pub fn dims(&self) -> (usize, usize) {
        match &self.weight {
            Weight::Tensor(w) => {
                let (out_dim, in_dim) = w.dims2().expect("linear weight is 2-D");
                (in_dim, out_dim)
            }
            Weight::Native(native) => native.dims(),
        }
    }

    /// Applies the layer to `x` of shape (..., in).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let (Some(native), DType::F32) = (self.native(), x.dtype()) {
            let value = native.forward(&x.detach())?;
            let native = native.clone();
            return with_backward(x, value, move |grad, _| {
                native.input_grad(&grad.to_dtype(DType::F32)?)
            });
        }
        // (A native layer reaches here only with non-f32 input, which kd's activations never
        // are on such a CPU; it then unpacks its weight for candle's matmul.)
        let weight = self.weight()?;
        let value = linear_detached(&x.detach(), &weight, self.bias.as_ref())?;
        let in_shape = x.shape().clone();
        with_backward(x, value, move |grad, _| {
            let out_dim = weight.dim(0)?;
            let rows = grad.elem_count() / out_dim;
            grad.reshape((rows, out_dim))?
                .matmul(&weight)?
                .reshape(in_shape.clone())
        })
    }
}

/// x·Wᵀ + b with x flattened to 2-D so that a single GEMM does the work.
fn linear_detached(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (out_dim, in_dim) = weight.dims2()?;
    let mut out_shape = x.dims().to_vec();
    let rows = x.elem_count() / in_dim;
    *out_shape.last_mut().expect("linear input has a last dim") = out_dim;
    let y = x.reshape((rows, in_dim))?.matmul(&weight.t()?)?;
    let y = match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    y.reshape(out_shape)
}

/// Inverted dropout. On CPU the mask comes from `rng` (kd's seeded RNG, so runs are
/// reproducible): for f32 one seed per call and a hashed mask ([`super::dropout`]), otherwise one
/// draw per element. On a GPU it is drawn on the device (seeded once per run with
/// `Device::set_seed`), so no mask crosses the bus. Identity when `p` is 0.
///
/// Inside a [`dropout_rows`] window the f32 CPU mask is the one these rows get in the whole
/// batch, so a data-parallel rank drops what one process training the whole batch drops.
pub fn dropout<R: Rng>(x: &Tensor, p: f32, rng: &mut R) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let first = first_element(x.elem_count())?;
        return super::cpu::dropout::hashed_dropout_at(x, p, rng.random::<u64>(), first);
    }
    let scale = 1.0 / (1.0 - p);
    let mask = if x.device().is_cpu() {
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| if rng.random::<f32>() >= p { scale } else { 0.0 })
            .collect();
        Tensor::from_vec(mask, x.shape(), x.device())?
    } else {
        let uniform = Tensor::rand(0f32, 1f32, x.shape(), x.device())?;
        (uniform.ge(p as f64)?.to_dtype(DType::F32)? * scale as f64)?
    };
    x * mask.to_dtype(x.dtype())?
}

/// The hashed mask [`dropout`] would draw for an f32 CPU tensor of `n` elements at drop
/// probability `p`, for a kernel that drops inside its own loop: (seed, p, index of this batch's
/// first element in the whole batch's); `None` at p = 0 (and no draw from `rng`, as `dropout`).
pub(crate) fn dropout_mask<R: Rng>(
    n: usize,
    p: f32,
    rng: &mut R,
) -> Result<super::cpu::dropout::DropoutMask> {
    if p <= 0.0 {
        return Ok(None);
    }
    let start = first_element(n)?;
    // Kernels index the mask in u32 from `first`: past 2^32 elements it would repeat.
    if start + n as u64 > u32::MAX as u64 + 1 {
        candle_core::bail!("kd-hashed-dropout: past 2^32 elements");
    }
    Ok(Some((rng.random::<u64>(), p, start as u32)))
}

thread_local! {
    /// The rows of the whole batch this thread's batch is: (first row, rows).
    static ROWS: std::cell::Cell<Option<(usize, usize)>> = const { std::cell::Cell::new(None) };
}

/// While it lives, dropout on this thread treats its batch as rows `first..first + rows` of a
/// larger batch padded to the same length ([`dropout_rows`]).
#[must_use]
pub struct RowWindow(Option<(usize, usize)>);

impl Drop for RowWindow {
    fn drop(&mut self) {
        ROWS.with(|r| r.set(self.0));
    }
}

/// Marks the batch this thread runs next as rows `first..first + rows` of the whole batch
/// (a data-parallel rank's slice). Every dropout input holds whole rows, outermost, so element
/// `i` of the slice is element `first·(n/rows) + i` of the whole batch's tensor, whose mask is
/// then drawn: the rank drops exactly what one process training the whole batch drops.
pub fn dropout_rows(first: usize, rows: usize) -> RowWindow {
    RowWindow(ROWS.with(|r| r.replace(Some((first, rows)))))
}

/// Where a dropout input of `n` elements starts in the whole batch's tensor.
fn first_element(n: usize) -> Result<u64> {
    match ROWS.with(|r| r.get()) {
        None | Some((0, _)) => Ok(0),
        Some((first, rows)) if rows > 0 && n.is_multiple_of(rows) => {
            Ok((first * (n / rows)) as u64)
        }
        Some((_, rows)) => candle_core::bail!("dropout over {n} elements, not {rows} whole rows"),
    }
}
