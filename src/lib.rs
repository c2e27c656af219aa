//! kd: knowledge distillation of text classifiers on candle.
//!
//! Phase one fine-tunes a teacher (a BERT-family encoder with PEFT-style LoRA and RoBERTa's
//! classification head) and caches its logits over the training rows in a memory-mapped file;
//! phase two trains a small student on α·T²·KL + (1−α)·CE from that cache.
//!
//! Rooms: [`data`] (reading, splitting, tokenizing, batching), [`model`] (encoder, LoRA, head,
//! PEFT adapters), [`training`] (losses, AdamW, schedule, the loop, metrics), [`cache`] (the logit
//! file), [`run`] (run folders: config, files, summary, loading), [`report`] (comparison tables,
//! sweep summaries, charts and report.md), [`commands`] (what the CLI runs).
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
pub mod error;
pub mod fsutil;
mod hub;
pub mod interrupt;
pub mod model;
pub mod nn;
pub mod progress;
pub mod report;
pub mod run;
pub mod training;

pub use error::{KdError, Result};
