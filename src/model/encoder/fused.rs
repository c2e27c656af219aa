//! The encoder's forward pass without gradients (caching, evaluation, prediction, serving) on a
//! CPU with native bf16 products: each layer fused into a few passes over memory.
//!
//! The training forward builds every layer from tensor ops, because the backward needs them; a
//! profile of `kd cache` on all-MiniLM-L6-v2 spent half its time outside the products: splitting
//! and merging heads, small GEMMs for the scores, a GELU pass over the FFN's widest activation,
//! residual adds and LayerNorms, each a pass over memory with a fresh allocation. Here a layer is:
//! its input's bf16 rows, written by the previous layer's LayerNorm as it computes them, feeding
//! query, key and value; one attention kernel per sequence ([`crate::nn::cpu::attention`]),
//! writing the output projection's bf16 rows likewise; residual and LayerNorm in one pass
//! ([`crate::nn::cpu::layer_norm`]); the FFN's GELU applied to the product's blocks while they are
//! in cache, written in bf16 straight into the next product's input; LoRA updates in one rank-r
//! kernel ([`crate::nn::cpu::low_rank`]). Rounding happens where the tensor path rounds (each
//! product's input, to bf16), so the two paths differ by the order of f32 sums, by the epilogue's
//! GELU (its own fit: next to a bf16 rounding boundary one bf16 step, below 1e-2 within 2e-6),
//! and where either flips a later rounding; the tests below hold them together.
use super::inputs::{first_rows, SliceRows};
use super::{Encoder, Layer, SliceInputs};
use crate::data::Batch;
use crate::model::config::Activation;
use crate::model::lora::AdaptedLinear;
use crate::nn::cpu::attention::{attention_packed, AttentionShape, Queries};
use crate::nn::cpu::bf16_matmul::PackedRows;
use crate::nn::cpu::low_rank::{add_low_rank, LowRank};
use crate::nn::param;
use candle_core::{DType, Device, Result, Tensor};

/// Whether the encoder runs fused: f32 activations over bf16 weights packed for the CPU's native
/// kernel, in every linear layer.
pub(super) fn applies(encoder: &Encoder) -> bool {
    encoder.dtype == DType::F32
        && encoder
            .layers
            .iter()
            .all(|l| l.linears().iter().all(|m| m.base().native().is_some()))
}

/// The last hidden state as [`Encoder::forward`] without gradients: (batch, seq, hidden), or
/// (batch, 1, hidden) with `rows.last` the first queries.
pub(super) fn forward(encoder: &Encoder, batch: &Batch, rows: SliceRows) -> Result<Tensor> {
    let mut inputs = SliceInputs::new(encoder, batch, rows.pack)?;
    let hidden = inputs.dims.2;
    let mut x = std::mem::take(&mut inputs.x);
    let mut packed = Some(PackedRows::from_f32(&x, x.len() / hidden, hidden));
    for (i, layer) in encoder.layers.iter().enumerate() {
        let last = i + 1 == encoder.layers.len();
        let a = &layer.attention;
        let shape = AttentionShape {
            lengths: &inputs.lengths,
            queries: if last { rows.last } else { Queries::Every },
            heads: a.heads,
            head_dim: a.head_dim,
        };
        let input = packed.take().expect("each layer's input is packed");
        (x, packed) = forward_layer(layer, (&x, input), &inputs.mask, shape, !last)?;
    }
    inputs.finish(x, rows.last, encoder.embeddings.device())
}

/// One layer, from its input in f32 and in the kernels' layout; its output likewise (the packed
/// copy only when `pack_output`: the next layer's input, rounded as the LayerNorm writes it).
/// With first queries only, keys and values come from every token and the rest of the layer
/// works on each sequence's first row.
fn forward_layer(
    layer: &Layer,
    (x, rows): (&[f32], PackedRows),
    mask: &[f32],
    shape: AttentionShape,
    pack_output: bool,
) -> Result<(Vec<f32>, Option<PackedRows>)> {
    let a = &layer.attention;
    let k = project(&a.key, &rows, x)?;
    let v = project(&a.value, &rows, x)?;
    let firsts;
    let (rows, x) = match shape.queries {
        Queries::Every => (rows, x),
        Queries::First => {
            let width = rows.dims().1;
            firsts = first_rows(x, shape.lengths, width);
            drop(rows);
            let packed = PackedRows::from_f32(&firsts, shape.lengths.len(), width);
            (packed, &firsts[..])
        }
    };
    let q = project(&a.query, &rows, x)?;
    let tokens = rows.dims().0;
    drop(rows);
    let scale = (1.0 / (a.head_dim as f64).sqrt()) as f32;
    let (context, rows) = attention_packed(&q, &k, &v, mask, shape, scale);
    drop((q, k, v));
    let out = project(&a.output, &rows, &context)?;
    let (x, rows) = a.layer_norm.add_forward_packed(&out, x)?;
    drop((out, context));
    let (inner, inner32) = intermediate(layer, (&x, &rows), tokens)?;
    drop(rows);
    let out = project(&layer.output, &inner, &inner32)?;
    if pack_output {
        let (x, rows) = layer.layer_norm.add_forward_packed(&out, &x)?;
        return Ok((x, Some(rows)));
    }
    Ok((layer.layer_norm.add_forward(&out, &x)?, None))
}

/// The FFN's activation in the next product's layout, and in f32 when the output layer's adapter
/// needs it (empty otherwise). GELU goes into the product's epilogue when nothing needs the
/// pre-activation or the activation in f32: the exact GELU, no adapter on either FFN layer.
fn intermediate(
    layer: &Layer,
    (x, rows): (&[f32], &PackedRows),
    tokens: usize,
) -> Result<(PackedRows, Vec<f32>)> {
    let plain = layer.intermediate.adapter().is_none() && layer.output.adapter().is_none();
    if plain && layer.activation == Activation::GeluErf {
        let native = layer
            .intermediate
            .base()
            .native()
            .expect("fused layers are native");
        return Ok((native.forward_rows_gelu(rows), Vec::new()));
    }
    let pre = project(&layer.intermediate, rows, x)?;
    let width = pre.len() / tokens.max(1);
    let pre = Tensor::from_vec(pre, (tokens, width), &Device::Cpu)?;
    let act = layer
        .activation
        .apply(&pre)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok((PackedRows::from_f32(&act, tokens, width), act))
}

/// x·Wᵀ + b on the native kernel, plus the adapter's update from `x32` (the f32 input the tensor
/// path gives it; callers pass it whenever the module has an adapter) when the module has one.
fn project(linear: &AdaptedLinear, rows: &PackedRows, x32: &[f32]) -> Result<Vec<f32>> {
    let native = linear.base().native().expect("fused layers are native");
    let mut y = native.forward_rows(rows);
    if let Some(adapter) = linear.adapter() {
        let f32s = |t: Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
        let a = f32s(param(&adapter.a))?;
        let b_t = f32s(param(&adapter.b).t()?.contiguous()?)?;
        let factors = LowRank {
            rank: adapter.a.dim(0)?,
            a: &a,
            b_t: &b_t,
            scale: adapter.scaling() as f32,
        };
        add_low_rank(x32, &factors, &mut y);
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use crate::data::Batcher;
    use crate::error::Result;
    use crate::model::config::EncoderConfig;
    use crate::model::lora::{LoraSpec, TargetModules};
    use crate::model::random_init::{shape_config, RandomWeights};
    use crate::model::TextClassifier;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;

    /// A random model of `cfg` in bf16 on the CPU with every adapter's B random (PEFT starts it at
    /// zero, which would hide the adapters), or `None` where this CPU has no native bf16 kernel.
    fn model(cfg: &EncoderConfig, lora: &LoraSpec) -> Result<Option<TextClassifier>> {
        if crate::nn::cpu::bf16_matmul::native_kernel().is_none() {
            eprintln!("skipped: this CPU has no native bf16 kernel, so nothing runs fused");
            return Ok(None);
        }
        let vb = VarBuilder::from_backend(Box::new(RandomWeights), DType::BF16, Device::Cpu);
        let model = TextClassifier::from_var_builder(vb, cfg, lora, 4, 1)?;
        for named in model.trainable() {
            let v = &named.var;
            v.set(&Tensor::randn(0f32, 0.05, v.shape(), &Device::Cpu)?)?;
        }
        Ok(Some(model))
    }

    /// Rows of 1 to 37 tokens, so that most of the batch is padded somewhere.
    fn batcher(cfg: &EncoderConfig) -> Batcher {
        let ids = (0..9u32)
            .map(|r| (0..1 + r * 4).map(|t| 3 + (r * 31 + t * 7) % 90).collect())
            .collect();
        Batcher::new(ids, vec![None; 9], cfg.pad_id())
    }

    /// The fused forward (no gradients) against the tensor path (gradients on) on the same model
    /// and rows: the hidden states of real tokens and the logits. They round at the same places,
    /// so they differ by the order of f32 sums and where that flips a bf16 rounding.
    fn assert_paths_agree(cfg: &EncoderConfig, lora: &LoraSpec) -> Result<()> {
        let Some(model) = model(cfg, lora)? else {
            return Ok(());
        };
        assert!(super::applies(model.encoder()), "the model runs fused");
        let batch = batcher(cfg).batch(&(0..9).collect::<Vec<_>>());
        let tensor_path = model.forward(&batch, None)?.to_vec2::<f32>()?;
        let hidden_tensor = model.encoder().forward(&batch, None)?;
        let (fused, hidden_fused) = {
            let _g = crate::nn::no_grad();
            let hidden = model.encoder().forward(&batch, None)?;
            (model.forward(&batch, None)?.to_vec2::<f32>()?, hidden)
        };
        let diff = (hidden_tensor - hidden_fused)?.abs()?;
        let mask = Tensor::new(batch.attention_mask.as_slice(), &Device::Cpu)?
            .to_dtype(DType::F32)?
            .reshape((batch.batch_size, batch.seq_len, 1))?;
        let worst = diff.broadcast_mul(&mask)?.max_all()?.to_scalar::<f32>()?;
        let logits = (tensor_path.iter().flatten())
            .zip(fused.iter().flatten())
            .fold(0f32, |m, (t, f)| m.max((t - f).abs()));
        eprintln!("fused vs tensor path: hidden states {worst:e}, logits {logits:e}");
        assert!(worst < 5e-3, "hidden states differ by {worst}");
        assert!(logits < 1e-4, "logits differ by {logits}");
        Ok(())
    }

    #[test]
    fn packed_tokens_and_first_queries_keep_the_padded_bits() -> Result<()> {
        let cfg = shape_config("small", 100).expect("a known shape");
        let Some(model) = model(&cfg, &LoraSpec::query_value(4, 16.0))? else {
            return Ok(());
        };
        let batch = batcher(&cfg).batch(&(0..9).collect::<Vec<_>>());
        let _g = crate::nn::no_grad();
        crate::model::encoder::inputs::assert_packing_keeps_bits(&batch, |rows| {
            super::forward(model.encoder(), &batch, rows)
        })?;
        Ok(())
    }

    #[test]
    fn roberta_with_query_value_adapters_runs_fused_as_the_tensor_path_does() -> Result<()> {
        let cfg = shape_config("small", 100).expect("a known shape");
        assert_paths_agree(&cfg, &LoraSpec::query_value(4, 16.0))
    }

    #[test]
    fn bert_with_every_module_adapted_and_relu_takes_the_general_ffn() -> Result<()> {
        let mut cfg = shape_config("small", 100).expect("a known shape");
        cfg.model_type = "bert".into();
        cfg.hidden_act = "relu".into();
        cfg.type_vocab_size = 2;
        cfg.pad_token_id = Some(0);
        let every = TargetModules::Suffixes(
            ["query", "key", "value", "dense"]
                .map(String::from)
                .to_vec(),
        );
        let lora = LoraSpec {
            targets: every,
            ..LoraSpec::query_value(4, 16.0)
        };
        assert_paths_agree(&cfg, &lora)
    }
}
