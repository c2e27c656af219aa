//! The AVX-512 BF16 kernel (CPUs without AMX: AMD Zen 4/5, Intel Cooper Lake): each 32×32 block
//! of C is four 8-row micro-tiles of 8 × 2 zmm accumulators; per pair of depths one broadcast of
//! A's pair per row and one `vdpbf16ps` per accumulator.
use super::{for_each_block, PackedMatrix, Sink, Start, DEPTH_STEP, PANEL};
use std::arch::x86_64::*;

/// Rows of one micro-tile (16 accumulators of the 32 zmm registers).
const MICRO_ROWS: usize = 8;

/// C rows of one thread's part, in passes of `depth_block` steps over the depth.
///
/// # Safety
/// The CPU has AVX-512F and AVX-512 BF16; the slices are sized as [`super::amx::run_rows`] says.
pub(super) unsafe fn run_rows(
    a: &[u16],
    lda: usize,
    rows: usize,
    b: &PackedMatrix,
    bias: &[f32],
    out: Sink<'_>,
    depth_block: usize,
) {
    let run = |a: &[u16], b0: &[u16], b1: &[u16], steps: usize, start, c: *mut f32, ldc| {
        for r in (0..super::BLOCK).step_by(MICRO_ROWS) {
            // The start's rows r..r+8: the bias has no stride.
            let start = match start {
                Start::Bias(bias) => (bias, 0),
                // SAFETY: partial sums have 32 rows of `ld`.
                Start::Partial(sums, ld) => (unsafe { sums.add(r * ld) }, ld),
            };
            // SAFETY: 8 rows of A from row r of the 32-row block, panels of `steps` × 16 rows
            // of 32 bf16, rows r..r+8 of the block's destination (C, scratch or partial sums).
            unsafe {
                micro_tile(
                    a[r * lda..].as_ptr(),
                    lda,
                    b0.as_ptr(),
                    b1.as_ptr(),
                    steps * DEPTH_STEP / 2,
                    start,
                    c.add(r * ldc),
                    ldc,
                )
            };
        }
    };
    for_each_block(a, lda, rows, b, bias, out, depth_block, run);
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn micro_tile(
    a: *const u16,
    lda: usize,
    b0: *const u16,
    b1: *const u16,
    pairs: usize,
    (start, start_ld): (*const f32, usize),
    c: *mut f32,
    ldc: usize,
) {
    let mut acc: [[__m512; 2]; MICRO_ROWS] = std::array::from_fn(|r| {
        let row = start.add(r * start_ld);
        [_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(PANEL))]
    });
    for p in 0..pairs {
        let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b0.add(p * 2 * PANEL).cast()));
        let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b1.add(p * 2 * PANEL).cast()));
        for (r, acc) in acc.iter_mut().enumerate() {
            // A[r][2p] and A[r][2p+1] as one 32-bit lane, in all 16 lanes.
            let pair = a.add(r * lda + 2 * p).cast::<i32>().read_unaligned();
            let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
            acc[0] = _mm512_dpbf16_ps(acc[0], x, w0);
            acc[1] = _mm512_dpbf16_ps(acc[1], x, w1);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        _mm512_storeu_ps(c.add(r * ldc), acc[0]);
        _mm512_storeu_ps(c.add(r * ldc + PANEL), acc[1]);
    }
}

/// `dst[i] = bf16(src[i])` with `vcvtneps2bf16` (round to nearest even; denormals flush to 0,
/// as they do inside the dot-product instructions).
///
/// # Safety
/// The CPU has AVX-512F and AVX-512 BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn convert_row(src: &[f32], dst: &mut [std::mem::MaybeUninit<u16>]) {
    let n = src.len().min(dst.len());
    let whole = n / PANEL * PANEL;
    for i in (0..whole).step_by(PANEL) {
        let v = _mm512_loadu_ps(src.as_ptr().add(i));
        let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
        _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), h);
    }
    for i in whole..n {
        dst[i].write(super::bf16_bits(src[i]));
    }
}
