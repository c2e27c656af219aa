//! The encoder's forward pass in int8 (`--int8` on `kd compare`, `kd predict` and `kd serve`):
//! post-training dynamic quantization of a finished model, for inference on the CPU.
//!
//! Every linear layer's weight, with its LoRA update merged (W + scaling·B·A, as `kd export`
//! writes it), is quantized once per output channel to int8; each product's input is quantized
//! per row as it arrives ([`crate::nn::cpu::int8_matmul`]). What stays in f32, because accuracy
//! needs it and it is a small share of the work: the embeddings, the attention scores, softmax and
//! weighted values ([`crate::nn::cpu::attention`]), the residual adds and LayerNorms, GELU, the
//! pooler and the classification head. The layer runs as [`super::fused`] does (the same kernels
//! between the products), so the two differ only by the products' rounding.
use super::inputs::{first_rows, SliceRows};
use super::{Encoder, Layer, SliceInputs};
use crate::data::Batch;
use crate::model::config::Activation;
use crate::model::lora::AdaptedLinear;
use crate::nn::cpu::attention::{attention, AttentionShape, Queries};
use crate::nn::cpu::int8_matmul::{self, Int8Kernel, QuantizedMatrix, QuantizedRows};
use crate::nn::cpu::layer_norm::add_layer_norm;
use crate::nn::param;
use candle_core::{DType, Device, Result, Tensor};

/// An encoder's layers quantized to int8.
#[derive(Debug)]
pub struct Int8Layers {
    layers: Vec<Int8Layer>,
    kernel: Int8Kernel,
}

#[derive(Debug)]
struct Int8Linear {
    weight: QuantizedMatrix,
    bias: Vec<f32>,
}

/// A frozen LayerNorm in f32.
#[derive(Debug)]
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

#[derive(Debug)]
struct Int8Layer {
    /// query, key, value, attention output, intermediate, output.
    linears: [Int8Linear; 6],
    attention_norm: Norm,
    output_norm: Norm,
    activation: Activation,
    heads: usize,
    head_dim: usize,
}

fn f32s(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1()
}

impl Int8Layers {
    /// Quantizes `encoder`'s layers (adapters merged) for the int8 kernel this CPU runs best.
    pub fn quantize(encoder: &Encoder) -> Result<Self> {
        let layers = encoder
            .layers
            .iter()
            .map(Int8Layer::quantize)
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            kernel: int8_matmul::int8_kernel(),
        })
    }

    /// The kernel the products run on.
    pub fn kernel(&self) -> Int8Kernel {
        self.kernel
    }

    /// Bytes of the quantized weights (int8 values, scales and column sums).
    pub fn weight_bytes(&self) -> usize {
        let linears = self.layers.iter().flat_map(|l| &l.linears);
        linears.map(|l| l.weight.bytes() + 4 * l.bias.len()).sum()
    }
}

impl Int8Layer {
    fn quantize(layer: &Layer) -> Result<Self> {
        let [q, k, v, o, i, out] = layer.linears();
        let norm = |n: &super::FrozenLayerNorm| -> Result<Norm> {
            let (gamma, beta) = n.f32_params()?;
            Ok(Norm {
                gamma,
                beta,
                eps: n.eps(),
            })
        };
        Ok(Self {
            linears: [
                Int8Linear::quantize(q)?,
                Int8Linear::quantize(k)?,
                Int8Linear::quantize(v)?,
                Int8Linear::quantize(o)?,
                Int8Linear::quantize(i)?,
                Int8Linear::quantize(out)?,
            ],
            attention_norm: norm(&layer.attention.layer_norm)?,
            output_norm: norm(&layer.layer_norm)?,
            activation: layer.activation,
            heads: layer.attention.heads,
            head_dim: layer.attention.head_dim,
        })
    }

    /// The layer's output rows: every token's, or with first queries only each sequence's first
    /// (keys and values still come from every token).
    fn forward(
        &self,
        kernel: Int8Kernel,
        x: &[f32],
        mask: &[f32],
        shape: AttentionShape,
    ) -> Result<Vec<f32>> {
        let [query, key, value, attn_out, intermediate, output] = &self.linears;
        let hidden = self.heads * self.head_dim;
        let rows = QuantizedRows::from_f32(x, x.len() / hidden, hidden);
        let (k, v) = (key.forward(kernel, &rows), value.forward(kernel, &rows));
        let firsts;
        let (rows, x) = match shape.queries {
            Queries::Every => (rows, x),
            Queries::First => {
                firsts = first_rows(x, shape.lengths, hidden);
                drop(rows);
                let quantized = QuantizedRows::from_f32(&firsts, shape.lengths.len(), hidden);
                (quantized, &firsts[..])
            }
        };
        let q = query.forward(kernel, &rows);
        drop(rows);
        let tokens = x.len() / hidden;
        let scale = (1.0 / (self.head_dim as f64).sqrt()) as f32;
        let context = attention(&q, &k, &v, mask, shape, scale);
        drop((q, k, v));
        let out = attn_out.forward(kernel, &QuantizedRows::from_f32(&context, tokens, hidden));
        let x = self.attention_norm.add(&out, x);
        drop((out, context));
        let pre = intermediate.forward(kernel, &QuantizedRows::from_f32(&x, tokens, hidden));
        let width = pre.len() / tokens.max(1);
        let act = self.activate(pre, tokens, width)?;
        let out = output.forward(kernel, &act);
        Ok(self.output_norm.add(&out, &x))
    }

    /// The FFN's activation of `pre` (tokens × width), quantized for the output layer: GELU
    /// applied row by row as each row is quantized, other activations as the tensor path has them.
    fn activate(&self, mut pre: Vec<f32>, tokens: usize, width: usize) -> Result<QuantizedRows> {
        if self.activation == Activation::GeluErf {
            let gelu = crate::nn::cpu::gelu::gelu_inference_in_place;
            return Ok(QuantizedRows::from_f32_mapped(
                &mut pre, tokens, width, gelu,
            ));
        }
        let pre = Tensor::from_vec(pre, (tokens, width), &Device::Cpu)?;
        let act: Vec<f32> = self.activation.apply(&pre)?.flatten_all()?.to_vec1()?;
        Ok(QuantizedRows::from_f32(&act, tokens, width))
    }
}

impl Norm {
    /// LayerNorm(x + residual).
    fn add(&self, x: &[f32], residual: &[f32]) -> Vec<f32> {
        add_layer_norm(x, residual, &self.gamma, &self.beta, self.eps)
    }
}

impl Int8Linear {
    /// The layer's weight with its adapter merged, quantized per output channel, and its bias.
    fn quantize(linear: &AdaptedLinear) -> Result<Self> {
        let base = linear.base();
        let mut w = base.weight()?.to_dtype(DType::F32)?;
        if let Some(lora) = linear.adapter() {
            let update = param(&lora.b)
                .to_dtype(DType::F32)?
                .matmul(&param(&lora.a).to_dtype(DType::F32)?)?;
            w = (w + (update * lora.scaling())?)?;
        }
        let (out_dim, in_dim) = w.dims2()?;
        let bias = match base.bias() {
            Some(b) => f32s(b)?,
            None => vec![0.0; out_dim],
        };
        Ok(Self {
            weight: QuantizedMatrix::from_weight_transposed(&f32s(&w)?, out_dim, in_dim),
            bias,
        })
    }

    fn forward(&self, kernel: Int8Kernel, rows: &QuantizedRows) -> Vec<f32> {
        int8_matmul::matmul(kernel, rows, &self.weight, Some(&self.bias))
    }
}

/// The last hidden state of `encoder` with its layers in int8: (batch, seq, hidden), or
/// (batch, 1, hidden) with `rows.last` the first queries.
pub(super) fn forward(
    encoder: &Encoder,
    int8: &Int8Layers,
    batch: &Batch,
    rows: SliceRows,
) -> Result<Tensor> {
    let mut inputs = SliceInputs::new(encoder, batch, rows.pack)?;
    let mut x = std::mem::take(&mut inputs.x);
    for (i, layer) in int8.layers.iter().enumerate() {
        let last = i + 1 == int8.layers.len();
        let shape = AttentionShape {
            lengths: &inputs.lengths,
            queries: if last { rows.last } else { Queries::Every },
            heads: layer.heads,
            head_dim: layer.head_dim,
        };
        x = layer.forward(int8.kernel, &x, &inputs.mask, shape)?;
    }
    inputs.finish(x, rows.last, encoder.embeddings.device())
}

#[cfg(test)]
mod tests {
    use crate::data::Batcher;
    use crate::error::Result;
    use crate::model::lora::LoraSpec;
    use crate::model::random_init::{shape_config, RandomWeights};
    use crate::model::TextClassifier;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;

    /// The int8 forward of a small random model, with random adapters (so that a merge left out
    /// would show), against its f32 forward: logits within a few hundredths, the same argmax.
    #[test]
    fn int8_logits_follow_the_f32_ones_with_adapters_merged() -> Result<()> {
        let cfg = shape_config("small", 100).expect("a known shape");
        let vb = VarBuilder::from_backend(Box::new(RandomWeights), DType::F32, Device::Cpu);
        let mut model =
            TextClassifier::from_var_builder(vb, &cfg, &LoraSpec::query_value(4, 16.0), 4, 1)?;
        for named in model.trainable() {
            let v = &named.var;
            v.set(&Tensor::randn(0f32, 0.05, v.shape(), &Device::Cpu)?)?;
        }
        let ids = (0..9u32)
            .map(|r| (0..1 + r * 4).map(|t| 3 + (r * 31 + t * 7) % 90).collect())
            .collect();
        let batch =
            Batcher::new(ids, vec![None; 9], cfg.pad_id()).batch(&(0..9).collect::<Vec<_>>());
        let (float, int8) = {
            let _g = crate::nn::no_grad();
            let float = model.forward(&batch, None)?.to_vec2::<f32>()?;
            model.quantize_int8()?;
            (float, model.forward(&batch, None)?.to_vec2::<f32>()?)
        };
        // With gradients on, the forward takes the float layers, not the int8 ones.
        for named in model.trainable() {
            if named.name.contains("lora_B") {
                named.var.set(&named.var.zeros_like()?)?;
            }
        }
        let float_no_lora = model.forward(&batch, None)?.to_vec2::<f32>()?;
        let diff = |a: &[Vec<f32>], b: &[Vec<f32>]| {
            a.iter()
                .flatten()
                .zip(b.iter().flatten())
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        };
        let (err, lora_effect) = (diff(&float, &int8), diff(&float, &float_no_lora));
        eprintln!("int8 vs f32 logits: {err:e}; the adapters move them by {lora_effect:e}");
        assert!(err < 0.05, "int8 logits differ by {err}");
        assert!(
            err < lora_effect / 4.0,
            "the adapters' update ({lora_effect}) must show"
        );
        let _g = crate::nn::no_grad();
        let int8 = model.encoder().int8().expect("quantized");
        crate::model::encoder::inputs::assert_packing_keeps_bits(&batch, |rows| {
            super::forward(model.encoder(), int8, &batch, rows)
        })?;
        Ok(())
    }
}
