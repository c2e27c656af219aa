//! What a run folder is: its configuration, its files and summary, preparing and finishing a
//! training run in it, its teachers' caches, and loading a finished run (or a PEFT adapter
//! folder) for inference. Commands sequence their steps; this room owns the folder.
pub(crate) mod checkpoints;
pub(crate) mod config;
pub mod files;
mod finish;
pub(crate) mod folder;
pub(crate) mod identity;
pub mod limits;
mod lists;
pub(crate) mod load;
pub(crate) mod paths;
mod prepare;
mod resolved;
pub(crate) mod staging;
mod teachers;

pub use config::{DistillSettings, RunConfig, TomlError};
pub use finish::finish;
pub use folder::Summary;
pub use load::{load_adapter, load_run, LoadedModel, ModelSource};
pub use paths::{check_cache, check_compare, check_run, check_sweep};
pub use prepare::{fresh_model, load_data, prepare, Prepared};
pub use staging::StagedRun;
pub use teachers::{open_representations, open_teachers};
