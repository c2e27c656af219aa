//! A sublayer's residual connection, LayerNorm(dropout(x) + residual), as one differentiable op
//! on the CPU in f32 ([`dropout_add_layer_norm`]).
//!
//! As three ops, candle's graph keeps the dropout's input, the dropped copy and the sum until the
//! step's backward pass; this op keeps only its two inputs (which the graph holds anyway) and
//! recomputes the sum and the mask in the backward (kernels in [`super::cpu::layer_norm`]).
use super::autograd::grad_if_tracked;
use super::cpu::dropout::DropoutMask;
use super::cpu::layer_norm;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor};
use rand::Rng;

/// LayerNorm(dropout(x) + residual) with frozen `weight` and `bias`, differentiable in `x` and
/// `residual` (both (..., hidden)); dropout at `p` when `rng` is given. `None` where the op does
/// not apply (not f32 on the CPU, or the tensor path asked for): the caller composes the ops.
pub fn dropout_add_layer_norm<R: Rng>(
    x: &Tensor,
    residual: &Tensor,
    p: f64,
    rng: Option<&mut R>,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Option<Tensor>> {
    let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if !cpu_f32(x) || !cpu_f32(residual) || super::attention::tensor_path_asked() {
        return Ok(None);
    }
    if x.shape() != residual.shape() {
        candle_core::bail!("residual {:?} for x {:?}", residual.shape(), x.shape());
    }
    let dropout = match rng {
        Some(rng) => super::ops::dropout_mask(x.elem_count(), p as f32, rng)?,
        None => None,
    };
    let f32s = |t: &Tensor| t.to_dtype(DType::F32)?.to_vec1::<f32>();
    let op = ResidualNorm {
        dropout,
        gamma: f32s(weight)?,
        beta: f32s(bias)?,
        eps: eps as f32,
    };
    Ok(Some(
        x.contiguous()?.apply_op2(&residual.contiguous()?, op)?,
    ))
}

struct ResidualNorm {
    dropout: DropoutMask,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

fn data<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    super::cpu::contiguous_f32(storage, layout, "kd-residual-layer-norm")
}

impl CustomOp2 for ResidualNorm {
    fn name(&self) -> &'static str {
        "kd-residual-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, r) = (data(xs, xl)?, data(rs, rl)?);
        if xl.dims().last() != Some(&self.gamma.len()) {
            candle_core::bail!("kd-residual-layer-norm: rows of {}", self.gamma.len());
        }
        let out = layer_norm::dropout_add_layer_norm(
            x,
            r,
            self.dropout,
            &self.gamma,
            &self.beta,
            self.eps,
        );
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        residual: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (gs, gl) = grad.storage_and_layout();
        let (xs, xl) = x.storage_and_layout();
        let (rs, rl) = residual.storage_and_layout();
        let [dx, dr] = match (&*xs, &*rs, &*gs) {
            (Storage::Cpu(xs), Storage::Cpu(rs), Storage::Cpu(gs)) => {
                layer_norm::dropout_add_layer_norm_grad(
                    data(xs, xl)?,
                    data(rs, rl)?,
                    self.dropout,
                    &self.gamma,
                    self.eps,
                    data(gs, gl)?,
                )
            }
            _ => candle_core::bail!("kd-residual-layer-norm: CPU tensors expected"),
        };
        // The first layer's residual is the frozen embeddings' output: no gradient to keep.
        Ok((grad_if_tracked(dx, x)?, grad_if_tracked(dr, residual)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::test_util::max_relative_diff;
    use candle_core::{Device, Var};
    use rand::SeedableRng;

    /// Values and both gradients against dropout, add and LayerNorm as tensor ops (the same
    /// mask: the same hash of the same indices), on odd sizes, with and without dropout.
    #[test]
    fn matches_the_composed_ops_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        for (rows, width) in [(3, 7), (5, 17), (33, 40)] {
            let var = |seed: u64| -> Result<Var> {
                let mut r = rand::rngs::StdRng::seed_from_u64(seed);
                let data: Vec<f32> = (0..rows * width)
                    .map(|_| r.random::<f32>() * 4.0 - 2.0)
                    .collect();
                Var::from_vec(data, (1, rows, width), &dev)
            };
            let (x, residual) = (var(1)?, var(2)?);
            let gamma = Tensor::from_vec(
                (0..width)
                    .map(|i| 0.5 + (i % 5) as f32 / 4.0)
                    .collect::<Vec<_>>(),
                width,
                &dev,
            )?;
            let beta = Tensor::from_vec(
                (0..width).map(|i| (i % 3) as f32 - 1.0).collect::<Vec<_>>(),
                width,
                &dev,
            )?;
            let weights = Tensor::from_vec(
                (0..rows * width)
                    .map(|i| ((i * 7) % 11) as f32 - 5.0)
                    .collect::<Vec<_>>(),
                (1, rows, width),
                &dev,
            )?;
            for p in [0.0, 0.3] {
                let mut r1 = rand::rngs::StdRng::seed_from_u64(9);
                let mut r2 = rand::rngs::StdRng::seed_from_u64(9);
                let fused =
                    dropout_add_layer_norm(&x, &residual, p, Some(&mut r1), &gamma, &beta, 1e-5)?
                        .expect("f32 on the CPU");
                let dropped = crate::nn::dropout(&x, p as f32, &mut r2)?;
                let composed =
                    crate::nn::layer_norm(&(dropped + residual.as_tensor())?, &gamma, &beta, 1e-5)?;
                let diff = max_relative_diff(&fused, &composed);
                assert!(
                    diff < 1e-5,
                    "{rows}x{width} p = {p}: values differ by {diff}"
                );
                let gf = (&fused * &weights)?.sum_all()?.backward()?;
                let gc = (&composed * &weights)?.sum_all()?.backward()?;
                for (name, t) in [("x", &x), ("residual", &residual)] {
                    let (a, c) = (
                        gf.get(t).expect("a gradient"),
                        gc.get(t).expect("a gradient"),
                    );
                    let diff = max_relative_diff(a, c);
                    assert!(
                        diff < 1e-5,
                        "{rows}x{width} p = {p}: d{name} differs by {diff}"
                    );
                }
            }
        }
        Ok(())
    }
}
