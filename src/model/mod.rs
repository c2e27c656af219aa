//! The model: a BERT/RoBERTa encoder with PEFT-style LoRA and RoBERTa's classification head,
//! and what it predicts without gradients ([`inference`]).
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

pub use checkpoint::Checkpoint;
pub use classifier::{NamedVar, TextClassifier};
pub use config::{EncoderConfig, ModelKind};
pub use inference::{predict_logits, probabilities};
pub use lora::{LoraSpec, TargetModules};
