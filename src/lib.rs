//! kd: knowledge distillation of text classifiers on candle.
//!
//! Phase one fine-tunes a teacher (a BERT-family encoder with PEFT-style LoRA and RoBERTa's
//! classification head) and caches its logits over the training rows in a memory-mapped file;
//! phase two trains a small student on α·T²·KL + (1−α)·CE from that cache.
//!
//! Rooms, from the ground up: [`nn`] (kd's own candle-nn: frozen linear layers, norms, softmax,
//! dropout and GELU with hand-written backward passes, and the CPU kernels under them), [`data`]
//! (reading, splitting, tokenizing, batching), [`model`] (the definition: encoder, LoRA, heads,
//! PEFT adapters, export), [`cache`] (the teacher's logit file and the pass that fills it),
//! [`training`] (losses, AdamW, schedule, the loop, metrics), [`run`] (run folders: config,
//! preparing and finishing a run, loading a finished one), [`report`] (comparison tables, sweep
//! summaries, charts), [`shard`] (`--shard i/N|auto`: one process's share of a job, from a
//! scheduler's variables), [`serve`] (the HTTP server of `kd serve`), [`commands`] (one function
//! per CLI command, each taking a request).
//!
//! From Rust, a command is one call, and its outputs are plain files:
//!
//! ```no_run
//! use kd::commands::{distill, teach, RunConfig};
//! # fn main() -> kd::Result<()> {
//! let teacher = RunConfig::from_file("configs/teacher.toml".as_ref())?;
//! let summary = teach::run(&teacher)?; // writes teacher/, logits.bin included
//! println!("teacher: {:?} on the test split", summary.test_accuracy);
//! let cache = kd::cache::LogitCache::open(&teacher.out.join(kd::run::files::LOGITS))?;
//! println!("{} rows × {} classes cached", cache.header().rows, cache.header().classes);
//! distill::run(&RunConfig::from_file("configs/student.toml".as_ref())?)?;
//! let student = kd::run::load_run("student".as_ref(), &candle_core::Device::Cpu, candle_core::DType::F32)?;
//! println!("{} trainable parameters", student.model.trainable_count());
//! # Ok(())
//! # }
//! ```
//!
//! Trainable parameters are counted as PEFT counts them, from `config.json` alone:
//!
//! ```
//! use kd::model::params::trainable_count;
//! use kd::model::{EncoderConfig, LoraSpec};
//!
//! let roberta_base: EncoderConfig = serde_json::from_str(
//!     r#"{"model_type": "roberta", "vocab_size": 50265, "hidden_size": 768,
//!         "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
//!         "max_position_embeddings": 514, "type_vocab_size": 1, "pad_token_id": 1}"#,
//! )
//! .unwrap();
//! // LoRA r=4, α=16 on query+value plus RoBERTa's head, 4 classes: the student of configs/.
//! assert_eq!(trainable_count(&roberta_base, &LoraSpec::query_value(4, 16.0), 4), 741_124);
//! ```
pub mod cache;
pub mod commands;
pub mod data;
pub mod device;
pub mod distributed;
pub mod error;
pub(crate) mod fsutil;
mod hub;
pub mod interrupt;
pub mod model;
pub mod nn;
pub(crate) mod progress;
pub mod report;
pub mod run;
pub mod serve;
pub mod shard;
pub mod training;

pub use error::{KdError, Result};

static VERSION: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// kd's version as run records name it: the `kd` binary sets it to `0.1.0 (commit)` at start
/// ([`set_version`]; build.rs reads the commit, in the binary only, so that a commit rebuilds the
/// small binary crate rather than the library); the crate version alone elsewhere.
pub fn version() -> &'static str {
    VERSION.get().copied().unwrap_or(env!("CARGO_PKG_VERSION"))
}

/// Names the build for [`version`] (the first call wins).
pub fn set_version(version: &'static str) {
    let _ = VERSION.set(version);
}
