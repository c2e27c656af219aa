//! GELU of a block of C rounded straight to bf16, in AVX-512 with fused multiply-adds: the FFN
//! epilogue of [`super::matmul_rows_gelu`].
//!
//! Its output is rounded to bf16 (8 significant bits), so it needs GELU to ~1e-6, not to the last
//! f32 bit [`crate::nn::cpu::gelu`] keeps for training: a rational erf without e^x (see [`gelu`]).
//! Above 1e-2 in size it rounds to the bf16 training's GELU rounds to except where that value
//! lies next to a rounding boundary; below, it is within 1.5e-6 (tested). The erfc fit with e^x it replaced (relatively exact in the left
//! tail) cost 11% of an all-MiniLM-L6-v2 caching pass and 14% of the int8 student's forward.
use super::BLOCK;
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// Writes GELU of a 32×32 block, rounded to bf16, into 32 rows of `ld` starting at `out`.
///
/// # Safety
/// The CPU has AVX-512F and AVX-512 BF16; `out` holds 31·ld + 32 elements.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn store_gelu_bf16(
    block: &[f32; BLOCK * BLOCK],
    out: &mut [MaybeUninit<u16>],
    ld: usize,
) {
    assert!(out.len() >= (BLOCK - 1) * ld + BLOCK, "32 rows of ld");
    for r in 0..BLOCK {
        let lo = gelu(_mm512_loadu_ps(block.as_ptr().add(r * BLOCK)));
        let hi = gelu(_mm512_loadu_ps(block.as_ptr().add(r * BLOCK + 16)));
        // cvtne2ps2bf16(a, b) puts b in the low half, a in the high half.
        let both: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(out.as_mut_ptr().add(r * ld).cast(), both);
    }
}

/// GELU in place over a slice, with the epilogue's arithmetic: the int8 path's activation,
/// which is quantized to 8 bits next and needs no more than this one's ~1e-6.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn gelu_in_place(x: &mut [f32]) {
    let body = x.len() / 16 * 16;
    for i in (0..body).step_by(16) {
        let p = x.as_mut_ptr().add(i);
        _mm512_storeu_ps(p, gelu(_mm512_loadu_ps(p)));
    }
    let rest = (x.len() - body) as u32;
    if rest > 0 {
        let mask: __mmask16 = ((1u32 << rest) - 1) as u16;
        let p = x.as_mut_ptr().add(body);
        _mm512_mask_storeu_ps(p, mask, gelu(_mm512_maskz_loadu_ps(mask, p)));
    }
}

/// ½·x·(1 + erf(x/√2)) with erf as the rational fit Eigen and XLA use for f32 (odd numerator of
/// degree 13 over an even denominator of degree 8 in x/√2 clamped to ±4, where erf is ±1 in f32):
/// FMAs and one Newton-refined reciprocal, no e^x. Within 1.3e-6 of the exact GELU everywhere
/// (2e-7 relative above 0.1 in size); in the left tail 1 + erf cancels as in PyTorch's own erf
/// GELU, to an absolute error far below what the next product's bf16 input keeps.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn gelu(x: __m512) -> __m512 {
    let ps = _mm512_set1_ps;
    let u = _mm512_mul_ps(x, ps(std::f32::consts::FRAC_1_SQRT_2));
    let u = _mm512_max_ps(_mm512_min_ps(u, ps(4.0)), ps(-4.0));
    let u2 = _mm512_mul_ps(u, u);
    let mut p = ps(-2.726_142_3e-10);
    for c in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906e-4,
        -2.954_600_2e-3,
        -1.609_603_3e-2,
    ] {
        p = _mm512_fmadd_ps(p, u2, ps(c));
    }
    let mut q = ps(-1.456_607_2e-5);
    for c in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
        q = _mm512_fmadd_ps(q, u2, ps(c));
    }
    // 1/q: the estimate (2⁻¹⁴) and one Newton step (~2⁻²⁸).
    let r0 = _mm512_rcp14_ps(q);
    let r = _mm512_mul_ps(r0, _mm512_fnmadd_ps(q, r0, ps(2.0)));
    let erf = _mm512_mul_ps(_mm512_mul_ps(p, u), r);
    let half_x = _mm512_mul_ps(x, ps(0.5));
    // Below −5.5 GELU is under 1e-7 in size, and the fit's erf(−4) (−1 + 1.6e-7) times a large
    // −x would not be: 0 there. NaN is not below anything and stays NaN.
    let tail = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, ps(-5.5));
    _mm512_mask_mov_ps(
        _mm512_fmadd_ps(half_x, erf, half_x),
        tail,
        _mm512_setzero_ps(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::{bf16_bits, bf16_value};
    use super::*;

    /// NaN stays NaN, +∞ stays +∞, −∞ and the far left tail give 0, x = −5.5 (the tail's edge)
    /// is within the bound of its neighbours, and large x is x.
    #[test]
    fn special_values() {
        if !crate::nn::cpu::features::x86_features().avx512f {
            return eprintln!("skipped: no AVX-512F here");
        }
        let mut x = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -1e30,
            -5.5,
            -5.5001,
            1e30,
        ];
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { gelu_in_place(&mut x) };
        assert!(x[0].is_nan());
        assert_eq!((x[1], x[2], x[3]), (f32::INFINITY, 0.0, 0.0));
        // The fit's erf(4) is 1 − 6e-8: large x keep all but their last bit.
        assert!((x[6] / 1e30 - 1.0).abs() < 1e-7, "{}", x[6]);
        assert!(x[4].abs() < 2e-6 && x[5] == 0.0, "{} {}", x[4], x[5]);
    }

    /// Against training's GELU (within 3e-7 of the exact one): the same bf16 except next to a
    /// rounding boundary, and never further than the fit's error past one; in the left tail, where
    /// 1 + erf cancels, within an absolute bound instead.
    #[test]
    fn rounds_to_the_bf16_of_the_exact_gelu_except_at_boundaries() {
        let f = crate::nn::cpu::features::x86_features();
        if !(f.avx512f && f.avx512_bf16) {
            return eprintln!("skipped: no AVX-512 BF16 here");
        }
        let xs: Vec<f32> = (0..200_704).map(|i| -40.0 + i as f32 * 2.8e-4).collect();
        let mut reference = vec![0f32; xs.len()];
        crate::nn::cpu::fast_math::gelu_slice(&xs, &mut reference);
        let (mut worst_relative, mut worst_absolute) = (0f64, 0f64);
        let (mut differ, mut sized) = (0usize, 0usize);
        for (chunk, want) in xs
            .chunks_exact(BLOCK * BLOCK)
            .zip(reference.chunks_exact(BLOCK * BLOCK))
        {
            let block: [f32; BLOCK * BLOCK] = chunk.try_into().expect("a block");
            let mut out = vec![MaybeUninit::new(0u16); BLOCK * BLOCK];
            // SAFETY: the CPU has both (checked above); out holds 32 rows of 32.
            unsafe { store_gelu_bf16(&block, &mut out, BLOCK) };
            for (o, &w) in out.iter().zip(want) {
                // SAFETY: written above.
                let got = unsafe { o.assume_init() };
                let w = w as f64;
                // How much further from w than its own bf16 rounding the result lies.
                let gap = (bf16_value(got) as f64 - w).abs()
                    - (bf16_value(bf16_bits(w as f32)) as f64 - w).abs();
                if w.abs() < 1e-2 {
                    worst_absolute = worst_absolute.max(gap);
                } else {
                    sized += 1;
                    if got != bf16_bits(w as f32) {
                        differ += 1;
                        worst_relative = worst_relative.max(gap / w.abs());
                    }
                }
            }
        }
        eprintln!(
            "{differ} of {sized} values of at least 1e-2 rounded apart, at most \
             {worst_relative:e} (relative) past a boundary; below 1e-2, {worst_absolute:e} at most"
        );
        assert!(
            worst_absolute <= 1.5e-6,
            "{worst_absolute:e} past a rounding"
        );
        assert!(
            worst_relative <= 5e-5,
            "a rounding off by {worst_relative:e} (relative) beyond the boundary"
        );
        assert!(
            differ * 500 < sized,
            "{differ} of {sized} rounded differently"
        );
    }
}
