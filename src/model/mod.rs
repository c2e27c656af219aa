//! The model: a BERT/RoBERTa encoder with PEFT-style LoRA and RoBERTa's classification head.
pub mod adapter;
pub mod attention_softmax;
pub mod autograd;
pub mod bf16_matmul;
pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod dropout;
pub mod encoder;
pub mod export;
pub mod fast_math;
pub mod gelu;
pub mod grad_mode;
pub mod head;
pub mod lora;
pub mod native_linear;
pub mod ops;
pub mod params;
pub mod random_init;

pub use checkpoint::Checkpoint;
pub use classifier::{NamedVar, TextClassifier};
pub use config::{EncoderConfig, ModelKind};
pub use lora::{LoraSpec, TargetModules};
