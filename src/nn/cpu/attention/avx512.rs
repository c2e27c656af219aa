//! The attention kernel's inner products and softmax in AVX-512 intrinsics: the same sums, in the same
//! order, as the portable loops in [`super`] (which LLVM does not keep in registers), so both
//! return the same bits.
// Register arrays are indexed by their unrolled position, as the kernels are usually written.
#![allow(clippy::needless_range_loop)]
use super::super::fma_math::exp_avx512;
use super::{lane_total, LANES};
use std::arch::x86_64::*;

/// scores[j] = q·k_j for `keys_t` (q.len() rows of scores.len() keys, a multiple of 16).
///
/// # Safety
/// The CPU has AVX-512F; `keys_t` holds `q.len() × scores.len()` values.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn key_scores(q: &[f32], keys_t: &[f32], scores: &mut [f32]) {
    let blocks = scores.len() / LANES;
    assert!(
        keys_t.len() >= q.len() * scores.len(),
        "keys_t is d × seq_pad"
    );
    let mut b0 = 0;
    while b0 + 4 <= blocks {
        score_blocks::<4>(q, keys_t, b0, scores);
        b0 += 4;
    }
    match blocks - b0 {
        3 => score_blocks::<3>(q, keys_t, b0, scores),
        2 => score_blocks::<2>(q, keys_t, b0, scores),
        1 => score_blocks::<1>(q, keys_t, b0, scores),
        _ => {}
    }
}

/// N registers of keys from register `b0`: 2·N independent chains of multiply-adds (even and
/// odd columns), enough to keep both FMA units busy.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn score_blocks<const N: usize>(q: &[f32], keys_t: &[f32], b0: usize, scores: &mut [f32]) {
    let seq_pad = scores.len();
    let k = keys_t.as_ptr().add(b0 * LANES);
    let mut acc = [[_mm512_setzero_ps(); N]; 2];
    let d = q.len();
    let mut c = 0;
    while c + 2 <= d {
        let (q0, q1) = (_mm512_set1_ps(q[c]), _mm512_set1_ps(q[c + 1]));
        let (k0, k1) = (k.add(c * seq_pad), k.add((c + 1) * seq_pad));
        for i in 0..N {
            acc[0][i] = _mm512_fmadd_ps(q0, _mm512_loadu_ps(k0.add(i * LANES)), acc[0][i]);
            acc[1][i] = _mm512_fmadd_ps(q1, _mm512_loadu_ps(k1.add(i * LANES)), acc[1][i]);
        }
        c += 2;
    }
    if c < d {
        let q0 = _mm512_set1_ps(q[c]);
        let k0 = k.add(c * seq_pad);
        for i in 0..N {
            acc[0][i] = _mm512_fmadd_ps(q0, _mm512_loadu_ps(k0.add(i * LANES)), acc[0][i]);
        }
    }
    let out = scores.as_mut_ptr().add(b0 * LANES);
    for i in 0..N {
        _mm512_storeu_ps(out.add(i * LANES), _mm512_add_ps(acc[0][i], acc[1][i]));
    }
}

/// context = Σ_j p_j·v_j over columns `col..col + d` of the value rows, d = 16, 32 or 64.
///
/// # Safety
/// The CPU has AVX-512F; `v` holds `probs.len()` rows of `width` ≥ col + context.len().
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn weighted_values(
    probs: &[f32],
    v: &[f32],
    width: usize,
    col: usize,
    context: &mut [f32],
) {
    assert!(col + context.len() <= width && v.len() >= probs.len() * width);
    match context.len() {
        64 => value_blocks::<4>(probs, v, width, col, context),
        32 => value_blocks::<2>(probs, v, width, col, context),
        16 => value_blocks::<1>(probs, v, width, col, context),
        d => unreachable!("head width {d} has no AVX-512 path"),
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn value_blocks<const N: usize>(
    probs: &[f32],
    v: &[f32],
    width: usize,
    col: usize,
    context: &mut [f32],
) {
    let base = v.as_ptr().add(col);
    let mut acc = [[_mm512_setzero_ps(); N]; 2];
    let keys = probs.len();
    let mut j = 0;
    while j + 2 <= keys {
        let (p0, p1) = (_mm512_set1_ps(probs[j]), _mm512_set1_ps(probs[j + 1]));
        let (v0, v1) = (base.add(j * width), base.add((j + 1) * width));
        for i in 0..N {
            acc[0][i] = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0.add(i * LANES)), acc[0][i]);
            acc[1][i] = _mm512_fmadd_ps(p1, _mm512_loadu_ps(v1.add(i * LANES)), acc[1][i]);
        }
        j += 2;
    }
    if j < keys {
        let p0 = _mm512_set1_ps(probs[j]);
        let v0 = base.add(j * width);
        for i in 0..N {
            acc[0][i] = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0.add(i * LANES)), acc[0][i]);
        }
    }
    let out = context.as_mut_ptr();
    for i in 0..N {
        _mm512_storeu_ps(out.add(i * LANES), _mm512_add_ps(acc[0][i], acc[1][i]));
    }
}

/// [`super::softmax`] in AVX-512: the same operations lane by lane, the tail masked.
///
/// # Safety
/// The CPU has AVX-512F; `scores`, `mask` and `probs` have the same length.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn softmax(scores: &[f32], mask: &[f32], scale: f32, probs: &mut [f32]) {
    let n = scores.len();
    assert!(mask.len() == n && probs.len() == n, "one row each");
    let (s, m, p) = (scores.as_ptr(), mask.as_ptr(), probs.as_mut_ptr());
    let tail = |j: usize| -> __mmask16 {
        if n - j >= LANES {
            !0
        } else {
            (1u16 << (n - j)) - 1
        }
    };
    let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
    for j in (0..n).step_by(LANES) {
        let k = tail(j);
        let x = _mm512_maskz_loadu_ps(k, s.add(j));
        let v = _mm512_fmadd_ps(x, _mm512_set1_ps(scale), _mm512_maskz_loadu_ps(k, m.add(j)));
        _mm512_mask_storeu_ps(p.add(j), k, v);
        max = _mm512_mask_max_ps(max, k, max, v);
    }
    let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
    let mut sum = _mm512_setzero_ps();
    for j in (0..n).step_by(LANES) {
        let k = tail(j);
        let e = exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, p.add(j)), max));
        _mm512_mask_storeu_ps(p.add(j), k, e);
        sum = _mm512_mask_add_ps(sum, k, sum, e);
    }
    let mut lanes = [0f32; LANES];
    _mm512_storeu_ps(lanes.as_mut_ptr(), sum);
    let inv = _mm512_set1_ps(1.0 / lane_total(lanes));
    for j in (0..n).step_by(LANES) {
        let k = tail(j);
        let e = _mm512_maskz_loadu_ps(k, p.add(j));
        _mm512_mask_storeu_ps(p.add(j), k, _mm512_mul_ps(e, inv));
    }
}
