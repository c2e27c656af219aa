//! The AVX-512 VNNI kernel (CPUs without AMX-INT8): each 32×32 block of C is four 8-row
//! micro-tiles of 8 × 2 zmm accumulators; per group of 4 depths one broadcast of A's 4 bytes per
//! row and one `vpdpbusd` per accumulator. `vpdpbusd` multiplies unsigned bytes by signed ones,
//! so A's signed bytes go in flipped to A + 128 and 128·Σ_k B is subtracted at the end: the sums
//! are the same integers the AMX kernel and the reference compute.
use super::{Part, BLOCK, PANEL};
use std::arch::x86_64::*;

/// Rows of one micro-tile (16 accumulators of the 32 zmm registers).
const MICRO_ROWS: usize = 8;

/// One thread's part of C.
///
/// # Safety
/// The CPU has AVX-512F, AVX-512BW and AVX-512 VNNI; `part` holds whole 32-row blocks of A.
pub(super) unsafe fn run_part(part: &Part<'_>, out: &mut [f32]) {
    part.for_each_block(out, |a, lda, b0, b1, sums, acc| {
        for r in (0..BLOCK).step_by(MICRO_ROWS) {
            // SAFETY: 8 rows of A from row r of the 32-row block; panels of `lda / 4` rows of 64
            // bytes; 32 column sums; rows r..r+8 of the block's sums.
            unsafe {
                micro_tile(
                    a[r * lda..].as_ptr(),
                    lda,
                    b0.as_ptr(),
                    b1.as_ptr(),
                    sums.as_ptr(),
                    acc[r * BLOCK..].as_mut_ptr(),
                )
            };
        }
    });
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn micro_tile(
    a: *const i8,
    lda: usize,
    b0: *const i8,
    b1: *const i8,
    sums: *const i32,
    c: *mut i32,
) {
    // The sign bit of each byte: XOR turns a signed byte x into the unsigned byte x + 128.
    const FLIP: i32 = 0x8080_8080_u32 as i32;
    let mut acc = [[_mm512_setzero_si512(); 2]; MICRO_ROWS];
    for g in 0..lda / 4 {
        let w0 = _mm512_loadu_si512(b0.add(g * 4 * PANEL).cast());
        let w1 = _mm512_loadu_si512(b1.add(g * 4 * PANEL).cast());
        for (i, acc) in acc.iter_mut().enumerate() {
            let quad = a.add(i * lda + g * 4).cast::<i32>().read_unaligned() ^ FLIP;
            let x = _mm512_set1_epi32(quad);
            acc[0] = _mm512_dpbusd_epi32(acc[0], x, w0);
            acc[1] = _mm512_dpbusd_epi32(acc[1], x, w1);
        }
    }
    // Σ_k (a + 128)·b = Σ_k a·b + 128·Σ_k b.
    let corr0 = _mm512_slli_epi32::<7>(_mm512_loadu_si512(sums.cast()));
    let corr1 = _mm512_slli_epi32::<7>(_mm512_loadu_si512(sums.add(PANEL).cast()));
    for (i, acc) in acc.iter().enumerate() {
        let row = c.add(i * BLOCK);
        _mm512_storeu_si512(row.cast(), _mm512_sub_epi32(acc[0], corr0));
        _mm512_storeu_si512(row.add(PANEL).cast(), _mm512_sub_epi32(acc[1], corr1));
    }
}

/// [`super::quantize_row`] in AVX-512: the same bits as the portable version (max and the
/// poison sum are exact whatever the order; the products, rounding and clamping are IEEE).
///
/// # Safety
/// The CPU has AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn quantize_row(x: &[f32], q: &mut [i8]) -> f32 {
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
    super::rows::scale_and_quantize(x, absmax, p, q, |x, inv_s, q| {
        let (inv, lo, hi) = (
            _mm512_set1_ps(inv_s),
            _mm512_set1_ps(-super::QMAX),
            _mm512_set1_ps(super::QMAX),
        );
        for i in (0..body).step_by(16) {
            let v = _mm512_mul_ps(_mm512_loadu_ps(x.as_ptr().add(i)), inv);
            let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            let c = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
            let bytes = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(c));
            _mm_storeu_si128(q.as_mut_ptr().add(i).cast(), bytes);
        }
        for (d, &v) in q[body..].iter_mut().zip(&x[body..]) {
            *d = (v * inv_s)
                .round_ties_even()
                .clamp(-super::QMAX, super::QMAX) as i8;
        }
    })
}
