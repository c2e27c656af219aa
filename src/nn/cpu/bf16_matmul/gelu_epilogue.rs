//! GELU of a block of C rounded straight to bf16, in AVX-512 with fused multiply-adds: the FFN
//! epilogue of [`super::matmul_rows_gelu`].
//!
//! Its output is rounded to bf16 (8 significant bits), so it needs GELU to ~1e-6, not to the last
//! f32 bit [`crate::nn::cpu::gelu`] keeps for training: the same erfc fit (Numerical Recipes'
//! `erfcc`), with a Newton-refined reciprocal instead of a division, FMAs, and
//! [`super::super::fma_math`]'s e^x. It rounds to the bf16 training's GELU rounds to except where that value lies next to a
//! rounding boundary (under 0.1% of values; tested).
use super::super::fma_math::exp_avx512;
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

/// x·Φ(x), Φ(x) = ½·erfc(−x/√2).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn gelu(x: __m512) -> __m512 {
    let ps = _mm512_set1_ps;
    let u = _mm512_mul_ps(x, ps(-std::f32::consts::FRAC_1_SQRT_2));
    let z = _mm512_abs_ps(u);
    // t = 1/(1 + z/2): the reciprocal estimate (2⁻¹⁴) and one Newton step (~2⁻²⁸).
    let den = _mm512_fmadd_ps(z, ps(0.5), ps(1.0));
    let t0 = _mm512_rcp14_ps(den);
    let t = _mm512_mul_ps(t0, _mm512_fnmadd_ps(den, t0, ps(2.0)));
    let mut p = ps(0.170_872_77);
    for c in [
        -0.822_152_23,
        1.488_515_9,
        -1.135_204,
        0.278_868_07,
        -0.186_288_06,
        0.096_784_18,
        0.374_091_96,
        1.000_023_7,
        -1.265_512_2,
    ] {
        p = _mm512_fmadd_ps(p, t, ps(c));
    }
    // erfc(|u|) = t·e^(p − z²); erfc(u) = 2 − erfc(|u|) for u < 0.
    let e = _mm512_mul_ps(t, exp_avx512(_mm512_fnmadd_ps(z, z, p)));
    let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(u, _mm512_setzero_ps());
    let erfc = _mm512_mask_sub_ps(e, negative, ps(2.0), e);
    _mm512_mul_ps(_mm512_mul_ps(x, ps(0.5)), erfc)
}

#[cfg(test)]
mod tests {
    use super::super::{bf16_bits, bf16_value};
    use super::*;

    /// Against training's GELU (within 3e-7 of the exact one, and relatively accurate in the left
    /// tail, where f64's 1 + erf cancels): the same bf16 except where the reference lies within
    /// 1e-6 (relative) of a rounding boundary.
    #[test]
    fn rounds_to_the_bf16_of_the_exact_gelu_except_at_boundaries() {
        let f = crate::nn::cpu::features::x86_features();
        if !(f.avx512f && f.avx512_bf16) {
            return eprintln!("skipped: no AVX-512 BF16 here");
        }
        let xs: Vec<f32> = (0..200_704).map(|i| -14.0 + i as f32 * 1.4e-4).collect();
        let mut reference = vec![0f32; xs.len()];
        crate::nn::cpu::fast_math::gelu_slice(&xs, &mut reference);
        let (mut worst, mut differ) = (0f64, 0usize);
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
                if w.abs() < 1e-30 {
                    // Where the reference's e^x has underflowed (x < −13): both are ~0.
                    assert!(
                        bf16_value(got).abs() < 1e-30,
                        "{w:e} vs {}",
                        bf16_value(got)
                    );
                } else if got != bf16_bits(w) {
                    differ += 1;
                    // Across a boundary, the wrong side is 2·(distance to it) further from w.
                    let w = w as f64;
                    let gap = (bf16_value(got) as f64 - w).abs()
                        - (bf16_value(bf16_bits(w as f32)) as f64 - w).abs();
                    worst = worst.max(gap / w.abs());
                }
            }
        }
        eprintln!(
            "{differ} of {} rounded apart, at most {worst:e} (relative) past a boundary",
            xs.len()
        );
        // Past x < −5 both sides' e^(−x²/2) carries the rounding of x² (~1e-5 relative) into
        // values below 1e-6, still far inside a bf16 step (2⁻⁹).
        assert!(
            worst <= 3e-5,
            "a rounding off by {worst:e} (relative) beyond the boundary"
        );
        assert!(
            differ * 1000 < xs.len(),
            "{differ} of {} rounded differently",
            xs.len()
        );
    }
}
