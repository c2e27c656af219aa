//! `kd serve`: answer predictions over HTTP with a trained run (or a PEFT adapter).
use crate::error::Result;
use crate::run::paths::Paths;
use crate::run::ModelSource;
use crate::serve::ServeConfig;
use candle_core::{DType, Device};
use std::net::SocketAddr;

/// Which model to serve, on what, and how.
pub struct ServeRequest {
    pub source: ModelSource,
    pub device: Device,
    pub dtype: DType,
    /// Run the encoder's layers in int8 (`dtype` is then f32: the weights are quantized from it).
    pub int8: bool,
    /// Truncation (None: the run's own, 128 for an adapter).
    pub max_len: Option<usize>,
    pub config: ServeConfig,
}

/// Loads the model as `kd predict` does (so a folder predict refuses is refused here, before
/// any port is opened), then serves until SIGTERM/SIGINT. `on_listening` is told the address.
pub fn run(req: ServeRequest, on_listening: impl FnOnce(SocketAddr)) -> Result<()> {
    Paths::new().source(&req.source).check()?;
    let mut loaded = req.source.load(&req.device, req.dtype, req.max_len)?;
    if req.int8 {
        loaded.quantize_int8()?;
    }
    crate::serve::serve(loaded, req.config, on_listening)
}
