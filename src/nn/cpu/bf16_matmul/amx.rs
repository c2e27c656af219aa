//! The AMX kernel: each 32×32 block of C is four 16×16 f32 tiles (tmm0–3), fed per 32-deep step
//! by two 16×32 bf16 tiles of A (tmm4–5) and two 32×16 tiles of B (tmm6–7, VNNI pairs).
//!
//! Rust has no stable AMX intrinsics, so the instructions are `asm!`; the compiler never touches
//! tile registers itself, so tile state may live across `asm!` blocks inside one function.
use super::{for_each_block, PackedMatrix, Sink, Start, PANEL};
use crate::nn::cpu::amx_tiles::Tiles;
use std::arch::asm;

/// C rows of one thread's part, in passes of `depth_block` steps over the depth.
///
/// # Safety
/// The CPU has AMX-BF16 and the process its permission; `a` holds whole 32-row blocks of
/// `lda` elements (`b.k_pad` of them data), `bias` `b.n_pad` entries, `out` `rows × b.n` entries.
pub(super) unsafe fn run_rows(
    a: &[u16],
    lda: usize,
    rows: usize,
    b: &PackedMatrix,
    bias: &[f32],
    out: Sink<'_>,
    depth_block: usize,
) {
    let lda_bytes = lda * 2;
    // SAFETY: the caller vouches for AMX; the tiles stay configured until `_tiles` drops.
    let _tiles = unsafe { Tiles::configure() };
    let run = |a: &[u16], b0: &[u16], b1: &[u16], steps, start, c, ldc| {
        // SAFETY: a pass of A is 32 rows × lda_bytes from its first step, a pass of a panel
        // `steps` tiles of 1 KiB, the start 32 floats or 32 rows of partial sums, C 32 rows of
        // `ldc` floats (the caller's block, scratch or partial sums).
        unsafe {
            block(
                a.as_ptr(),
                lda_bytes,
                b0.as_ptr(),
                b1.as_ptr(),
                steps,
                start,
                c,
                ldc,
            )
        }
    };
    for_each_block(a, lda, rows, b, bias, out, depth_block, run);
}

/// One 32×32 block of C = start + A·B over `steps` 32-deep steps.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn block(
    a: *const u16,
    lda: usize,
    b0: *const u16,
    b1: *const u16,
    steps: usize,
    start: Start,
    c: *mut f32,
    ldc: usize,
) {
    const TILE_BYTES: usize = 16 * 64;
    let a_low = a.cast::<u8>().add(16 * lda);
    // The bias has a zero stride: the same 16 floats in every row of an accumulator.
    let (init, init_ld) = match start {
        Start::Bias(bias) => (bias, 0),
        Start::Partial(sums, ld) => (sums, ld),
    };
    asm!(
        "tileloadd tmm0, [{c0} + {ld}*1]",
        "tileloadd tmm1, [{c1} + {ld}*1]",
        "tileloadd tmm2, [{c2} + {ld}*1]",
        "tileloadd tmm3, [{c3} + {ld}*1]",
        c0 = in(reg) init,
        c1 = in(reg) init.add(PANEL),
        c2 = in(reg) init.add(16 * init_ld),
        c3 = in(reg) init.add(16 * init_ld + PANEL),
        ld = in(reg) init_ld * 4,
        options(nostack, readonly)
    );
    for s in 0..steps {
        // Each load just before the first product that reads it: a tile register is not
        // renamed, so the next step's load waits for the last product reading it.
        asm!(
            "tileloadd tmm4, [{a0} + {lda}*1]",
            "tileloadd tmm6, [{b0} + {ldb}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b1} + {ldb}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {lda}*1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a0 = in(reg) a.cast::<u8>().add(s * 64),
            a1 = in(reg) a_low.add(s * 64),
            b0 = in(reg) b0.cast::<u8>().add(s * TILE_BYTES),
            b1 = in(reg) b1.cast::<u8>().add(s * TILE_BYTES),
            lda = in(reg) lda,
            ldb = in(reg) 64usize,
            options(nostack, readonly)
        );
    }
    let ldc_bytes = ldc * 4;
    let c_low = c.cast::<u8>().add(16 * ldc_bytes);
    asm!(
        "tilestored [{c0} + {ldc}*1], tmm0",
        "tilestored [{c1} + {ldc}*1], tmm1",
        "tilestored [{c2} + {ldc}*1], tmm2",
        "tilestored [{c3} + {ldc}*1], tmm3",
        c0 = in(reg) c,
        c1 = in(reg) c.add(PANEL),
        c2 = in(reg) c_low,
        c3 = in(reg) c_low.add(PANEL * 4),
        ldc = in(reg) ldc_bytes,
        options(nostack)
    );
}
