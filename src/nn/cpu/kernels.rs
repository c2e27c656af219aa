//! Which kernels run here, for run summaries, logs and benchmark records.
use super::features::{x86_features, X86Features};
use candle_core::{DType, Device};

/// Which kernels a model on `device` with frozen weights in `dtype` runs its products on, for
/// run summaries and logs: e.g. "CPU: bf16 products on AMX-BF16, f32 activations".
pub fn kernels_used(device: &Device, dtype: DType) -> String {
    if !device.is_cpu() {
        return format!("{device:?}: {dtype:?}");
    }
    let (f32_matmuls, _) = kernel_sets(x86_features());
    match (dtype, super::native_linear::kernel_for(dtype, device)) {
        (DType::BF16, Some(k)) => format!("CPU: bf16 products on {}, f32 activations", k.name()),
        (DType::BF16, None) => {
            format!("CPU: bf16 weights and activations, products in f32 ({f32_matmuls})")
        }
        (dt, _) => format!("CPU: {dt:?} products ({f32_matmuls})"),
    }
}

/// What the CPU offers kd's matrix products, for benchmark records: its model name and whether it
/// has AVX-512 and native bf16 instructions (AVX-512 BF16, AMX-BF16), and which kernels kd runs
/// on it: f32 matmuls, bf16 matmuls (native, or none: bf16 weights then go through f32), and the
/// elementwise ones.
pub fn cpu_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let yes = |b: bool| if b { "yes" } else { "no" };
    let f = x86_features();
    let (matmuls, elementwise) = kernel_sets(f);
    let bf16 = super::bf16_matmul::native_kernel()
        .map_or("none (bf16 weights converted to f32)", |k| k.name());
    format!(
        "{model}; avx512f {}, avx512_bf16 {}, amx_bf16 {}; kernels: f32 matmuls {matmuls}, \
         bf16 matmuls {bf16}, elementwise {elementwise}",
        yes(f.avx512f),
        yes(f.avx512_bf16),
        yes(f.amx_bf16)
    )
}

/// Which compiled versions run here: gemm's f32 micro-kernels and kd's own elementwise kernels
/// (GELU, attention softmax, dropout; [`super::fast_math`]), both chosen at run time.
fn kernel_sets(f: X86Features) -> (&'static str, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        let fma = std::arch::is_x86_feature_detected!("fma");
        let matmuls = match (f.avx512f, fma) {
            (true, _) => "AVX-512",
            (false, true) => "AVX2+FMA",
            _ => "scalar",
        };
        let elementwise = match (f.avx512f, avx2) {
            (true, _) => "AVX-512",
            (false, true) => "AVX2",
            _ => "portable",
        };
        (matmuls, elementwise)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = f;
        // gemm picks NEON on aarch64 by itself; kd's kernels are the portable build there.
        ("gemm's own (NEON on aarch64)", "portable")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cpu_is_described_and_avx512f_agrees_with_the_standard_library() {
        let d = super::cpu_description();
        assert!(
            d.contains("avx512_bf16") && d.contains("kernels: f32 matmuls"),
            "{d}"
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            super::x86_features().avx512f,
            std::arch::is_x86_feature_detected!("avx512f")
        );
    }
}
