//! The left operand A quantized per row ([`QuantizedRows`]), and the row quantizer the weights
//! use too ([`quantize_row`]: symmetric, to ±127 of the row's largest magnitude).
use super::{BLOCK, DEPTH_STEP, QMAX};
use rayon::prelude::*;

/// M × K activations quantized per row (A[i][k] ≈ q[i][k]·scale[i]): K padded with zeros to a
/// multiple of 64, the rows split in one part per thread, each part padded to whole 32-row blocks.
#[derive(Debug)]
pub struct QuantizedRows {
    pub(super) m: usize,
    pub(super) k: usize,
    pub(super) k_pad: usize,
    pub(super) part: usize,
    pub(super) data: Vec<i8>,
    /// Per row of the padded layout, 0 in padding.
    pub(super) scale: Vec<f32>,
}

impl QuantizedRows {
    /// Quantizes A (M × K, row-major f32), each row to ±127 of its own largest magnitude.
    pub fn from_f32(a: &[f32], m: usize, k: usize) -> Self {
        assert_eq!(a.len(), m * k, "A is M×K");
        Self::build(m, k, |data, scale| {
            data.zip(scale)
                .zip(a.par_chunks(k.max(1)))
                .for_each(|((dst, s), src)| *s = quantize_row(src, &mut dst[..k]))
        })
    }

    /// Quantizes map(A) row by row, `map` applied in place to each row just before it is
    /// quantized, while the row is in cache (the FFN's activation).
    pub fn from_f32_mapped(
        a: &mut [f32],
        m: usize,
        k: usize,
        map: impl Fn(&mut [f32]) + Sync,
    ) -> Self {
        assert_eq!(a.len(), m * k, "A is M×K");
        Self::build(m, k, |data, scale| {
            data.zip(scale)
                .zip(a.par_chunks_mut(k.max(1)))
                .for_each(|((dst, s), src)| {
                    map(src);
                    *s = quantize_row(src, &mut dst[..k])
                })
        })
    }

    /// The layout of M × K, zeroed, with `fill` given its rows (of K_pad bytes) and their scales.
    fn build(
        m: usize,
        k: usize,
        fill: impl FnOnce(rayon::slice::ChunksMut<'_, i8>, rayon::slice::IterMut<'_, f32>),
    ) -> Self {
        let k_pad = k.div_ceil(DEPTH_STEP).max(1) * DEPTH_STEP;
        let threads = rayon::current_num_threads().max(1);
        let part = (m.div_ceil(threads).div_ceil(BLOCK) * BLOCK).max(BLOCK);
        let padded_rows = m.div_ceil(part).max(1) * part;
        let mut data = vec![0i8; padded_rows * k_pad];
        let mut scale = vec![0f32; padded_rows];
        fill(data.par_chunks_mut(k_pad), scale.par_iter_mut());
        Self {
            m,
            k,
            k_pad,
            part,
            data,
            scale,
        }
    }

    /// (M, K).
    pub fn dims(&self) -> (usize, usize) {
        (self.m, self.k)
    }

    /// Row `i` as the product sees it, q·scale (tests).
    pub fn row(&self, i: usize) -> Vec<f32> {
        let q = &self.data[i * self.k_pad..i * self.k_pad + self.k];
        q.iter().map(|&v| v as f32 * self.scale[i]).collect()
    }
}

/// Quantizes `x` to ±127 of its largest magnitude into `q`, rounding to nearest even, and returns
/// the scale (max|x|/127; 0 for a row of zeros; NaN if `x` holds a NaN or an infinity, so that it
/// reaches the output instead of being hidden). In AVX-512 where the CPU has it (the same bits).
pub(super) fn quantize_row(x: &[f32], q: &mut [i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::super::features::x86_features().avx512f {
        // SAFETY: the CPU has AVX-512F (and BW: every AVX-512 CPU kd meets has it, checked too).
        if std::arch::is_x86_feature_detected!("avx512bw") {
            return unsafe { quantize_row_avx512(x, q) };
        }
    }
    quantize_row_portable(x, q)
}

/// [`quantize_row`] in plain Rust, the reference the AVX-512 version is tested against.
pub(super) fn quantize_row_portable(x: &[f32], q: &mut [i8]) -> f32 {
    // x·0 is NaN exactly when x is NaN or infinite.
    let (absmax, poison) = x
        .iter()
        .fold((0f32, 0f32), |(m, p), &v| (m.max(v.abs()), p + v * 0.0));
    scale_and_quantize(x, absmax, poison, q, |x, inv, q| {
        for (d, &v) in q.iter_mut().zip(x) {
            *d = (v * inv).round_ties_even().clamp(-QMAX, QMAX) as i8;
        }
    })
}

/// The rule both versions share: a row of zeros or with a non-finite value is all zeros, with
/// scale 0 or NaN; otherwise `quantize(x, 127/absmax, q)` and scale absmax/127.
#[inline(always)]
pub(super) fn scale_and_quantize(
    x: &[f32],
    absmax: f32,
    poison: f32,
    q: &mut [i8],
    quantize: impl FnOnce(&[f32], f32, &mut [i8]),
) -> f32 {
    if poison.is_nan() || absmax == 0.0 {
        q.fill(0);
        return if poison.is_nan() { f32::NAN } else { 0.0 };
    }
    quantize(x, QMAX / absmax, q);
    absmax / QMAX
}

/// [`quantize_row`] in AVX-512: the same bits as the portable version (max and the
/// poison sum are exact whatever the order; the products, rounding and clamping are IEEE).
///
/// # Safety
/// The CPU has AVX-512F and AVX-512BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_row_avx512(x: &[f32], q: &mut [i8]) -> f32 {
    use std::arch::x86_64::*;
    assert_eq!(x.len(), q.len(), "one byte per value");
    let n = x.len();
    let body = n / 16 * 16;
    let (mut max, mut poison) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for i in (0..body).step_by(16) {
        let v = _mm512_loadu_ps(x.as_ptr().add(i));
        max = _mm512_max_ps(max, _mm512_abs_ps(v));
        poison = _mm512_add_ps(poison, _mm512_mul_ps(v, _mm512_setzero_ps()));
    }
    let (mut absmax, mut p) = (_mm512_reduce_max_ps(max), _mm512_reduce_add_ps(poison));
    for &v in &x[body..] {
        absmax = absmax.max(v.abs());
        p += v * 0.0;
    }
    // A NaN lost by max_ps is caught by the poison sum, which `scale_and_quantize` checks first.
    scale_and_quantize(x, absmax, p, q, |x, inv_s, q| {
        let (inv, lo, hi) = (
            _mm512_set1_ps(inv_s),
            _mm512_set1_ps(-QMAX),
            _mm512_set1_ps(QMAX),
        );
        for i in (0..body).step_by(16) {
            let v = _mm512_mul_ps(_mm512_loadu_ps(x.as_ptr().add(i)), inv);
            let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            let c = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
            let bytes = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(c));
            _mm_storeu_si128(q.as_mut_ptr().add(i).cast(), bytes);
        }
        for (d, &v) in q[body..].iter_mut().zip(&x[body..]) {
            *d = (v * inv_s).round_ties_even().clamp(-QMAX, QMAX) as i8;
        }
    })
}
