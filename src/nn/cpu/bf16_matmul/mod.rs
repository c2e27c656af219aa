//! Native bf16 matrix products on the CPU: C = A·B (+ bias) with A in f32, rounded to bf16 where
//! it enters the product, B packed once in bf16, and the products accumulated in f32 by the CPU's
//! own bf16 instructions: AMX tiles (Intel Sapphire Rapids and later) or AVX-512 BF16 (AMD Zen 4
//! and 5, Intel Cooper Lake). Which one runs is decided at run time ([`native_kernel`]); CPUs
//! with neither keep kd's f32 matmuls.
//!
//! Both kernels read the same packed layout (see [`PackedMatrix`]) and compute the same 32×32
//! blocks of C, so one driver ([`matmul`]) splits the work: rows across threads, then columns
//! in chunks that stay in the L2 cache, then passes over the depth (AMX: 256 deep, so that A's
//! part stays in L1) of 32×32 blocks.
// x86-64 only: elsewhere no kernel is available and kd keeps its f32 matmuls.
#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod gelu_epilogue;
#[cfg(target_arch = "x86_64")]
pub(crate) use gelu_epilogue::gelu_in_place as gelu_in_place_avx512;

mod driver;
mod rows;

#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
use driver::{for_each_block, Start};
use driver::{Sink, AMX_DEPTH_BLOCK};
use rayon::prelude::*;
pub use rows::{matmul_rows, matmul_rows_gelu, PackedRows};
use std::sync::OnceLock;

/// Rows and columns of one block of C.
const BLOCK: usize = 32;
/// Columns of one packed panel (one AMX tile's width in f32, one zmm register).
const PANEL: usize = 16;
/// Depth of one AMX tile step (32 bf16 = 64 bytes a tile row).
const DEPTH_STEP: usize = 32;
// A block of C is two panels wide (the AMX kernel's two column tiles, the AVX-512 kernel's two
// registers per row).
const _: () = assert!(BLOCK == 2 * PANEL);
/// Panels per column chunk: 256 columns of B (K·512 bytes) stay in L2 while the rows pass.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const CHUNK_PANELS: usize = 16;
// A block takes two panels, so a chunk is whole pairs of them.
const _: () = assert!(CHUNK_PANELS.is_multiple_of(2));

/// A CPU bf16 matrix kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// AMX tiles: `tdpbf16ps` on 16×32 by 32×16 tiles.
    Amx,
    /// AVX-512 BF16: `vdpbf16ps` on zmm registers.
    Avx512Bf16,
}

impl Kernel {
    /// The name records and logs use.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Amx => "AMX-BF16",
            Kernel::Avx512Bf16 => "AVX-512 BF16",
        }
    }

    /// Whether this CPU (and, for AMX, the kernel's permission) lets the kernel run.
    pub fn available(self) -> bool {
        let f = super::features::x86_features();
        #[cfg(target_arch = "x86_64")]
        return match self {
            // avx512f comes from `is_x86_feature_detected!`, which also checks that the OS
            // saves AVX-512 state; the bf16 bits are raw CPUID.
            Kernel::Amx => {
                f.avx512f && f.amx_bf16 && f.avx512_bf16 && crate::nn::cpu::amx_tiles::permitted()
            }
            Kernel::Avx512Bf16 => f.avx512f && f.avx512_bf16,
        };
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = f;
            false
        }
    }

    /// The depth of one pass over A (32-deep steps) this kernel is fastest with.
    fn depth_block(self) -> usize {
        match self {
            Kernel::Amx => AMX_DEPTH_BLOCK,
            // The AVX-512 kernel reads A a pair of bf16 at a time and is bound by its multiply-
            // adds, not its loads: one pass.
            Kernel::Avx512Bf16 => usize::MAX,
        }
    }

    /// C rows of one thread's part, in passes of `depth_block` steps over the depth.
    #[allow(clippy::too_many_arguments)]
    fn run_rows(
        self,
        a: &[u16],
        lda: usize,
        rows: usize,
        b: &PackedMatrix,
        bias: &[f32],
        out: Sink<'_>,
        depth_block: usize,
    ) {
        assert!(
            self.available(),
            "{} is not available on this CPU",
            self.name()
        );
        #[cfg(target_arch = "x86_64")]
        match self {
            // SAFETY: the kernel is available (checked above); the slices have the sizes
            // `matmul` asserts (A padded to whole blocks, B and bias to whole panels).
            Kernel::Amx => unsafe { amx::run_rows(a, lda, rows, b, bias, out, depth_block) },
            Kernel::Avx512Bf16 => unsafe {
                avx512::run_rows(a, lda, rows, b, bias, out, depth_block)
            },
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (a, lda, rows, b, bias, out, depth_block);
    }
}

/// Whether `--dtype auto` should take bf16 on this CPU: where its native kernel beats kd's f32
/// path. AMX does (1.7–1.9× a training step, run 6); AVX-512 BF16 does on AMD (Zen 4/5 issue
/// `vdpbf16ps` at twice an f32 FMA's multiply-adds) and not on Intel (as many multiply-adds as
/// an FMA: 0.87× f32 measured on a Xeon with AMX forced to it), so Intel CPUs without AMX keep
/// f32. `KD_CPU_BF16` choosing a kernel counts as asking for it.
pub fn auto_prefers_bf16() -> bool {
    let choice = choice();
    match choice.kernel {
        Some(Kernel::Amx) => true,
        Some(Kernel::Avx512Bf16) => choice.forced || super::features::x86_features().amd,
        None => false,
    }
}

/// The best native kernel here, or `None`. `KD_CPU_BF16=off|amx|avx512bf16` overrides the
/// choice (benchmarks of one kernel against the other; `off` for kd's f32 path).
pub fn native_kernel() -> Option<Kernel> {
    choice().kernel
}

/// The kernel this process uses, and whether `KD_CPU_BF16` named it; decided once.
struct Choice {
    kernel: Option<Kernel>,
    forced: bool,
}

fn choice() -> &'static Choice {
    static CHOICE: OnceLock<Choice> = OnceLock::new();
    CHOICE.get_or_init(|| {
        let wanted = std::env::var("KD_CPU_BF16").unwrap_or_default();
        let order: &[Kernel] = match wanted.as_str() {
            "off" => &[],
            "amx" => &[Kernel::Amx],
            "avx512bf16" => &[Kernel::Avx512Bf16],
            _ => &[Kernel::Amx, Kernel::Avx512Bf16],
        };
        Choice {
            kernel: order.iter().copied().find(|k| k.available()),
            forced: matches!(wanted.as_str(), "amx" | "avx512bf16"),
        }
    })
}

/// f32 → bf16 bits, rounding to nearest even (as `_mm512_cvtneps_pbh` and PyTorch do); NaN
/// stays a quiet NaN.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    if x.is_nan() {
        ((b >> 16) as u16) | 0x40
    } else {
        rounded
    }
}

/// bf16 bits → f32 (exact).
#[inline(always)]
pub fn bf16_value(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// B (K × N) in bf16, packed for both kernels: panels of 16 columns, each panel K_pad/2 rows of
/// 16 column pairs (B[2p][j], B[2p+1][j]): the "VNNI" layout `tdpbf16ps` and `vdpbf16ps` read.
/// K is padded with zeros to a multiple of 32 and N to a multiple of 32.
#[derive(Debug)]
pub struct PackedMatrix {
    k: usize,
    n: usize,
    k_pad: usize,
    n_pad: usize,
    data: Vec<u16>,
}

impl PackedMatrix {
    /// Packs B from `get(k, n)` (bf16 bits).
    pub fn pack(k: usize, n: usize, get: impl Fn(usize, usize) -> u16 + Sync) -> Self {
        let k_pad = k.div_ceil(DEPTH_STEP) * DEPTH_STEP;
        let n_pad = n.div_ceil(BLOCK).max(1) * BLOCK;
        let panel_len = k_pad * PANEL;
        let mut data = vec![0u16; panel_len * (n_pad / PANEL)];
        // (A depth of 0 leaves nothing to pack; `par_chunks_mut(0)` would panic.)
        data.par_chunks_mut(panel_len.max(1))
            .enumerate()
            .for_each(|(p, panel)| {
                for col in 0..PANEL.min(n.saturating_sub(p * PANEL)) {
                    let j = p * PANEL + col;
                    for kk in 0..k {
                        panel[offset_in_panel(kk, col)] = get(kk, j);
                    }
                }
            });
        Self {
            k,
            n,
            k_pad,
            n_pad,
            data,
        }
    }

    /// B = Wᵀ for a weight W (out × in) in bf16 bits: the forward x·Wᵀ of a linear layer.
    pub fn from_weight_transposed(w: &[u16], out_dim: usize, in_dim: usize) -> Self {
        assert_eq!(w.len(), out_dim * in_dim, "weight size");
        Self::pack(in_dim, out_dim, |k, n| w[n * in_dim + k])
    }

    /// B = W for a weight W (out × in): the input gradient g·W of a linear layer.
    pub fn from_weight(w: &[u16], out_dim: usize, in_dim: usize) -> Self {
        assert_eq!(w.len(), out_dim * in_dim, "weight size");
        Self::pack(out_dim, in_dim, |k, n| w[k * in_dim + n])
    }

    /// (K, N).
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// B[k][n] as f32 (tests, the reference).
    pub fn get(&self, k: usize, n: usize) -> f32 {
        bf16_value(self.bits(k, n))
    }

    /// B[k][n]'s bf16 bits.
    pub fn bits(&self, k: usize, n: usize) -> u16 {
        let (p, col) = (n / PANEL, n % PANEL);
        self.data[p * self.k_pad * PANEL + offset_in_panel(k, col)]
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn panel(&self, p: usize) -> &[u16] {
        let len = self.k_pad * PANEL;
        &self.data[p * len..(p + 1) * len]
    }
}

/// Where B[k][col] sits inside its panel: row k/2 of column pairs, then the pair's k%2 half.
#[inline(always)]
fn offset_in_panel(k: usize, col: usize) -> usize {
    (k / 2) * 2 * PANEL + 2 * col + k % 2
}

/// A (M × K, f32) · B + bias → C (M × N), with `kernel`. A is rounded to bf16 here.
pub fn matmul(
    kernel: Kernel,
    a: &[f32],
    m: usize,
    b: &PackedMatrix,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (k, n) = (b.k, b.n);
    assert_eq!(a.len(), m * k, "A is M×K");
    if m == 0 || n == 0 {
        return Vec::new();
    }
    if k == 0 {
        // An empty product: every row is the bias.
        return (0..m)
            .flat_map(|_| (0..n).map(|j| bias.map_or(0.0, |b| b[j])))
            .collect();
    }
    matmul_rows(kernel, &PackedRows::from_f32(a, m, k), b, bias)
}

/// The reference the kernels are tested against: A rounded to bf16, products and sums in f64.
pub fn reference(a: &[f32], m: usize, b: &PackedMatrix, bias: Option<&[f32]>) -> Vec<f32> {
    let (k, n) = b.dims();
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = bias.map_or(0.0, |b| b[j] as f64);
            for kk in 0..k {
                acc += bf16_value(bf16_bits(a[i * k + kk])) as f64 * b.get(kk, j) as f64;
            }
            out[i * n + j] = acc as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests;
