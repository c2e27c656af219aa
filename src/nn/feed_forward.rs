//! The transformer's feed-forward block, output(gelu(intermediate(x))), as one differentiable op
//! over frozen linear layers on the CPU's native bf16 kernels.
//!
//! Built from three ops, candle's graph keeps each op's input until the step's backward pass:
//! the intermediate pre-activation h (which GELU's backward needs) and GELU's output (which the
//! frozen output layer's backward does not: its input gradient needs only its weight). Those are
//! the two widest activations of a layer (4× the hidden size per token). Here the op keeps h and
//! drops GELU's output as soon as the output layer has read it. The arithmetic is the three ops'
//! own (the same kernels in the same order), so values and gradients are the same bits.
use super::autograd::with_backward;
use super::cpu::gelu::gelu_erf_backward;
use super::FrozenLinear;
use candle_core::{DType, Result, Tensor};

/// output(gelu(intermediate(x))) with the exact (erf) GELU, differentiable in `x`; `None` where
/// the op does not apply (either layer off the native bf16 kernel, or `x` not f32): the caller
/// composes the three ops.
pub fn frozen_feed_forward(
    x: &Tensor,
    intermediate: &FrozenLinear,
    output: &FrozenLinear,
) -> Result<Option<Tensor>> {
    let (Some(first), Some(second)) = (intermediate.native(), output.native()) else {
        return Ok(None);
    };
    if x.dtype() != DType::F32 {
        return Ok(None);
    }
    let h = first.forward(&x.detach())?;
    // `h` is not tracked, so this is GELU's forward alone.
    let g = super::gelu_erf(&h)?;
    let y = second.forward(&g)?;
    drop(g);
    let (first, second) = (first.clone(), second.clone());
    Ok(Some(with_backward(x, y, move |grad, _| {
        let dg = second.input_grad(&grad.to_dtype(DType::F32)?)?;
        first.input_grad(&gelu_erf_backward(&h, &dg)?)
    })?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn linear(out_dim: usize, in_dim: usize, seed: usize) -> Result<FrozenLinear> {
        let values = |n: usize, k: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 37 + k * 11 + seed) % 29) as f32 - 14.0) / 40.0)
                .collect()
        };
        let w = Tensor::from_vec(values(out_dim * in_dim, 1), (out_dim, in_dim), &Device::Cpu)?;
        let b = Tensor::from_vec(values(out_dim, 2), out_dim, &Device::Cpu)?;
        FrozenLinear::new(w.to_dtype(DType::BF16)?, Some(b.to_dtype(DType::BF16)?))
    }

    /// The same bits as the three ops, forward and backward, on odd sizes (where the CPU has a
    /// native bf16 kernel; elsewhere the op does not apply and says so).
    #[test]
    fn returns_the_three_ops_bits() -> Result<()> {
        let (rows, hidden, inner) = (7, 13, 29);
        let (first, second) = (linear(inner, hidden, 3)?, linear(hidden, inner, 5)?);
        let data: Vec<f32> = (0..rows * hidden)
            .map(|i| ((i * 7) % 17) as f32 / 5.0 - 1.6)
            .collect();
        let x = Var::from_vec(data, (1, rows, hidden), &Device::Cpu)?;
        let Some(fused) = frozen_feed_forward(&x, &first, &second)? else {
            assert!(
                first.native().is_none(),
                "the op applies wherever the kernels do"
            );
            return Ok(());
        };
        let composed = second.forward(&crate::nn::gelu_erf(&first.forward(&x)?)?)?;
        let weights = Tensor::from_vec(
            (0..rows * hidden)
                .map(|i| ((i * 5) % 7) as f32 - 3.0)
                .collect::<Vec<_>>(),
            (1, rows, hidden),
            &Device::Cpu,
        )?;
        assert_eq!(fused.to_vec3::<f32>()?, composed.to_vec3::<f32>()?);
        let gf = (&fused * &weights)?.sum_all()?.backward()?;
        let gc = (&composed * &weights)?.sum_all()?.backward()?;
        let grad = |g: &candle_core::backprop::GradStore| -> Result<Vec<Vec<Vec<f32>>>> {
            g.get(&x).expect("x gets a gradient").to_vec3::<f32>()
        };
        assert_eq!(grad(&gf)?, grad(&gc)?);
        Ok(())
    }
}
