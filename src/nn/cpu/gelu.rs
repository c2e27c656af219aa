//! GELU (the exact erf form, HF's `gelu`) with a fused backward pass.
//!
//! candle's own GeluErf backward builds the derivative from about fourteen elementwise ops, each
//! a full pass over an FFN-sized tensor; on CPU kd computes it in one parallel pass instead, and
//! both directions use the vectorized Φ of [`super::fast_math`] instead of libm's scalar erf.
use super::fast_math::{gelu_grad_slice, gelu_slice};
use crate::nn::autograd::with_backward;
use candle_core::cpu::erf::erf_f64;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// gelu(x) = x·Φ(x), differentiable in `x`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    let saved = x.detach();
    let value = if x.device().is_cpu() && x.dtype() == DType::F32 {
        // candle's unary gelu_erf runs libm's erf on one thread; this is vectorized and spread
        // over the cores.
        saved.contiguous()?.apply_op1_no_bwd(&GeluForward)?
    } else {
        saved.gelu_erf()?
    };
    with_backward(x, value, move |grad, _| gelu_erf_backward(&saved, grad))
}

struct GeluForward;

impl CustomOp1 for GeluForward {
    fn name(&self) -> &'static str {
        "kd-gelu-erf"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = xs else {
            candle_core::bail!("kd-gelu-erf: f32 input expected")
        };
        let x = slice(x, xl);
        let mut out = super::fast_math::vec_for_overwrite(x.len());
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(o, x)| gelu_slice(x, o));
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// Elements per parallel task.
const CHUNK: usize = 16 * 1024;

/// x = gelu(x) in place, for inference paths that hold plain slices (the int8 FFN applies it to
/// each row as it quantizes the row, so this runs on the caller's thread): the FMA version of the
/// bf16 epilogue (within ~1e-6) where the CPU has AVX-512, training's elsewhere.
pub(crate) fn gelu_inference_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::features::x86_features().avx512f {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { super::bf16_matmul::gelu_in_place_avx512(x) };
    }
    let input = x.to_vec();
    gelu_slice(&input, x)
}

/// grad · gelu'(x), with gelu'(x) = Φ(x) + x·φ(x).
pub fn gelu_erf_backward(x: &Tensor, grad: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        let pdf = (x.sqr()? * -0.5)?.exp()? * FRAC_1_SQRT_2PI;
        let cdf = ((x * std::f64::consts::FRAC_1_SQRT_2)?.erf()? + 1.0)? * 0.5;
        return grad * (cdf? + (pdf? * x)?)?;
    }
    let dtype = x.dtype();
    let work = if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let x = x.to_dtype(work)?.contiguous()?;
    let grad = grad.to_dtype(work)?.contiguous()?;
    x.apply_op2_no_bwd(&grad, &GeluGrad)?.to_dtype(dtype)
}

struct GeluGrad;

fn slice<'a, T>(data: &'a [T], layout: &Layout) -> &'a [T] {
    let start = layout.start_offset();
    &data[start..start + layout.shape().elem_count()]
}

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "kd-gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = xl.shape().clone();
        if gl.shape() != xl.shape() {
            candle_core::bail!(
                "kd-gelu-grad: gradient {:?} for input {:?}",
                gl.shape(),
                shape
            );
        }
        match (xs, gs) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => {
                let (x, g) = (slice(x, xl), slice(g, gl));
                let mut out = super::fast_math::vec_for_overwrite(x.len());
                out.par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
                    .for_each(|(o, (x, g))| gelu_grad_slice(x, g, o));
                Ok((CpuStorage::F32(out), shape))
            }
            (CpuStorage::F64(x), CpuStorage::F64(g)) => {
                let (x, g) = (slice(x, xl), slice(g, gl));
                let out = x
                    .iter()
                    .zip(g)
                    .map(|(&v, &g)| {
                        let cdf = 0.5 * (1.0 + erf_f64(v * std::f64::consts::FRAC_1_SQRT_2));
                        g * (cdf + v * FRAC_1_SQRT_2PI * (-0.5 * v * v).exp())
                    })
                    .collect();
                Ok((CpuStorage::F64(out), shape))
            }
            _ => candle_core::bail!("kd-gelu-erf-grad: f32 or f64 inputs expected"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn inference_gelu_is_within_2e6_of_trainings_on_odd_lengths() {
        for len in [1usize, 15, 17, 16 * 1024 + 3] {
            let x: Vec<f32> = (0..len)
                .map(|i| (i as f32 * 0.37).sin() * 9.0 - 0.5)
                .collect();
            let mut want = vec![0f32; len];
            gelu_slice(&x, &mut want);
            let mut got = x.clone();
            gelu_inference_in_place(&mut got);
            for ((g, w), v) in got.iter().zip(&want).zip(&x) {
                assert!(
                    (g - w).abs() <= 2e-6 * v.abs().max(1.0),
                    "gelu({v}): {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn fused_backward_matches_the_formula_and_finite_differences() -> Result<()> {
        let xs: Vec<f64> = (-40..=40).map(|i| i as f64 * 0.15).collect();
        let x = Tensor::new(xs.as_slice(), &Device::Cpu)?;
        let ones = x.ones_like()?;
        let fused: Vec<f64> = gelu_erf_backward(&x, &ones)?.to_vec1()?;
        let h = 1e-6;
        for (i, &v) in xs.iter().enumerate() {
            let f = |t: f64| t * 0.5 * (1.0 + erf_f64(t / std::f64::consts::SQRT_2));
            let numeric = (f(v + h) - f(v - h)) / (2.0 * h);
            assert!(
                (fused[i] - numeric).abs() < 1e-8,
                "x={v}: {} vs {numeric}",
                fused[i]
            );
        }
        let x32 = x.to_dtype(DType::F32)?;
        let ours: Vec<f32> = x32
            .contiguous()?
            .apply_op1_no_bwd(&GeluForward)?
            .to_vec1()?;
        let candle: Vec<f32> = x32.gelu_erf()?.to_vec1()?;
        for (a, b) in ours.iter().zip(&candle) {
            // fast_math's Φ against libm's erf: a few f32 ulps of the output.
            assert!(
                (a - b).abs() <= 3e-7 * b.abs().max(1.0),
                "{a} vs candle's {b}"
            );
        }
        let f32s: Vec<f32> = gelu_erf_backward(&x32, &x32.ones_like()?)?.to_vec1()?;
        for (a, b) in f32s.iter().zip(&fused) {
            assert!((*a as f64 - b).abs() < 1e-6);
        }
        Ok(())
    }
}
