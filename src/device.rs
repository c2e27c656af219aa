//! Choosing the device and the dtype of the frozen weights.
use crate::cpu_features::{x86_features, X86Features};
use crate::error::{KdError, Result};
use candle_core::{DType, Device};

/// Resolves `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when built with it and a GPU is present).
pub fn select(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = s
                .strip_prefix("cuda:")
                .map_or(Ok(0), str::parse)
                .map_err(|_| KdError::Config(format!("--device {s}: expected cuda:N")))?;
            if !candle_core::utils::cuda_is_available() {
                return Err(KdError::Config(
                    "--device cuda: this kd was built without CUDA (cargo build --features cuda)"
                        .into(),
                ));
            }
            Ok(Device::new_cuda(ordinal)?)
        }
        other => Err(KdError::Config(format!(
            "--device {other}: expected cpu, cuda, cuda:N or auto"
        ))),
    }
}

/// The frozen weights' dtype: `auto` is bf16 on CUDA and on a CPU whose native bf16 kernel beats
/// f32 (AMX-BF16; AVX-512 BF16 on AMD: products in bf16, activations in f32), f32 on other CPUs.
pub fn weight_dtype(name: &str, device: &Device) -> Result<DType> {
    let native_cpu_bf16 = device.is_cpu() && crate::model::bf16_matmul::auto_prefers_bf16();
    match name {
        "auto" if device.is_cuda() || native_cpu_bf16 => Ok(DType::BF16),
        "auto" | "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => Err(KdError::Config(format!(
            "--dtype {other}: expected auto, f32, bf16 or f16"
        ))),
    }
}

/// Resolves `--device` and `--dtype` together.
pub fn select_with_dtype(device: &str, dtype: &str) -> Result<(Device, DType)> {
    let dev = select(device)?;
    let dtype = weight_dtype(dtype, &dev)?;
    Ok((dev, dtype))
}

/// Which kernels a model on `device` with frozen weights in `dtype` runs its products on, for
/// run summaries and logs: e.g. "CPU: bf16 products on AMX-BF16, f32 activations".
pub fn kernels_used(device: &Device, dtype: DType) -> String {
    if !device.is_cpu() {
        return format!("{device:?}: {dtype:?}");
    }
    let (f32_matmuls, _) = kernel_sets(x86_features());
    match (
        dtype,
        crate::model::native_linear::kernel_for(dtype, device),
    ) {
        (DType::BF16, Some(k)) => format!("CPU: bf16 products on {}, f32 activations", k.name()),
        (DType::BF16, None) => {
            format!("CPU: bf16 weights and activations, products in f32 ({f32_matmuls})")
        }
        (dt, _) => format!("CPU: {dt:?} products ({f32_matmuls})"),
    }
}

/// Measures peak memory over a run: the process's peak resident set (VmHWM) on CPU; on CUDA
/// the device memory in use (cuMemGetInfo) above what was in use when the meter started,
/// sampled whenever [`MemoryMeter::sample`] is called (after every step), so it includes the
/// allocator's cached blocks, like PyTorch's `max_memory_reserved`.
pub struct MemoryMeter {
    device: Device,
    // Read only by the CUDA branch of `peak_bytes`.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    baseline: u64,
    peak: u64,
}

impl MemoryMeter {
    /// Starts measuring (call before the model is loaded).
    pub fn start(device: &Device) -> Self {
        let baseline = device_used_bytes(device).unwrap_or(0);
        Self {
            device: device.clone(),
            baseline,
            peak: baseline,
        }
    }

    /// Records the current usage.
    pub fn sample(&mut self) {
        if let Some(used) = device_used_bytes(&self.device) {
            self.peak = self.peak.max(used);
        }
    }

    /// The peak so far, in bytes.
    pub fn peak_bytes(&mut self) -> Option<u64> {
        self.sample();
        if self.device.is_cpu() {
            return cpu_peak_rss();
        }
        #[cfg(feature = "cuda")]
        if self.device.is_cuda() {
            return Some(self.peak - self.baseline);
        }
        None
    }
}

#[cfg(feature = "cuda")]
fn device_used_bytes(device: &Device) -> Option<u64> {
    let Device::Cuda(dev) = device else {
        return None;
    };
    dev.cuda_stream().synchronize().ok()?;
    dev.cuda_stream().context().bind_to_thread().ok()?;
    let (free, total) = candle_core::cuda_backend::cudarc::driver::result::mem_get_info().ok()?;
    Some((total - free) as u64)
}

#[cfg(not(feature = "cuda"))]
fn device_used_bytes(_device: &Device) -> Option<u64> {
    None
}

fn cpu_peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
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
    let bf16 = crate::model::bf16_matmul::native_kernel()
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
/// (GELU, attention softmax, dropout; `model::fast_math`), both chosen at run time.
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
mod cpu_tests {
    #[test]
    fn the_cpu_is_described_and_avx512f_agrees_with_the_standard_library() {
        let d = super::cpu_description();
        assert!(
            d.contains("avx512_bf16") && d.contains("kernels: f32 matmuls"),
            "{d}"
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            crate::cpu_features::x86_features().avx512f,
            std::arch::is_x86_feature_detected!("avx512f")
        );
    }
}
