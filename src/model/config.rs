//! `config.json` of a Hugging Face BERT-family checkpoint, mirrored field for field.
use crate::error::{KdError, Result};
use serde::Deserialize;
use std::path::Path;

/// Which family's conventions apply (position ids, checkpoint prefix, PEFT names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// BERT: positions 0..L, token types.
    Bert,
    /// RoBERTa: positions start at pad_id + 1 and skip padding.
    Roberta,
}

impl ModelKind {
    /// The attribute name HF gives the encoder inside `*ForSequenceClassification`.
    pub fn prefix(self) -> &'static str {
        match self {
            ModelKind::Bert => "bert",
            ModelKind::Roberta => "roberta",
        }
    }
}

/// A linear layer of an encoder layer: what LoRA can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearModule {
    /// Its HF/PEFT module path below `encoder.layer.N`.
    pub path: &'static str,
    pub input: Width,
    pub output: Width,
}

/// Which of the config's widths a side of a [`LinearModule`] has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// `hidden_size`.
    Hidden,
    /// `intermediate_size`.
    Intermediate,
}

/// The one list of an encoder layer's linear modules, which the loader, the adapter names, the
/// parameter count and the error messages walk. The order is the load order: each adapter's
/// initialisation draws from the run's RNG in it, so reordering changes a run's bits.
pub const LINEAR_MODULES: [LinearModule; 6] = [
    LinearModule {
        path: "attention.self.query",
        input: Width::Hidden,
        output: Width::Hidden,
    },
    LinearModule {
        path: "attention.self.key",
        input: Width::Hidden,
        output: Width::Hidden,
    },
    LinearModule {
        path: "attention.self.value",
        input: Width::Hidden,
        output: Width::Hidden,
    },
    LinearModule {
        path: "attention.output.dense",
        input: Width::Hidden,
        output: Width::Hidden,
    },
    LinearModule {
        path: "intermediate.dense",
        input: Width::Hidden,
        output: Width::Intermediate,
    },
    LinearModule {
        path: "output.dense",
        input: Width::Intermediate,
        output: Width::Hidden,
    },
];

/// The fields of `config.json` that define the encoder.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub struct EncoderConfig {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
}

fn default_model_type() -> String {
    "bert".into()
}
fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl EncoderConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| KdError::io(path, e))?;
        let cfg: Self = serde_json::from_str(&text)
            .map_err(|e| KdError::bad_file(path, format!("not a BERT/RoBERTa config.json: {e}")))?;
        cfg.validate().map_err(|m| KdError::bad_file(path, m))?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if !matches!(
            self.model_type.as_str(),
            "bert" | "roberta" | "xlm-roberta" | "camembert"
        ) {
            return Err(format!(
                "model_type `{}` is not supported (bert, roberta)",
                self.model_type
            ));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if let Some(p) = &self.position_embedding_type {
            if p != "absolute" {
                return Err(format!("position_embedding_type `{p}` is not supported"));
            }
        }
        Activation::parse(&self.hidden_act)?;
        Ok(())
    }

    /// BERT or RoBERTa conventions.
    pub fn kind(&self) -> ModelKind {
        match self.model_type.as_str() {
            "bert" => ModelKind::Bert,
            _ => ModelKind::Roberta,
        }
    }

    /// The padding token id (HF's defaults: 0 for BERT, 1 for RoBERTa).
    pub fn pad_id(&self) -> u32 {
        self.pad_token_id.unwrap_or(match self.kind() {
            ModelKind::Bert => 0,
            ModelKind::Roberta => 1,
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The longest sequence the position table allows (RoBERTa reserves pad_id + 1 slots).
    pub fn max_tokens(&self) -> usize {
        match self.kind() {
            ModelKind::Bert => self.max_position_embeddings,
            ModelKind::Roberta => self.max_position_embeddings - self.pad_id() as usize - 1,
        }
    }

    /// The linear layers of one encoder layer: (name below `encoder.layer.N`, in, out), in
    /// [`LINEAR_MODULES`] order.
    pub fn linear_modules(&self) -> [(&'static str, usize, usize); 6] {
        LINEAR_MODULES.map(|m| (m.path, self.width(m.input), self.width(m.output)))
    }

    fn width(&self, width: Width) -> usize {
        match width {
            Width::Hidden => self.hidden_size,
            Width::Intermediate => self.intermediate_size,
        }
    }

    /// Dropout in the classification head (HF: classifier_dropout, else hidden_dropout_prob).
    pub fn head_dropout(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }

    /// The activation of the feed-forward block.
    pub fn activation(&self) -> Activation {
        Activation::parse(&self.hidden_act).expect("validated on load")
    }
}

/// Feed-forward activations named as in HF's `ACT2FN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact erf form.
    GeluErf,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    /// `relu`.
    Relu,
}

impl Activation {
    fn parse(name: &str) -> std::result::Result<Self, String> {
        match name {
            "gelu" => Ok(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(format!("hidden_act `{other}` is not supported")),
        }
    }

    /// Applies the activation (each differentiable in `x`).
    pub fn apply(self, x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        match self {
            Activation::GeluErf => crate::nn::gelu_erf(x),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
        }
    }
}
