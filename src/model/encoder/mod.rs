//! The BERT/RoBERTa encoder, written for training: every op on the path from a LoRA weight to
//! the loss has a backward pass, and frozen weights get no gradient work.
//!
//! Module and tensor names mirror HF's `modeling_bert.py` / `modeling_roberta.py`. Without
//! gradients on a CPU with native bf16 products, each layer runs fused instead ([`fused`]).
mod fused;
mod inputs;
mod int8;
mod layer_norm;
use super::config::{Activation, EncoderConfig, LINEAR_MODULES};
use super::lora::{AdaptedLinear, LoraSpec};
use crate::data::Batch;
use crate::nn::cpu::attention::Queries;
use crate::nn::{activation_dtype, dropout, masked_softmax, FrozenLinear};
use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use inputs::{attention_bias, Embeddings, SliceInputs, SliceRows};
pub use int8::Int8Layers;
use layer_norm::FrozenLayerNorm;
use rand::rngs::StdRng;

/// Applies dropout only in training mode.
fn train_dropout(x: &Tensor, p: f64, rng: &mut Option<&mut StdRng>) -> Result<Tensor> {
    match rng {
        Some(rng) => dropout(x, p as f32, rng),
        None => Ok(x.clone()),
    }
}

/// Self-attention plus its output projection, residual and LayerNorm.
#[derive(Clone, Debug)]
struct Attention {
    query: AdaptedLinear,
    key: AdaptedLinear,
    value: AdaptedLinear,
    output: AdaptedLinear,
    layer_norm: FrozenLayerNorm,
    heads: usize,
    head_dim: usize,
    probs_dropout: f64,
    hidden_dropout: f64,
}

/// Loads an encoder layer's linear modules one at a time, in [`LINEAR_MODULES`] order, each a
/// frozen `nn.Linear` adapted where `spec` targets its PEFT name. The callers take them in that
/// order, interleaved with the LayerNorms as HF's modules hold them.
struct Linears<'a> {
    /// The layer's root (`encoder.layer.N` in the checkpoint).
    vb: VarBuilder<'a>,
    /// The layer's PEFT name.
    name: &'a str,
    spec: &'a LoraSpec,
    modules: std::array::IntoIter<(&'static str, usize, usize), 6>,
}

impl Linears<'_> {
    fn next(&mut self, rng: &mut StdRng) -> Result<AdaptedLinear> {
        let (path, input, output) = self
            .modules
            .next()
            .expect("a layer loads each of its linear modules once");
        let linear = FrozenLinear::load(self.vb.pp(path), input, output)?;
        AdaptedLinear::new(linear, &format!("{}.{path}", self.name), self.spec, rng)
    }
}

impl Attention {
    fn load(
        vb: VarBuilder,
        linears: &mut Linears,
        cfg: &EncoderConfig,
        rng: &mut StdRng,
    ) -> Result<Self> {
        Ok(Self {
            query: linears.next(rng)?,
            key: linears.next(rng)?,
            value: linears.next(rng)?,
            output: linears.next(rng)?,
            layer_norm: FrozenLayerNorm::load(vb.pp("output").pp("LayerNorm"), cfg)?,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            probs_dropout: cfg.attention_probs_dropout_prob,
            hidden_dropout: cfg.hidden_dropout_prob,
        })
    }

    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        x.reshape((b, l, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// dropout(softmax(scale·q·kᵀ + mask))·v from tensor ops, heads split and merged: where
    /// [`crate::nn::attention`] does not apply (a GPU, bf16 activations).
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask_bias: &Tensor,
        rng: &mut Option<&mut StdRng>,
    ) -> Result<Tensor> {
        let (b, l, h) = q.dims3()?;
        let (q, k, v) = (
            self.split_heads(q)?,
            self.split_heads(k)?,
            self.split_heads(v)?,
        );
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let probs = masked_softmax(&q.matmul(&k.t()?)?, scale, mask_bias)?;
        let probs = train_dropout(&probs, self.probs_dropout, rng)?;
        probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, l, h))
    }

    fn forward(
        &self,
        x: &Tensor,
        mask_bias: &Tensor,
        rng: &mut Option<&mut StdRng>,
    ) -> Result<Tensor> {
        let q = self.query.forward(x, rng.as_deref_mut())?;
        let k = self.key.forward(x, rng.as_deref_mut())?;
        let v = self.value.forward(x, rng.as_deref_mut())?;
        let fused = crate::nn::attention(
            &q,
            &k,
            &v,
            mask_bias,
            self.heads,
            self.probs_dropout,
            rng.as_deref_mut(),
        )?;
        let context = match fused {
            Some(context) => context,
            None => self.attend(&q, &k, &v, mask_bias, rng)?,
        };
        let out = self.output.forward(&context, rng.as_deref_mut())?;
        self.layer_norm
            .residual_forward(&out, x, self.hidden_dropout, rng)
    }
}

/// One transformer block: attention, then the feed-forward network.
#[derive(Clone, Debug)]
struct Layer {
    attention: Attention,
    intermediate: AdaptedLinear,
    output: AdaptedLinear,
    layer_norm: FrozenLayerNorm,
    activation: Activation,
    hidden_dropout: f64,
}

impl Layer {
    fn load(
        vb: VarBuilder,
        name: &str,
        cfg: &EncoderConfig,
        spec: &LoraSpec,
        rng: &mut StdRng,
    ) -> Result<Self> {
        let mut linears = Linears {
            vb: vb.clone(),
            name,
            spec,
            modules: cfg.linear_modules().into_iter(),
        };
        let attention = Attention::load(vb.pp("attention"), &mut linears, cfg, rng)?;
        let intermediate = linears.next(rng)?;
        let output = linears.next(rng)?;
        Ok(Self {
            attention,
            intermediate,
            output,
            layer_norm: FrozenLayerNorm::load(vb.pp("output").pp("LayerNorm"), cfg)?,
            activation: cfg.activation(),
            hidden_dropout: cfg.hidden_dropout_prob,
        })
    }

    /// The feed-forward block as one op ([`crate::nn::frozen_feed_forward`]) when neither of
    /// its layers is adapted and its activation is the exact GELU; `None` otherwise.
    fn frozen_feed_forward(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let frozen = self.intermediate.adapter().is_none() && self.output.adapter().is_none();
        if !frozen || self.activation != Activation::GeluErf {
            return Ok(None);
        }
        crate::nn::frozen_feed_forward(x, self.intermediate.base(), self.output.base())
    }

    /// The layer's linear modules in [`LINEAR_MODULES`] order (the order [`Linears`] loads).
    fn linears(&self) -> [&AdaptedLinear; 6] {
        let a = &self.attention;
        [
            &a.query,
            &a.key,
            &a.value,
            &a.output,
            &self.intermediate,
            &self.output,
        ]
    }

    fn forward(
        &self,
        x: &Tensor,
        mask_bias: &Tensor,
        rng: &mut Option<&mut StdRng>,
    ) -> Result<Tensor> {
        let x = self.attention.forward(x, mask_bias, rng)?;
        let out = match self.frozen_feed_forward(&x)? {
            Some(out) => out,
            None => {
                let inner = self
                    .activation
                    .apply(&self.intermediate.forward(&x, rng.as_deref_mut())?)?;
                self.output.forward(&inner, rng.as_deref_mut())?
            }
        };
        self.layer_norm
            .residual_forward(&out, &x, self.hidden_dropout, rng)
    }
}

/// The encoder: embeddings and a stack of layers, returning the last hidden state.
#[derive(Clone, Debug)]
pub struct Encoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    dtype: DType,
    /// The layers quantized to int8 ([`Encoder::quantize_int8`]): the forward without gradients
    /// runs on them.
    int8: Option<std::sync::Arc<Int8Layers>>,
}

impl Encoder {
    /// Loads the frozen weights under `vb` (already positioned at the checkpoint's prefix) and
    /// creates LoRA adapters where `spec` targets, naming modules `{prefix}.encoder.layer.N...`
    /// as PEFT sees them.
    pub fn load(
        vb: VarBuilder,
        cfg: &EncoderConfig,
        spec: &LoraSpec,
        rng: &mut StdRng,
    ) -> Result<Self> {
        let embeddings = Embeddings::load(vb.pp("embeddings"), cfg)?;
        let prefix = cfg.kind().prefix();
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let name = format!("{prefix}.encoder.layer.{i}");
                Layer::load(vb.pp(format!("encoder.layer.{i}")), &name, cfg, spec, rng)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings,
            layers,
            dtype: activation_dtype(vb.dtype(), vb.device()),
            int8: None,
        })
    }

    /// Quantizes the layers (adapters merged) to int8 for inference on the CPU: from here on the
    /// forward without gradients runs on them; training and gradients keep the float weights.
    pub fn quantize_int8(&mut self) -> Result<&Int8Layers> {
        if !self.embeddings.device().is_cpu() {
            candle_core::bail!("int8 inference runs on the CPU (--device cpu)");
        }
        let int8 = self
            .int8
            .insert(std::sync::Arc::new(Int8Layers::quantize(self)?));
        Ok(int8)
    }

    /// The int8 layers, when [`Encoder::quantize_int8`] made them.
    pub fn int8(&self) -> Option<&Int8Layers> {
        self.int8.as_deref()
    }

    /// Every adapted linear layer, named as PEFT names the module.
    pub fn adapted_modules(&self, prefix: &str) -> Vec<(String, &AdaptedLinear)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let base = format!("{prefix}.encoder.layer.{i}");
            for (module, linear) in LINEAR_MODULES.iter().zip(layer.linears()) {
                out.push((format!("{base}.{}", module.path), linear));
            }
        }
        out
    }

    /// The last hidden state (batch, seq, hidden), in the activations' dtype ([`activation_dtype`]).
    /// Without gradients on the slice paths, padding positions may hold zeros (where the batch's
    /// tokens are packed, their work is skipped); only real tokens' states mean anything.
    pub fn forward(&self, batch: &Batch, rng: Option<&mut StdRng>) -> Result<Tensor> {
        self.forward_rows(batch, rng, Queries::Every)
    }

    /// The first token's last hidden state (batch, 1, hidden): all a classifier's head reads.
    /// Without gradients on the slice paths the last layer works on those rows alone.
    pub fn forward_first(&self, batch: &Batch, rng: Option<&mut StdRng>) -> Result<Tensor> {
        self.forward_rows(batch, rng, Queries::First)
    }

    fn forward_rows(
        &self,
        batch: &Batch,
        mut rng: Option<&mut StdRng>,
        last: Queries,
    ) -> Result<Tensor> {
        if rng.is_none() && !crate::nn::grad_enabled() {
            let rows = SliceRows::packed(last);
            if let Some(int8) = &self.int8 {
                return on_threads_worth_it(batch, || int8::forward(self, int8, batch, rows));
            }
            if fused::applies(self) {
                return on_threads_worth_it(batch, || fused::forward(self, batch, rows));
            }
        }
        let device = self.embeddings.device();
        let mask_bias = attention_bias(batch, self.dtype, device)?;
        let mut x = self.embeddings.forward(batch, &mut rng)?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask_bias, &mut rng)?;
        }
        match last {
            Queries::Every => Ok(x),
            Queries::First => x.narrow(1, 0, 1),
        }
    }
}

/// Batches of at most this many real tokens (the slice paths pack them, padding skipped) run
/// the slice paths (fused, int8) on one thread:
/// a request of one row (~50 tokens) spends more time handing each of a layer's dozen kernels to
/// the thread pool and waking its threads than the kernels take (measured: batch-1 p50 of
/// all-MiniLM-L6-v2 in int8, 3.3 ms on 2 threads, 2.0 ms on one).
const ONE_THREAD_TOKENS: usize = 256;

/// Runs `forward` on a pool of one thread when `batch` is small ([`ONE_THREAD_TOKENS`]): one
/// hand-off per pass instead of one per kernel; larger batches use every thread.
fn on_threads_worth_it(
    batch: &Batch,
    forward: impl FnOnce() -> Result<Tensor> + Send,
) -> Result<Tensor> {
    let tokens = batch.attention_mask.iter().filter(|&&m| m != 0).count();
    if tokens > ONE_THREAD_TOKENS || rayon::current_num_threads() == 1 {
        return forward();
    }
    static ONE: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pool = ONE.get_or_init(|| rayon::ThreadPoolBuilder::new().num_threads(1).build().ok());
    match pool {
        Some(pool) => pool.install(forward),
        None => forward(),
    }
}
