//! Randomly initialised encoders of a named shape, for speed measurements that need no weights
//! (e.g. roberta-base's exact shape, whose weights are not available offline).
use super::config::EncoderConfig;
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

/// The shapes `kd bench --shape` knows.
pub const SHAPES: &[&str] = &["roberta-base", "small"];

/// The config.json of a named shape with `vocab_size` tokens.
pub fn shape_config(name: &str, vocab_size: usize) -> Option<EncoderConfig> {
    let (hidden, layers, heads, ffn) = match name {
        "roberta-base" => (768, 12, 12, 3072),
        "small" => (128, 2, 2, 512),
        _ => return None,
    };
    Some(EncoderConfig {
        model_type: "roberta".into(),
        vocab_size,
        hidden_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        intermediate_size: ffn,
        hidden_act: "gelu".into(),
        hidden_dropout_prob: 0.1,
        attention_probs_dropout_prob: 0.1,
        max_position_embeddings: 514,
        type_vocab_size: 1,
        layer_norm_eps: 1e-5,
        pad_token_id: Some(1),
        position_embedding_type: None,
        classifier_dropout: None,
    })
}

/// Weights drawn on the device as HF initialises them: N(0, 0.02²) for matrices and
/// embeddings, ones for LayerNorm weights, zeros for biases.
pub struct RandomWeights;

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _hints: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let t = if name.ends_with("bias") {
            Tensor::zeros(shape, DType::F32, dev)?
        } else if name.contains("LayerNorm") {
            Tensor::ones(shape, DType::F32, dev)?
        } else {
            Tensor::randn(0f32, 0.02, shape, dev)?
        };
        t.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("random weights have no shape for `{name}`")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        false
    }
}
