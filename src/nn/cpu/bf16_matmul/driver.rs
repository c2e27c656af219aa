//! The driver both kernels share: which blocks of C, over which part of the depth, in which
//! order, and where their sums go ([`Sink`]).
use super::{rows, PackedMatrix, BLOCK, CHUNK_PANELS, DEPTH_STEP, PANEL};
use std::mem::MaybeUninit;

/// C rows a kernel writes, not yet initialised (every element is written exactly once).
type Out<'a> = &'a mut [MaybeUninit<f32>];

/// Where a kernel's blocks of C go.
pub(super) enum Sink<'a> {
    /// C itself in f32, `rows × n`, row-major.
    F32(Out<'a>),
    /// GELU(C) rounded to bf16, in rows of `ld` (C's padded width): the left operand of the next
    /// product ([`PackedRows`]), so the FFN's widest activation never exists in f32.
    GeluBf16 {
        out: &'a mut [MaybeUninit<u16>],
        ld: usize,
    },
}

/// Where a block's f32 accumulators start.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) enum Start {
    /// The bias: the same 32 floats in every row (the first pass over the depth).
    Bias(*const f32),
    /// Partial sums a previous pass stored: 32 rows of `ld` floats.
    Partial(*const f32, usize),
}

/// 32-deep steps of one pass over the depth, for the AMX kernel: 32 rows × 256 bf16 of A (16 KiB)
/// stay in the 48 KiB L1 while the chunk's panels pass under them. Over the whole depth at once,
/// A's block (48 KiB at roberta-base's 768, 192 KiB at 3072) fell out of L1 and both operands'
/// tiles came from L2. Measured on a Xeon with AMX (examples/bf16_matmul_speed.rs shapes, one
/// core): 768×768 products 1.25 -> 1.5 TFLOP/s; a roberta-base caching pass spent 8% fewer cycles
/// in its products (perf sample counts, 8 against 12 and whole-depth passes).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) const AMX_DEPTH_BLOCK: usize = 8;

/// The driver both kernels share: column chunks that stay in L2; for each 32-row block of A,
/// passes of `depth_block` steps over the depth (A's part of a pass stays in L1 across the
/// chunk's panels); 32×32 blocks of C. `block(a, b0, b1, steps, start, c, ldc)` adds `steps`
/// steps of A·B to `start` and stores the sums at `c`; between passes the sums wait, exact in
/// f32, in a chunk-wide buffer, so the passes give the bits of one pass. Blocks at the edges of C
/// go through a scratch block.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn for_each_block(
    a: &[u16],
    lda: usize,
    rows: usize,
    b: &PackedMatrix,
    bias: &[f32],
    mut sink: Sink<'_>,
    depth_block: usize,
    mut block: impl FnMut(&[u16], &[u16], &[u16], usize, Start, *mut f32, usize),
) {
    const CHUNK_COLS: usize = CHUNK_PANELS * PANEL;
    let n = b.n;
    let panels = b.n_pad / PANEL;
    let depth_steps = b.k_pad / DEPTH_STEP;
    let per_pass = depth_block.clamp(1, depth_steps.max(1));
    let passes = depth_steps.div_ceil(per_pass);
    let mut partial = vec![0f32; if passes > 1 { BLOCK * CHUNK_COLS } else { 0 }];
    let partial = partial.as_mut_ptr();
    let mut scratch = [0f32; BLOCK * BLOCK];
    for chunk in (0..panels).step_by(CHUNK_PANELS) {
        for row in (0..rows).step_by(BLOCK) {
            let a_block = &a[row * lda..(row + BLOCK) * lda];
            for pass in 0..passes {
                let first_step = pass * per_pass;
                let steps = per_pass.min(depth_steps - first_step);
                let depth = first_step * DEPTH_STEP;
                for p in (chunk..panels.min(chunk + CHUNK_PANELS)).step_by(2) {
                    let col = p * PANEL;
                    let (valid_rows, valid_cols) =
                        ((rows - row).min(BLOCK), (n - col.min(n)).min(BLOCK));
                    if valid_cols == 0 {
                        continue;
                    }
                    // The block's columns of the chunk-wide buffer (BLOCK rows of CHUNK_COLS;
                    // p - chunk + 2 ≤ CHUNK_PANELS, the chunk being whole pairs). With one pass
                    // the buffer is empty and the pointer never used: hence `wrapping_add`.
                    let sums = partial.wrapping_add((p - chunk) * PANEL);
                    let start = if pass == 0 {
                        Start::Bias(bias[col..col + BLOCK].as_ptr())
                    } else {
                        Start::Partial(sums, CHUNK_COLS)
                    };
                    let (a_pass, b0, b1) = (
                        &a_block[depth..],
                        &b.panel(p)[depth * PANEL..],
                        &b.panel(p + 1)[depth * PANEL..],
                    );
                    if pass + 1 < passes {
                        block(a_pass, b0, b1, steps, start, sums, CHUNK_COLS);
                        continue;
                    }
                    let out = match &mut sink {
                        Sink::F32(out) => out,
                        Sink::GeluBf16 { out, ld } => {
                            // Whole blocks, padding rows and columns too: the layout has room for
                            // them, and what lands in padding is finite and never read as data.
                            let s = scratch.as_mut_ptr();
                            block(a_pass, b0, b1, steps, start, s, BLOCK);
                            rows::store_gelu_bf16(&scratch, &mut out[row * *ld + col..], *ld);
                            continue;
                        }
                    };
                    if valid_rows == BLOCK && valid_cols == BLOCK {
                        let c = out[row * n + col..].as_mut_ptr().cast::<f32>();
                        block(a_pass, b0, b1, steps, start, c, n);
                    } else {
                        let s = scratch.as_mut_ptr();
                        block(a_pass, b0, b1, steps, start, s, BLOCK);
                        for r in 0..valid_rows {
                            for (o, &v) in out[(row + r) * n + col..][..valid_cols]
                                .iter_mut()
                                .zip(&scratch[r * BLOCK..])
                            {
                                o.write(v);
                            }
                        }
                    }
                }
            }
        }
    }
}
