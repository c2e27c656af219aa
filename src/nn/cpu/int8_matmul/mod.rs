//! int8 products on the CPU, for inference (`--int8`): C = (A_q·B_q)·s_A·s_B + bias, with B a
//! frozen weight quantized once per output channel and A an activation quantized per row as it
//! enters the product (symmetric, to ±127: "dynamic quantization"). The products are integer and
//! exact (i32 sums), so every kernel returns the same bits:
//! - AMX-INT8 (`tdpbssd` on 16×64 by 16×64 tiles; Intel Sapphire Rapids and later);
//! - AVX-512 VNNI (`vpdpbusd`; Intel Cascade Lake and later, AMD Zen 4/5), which multiplies an
//!   unsigned byte by a signed one: A goes in as A + 128 and 128·Σ_k B is taken back out;
//! - a portable loop elsewhere (correct, not fast).
//!
//! Which one runs is decided at run time ([`int8_kernel`]; `KD_CPU_INT8=amx|vnni|portable`
//! overrides it). Both B and A are packed once into the layout both native kernels read: B in
//! panels of 16 columns of 4-deep groups (the "VNNI" order), A in rows padded to whole 64-deep
//! steps and whole 32-row blocks per thread.
#[cfg(target_arch = "x86_64")]
mod amx;
mod rows;
#[cfg(target_arch = "x86_64")]
mod vnni;

use super::fast_math::multiversion;
use rayon::prelude::*;
use rows::quantize_row;
#[cfg(test)]
use rows::quantize_row_portable;
pub use rows::QuantizedRows;
use std::sync::OnceLock;

/// Rows and columns of one block of C.
const BLOCK: usize = 32;
/// Columns of one packed panel (one AMX tile's width in i32, one zmm register).
const PANEL: usize = 16;
/// Depth of one AMX step: a tile row of 64 bytes.
const DEPTH_STEP: usize = 64;
/// Panels per column chunk: 256 columns of B (K·256 bytes) stay in L2 while the rows pass.
const CHUNK_PANELS: usize = 16;
/// The largest quantized magnitude (symmetric: −127..=127, so −x quantizes to −q).
const QMAX: f32 = 127.0;

/// A CPU int8 matrix kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Kernel {
    /// AMX tiles: `tdpbssd`.
    Amx,
    /// AVX-512 VNNI: `vpdpbusd` on zmm registers.
    Vnni,
    /// Plain integer loops (any CPU).
    Portable,
}

impl Int8Kernel {
    /// The name records and logs use.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Amx => "AMX-INT8",
            Int8Kernel::Vnni => "AVX-512 VNNI",
            Int8Kernel::Portable => "portable int8",
        }
    }

    /// Whether this CPU (and, for AMX, the kernel's permission) lets the kernel run.
    pub fn available(self) -> bool {
        let f = super::features::x86_features();
        match self {
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Amx => f.avx512f && f.amx_int8 && super::amx_tiles::permitted(),
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Vnni => f.avx512f && f.avx512_vnni,
            Int8Kernel::Portable => true,
            #[allow(unreachable_patterns)]
            _ => {
                let _ = f;
                false
            }
        }
    }
}

/// The int8 kernel this process uses, decided once: AMX-INT8, else AVX-512 VNNI, else the
/// portable loops; `KD_CPU_INT8=amx|vnni|portable` asks for one (and falls back to the portable
/// loops if this CPU lacks it).
pub fn int8_kernel() -> Int8Kernel {
    static CHOICE: OnceLock<Int8Kernel> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        let order: &[Int8Kernel] = match std::env::var("KD_CPU_INT8").as_deref() {
            Ok("amx") => &[Int8Kernel::Amx],
            Ok("vnni") => &[Int8Kernel::Vnni],
            Ok("portable") => &[],
            _ => &[Int8Kernel::Amx, Int8Kernel::Vnni],
        };
        order
            .iter()
            .copied()
            .find(|k| k.available())
            .unwrap_or(Int8Kernel::Portable)
    })
}

/// B (K × N) quantized per column (a linear layer's output channel): B[k][n] ≈ q[k][n]·scale[n].
/// Packed in panels of 16 columns, each K_pad/4 rows of 16 columns × 4 consecutive depths; K is
/// padded with zeros to a multiple of 64 and N to a multiple of 32.
#[derive(Debug)]
pub struct QuantizedMatrix {
    k: usize,
    n: usize,
    k_pad: usize,
    n_pad: usize,
    data: Vec<i8>,
    /// Per column, 0 in padding.
    scale: Vec<f32>,
    /// Σ_k q[k][n] per column: the VNNI kernel's correction for its +128 on A.
    col_sum: Vec<i32>,
}

impl QuantizedMatrix {
    /// Quantizes B = Wᵀ for a linear layer's weight W (out × in, row-major f32): one scale per
    /// output channel, max|W[n]|/127.
    pub fn from_weight_transposed(w: &[f32], out_dim: usize, in_dim: usize) -> Self {
        assert_eq!(w.len(), out_dim * in_dim, "weight size");
        let (k, n) = (in_dim, out_dim);
        let k_pad = k.div_ceil(DEPTH_STEP).max(1) * DEPTH_STEP;
        let n_pad = n.div_ceil(BLOCK).max(1) * BLOCK;
        let mut q = vec![0i8; n * k];
        let mut scale = vec![0f32; n_pad];
        let mut col_sum = vec![0i32; n_pad];
        for j in 0..n {
            let row = &w[j * in_dim..(j + 1) * in_dim];
            scale[j] = quantize_row(row, &mut q[j * k..(j + 1) * k]);
            col_sum[j] = q[j * k..(j + 1) * k].iter().map(|&v| v as i32).sum();
        }
        let panel_len = k_pad * PANEL;
        let mut data = vec![0i8; panel_len * (n_pad / PANEL)];
        data.par_chunks_mut(panel_len)
            .enumerate()
            .for_each(|(p, panel)| {
                for col in 0..PANEL.min(n.saturating_sub(p * PANEL)) {
                    let j = p * PANEL + col;
                    for kk in 0..k {
                        panel[offset_in_panel(kk, col)] = q[j * k + kk];
                    }
                }
            });
        Self {
            k,
            n,
            k_pad,
            n_pad,
            data,
            scale,
            col_sum,
        }
    }

    /// (K, N).
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// Bytes of the packed weight and its scales: what the layer weighs in memory.
    pub fn bytes(&self) -> usize {
        self.data.len() + 4 * self.scale.len() + 4 * self.col_sum.len()
    }

    /// q[k][n] (tests, the reference).
    fn get(&self, k: usize, n: usize) -> i8 {
        let (p, col) = (n / PANEL, n % PANEL);
        self.data[p * self.k_pad * PANEL + offset_in_panel(k, col)]
    }

    /// B[k][n] as the product sees it, q·scale (tests).
    pub fn value(&self, k: usize, n: usize) -> f32 {
        self.get(k, n) as f32 * self.scale[n]
    }

    fn panel(&self, p: usize) -> &[i8] {
        let len = self.k_pad * PANEL;
        &self.data[p * len..(p + 1) * len]
    }
}

/// Where B[k][col] sits inside its panel: row k/4 of 16 columns × 4 depths.
#[inline(always)]
fn offset_in_panel(k: usize, col: usize) -> usize {
    (k / 4) * 4 * PANEL + 4 * col + k % 4
}

/// C = (A_q·B_q)·scale_A·scale_B + bias (M × N, f32), on `kernel`.
pub fn matmul(
    kernel: Int8Kernel,
    a: &QuantizedRows,
    b: &QuantizedMatrix,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert_eq!(a.k, b.k, "A's depth is B's");
    assert!(
        kernel.available(),
        "{} is not available here",
        kernel.name()
    );
    let (m, n) = (a.m, b.n);
    let mut bias_pad = vec![0f32; b.n_pad];
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "bias has N entries");
        bias_pad[..n].copy_from_slice(bias);
    }
    if m == 0 || n == 0 {
        return vec![0f32; m * n];
    }
    // Every element is written by the blocks (each row of each part, each valid column).
    let mut c = super::fast_math::vec_for_overwrite(m * n);
    let part_len = a.part * a.k_pad;
    c.par_chunks_mut(a.part * n)
        .zip(a.data.par_chunks(part_len))
        .zip(a.scale.par_chunks(a.part))
        .for_each(|((out, a_part), a_scale)| {
            let rows = out.len() / n;
            let part = Part {
                a: a_part,
                a_scale,
                rows,
                b,
                bias: &bias_pad,
            };
            match kernel {
                // SAFETY: available (asserted above); the part holds whole 32-row blocks of
                // k_pad bytes, B whole panels.
                #[cfg(target_arch = "x86_64")]
                Int8Kernel::Amx => unsafe { amx::run_part(&part, out) },
                #[cfg(target_arch = "x86_64")]
                Int8Kernel::Vnni => unsafe { vnni::run_part(&part, out) },
                _ => part.for_each_block(out, portable_block),
            }
        });
    c
}

/// The i32 sums of one 32×32 block of C, row-major.
type Acc = [i32; BLOCK * BLOCK];

/// One thread's rows of A and what every block of them needs.
struct Part<'a> {
    a: &'a [i8],
    a_scale: &'a [f32],
    rows: usize,
    b: &'a QuantizedMatrix,
    bias: &'a [f32],
}

impl Part<'_> {
    /// Column chunks that stay in L2, 32-row blocks of A, 32×32 blocks of C over the whole depth:
    /// `block(a, lda, b0, b1, column sums, acc)` sums one block, which is then scaled, biased and
    /// written to `out` (this part's rows × N).
    fn for_each_block(
        &self,
        out: &mut [f32],
        mut block: impl FnMut(&[i8], usize, &[i8], &[i8], &[i32], &mut Acc),
    ) {
        let b = self.b;
        let (n, lda) = (b.n, b.k_pad);
        let panels = b.n_pad / PANEL;
        let mut acc: Acc = [0; BLOCK * BLOCK];
        for chunk in (0..panels).step_by(CHUNK_PANELS) {
            for row in (0..self.rows).step_by(BLOCK) {
                let a_block = &self.a[row * lda..(row + BLOCK) * lda];
                for p in (chunk..panels.min(chunk + CHUNK_PANELS)).step_by(2) {
                    let col = p * PANEL;
                    let valid_cols = (n - col.min(n)).min(BLOCK);
                    if valid_cols == 0 {
                        continue;
                    }
                    let sums = &b.col_sum[col..col + BLOCK];
                    block(a_block, lda, b.panel(p), b.panel(p + 1), sums, &mut acc);
                    for r in 0..(self.rows - row).min(BLOCK) {
                        dequantize(
                            &acc[r * BLOCK..][..valid_cols],
                            self.a_scale[row + r],
                            &b.scale[col..],
                            &self.bias[col..],
                            &mut out[(row + r) * n + col..][..valid_cols],
                        );
                    }
                }
            }
        }
    }
}

multiversion! {
    /// out[j] = acc[j]·(scale_a·scale_b[j]) + bias[j].
    fn dequantize(acc: &[i32], scale_a: f32, scale_b: &[f32], bias: &[f32], out: &mut [f32]) {
        for (((o, &s), &sb), &bj) in out.iter_mut().zip(acc).zip(scale_b).zip(bias) {
            *o = s as f32 * (scale_a * sb) + bj;
        }
    }
}

/// The portable block: plain i32 sums.
fn portable_block(a: &[i8], lda: usize, b0: &[i8], b1: &[i8], _sums: &[i32], acc: &mut Acc) {
    let depth = lda;
    for r in 0..BLOCK {
        let a_row = &a[r * lda..r * lda + depth];
        for (half, panel) in [b0, b1].into_iter().enumerate() {
            for col in 0..PANEL {
                let mut s = 0i32;
                for (kk, &x) in a_row.iter().enumerate() {
                    s += x as i32 * panel[offset_in_panel(kk, col)] as i32;
                }
                acc[r * BLOCK + half * PANEL + col] = s;
            }
        }
    }
}

/// The reference the kernels are tested against: the quantized values multiplied and summed in
/// f64 (exactly the integer sums, scaled), plus the bias.
pub fn reference(a: &QuantizedRows, b: &QuantizedMatrix, bias: Option<&[f32]>) -> Vec<f32> {
    let (m, n, k) = (a.m, b.n, a.k);
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let sum: i64 = (0..k)
                .map(|kk| a.data[i * a.k_pad + kk] as i64 * b.get(kk, j) as i64)
                .sum();
            let s = sum as i32 as f32 * (a.scale[i] * b.scale[j]);
            out[i * n + j] = s + bias.map_or(0.0, |b| b[j]);
        }
    }
    out
}

#[cfg(test)]
mod tests;
