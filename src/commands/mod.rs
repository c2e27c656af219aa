//! What the command line runs: one module per command, plus what they share.
pub mod bench;
pub mod compare;
pub mod config;
pub mod distill;
pub mod evaluate;
pub mod parity_dump;
pub mod pipeline;
pub mod predict;
pub mod selftest;
pub mod teach;

pub use config::{DistillSettings, RunConfig};
pub use pipeline::Summary;
