//! The left operand A in the kernels' own layout ([`PackedRows`]), and the products that read it:
//! to f32 ([`matmul_rows`]), or through GELU straight back into that layout ([`matmul_rows_gelu`]).
//!
//! Keeping A packed lets one conversion of a layer's input feed several products (query, key and
//! value read the same rows), and lets the FFN's intermediate activation, the widest of an
//! encoder layer, go from one product into the next in bf16 without a pass over memory in f32.
use super::{Kernel, PackedMatrix, Sink, BLOCK, DEPTH_STEP};
use crate::nn::cpu::row_runs::Runs;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// M × K activations rounded to bf16: K padded with zeros to a multiple of 32, the rows split in
/// one part per thread, each part padded to whole 32-row blocks, so that each thread's kernel
/// reads only whole blocks of its own part.
#[derive(Debug)]
pub struct PackedRows {
    m: usize,
    k: usize,
    k_pad: usize,
    /// Elements from one row to the next: `k_pad`, one cache line more where `k_pad` rows would
    /// fall on a few of L1's sets ([`row_stride`]).
    ld: usize,
    /// Rows of one part (a multiple of the block).
    part: usize,
    data: Vec<u16>,
}

impl PackedRows {
    /// Rounds A (M × K, row-major f32) to bf16 in this layout. Only padding is zeroed.
    pub fn from_f32(a: &[f32], m: usize, k: usize) -> Self {
        assert_eq!(a.len(), m * k, "A is M×K");
        Self::build(m, k, Runs::Every(1), a.par_chunks(k.max(1)), |row| row)
    }

    /// M × K rows computed in f32 by `compute(run, first_row, rows)`, a run of `runs` at a time,
    /// each run's rows rounded into this layout while they are still in cache: the f32 rows
    /// (returned too) and their bf16 copy in one pass over memory instead of two. The bits of
    /// computing all rows and then [`PackedRows::from_f32`].
    ///
    /// `compute` must write every element of the rows it is handed (they start uninitialised,
    /// as [`super::super::fast_math::vec_for_overwrite`]'s do): crate kernels only.
    pub(crate) fn from_f32_computed(
        m: usize,
        k: usize,
        runs: Runs,
        compute: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) -> (Vec<f32>, Self) {
        assert!(k > 0, "rows have a width");
        let mut f32s = super::super::fast_math::vec_for_overwrite(m * k);
        let tasks = runs.split(&mut f32s, k).into_par_iter().enumerate();
        let rows = Self::build(m, k, runs, tasks, |(t, (first, src))| {
            compute(t, first, src);
            &*src
        });
        (f32s, rows)
    }

    /// The layout of M × K, a run of `runs` at a time: each run's item of `sources` (one per
    /// run) gives its rows in f32 through `rows_of`, which are rounded into the layout; rows past
    /// M are zeroed.
    fn build<'s, S: Send>(
        m: usize,
        k: usize,
        runs: Runs,
        sources: impl IndexedParallelIterator<Item = S>,
        rows_of: impl Fn(S) -> &'s [f32] + Sync + Send,
    ) -> Self {
        let mut rows = Self::uninit(m, k);
        let (ld, part) = (rows.ld, rows.part);
        let spare = &mut rows.data.spare_capacity_mut()[..rows_len(m, ld, part)];
        let (data, pad_rows) = spare.split_at_mut(m * ld);
        runs.split(data, ld)
            .into_par_iter()
            .zip(sources)
            .for_each(|((_, dst), src)| {
                for (src, dst) in rows_of(src).chunks(k.max(1)).zip(dst.chunks_mut(ld)) {
                    pack_row(src, dst);
                }
            });
        pad_rows.fill(MaybeUninit::new(0));
        // SAFETY: every row was converted or zeroed above, its padding columns zeroed.
        unsafe { rows.data.set_len(rows_len(m, ld, part)) };
        rows
    }

    /// An empty vector with room for the layout of M × K.
    fn uninit(m: usize, k: usize) -> Self {
        let k_pad = k.div_ceil(DEPTH_STEP) * DEPTH_STEP;
        let ld = row_stride(k_pad);
        let threads = rayon::current_num_threads().max(1);
        let part = (m.div_ceil(threads).div_ceil(BLOCK) * BLOCK).max(BLOCK);
        Self {
            m,
            k,
            k_pad,
            ld,
            part,
            data: Vec::with_capacity(rows_len(m, ld, part)),
        }
    }

    /// (M, K).
    pub fn dims(&self) -> (usize, usize) {
        (self.m, self.k)
    }

    /// The whole layout, padding included (tests).
    #[cfg(test)]
    pub(crate) fn raw(&self) -> &[u16] {
        &self.data
    }

    /// Row `i` as f32 (tests).
    pub fn row(&self, i: usize) -> Vec<f32> {
        self.data[i * self.ld..i * self.ld + self.k]
            .iter()
            .map(|&b| super::bf16_value(b))
            .collect()
    }

    /// Each part's rows: (its slice of the layout, its valid rows).
    fn parts(&self) -> impl IndexedParallelIterator<Item = (&[u16], usize)> {
        let m = self.m;
        let part = self.part;
        self.data
            .par_chunks(part * self.ld)
            .enumerate()
            .map(move |(i, a)| (a, part.min(m - i * part)))
    }
}

/// One row of f32 into one row of the layout: rounded, then zeros to the stride.
fn pack_row(src: &[f32], dst: &mut [MaybeUninit<u16>]) {
    let (dst, pad) = dst.split_at_mut(src.len());
    convert_row(src, dst);
    pad.fill(MaybeUninit::new(0));
}

/// Elements of the layout: whole parts of `part` rows of `ld`.
fn rows_len(m: usize, ld: usize, part: usize) -> usize {
    m.div_ceil(part) * part * ld
}

/// The row stride for rows of `k_pad` bf16: one cache line more where the rows would start 2 KiB
/// or a multiple apart. A 32-row block's lines then fall on two of L1's 4 KiB-periodic set
/// groups and evict one another (roberta-base's FFN output, depth 3,072: 6 KiB rows; the product
/// ran 1.17 TFLOP/s on one core, against 1.39 at depth 3,040 and 1.25 with the extra line).
fn row_stride(k_pad: usize) -> usize {
    let bytes = k_pad * 2;
    if bytes > 0 && bytes.is_multiple_of(2048) {
        k_pad + DEPTH_STEP
    } else {
        k_pad
    }
}

/// The bias padded with zeros to B's padded width, after checking that A, B and the bias fit.
fn padded_bias(a: &PackedRows, b: &PackedMatrix, bias: Option<&[f32]>) -> Vec<f32> {
    assert_eq!(a.k, b.k, "A's depth is B's");
    assert!(a.k > 0 && b.n > 0, "an empty product has no packed form");
    let mut bias_pad = vec![0f32; b.n_pad];
    if let Some(bias) = bias {
        assert_eq!(bias.len(), b.n, "bias has N entries");
        bias_pad[..b.n].copy_from_slice(bias);
    }
    bias_pad
}

/// C = A·B + bias (M × N, f32).
pub fn matmul_rows(
    kernel: Kernel,
    a: &PackedRows,
    b: &PackedMatrix,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    matmul_rows_in_passes(kernel, a, b, bias, kernel.depth_block())
}

/// [`matmul_rows`] in passes of `depth_block` steps over the depth (tests: any pass length
/// gives the same bits).
pub(super) fn matmul_rows_in_passes(
    kernel: Kernel,
    a: &PackedRows,
    b: &PackedMatrix,
    bias: Option<&[f32]>,
    depth_block: usize,
) -> Vec<f32> {
    let bias_pad = padded_bias(a, b, bias);
    let (m, n, lda) = (a.m, b.n, a.ld);
    // C is written whole by the blocks, so it is never zeroed first.
    let mut c = Vec::with_capacity(m * n);
    c.spare_capacity_mut()[..m * n]
        .par_chunks_mut(a.part * n)
        .zip(a.parts())
        .for_each(|(out, (a, rows))| {
            kernel.run_rows(a, lda, rows, b, &bias_pad, Sink::F32(out), depth_block)
        });
    // SAFETY: the blocks wrote each of the m·n elements (`for_each_block` covers every row and
    // every column of C).
    unsafe { c.set_len(m * n) };
    c
}

/// GELU(A·B + bias), rounded to bf16 in the layout of the next product's left operand
/// (M × N): HF's `intermediate` dense layer and activation, ready for `output`.
pub fn matmul_rows_gelu(
    kernel: Kernel,
    a: &PackedRows,
    b: &PackedMatrix,
    bias: Option<&[f32]>,
) -> PackedRows {
    matmul_rows_gelu_in_passes(kernel, a, b, bias, kernel.depth_block())
}

/// [`matmul_rows_gelu`] in passes of `depth_block` steps over the depth.
pub(super) fn matmul_rows_gelu_in_passes(
    kernel: Kernel,
    a: &PackedRows,
    b: &PackedMatrix,
    bias: Option<&[f32]>,
    depth_block: usize,
) -> PackedRows {
    let bias_pad = padded_bias(a, b, bias);
    let mut out = PackedRows::uninit(a.m, b.n);
    assert_eq!((out.k_pad, out.part), (b.n_pad, a.part), "same layout");
    let (ld, len) = (out.ld, rows_len(a.m, out.ld, out.part));
    let (n_pad, lda) = (out.k_pad, a.ld);
    out.data.spare_capacity_mut()[..len]
        .par_chunks_mut(a.part * ld)
        .zip(a.parts())
        .for_each(|(dst, (a, rows))| {
            // Rows past the last block of the last part are never computed, nor the columns
            // past N's padding (the stride's extra line, if any): zero them.
            let computed = rows.div_ceil(BLOCK) * BLOCK;
            dst[computed * ld..].fill(MaybeUninit::new(0));
            if ld > n_pad {
                for row in dst[..computed * ld].chunks_exact_mut(ld) {
                    row[n_pad..].fill(MaybeUninit::new(0));
                }
            }
            let out = Sink::GeluBf16 { out: dst, ld };
            kernel.run_rows(a, lda, rows, b, &bias_pad, out, depth_block);
        });
    // SAFETY: the blocks wrote every column (N padded to whole blocks) of each part's computed
    // rows, and the rest was zeroed above.
    unsafe { out.data.set_len(len) };
    out
}

/// Writes GELU of a 32×32 block of C, rounded to bf16, into rows of `ld` starting at `out`: in
/// AVX-512 where the CPU has it ([`super::gelu_epilogue`]), else with training's GELU
/// ([`super::super::fast_math::gelu_slice`]) and a conversion.
pub(super) fn store_gelu_bf16(
    block: &[f32; BLOCK * BLOCK],
    out: &mut [MaybeUninit<u16>],
    ld: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let f = super::super::features::x86_features();
        if f.avx512f && f.avx512_bf16 {
            // SAFETY: the CPU has both; the block's 32 rows of `ld` lie in `out` (the layout
            // has room for whole blocks).
            return unsafe { super::gelu_epilogue::store_gelu_bf16(block, out, ld) };
        }
    }
    let mut g = [0f32; BLOCK * BLOCK];
    super::super::fast_math::gelu_slice(block, &mut g);
    for (r, row) in g.chunks_exact(BLOCK).enumerate() {
        convert_row(row, &mut out[r * ld..r * ld + BLOCK]);
    }
}

/// Rounds a row to bf16: with the CPU's own instruction where it has one (every CPU a native
/// kernel runs on does), else in software; the same bits for all normal numbers.
pub(super) fn convert_row(src: &[f32], dst: &mut [MaybeUninit<u16>]) {
    #[cfg(target_arch = "x86_64")]
    {
        let f = super::super::features::x86_features();
        if f.avx512f && f.avx512_bf16 {
            // SAFETY: the CPU has AVX-512 BF16 (and so AVX-512F).
            return unsafe { super::avx512::convert_row(src, dst) };
        }
    }
    convert_row_portable(src, dst);
}

super::super::fast_math::multiversion! {
    fn convert_row_portable(src: &[f32], dst: &mut [MaybeUninit<u16>]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            d.write(super::bf16_bits(s));
        }
    }
}
