//! The AMX-INT8 kernel: each 32×32 block of C is four 16×16 i32 tiles (tmm0–3), fed per 64-deep
//! step by two 16×64 int8 tiles of A (tmm4–5) and two 16×64 tiles of B (tmm6–7: 16 groups of 4
//! depths × 16 columns), multiplied signed by signed (`tdpbssd`).
//!
//! As in the bf16 kernel ([`crate::nn::cpu::bf16_matmul`]), the instructions are `asm!` (Rust has
//! no stable AMX intrinsics) and the tile state lives across the blocks of one call.
use super::{Acc, Part, BLOCK, DEPTH_STEP, PANEL};
use crate::nn::cpu::amx_tiles::Tiles;
use std::arch::asm;

/// One thread's part of C.
///
/// # Safety
/// The CPU has AMX-INT8 and the process its permission; `part` holds whole 32-row blocks of A.
pub(super) unsafe fn run_part(part: &Part<'_>, out: &mut [f32]) {
    // SAFETY: the caller vouches for AMX-INT8; the tiles stay configured until `_tiles` drops.
    let _tiles = unsafe { Tiles::configure() };
    part.for_each_block(out, |a, lda, b0, b1, _sums, acc| {
        // SAFETY: A is 32 rows of `lda` bytes, each panel `lda / 64` tiles of 1 KiB, `acc` 32 rows
        // of 32 i32.
        unsafe { block(a.as_ptr(), lda, b0.as_ptr(), b1.as_ptr(), acc) }
    });
}

#[inline(always)]
unsafe fn block(a: *const i8, lda: usize, b0: *const i8, b1: *const i8, acc: &mut Acc) {
    const TILE_BYTES: usize = 16 * 64;
    let steps = lda / DEPTH_STEP;
    let a_low = a.add(16 * lda);
    asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        options(nostack, nomem)
    );
    for s in 0..steps {
        asm!(
            "tileloadd tmm4, [{a0} + {lda}*1]",
            "tileloadd tmm5, [{a1} + {lda}*1]",
            "tileloadd tmm6, [{b0} + {ldb}*1]",
            "tileloadd tmm7, [{b1} + {ldb}*1]",
            "tdpbssd tmm0, tmm4, tmm6",
            "tdpbssd tmm1, tmm4, tmm7",
            "tdpbssd tmm2, tmm5, tmm6",
            "tdpbssd tmm3, tmm5, tmm7",
            a0 = in(reg) a.add(s * DEPTH_STEP),
            a1 = in(reg) a_low.add(s * DEPTH_STEP),
            b0 = in(reg) b0.add(s * TILE_BYTES),
            b1 = in(reg) b1.add(s * TILE_BYTES),
            lda = in(reg) lda,
            ldb = in(reg) 64usize,
            options(nostack, readonly)
        );
    }
    let c = acc.as_mut_ptr();
    let ldc = BLOCK * 4;
    asm!(
        "tilestored [{c0} + {ldc}*1], tmm0",
        "tilestored [{c1} + {ldc}*1], tmm1",
        "tilestored [{c2} + {ldc}*1], tmm2",
        "tilestored [{c3} + {ldc}*1], tmm3",
        c0 = in(reg) c,
        c1 = in(reg) c.add(PANEL),
        c2 = in(reg) c.add(16 * BLOCK),
        c3 = in(reg) c.add(16 * BLOCK + PANEL),
        ldc = in(reg) ldc,
        options(nostack)
    );
}
