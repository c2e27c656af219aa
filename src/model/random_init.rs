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

/// Every encoder tensor of `cfg` under its HF name, drawn on the CPU from a seeded RNG (weights
/// N(0, 0.05²), biases N(0, 0.02²), LayerNorm weights 1 + N(0, 0.1²)), so that the same model
/// can be built on several devices.
pub fn seeded_tensors(
    cfg: &EncoderConfig,
    seed: u64,
) -> Result<std::collections::HashMap<String, Tensor>> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let h = cfg.hidden_size;
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![cfg.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![cfg.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![cfg.type_vocab_size, h],
        ),
    ];
    let ln = |name: String, shapes: &mut Vec<(String, Vec<usize>)>| {
        shapes.push((format!("{name}.weight"), vec![h]));
        shapes.push((format!("{name}.bias"), vec![h]));
    };
    ln("embeddings.LayerNorm".into(), &mut shapes);
    for l in 0..cfg.num_hidden_layers {
        let b = format!("encoder.layer.{l}");
        for (m, i, o) in cfg.linear_modules() {
            shapes.push((format!("{b}.{m}.weight"), vec![o, i]));
            shapes.push((format!("{b}.{m}.bias"), vec![o]));
        }
        ln(format!("{b}.attention.output.LayerNorm"), &mut shapes);
        ln(format!("{b}.output.LayerNorm"), &mut shapes);
    }
    let mut out = std::collections::HashMap::new();
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name.contains("LayerNorm.weight") {
            super::head::normal(&mut rng, n, 0.1)
                .into_iter()
                .map(|v| 1.0 + v)
                .collect()
        } else if name.ends_with("bias") {
            super::head::normal(&mut rng, n, 0.02)
        } else {
            super::head::normal(&mut rng, n, 0.05)
        };
        out.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
    }
    Ok(out)
}
