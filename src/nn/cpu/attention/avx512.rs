//! The attention kernel's inner products and softmax in AVX-512 intrinsics: the same sums, in the same
//! order, as the portable loops in [`super`] (which LLVM does not keep in registers), so both
//! return the same bits.
// Register arrays are indexed by their unrolled position, as the kernels are usually written.
#![allow(clippy::needless_range_loop)]
use super::super::fma_math::exp_avx512;
use super::{lane_total, LANES};
use std::arch::x86_64::*;

/// scores_i[j] = q_i·k_j for `keys_t` (d rows of scores.len() keys, a multiple of 16), for Q
/// queries at once: each key register is loaded once for all of them.
///
/// # Safety
/// The CPU has AVX-512F; every query has d = q.len() values and `keys_t` holds d × seq_pad.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn key_scores<const Q: usize>(
    q: [&[f32]; Q],
    keys_t: &[f32],
    scores: [&mut [f32]; Q],
) {
    let seq_pad = scores[0].len();
    let d = q[0].len();
    assert!(
        q.iter().all(|q| q.len() == d) && scores.iter().all(|s| s.len() == seq_pad),
        "queries of one head, score rows of one length"
    );
    assert!(keys_t.len() >= d * seq_pad, "keys_t is d × seq_pad");
    let out = scores.map(|s| s.as_mut_ptr());
    let blocks = seq_pad / LANES;
    let mut b0 = 0;
    while b0 + 4 <= blocks {
        score_blocks::<4, Q>(q, keys_t, seq_pad, b0, out);
        b0 += 4;
    }
    match blocks - b0 {
        3 => score_blocks::<3, Q>(q, keys_t, seq_pad, b0, out),
        2 => score_blocks::<2, Q>(q, keys_t, seq_pad, b0, out),
        1 => score_blocks::<1, Q>(q, keys_t, seq_pad, b0, out),
        _ => {}
    }
}

/// N registers of keys from register `b0`, for Q queries: per query 2·N independent chains of
/// multiply-adds (even and odd columns), enough to keep both FMA units busy.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn score_blocks<const N: usize, const Q: usize>(
    q: [&[f32]; Q],
    keys_t: &[f32],
    seq_pad: usize,
    b0: usize,
    out: [*mut f32; Q],
) {
    let k = keys_t.as_ptr().add(b0 * LANES);
    let mut acc = [[[_mm512_setzero_ps(); N]; 2]; Q];
    let d = q[0].len();
    let mut c = 0;
    while c + 2 <= d {
        let (k0, k1) = (k.add(c * seq_pad), k.add((c + 1) * seq_pad));
        for i in 0..N {
            let (x0, x1) = (
                _mm512_loadu_ps(k0.add(i * LANES)),
                _mm512_loadu_ps(k1.add(i * LANES)),
            );
            for j in 0..Q {
                acc[j][0][i] = _mm512_fmadd_ps(_mm512_set1_ps(q[j][c]), x0, acc[j][0][i]);
                acc[j][1][i] = _mm512_fmadd_ps(_mm512_set1_ps(q[j][c + 1]), x1, acc[j][1][i]);
            }
        }
        c += 2;
    }
    if c < d {
        let k0 = k.add(c * seq_pad);
        for i in 0..N {
            let x0 = _mm512_loadu_ps(k0.add(i * LANES));
            for j in 0..Q {
                acc[j][0][i] = _mm512_fmadd_ps(_mm512_set1_ps(q[j][c]), x0, acc[j][0][i]);
            }
        }
    }
    for j in 0..Q {
        let out = out[j].add(b0 * LANES);
        for i in 0..N {
            _mm512_storeu_ps(
                out.add(i * LANES),
                _mm512_add_ps(acc[j][0][i], acc[j][1][i]),
            );
        }
    }
}

/// context_i = Σ_j p_ij·v_j over columns `col..col + d` of the value rows, d = 16, 32 or 64,
/// for Q queries at once: each value register is loaded once for all of them.
///
/// # Safety
/// The CPU has AVX-512F; `v` holds `keys` rows of `width` ≥ col + d, every probability row has
/// the same number of keys and every context row d elements.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn weighted_values<const Q: usize>(
    probs: [&[f32]; Q],
    v: &[f32],
    width: usize,
    col: usize,
    context: [&mut [f32]; Q],
) {
    let (keys, d) = (probs[0].len(), context[0].len());
    assert!(
        probs.iter().all(|p| p.len() == keys) && context.iter().all(|c| c.len() == d),
        "probability rows of one length, context rows of one head"
    );
    assert!(col + d <= width && v.len() >= keys * width);
    let out = context.map(|c| c.as_mut_ptr());
    match d {
        64 => value_blocks::<4, Q>(probs, v, width, col, out),
        32 => value_blocks::<2, Q>(probs, v, width, col, out),
        16 => value_blocks::<1, Q>(probs, v, width, col, out),
        d => unreachable!("head width {d} has no AVX-512 path"),
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn value_blocks<const N: usize, const Q: usize>(
    probs: [&[f32]; Q],
    v: &[f32],
    width: usize,
    col: usize,
    out: [*mut f32; Q],
) {
    let base = v.as_ptr().add(col);
    let mut acc = [[[_mm512_setzero_ps(); N]; 2]; Q];
    let keys = probs[0].len();
    let mut j = 0;
    while j + 2 <= keys {
        let (v0, v1) = (base.add(j * width), base.add((j + 1) * width));
        for i in 0..N {
            let (x0, x1) = (
                _mm512_loadu_ps(v0.add(i * LANES)),
                _mm512_loadu_ps(v1.add(i * LANES)),
            );
            for q in 0..Q {
                acc[q][0][i] = _mm512_fmadd_ps(_mm512_set1_ps(probs[q][j]), x0, acc[q][0][i]);
                acc[q][1][i] = _mm512_fmadd_ps(_mm512_set1_ps(probs[q][j + 1]), x1, acc[q][1][i]);
            }
        }
        j += 2;
    }
    if j < keys {
        let v0 = base.add(j * width);
        for i in 0..N {
            let x0 = _mm512_loadu_ps(v0.add(i * LANES));
            for q in 0..Q {
                acc[q][0][i] = _mm512_fmadd_ps(_mm512_set1_ps(probs[q][j]), x0, acc[q][0][i]);
            }
        }
    }
    for q in 0..Q {
        for i in 0..N {
            _mm512_storeu_ps(
                out[q].add(i * LANES),
                _mm512_add_ps(acc[q][0][i], acc[q][1][i]),
            );
        }
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
