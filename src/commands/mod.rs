//! What the command line runs: one module per command, each a `run` that takes its request (or
//! a [`RunConfig`]) and sequences steps the other rooms own. No rules live here.
pub mod augment;
pub mod bench;
pub mod cache;
pub mod compare;
pub mod distill;
pub mod export;
pub mod parity_dump;
pub mod predict;
pub mod report;
pub mod selftest;
pub mod serve;
pub mod sweep;
pub mod teach;

pub use crate::run::{DistillSettings, RunConfig, Summary};
