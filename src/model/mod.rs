//! The model: a BERT/RoBERTa encoder with PEFT-style LoRA and RoBERTa's classification head,
//! what it predicts without gradients ([`inference`]) and what it costs to serve ([`serving`]).
pub mod adapter;
pub(crate) mod checkpoint;
pub(crate) mod classifier;
pub(crate) mod config;
pub(crate) mod encoder;
pub mod export;
pub(crate) mod flops;
pub mod head;
pub(crate) mod inference;
pub(crate) mod lora;
pub mod params;
pub(crate) mod random_init;
pub mod serving;

pub use checkpoint::Checkpoint;
pub use classifier::{NamedVar, TextClassifier};
pub use config::{EncoderConfig, ModelKind};
pub use inference::{
    logits_by_length, predict_logits, predict_logits_shared, predict_rows, predict_rows_shared,
    probabilities,
};
pub use lora::{LoraSpec, TargetModules};
