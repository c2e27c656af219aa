//! The model: a BERT/RoBERTa encoder with PEFT-style LoRA and RoBERTa's classification head,
//! and what it predicts without gradients ([`inference`]).
pub mod adapter;
pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod encoder;
pub mod export;
pub mod flops;
pub mod head;
pub mod inference;
pub mod lora;
pub mod params;
pub mod random_init;

pub use checkpoint::Checkpoint;
pub use classifier::{NamedVar, TextClassifier};
pub use config::{EncoderConfig, ModelKind};
pub use inference::{predict_logits, probabilities};
pub use lora::{LoraSpec, TargetModules};
