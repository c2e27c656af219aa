//! The AMX kernel: each 32×32 block of C is four 16×16 f32 tiles (tmm0–3), fed per 32-deep step
//! by two 16×32 bf16 tiles of A (tmm4–5) and two 32×16 tiles of B (tmm6–7, VNNI pairs).
//!
//! Rust has no stable AMX intrinsics, so the instructions are `asm!`; the compiler never touches
//! tile registers itself, so tile state may live across `asm!` blocks inside one function.
use super::{for_each_block, PackedMatrix, Sink, DEPTH_STEP, PANEL};
use crate::nn::cpu::amx_tiles::Tiles;
use std::arch::asm;

/// C rows of one thread's part.
///
/// # Safety
/// The CPU has AMX-BF16 and the process its permission; `a` holds whole 32-row blocks of
/// `b.k_pad` columns, `bias` `b.n_pad` entries, `out` `rows × b.n` entries.
pub(super) unsafe fn run_rows(
    a: &[u16],
    rows: usize,
    b: &PackedMatrix,
    bias: &[f32],
    out: Sink<'_>,
) {
    let steps = b.k_pad / DEPTH_STEP;
    let lda = b.k_pad * 2;
    // SAFETY: the caller vouches for AMX; the tiles stay configured until `_tiles` drops.
    let _tiles = unsafe { Tiles::configure() };
    for_each_block(a, rows, b, bias, out, |a, b0, b1, bias, c, ldc| {
        // SAFETY: a block of A is 32 rows × lda bytes, a panel of B `steps` tiles of 1 KiB, the
        // bias 32 floats, C 32 rows of `ldc` floats (the caller's block or scratch).
        unsafe {
            block(
                a.as_ptr(),
                lda,
                b0.as_ptr(),
                b1.as_ptr(),
                steps,
                bias.as_ptr(),
                c,
                ldc,
            )
        };
    });
}

/// One 32×32 block of C = bias + A·B over `steps` 32-deep steps.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn block(
    a: *const u16,
    lda: usize,
    b0: *const u16,
    b1: *const u16,
    steps: usize,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
) {
    const TILE_BYTES: usize = 16 * 64;
    let a_low = a.cast::<u8>().add(16 * lda);
    // A zero stride loads the same 16 biases into every row of the accumulators.
    asm!(
        "tileloadd tmm0, [{b0} + {zero}*1]",
        "tileloadd tmm1, [{b1} + {zero}*1]",
        "tileloadd tmm2, [{b0} + {zero}*1]",
        "tileloadd tmm3, [{b1} + {zero}*1]",
        b0 = in(reg) bias,
        b1 = in(reg) bias.add(PANEL),
        zero = in(reg) 0usize,
        options(nostack, readonly)
    );
    for s in 0..steps {
        asm!(
            "tileloadd tmm4, [{a0} + {lda}*1]",
            "tileloadd tmm5, [{a1} + {lda}*1]",
            "tileloadd tmm6, [{b0} + {ldb}*1]",
            "tileloadd tmm7, [{b1} + {ldb}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
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
