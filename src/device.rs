//! Choosing the device and the dtype of the frozen weights.
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

/// The frozen weights' dtype: `auto` is bf16 on CUDA and f32 on CPU.
pub fn weight_dtype(name: &str, device: &Device) -> Result<DType> {
    match name {
        "auto" if device.is_cuda() => Ok(DType::BF16),
        "auto" | "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => Err(KdError::Config(format!(
            "--dtype {other}: expected auto, f32, bf16 or f16"
        ))),
    }
}

/// Peak memory so far: the process's peak resident set (VmHWM) on CPU; `None` where kd cannot
/// read it (CUDA peak tracking is not implemented yet).
pub fn peak_memory_bytes(device: &Device) -> Option<u64> {
    if !device.is_cpu() {
        return None;
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
