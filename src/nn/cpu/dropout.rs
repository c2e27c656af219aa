//! Dropout on the CPU whose mask is a hash of (seed, element index): drawn in one vectorized
//! pass, never stored, and recomputed by the backward pass.
//!
//! The mask used to be a `Vec<f32>` of ChaCha draws (one RNG call per element), turned into a
//! tensor and multiplied in: three passes and a mask-sized allocation per dropout, and candle's
//! `Mul` backward also computed a gradient for the mask and the graph kept it until the step
//! ended. Now one u64 is drawn from kd's seeded RNG per dropout call (runs stay reproducible);
//! element `i` is kept when `hash(seed, i)`, read as a uniform in [0, 1), is ≥ p. The backward
//! applies the same mask (same seed) to the gradient. The mask does not depend on the thread
//! count or the instruction set.
use super::fast_math::multiversion;
use crate::nn::autograd::with_backward;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// murmur3's 32-bit finaliser: a bijection with full avalanche.
#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// A hashed dropout mask for a kernel that drops inside its own loop: (seed, p, index of its
/// first element in the whole batch's tensor), or `None` for no dropout.
pub(crate) type DropoutMask = Option<(u64, f32, u32)>;

/// A uniform draw in [0, 1) (24 bits) for element `index` under `seed`.
#[inline(always)]
fn uniform(seed: u64, index: u32) -> f32 {
    let h = fmix32(index ^ seed as u32);
    let h = fmix32(h ^ (seed >> 32) as u32);
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

multiversion! {
    /// out[j] = x[j]·scale where element `first + j` is kept, 0 where it is dropped.
    pub(crate) fn mask_slice(x: &[f32], seed: u64, p: f32, scale: f32, first: u32, out: &mut [f32]) {
        for (j, (o, &v)) in out.iter_mut().zip(x).enumerate() {
            let keep = uniform(seed, first.wrapping_add(j as u32)) >= p;
            *o = if keep { v * scale } else { 0.0 };
        }
    }
}

/// Elements per parallel task.
const CHUNK: usize = 16 * 1024;

/// Multiplies an f32 tensor by the dropout mask of `seed` (scaled by 1/(1−p)), its element 0
/// being element `first` of the mask (a data-parallel rank's rows within the whole batch).
#[derive(Clone, Copy, Debug)]
struct HashedMask {
    seed: u64,
    p: f32,
    first: u32,
}

impl CustomOp1 for HashedMask {
    fn name(&self) -> &'static str {
        "kd-hashed-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = super::fast_math::contiguous_f32(s, l, "kd-hashed-dropout")?;
        if self.first as u64 + x.len() as u64 > u32::MAX as u64 + 1 {
            candle_core::bail!("kd-hashed-dropout: more than 2^32 elements");
        }
        let scale = 1.0 / (1.0 - self.p);
        let mut out = super::fast_math::vec_for_overwrite(x.len());
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .enumerate()
            .for_each(|(c, (o, x))| {
                let first = self.first.wrapping_add((c * CHUNK) as u32);
                mask_slice(x, self.seed, self.p, scale, first, o)
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// Inverted dropout of an f32 CPU tensor with the mask of `seed`, differentiable in `x`.
#[cfg(test)]
pub fn hashed_dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    hashed_dropout_at(x, p, seed, 0)
}

/// [`hashed_dropout`] of elements `first..first + n` of a larger tensor's mask.
pub fn hashed_dropout_at(x: &Tensor, p: f32, seed: u64, first: u64) -> Result<Tensor> {
    let first = u32::try_from(first)
        .map_err(|_| candle_core::Error::Msg("kd-hashed-dropout: past 2^32 elements".into()))?;
    let mask = HashedMask { seed, p, first };
    let value = x.detach().contiguous()?.apply_op1_no_bwd(&mask)?;
    with_backward(x, value, move |grad, _| {
        grad.contiguous()?.apply_op1_no_bwd(&mask)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn drops_the_right_share_and_scales_the_rest() -> Result<()> {
        let n = 1 << 20;
        let x = Tensor::ones(n, candle_core::DType::F32, &Device::Cpu)?;
        let y: Vec<f32> = hashed_dropout(&x, 0.1, 42)?.to_vec1()?;
        let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
        // Binomial(2^20, 0.1): standard deviation 0.0003.
        assert!((dropped - 0.1).abs() < 0.0015, "dropped {dropped}");
        assert!(y.iter().all(|&v| v == 0.0 || v == 1.0 / 0.9));
        // Neighbouring elements are independent: P(both dropped) ≈ p².
        let pairs = y.windows(2).filter(|w| w[0] == 0.0 && w[1] == 0.0).count() as f64;
        assert!(
            (pairs / n as f64 - 0.01).abs() < 0.001,
            "pairs {}",
            pairs / n as f64
        );
        let other: Vec<f32> = hashed_dropout(&x, 0.1, 43)?.to_vec1()?;
        let same = y.iter().zip(&other).filter(|(a, b)| a == b).count() as f64 / n as f64;
        assert!(
            (same - 0.82).abs() < 0.005,
            "masks of two seeds agree on {same}"
        );
        Ok(())
    }

    #[test]
    fn a_slice_of_rows_gets_the_whole_batchs_mask() -> Result<()> {
        use rand::{Rng, SeedableRng};
        let rng = || rand::rngs::StdRng::seed_from_u64(5);
        let whole = Tensor::ones((6, 5, 7), candle_core::DType::F32, &Device::Cpu)?;
        let seed = rng().random::<u64>();
        let full: Vec<f32> = hashed_dropout(&whole, 0.3, seed)?
            .flatten_all()?
            .to_vec1()?;
        let rows = whole.narrow(0, 2, 3)?;
        let part: Vec<f32> = {
            let _w = crate::nn::dropout_rows(2, 3);
            crate::nn::dropout(&rows, 0.3, &mut rng())?
        }
        .flatten_all()?
        .to_vec1()?;
        assert_eq!(part, full[2 * 35..5 * 35]);
        Ok(())
    }

    #[test]
    fn the_gradient_uses_the_forward_mask() -> Result<()> {
        let x = Var::from_vec((1..=4099).map(|i| i as f32).collect(), 4099, &Device::Cpu)?;
        let y = hashed_dropout(x.as_tensor(), 0.3, 7)?;
        let grads = y.sum_all()?.backward()?;
        let g: Vec<f32> = grads
            .get(x.as_tensor())
            .expect("x gets a gradient")
            .to_vec1()?;
        let y: Vec<f32> = y.to_vec1()?;
        let scale = 1.0 / (1.0 - 0.3f32);
        for (g, y) in g.iter().zip(&y) {
            // d(dropout(x))/dx is the scaled mask: 0 exactly where the forward dropped.
            assert_eq!(*g == 0.0, *y == 0.0);
            assert!(*g == 0.0 || *g == scale);
        }
        Ok(())
    }
}
