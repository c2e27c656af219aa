//! A frozen linear layer plus a trainable low-rank update, y = x·Wᵀ + b + s·(dropout(x)·Aᵀ)·Bᵀ
//! (LoRA), as one differentiable op on the CPU's native bf16 kernels.
//!
//! As separate ops, candle's graph keeps until the step's backward pass the dropped copy of x
//! (the A product's input), the base layer's output and the update (the sum's inputs): three
//! activations of the layer's width each, twice a layer (query and value). Here the op keeps the
//! rank-r intermediate s·dropout(x)·Aᵀ only and recomputes the dropped x (a hashed mask,
//! [`super::cpu::dropout`]) in the backward. The products are the separate ops' own; sums of the
//! same terms may round in another order.
use super::autograd::with_backward3;
use super::cpu::dropout::hashed_dropout_at;
use super::FrozenLinear;
use candle_core::{DType, Result, Tensor};
use rand::Rng;

/// x·Wᵀ + b + scaling·(dropout(x)·Aᵀ)·Bᵀ for `x` of shape (..., in), `a` (r × in) and `b`
/// (out × r), differentiable in x, A and B; dropout at `p` when `rng` is given. `None` where the
/// op does not apply (the base off the native kernel, anything not f32, or the tensor path asked
/// for): the caller composes the ops.
pub fn adapted_linear<R: Rng>(
    x: &Tensor,
    base: &FrozenLinear,
    a: &Tensor,
    b: &Tensor,
    scaling: f64,
    p: f32,
    rng: Option<&mut R>,
) -> Result<Option<Tensor>> {
    let Some(native) = base.native() else {
        return Ok(None);
    };
    let f32s = [x, a, b].iter().all(|t| t.dtype() == DType::F32);
    if !f32s || super::attention::tensor_path_asked() {
        return Ok(None);
    }
    let (rank, in_dim) = a.dims2()?;
    let (out_dim, _) = b.dims2()?;
    let rows = x.elem_count() / in_dim.max(1);
    let dropout = match rng {
        Some(rng) => super::ops::dropout_mask(x.elem_count(), p, rng)?,
        None => None,
    };
    let dropped = move |x: &Tensor| -> Result<Tensor> {
        let x = x.reshape((rows, in_dim))?;
        match dropout {
            Some((seed, p, first)) => hashed_dropout_at(&x, p, seed, first as u64),
            None => Ok(x),
        }
    };
    let (xs, a_det, b_det) = (x.detach(), a.detach(), b.detach());
    let base_out = native.forward(&xs)?;
    let low = dropped(&xs)?.matmul(&a_det.t()?)?.affine(scaling, 0.0)?;
    let update = low.matmul(&b_det.t()?)?.reshape(base_out.shape())?;
    let value = (base_out + update)?;
    let (native, x_shape) = (native.clone(), x.shape().clone());
    let tracks = [x, a, b].map(|t| t.track_op());
    with_backward3([x, a, b], value, move |grad| {
        let grad = grad.to_dtype(DType::F32)?;
        let g = grad.reshape((rows, out_dim))?;
        let [x_tracked, a_tracked, b_tracked] = tracks;
        let grad_b = match b_tracked {
            true => Some(g.t()?.matmul(&low)?),
            false => None,
        };
        let grad_low = g.matmul(&b_det)?.affine(scaling, 0.0)?;
        let grad_a = match a_tracked {
            true => Some(grad_low.t()?.matmul(&dropped(&xs)?)?),
            false => None,
        };
        let grad_x = if x_tracked {
            // Dropout's backward is its own mask applied to the gradient.
            let through_a = dropped(&grad_low.matmul(&a_det)?)?;
            Some((native.input_grad(&grad)? + through_a.reshape(x_shape.clone())?)?)
        } else {
            None
        };
        debug_assert!(grad_a.as_ref().is_none_or(|g| g.dims() == [rank, in_dim]));
        Ok([grad_x, grad_a, grad_b])
    })
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::test_util::max_relative_diff;
    use candle_core::{Device, Var};
    use rand::SeedableRng;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 37 + seed * 11) % 29) as f32 - 14.0) / 20.0)
            .collect()
    }

    /// Values and the gradients of x, A and B against the separate ops (base layer, dropout,
    /// two products, the sum), with and without dropout, on odd sizes; where the CPU has no
    /// native bf16 kernel the op does not apply and says so.
    #[test]
    fn matches_the_separate_ops() -> Result<()> {
        let dev = Device::Cpu;
        let (rows, in_dim, out_dim, rank) = (9, 13, 11, 3);
        let w = Tensor::from_vec(values(out_dim * in_dim, 1), (out_dim, in_dim), &dev)?;
        let bias = Tensor::from_vec(values(out_dim, 2), out_dim, &dev)?;
        let base = FrozenLinear::new(w.to_dtype(DType::BF16)?, Some(bias.to_dtype(DType::BF16)?))?;
        let x = Var::from_vec(values(rows * in_dim, 3), (1, rows, in_dim), &dev)?;
        let a = Var::from_vec(values(rank * in_dim, 4), (rank, in_dim), &dev)?;
        let b = Var::from_vec(values(out_dim * rank, 5), (out_dim, rank), &dev)?;
        let weights = Tensor::from_vec(values(rows * out_dim, 6), (1, rows, out_dim), &dev)?;
        for p in [0.0f32, 0.25] {
            let mut r1 = rand::rngs::StdRng::seed_from_u64(3);
            let mut r2 = rand::rngs::StdRng::seed_from_u64(3);
            let Some(fused) = adapted_linear(&x, &base, &a, &b, 2.5, p, Some(&mut r1))? else {
                assert!(
                    base.native().is_none(),
                    "the op applies wherever the kernel does"
                );
                return Ok(());
            };
            let dropped = crate::nn::dropout(&x, p, &mut r2)?.reshape((rows, in_dim))?;
            let update = dropped.matmul(&a.t()?)?.affine(2.5, 0.0)?.matmul(&b.t()?)?;
            let composed = (base.forward(&x)? + update.reshape((1, rows, out_dim))?)?;
            let diff = max_relative_diff(&fused, &composed);
            assert!(diff < 1e-6, "p = {p}: values differ by {diff}");
            let gf = (&fused * &weights)?.sum_all()?.backward()?;
            let gc = (&composed * &weights)?.sum_all()?.backward()?;
            for (name, t) in [
                ("x", x.as_tensor()),
                ("A", a.as_tensor()),
                ("B", b.as_tensor()),
            ] {
                let (f, c) = (
                    gf.get(t).expect("a gradient"),
                    gc.get(t).expect("a gradient"),
                );
                let diff = max_relative_diff(f, c);
                assert!(diff < 1e-6, "p = {p}: d{name} differs by {diff}");
            }
        }
        Ok(())
    }
}
