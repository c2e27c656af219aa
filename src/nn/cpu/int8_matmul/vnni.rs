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
