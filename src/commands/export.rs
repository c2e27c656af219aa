//! `kd export`: a trained run (or PEFT adapter) as a plain transformers folder.
use crate::error::Result;
use crate::run::paths::{Output, Paths};
use crate::run::ModelSource;
use candle_core::{DType, Device};
use std::path::Path;

/// Writes `source`'s model, loaded on the CPU in f32, into the new folder `out` (see
/// [`crate::model::export`]). `out` is checked first: never inside a run folder or the folder
/// being exported.
pub fn run(source: &ModelSource, out: &Path) -> Result<()> {
    Paths::new()
        .source(source)
        .output("--out", out, Output::WholeFolder)
        .check()?;
    let loaded = source.load(&Device::Cpu, DType::F32, None)?;
    let names = loaded.run.as_ref().and_then(|r| r.label_names.as_deref());
    crate::model::export::export(&loaded.model, &loaded.checkpoint, names, out)
}
