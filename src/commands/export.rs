//! `kd export`: a trained run (or PEFT adapter) as a plain transformers folder.
use crate::error::Result;
use crate::run::LoadedModel;
use std::path::Path;

/// Writes `loaded` into the new folder `out` (see [`crate::model::export`]).
pub fn run(loaded: &LoadedModel, out: &Path) -> Result<()> {
    let names = loaded.run.as_ref().and_then(|r| r.label_names.as_deref());
    crate::model::export::export(&loaded.model, &loaded.checkpoint, names, out)
}
