//! kd: knowledge distillation of text classifiers on candle.
//!
//! Phase one fine-tunes a teacher (a BERT-family encoder with PEFT-style LoRA and RoBERTa's
//! classification head) and caches its logits over the training rows in a memory-mapped file;
//! phase two trains a small student on α·T²·KL + (1−α)·CE from that cache.
//!
//! Rooms: [`data`] (reading, splitting, tokenizing, batching), [`model`] (encoder, LoRA, head,
//! PEFT adapters), [`training`] (losses, AdamW, schedule, the loop, metrics), [`cache`] (the logit
//! file), [`commands`] (what the CLI runs).
pub mod cache;
pub mod commands;
pub mod data;
pub mod device;
pub mod error;
pub mod fsutil;
mod hub;
pub mod model;
pub mod training;

pub use error::{KdError, Result};
