//! What a run folder is: its configuration, its files and summary, and loading a finished run
//! (or a PEFT adapter folder) for inference. Commands sequence their steps; this room owns the
//! folder.
pub mod checkpoints;
pub mod config;
pub mod files;
pub mod folder;
pub mod load;
pub mod staging;

pub use config::{DistillSettings, RunConfig};
pub use folder::Summary;
pub use load::{load_adapter, load_run, LoadedModel};
pub use staging::StagedRun;
