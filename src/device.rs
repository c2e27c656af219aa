//! Choosing the device and the dtype of the frozen weights, and metering memory. Which kernels
//! run on the device is `nn`'s to say ([`crate::nn::kernels_used`]).
use crate::error::{KdError, Result};
use candle_core::{DType, Device};

/// Resolves `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when built with it and a GPU is present).
pub fn select(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        // Under mpirun/srun each rank of a node takes its own GPU: the node-local rank's.
        "auto" => {
            Ok(Device::cuda_if_available(crate::distributed::local_rank()).unwrap_or(Device::Cpu))
        }
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = s
                .strip_prefix("cuda:")
                .map_or(Ok(crate::distributed::local_rank()), str::parse)
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

/// The `--device` name of `device`: `cpu`, `cuda:N` or `metal:N`.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// The frozen weights' dtype: `auto` is bf16 on CUDA and on a CPU whose native bf16 kernel beats
/// f32 (AMX-BF16; AVX-512 BF16 on AMD: products in bf16, activations in f32), f32 on other CPUs.
pub fn weight_dtype(name: &str, device: &Device) -> Result<DType> {
    let native_cpu_bf16 = device.is_cpu() && crate::nn::auto_prefers_bf16();
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
