//! e^x with fused multiply-adds, for the inference kernels (the attention softmax; the FFN's GELU
//! epilogue used it until a rational erf replaced it): one algorithm in AVX-512 ([`exp_avx512`])
//! and portable Rust ([`exp`]) that return the same bits, so a kernel built on them gives the
//! same results on every CPU.
//!
//! Cephes' expf (x = n·ln2 + r, a degree-6 polynomial for e^r) as [`super::fast_math::exp`], but
//! with each step one rounding (FMA), and 0 below −87, where e^x (≈1.6e-38) would soon leave the
//! normal numbers: 2ⁿ is then an exact power of two in both versions and the product y·2ⁿ rounds
//! once, as `vscalefps` rounds. The 0 matters: a masked key's probability must be exactly 0, and a
//! denormal one would cost every multiply-add it enters a microcode assist (measured: a caching
//! pass of the roberta-base shape spent 56% of its time there).

/// Below this e^x is returned as 0.
const LOWEST: f32 = -87.0;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// e^x for x ≤ 88, 0 below −87 (portable; the bits of [`exp_avx512`]).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let underflow = x < LOWEST;
    let x = if underflow { LOWEST } else { x };
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = (-n).mul_add(LN2_HI, x);
    let r = (-n).mul_add(LN2_LO, r);
    let mut p = POLY[0];
    for &c in &POLY[1..] {
        p = p.mul_add(r, c);
    }
    let y = (p * r).mul_add(r, r + 1.0);
    let e = y * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if underflow {
        0.0
    } else {
        e
    }
}

/// e^x for 16 lanes of x ≤ 88.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn exp_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let ps = _mm512_set1_ps;
    // NaN is kept and goes through (the comparison is unordered, `max` returns its second
    // operand when one is NaN), as in the portable version.
    let kept = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, ps(LOWEST));
    let x = _mm512_max_ps(ps(LOWEST), x);
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, ps(LN2_LO), r);
    let mut p = ps(POLY[0]);
    for &c in &POLY[1..] {
        p = _mm512_fmadd_ps(p, r, ps(c));
    }
    let y = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, ps(1.0)));
    _mm512_maskz_mov_ps(kept, _mm512_scalef_ps(y, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_two_ulp_and_both_versions_agree_bit_for_bit() {
        let xs: Vec<f32> = (0..=400_000).map(|i| -90.0 + i as f32 * 2.2e-4).collect();
        for &x in &xs {
            if x < LOWEST {
                assert_eq!(exp(x), 0.0, "exp({x})");
                continue;
            }
            let want = (x as f64).exp();
            let ulp = (want as f32).next_up() - want as f32;
            let err = (exp(x) as f64 - want).abs() / ulp as f64;
            assert!(err <= 2.0, "exp({x}) off by {err} ulp");
        }
        assert!(exp(f32::NAN).is_nan());
        #[cfg(target_arch = "x86_64")]
        if super::super::features::x86_features().avx512f {
            use std::arch::x86_64::*;
            let mut xs = xs.clone();
            xs.extend([f32::NAN, f32::NEG_INFINITY, -1e30, 88.0].repeat(4));
            for chunk in xs.chunks_exact(16) {
                let mut got = [0f32; 16];
                // SAFETY: the CPU has AVX-512F; 16 lanes each way.
                unsafe {
                    _mm512_storeu_ps(
                        got.as_mut_ptr(),
                        exp_avx512(_mm512_loadu_ps(chunk.as_ptr())),
                    )
                };
                for (g, &x) in got.iter().zip(chunk) {
                    let want = exp(x);
                    assert!(
                        g.to_bits() == want.to_bits() || g.is_nan() && want.is_nan(),
                        "exp({x})"
                    );
                }
            }
        }
    }
}
