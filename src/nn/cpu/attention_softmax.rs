//! Attention probabilities on the CPU in one pass per row: softmax(scale·scores + mask) forward
//! and its gradient, both f32.
//!
//! Written with candle ops the forward is three passes over the (batch, heads, query, key)
//! scores, each allocating a tensor of that size (scale, add the mask, softmax with libm's scalar
//! exp), and the backward four more. Here each row is read once into the output, with
//! [`fast_math::exp`] and 16-lane sums that vectorize. The lane order is fixed, so the results
//! are the same bits on every CPU.
use super::fast_math::{self, contiguous_f32 as contiguous, multiversion};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape};
use rayon::prelude::*;

const LANES: usize = 16;

#[inline(always)]
fn row_max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = if x > *a { x } else { *a };
        }
    }
    acc.iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// Σ a·b with 16 lanes summed in a fixed order.
#[inline(always)]
pub(super) fn row_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn row_sum(v: &[f32]) -> f32 {
    fast_math::lane_sum(v, |x| x)
}

multiversion! {
    /// Rows of `out` (each `mask.len()` long) = softmax(scale·scores + mask) of the same rows of
    /// `scores`.
    pub(super) fn softmax_rows(scores: &[f32], mask: &[f32], scale: f32, out: &mut [f32]) {
        let width = mask.len();
        for (s, o) in scores.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
            for ((o, &s), &m) in o.iter_mut().zip(s).zip(mask) {
                *o = s * scale + m;
            }
            let max = row_max(o);
            for o in o.iter_mut() {
                *o = fast_math::exp(*o - max);
            }
            let inv = 1.0 / row_sum(o);
            for o in o.iter_mut() {
                *o *= inv;
            }
        }
    }
}

multiversion! {
    /// Rows of `out` = scale·p·(g − Σ g·p), the gradient of the scores, row by row.
    fn softmax_grad_rows(grad: &[f32], probs: &[f32], width: usize, scale: f32, out: &mut [f32]) {
        let rows = grad.chunks_exact(width).zip(probs.chunks_exact(width));
        for ((g, p), o) in rows.zip(out.chunks_exact_mut(width)) {
            let dot = row_dot(g, p);
            for ((o, &g), &p) in o.iter_mut().zip(g).zip(p) {
                *o = (g - dot) * p * scale;
            }
        }
    }
}

/// softmax(scale·scores + mask) for scores (batch, heads, queries, keys) and a mask (batch, 1, 1,
/// keys) of 0 / large negative.
pub struct MaskedSoftmax {
    pub scale: f32,
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "kd-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        ss: &CpuStorage,
        sl: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, h, q, k) = sl.shape().dims4()?;
        if ml.shape().dims() != [b, 1, 1, k] {
            candle_core::bail!(
                "kd-masked-softmax: mask {:?} for scores {:?}",
                ml.shape(),
                sl.shape()
            );
        }
        let scores = contiguous(ss, sl, "kd-masked-softmax scores")?;
        let mask = contiguous(ms, ml, "kd-masked-softmax mask")?;
        let mut out = super::fast_math::vec_for_overwrite(scores.len());
        if out.is_empty() {
            return Ok((CpuStorage::F32(out), sl.shape().clone()));
        }
        // One task per (batch, head): q rows sharing one mask row.
        out.par_chunks_mut(q * k)
            .zip(scores.par_chunks(q * k))
            .enumerate()
            .for_each(|(bh, (o, s))| {
                let batch = bh / h;
                softmax_rows(s, &mask[batch * k..(batch + 1) * k], self.scale, o)
            });
        Ok((CpuStorage::F32(out), sl.shape().clone()))
    }
}

/// The scores' gradient from the probabilities' gradient and the probabilities.
pub struct MaskedSoftmaxGrad {
    pub scale: f32,
}

impl CustomOp2 for MaskedSoftmaxGrad {
    fn name(&self) -> &'static str {
        "kd-masked-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if gl.shape() != pl.shape() {
            candle_core::bail!(
                "kd-masked-softmax-grad: {:?} vs {:?}",
                gl.shape(),
                pl.shape()
            );
        }
        let k = *gl.shape().dims().last().unwrap_or(&1);
        let grad = contiguous(gs, gl, "kd-masked-softmax-grad grad")?;
        let probs = contiguous(ps, pl, "kd-masked-softmax-grad probs")?;
        let mut out = super::fast_math::vec_for_overwrite(grad.len());
        if out.is_empty() {
            return Ok((CpuStorage::F32(out), gl.shape().clone()));
        }
        let block = k * 64;
        out.par_chunks_mut(block)
            .zip(grad.par_chunks(block).zip(probs.par_chunks(block)))
            .for_each(|(o, (g, p))| softmax_grad_rows(g, p, k, self.scale, o));
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor, D};

    /// The candle reference: the three-op forward and the four-op backward kd used before.
    fn reference(scores: &Tensor, mask: &Tensor, scale: f64, grad: &Tensor) -> (Tensor, Tensor) {
        let p = candle_nn::ops::softmax_last_dim(
            &(scores * scale).unwrap().broadcast_add(mask).unwrap(),
        )
        .unwrap();
        let dot = (grad * &p).unwrap().sum_keepdim(D::Minus1).unwrap();
        let g = ((grad.broadcast_sub(&dot).unwrap() * &p).unwrap() * scale).unwrap();
        (p, g)
    }

    #[test]
    fn matches_candle_on_odd_shapes_with_padding() -> Result<()> {
        // Key widths below, at and above the 16 lanes, not multiples of them; padded keys.
        for &(b, h, q, k) in &[
            (2, 3, 5, 1),
            (1, 2, 7, 15),
            (3, 2, 17, 17),
            (2, 12, 33, 33),
            (1, 1, 3, 130),
        ] {
            let dev = Device::Cpu;
            let scores = (Tensor::randn(0f32, 3.0, (b, h, q, k), &dev)?).contiguous()?;
            let grad = Tensor::randn(0f32, 1.0, (b, h, q, k), &dev)?;
            let mask: Vec<f32> = (0..b * k)
                .map(|i| {
                    if i % k >= k - (i / k) % 3 && i % k > 0 {
                        f32::MIN
                    } else {
                        0.0
                    }
                })
                .collect();
            let mask = Tensor::from_vec(mask, (b, 1, 1, k), &dev)?;
            let scale = 0.125;
            let (want_p, want_g) = reference(&scores, &mask, scale, &grad);
            let p = scores.apply_op2_no_bwd(
                &mask,
                &MaskedSoftmax {
                    scale: scale as f32,
                },
            )?;
            let g = grad.apply_op2_no_bwd(
                &p,
                &MaskedSoftmaxGrad {
                    scale: scale as f32,
                },
            )?;
            let dp = (p - want_p)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            let dg = (g - want_g)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(dp <= 3e-7, "{b}x{h}x{q}x{k}: probabilities off by {dp:e}");
            assert!(dg <= 1e-6, "{b}x{h}x{q}x{k}: gradient off by {dg:e}");
        }
        Ok(())
    }

    #[test]
    fn padded_keys_get_exactly_zero_and_nan_propagates() -> Result<()> {
        let dev = Device::Cpu;
        let scores = Tensor::new(&[[[[1f32, 2.0, 3.0], [f32::NAN, 0.0, 0.0]]]], &dev)?;
        let mask = Tensor::new(&[[[[0f32, 0.0, f32::MIN]]]], &dev)?;
        let p = scores.apply_op2_no_bwd(&mask, &MaskedSoftmax { scale: 1.0 })?;
        let rows: Vec<Vec<f32>> = p.squeeze(0)?.squeeze(0)?.to_vec2()?;
        assert_eq!(rows[0][2], 0.0);
        assert!((rows[0][0] + rows[0][1] - 1.0).abs() < 1e-7);
        assert!(rows[1].iter().all(|v| v.is_nan()));
        Ok(())
    }
}
