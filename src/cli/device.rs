//! `--device` and `--dtype`, declared once and flattened into every command that runs a model.
use candle_core::{DType, Device};
use clap::Args;

/// Where a model runs and the dtype of its frozen weights. Both default to `auto`; a training
/// command applies only the flags given, over its config file.
#[derive(Args, Clone, Debug, Default)]
pub struct DeviceArgs {
    /// cpu, cuda, cuda:N or auto (CUDA when kd was built with it and a GPU is present)
    /// [default: auto]
    #[arg(long)]
    pub device: Option<String>,
    /// Frozen weights' dtype: auto (bf16 on CUDA and on a CPU with AMX-BF16, or AMD's AVX-512
    /// BF16; f32 on other CPUs), f32, bf16 [default: auto]
    #[arg(long)]
    pub dtype: Option<String>,
}

impl DeviceArgs {
    /// The device and the frozen weights' dtype these flags name.
    pub fn select(&self) -> kd::Result<(Device, DType)> {
        kd::device::select_with_dtype(
            self.device.as_deref().unwrap_or("auto"),
            self.dtype.as_deref().unwrap_or("auto"),
        )
    }

    /// [`DeviceArgs::select`] for a command with `--int8`, which runs on the CPU only: refused
    /// before anything loads when the device is not the CPU.
    pub fn select_for_int8(&self, int8: bool) -> kd::Result<(Device, DType)> {
        let (device, dtype) = self.select()?;
        if int8 && !device.is_cpu() {
            return Err(kd::KdError::Config(format!(
                "--int8 runs on the CPU (AMX-INT8 or AVX-512 VNNI), not on --device {}: add \
                 --device cpu",
                kd::device::name(&device)
            )));
        }
        Ok((device, dtype))
    }
}
