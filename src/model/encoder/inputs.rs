//! What the layer stack starts from: the summed, normalised embeddings ([`Embeddings`], HF's
//! `BertEmbeddings`/`RobertaEmbeddings`), the additive attention mask ([`attention_bias`]), and
//! both as plain f32 rows for the slice paths ([`SliceInputs`]).
use super::{train_dropout, FrozenLayerNorm};
use crate::data::Batch;
use crate::model::config::{EncoderConfig, ModelKind};
use crate::nn::activation_dtype;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use rand::rngs::StdRng;

/// Word, position and token-type embeddings, summed and normalised.
#[derive(Clone, Debug)]
pub(super) struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    layer_norm: FrozenLayerNorm,
    kind: ModelKind,
    pad_id: u32,
    dropout: f64,
    /// The dtype the summed embeddings go on in (f32 where the CPU multiplies bf16 natively).
    activation_dtype: DType,
}

impl Embeddings {
    pub(super) fn load(vb: VarBuilder, cfg: &EncoderConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            word: vb.get((cfg.vocab_size, h), "word_embeddings.weight")?,
            position: vb.get(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
            )?,
            token_type: vb.get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?,
            layer_norm: FrozenLayerNorm::load(vb.pp("LayerNorm"), cfg)?,
            kind: cfg.kind(),
            pad_id: cfg.pad_id(),
            dropout: cfg.hidden_dropout_prob,
            activation_dtype: activation_dtype(vb.dtype(), vb.device()),
        })
    }

    /// The device the model's weights are on.
    pub(super) fn device(&self) -> &Device {
        self.word.device()
    }

    /// Position ids as HF computes them: BERT counts 0..L; RoBERTa counts non-padding tokens
    /// from pad_id + 1 and gives padding the pad id.
    fn position_ids(&self, batch: &Batch) -> Vec<u32> {
        let (b, l) = (batch.batch_size, batch.seq_len);
        let mut out = Vec::with_capacity(b * l);
        for row in 0..b {
            let mut count = 0u32;
            for col in 0..l {
                let id = batch.input_ids[row * l + col];
                out.push(match self.kind {
                    ModelKind::Bert => col as u32,
                    ModelKind::Roberta if id == self.pad_id => self.pad_id,
                    ModelKind::Roberta => {
                        count += 1;
                        self.pad_id + count
                    }
                });
            }
        }
        out
    }

    pub(super) fn forward(&self, batch: &Batch, rng: &mut Option<&mut StdRng>) -> Result<Tensor> {
        let device = self.word.device();
        let (b, l) = (batch.batch_size, batch.seq_len);
        let ids = Tensor::from_slice(&batch.input_ids, b * l, device)?;
        let positions = Tensor::from_vec(self.position_ids(batch), b * l, device)?;
        let h = self.word.dim(1)?;
        // Rows are converted to the activations' dtype as they are looked up, so the sums run
        // in it (f32 sums are fast on every CPU; bf16 ones go through conversions in candle).
        let dt = self.activation_dtype;
        let x = self
            .word
            .index_select(&ids, 0)?
            .to_dtype(dt)?
            .add(&self.position.index_select(&positions, 0)?.to_dtype(dt)?)?;
        let x = match &batch.token_types {
            // Sentence pairs: the second segment's tokens are type 1 (in a model that has a
            // second token type; RoBERTa's tokenizer never gives one).
            Some(types) if self.token_type.dim(0)? > 1 => {
                let types = Tensor::from_slice(types, b * l, device)?;
                x.add(&self.token_type.index_select(&types, 0)?.to_dtype(dt)?)?
            }
            // Single-segment inputs: every token type is 0.
            _ => x.broadcast_add(&self.token_type.get(0)?.to_dtype(dt)?)?,
        };
        let x = x.reshape((b, l, h))?;
        let x = self.layer_norm.forward(&x)?;
        train_dropout(&x, self.dropout, rng)
    }
}

/// What a forward pass over plain slices starts from (the fused and int8 paths): the summed,
/// normalised embeddings as rows of f32, the additive attention mask per (row, key), and the
/// (batch, seq, hidden) shape to hand the result back in.
pub(super) struct SliceInputs {
    pub(super) x: Vec<f32>,
    pub(super) mask: Vec<f32>,
    pub(super) dims: (usize, usize, usize),
}

impl SliceInputs {
    pub(super) fn new(encoder: &super::Encoder, batch: &Batch) -> Result<Self> {
        let device = encoder.embeddings.device();
        let mask = attention_bias(batch, DType::F32, device)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let x = encoder.embeddings.forward(batch, &mut None)?;
        let dims = x.dims3()?;
        let x = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self { x, mask, dims })
    }

    /// The last hidden state `x` (rows of f32) as a (batch, seq, hidden) tensor on `device`.
    pub(super) fn finish(
        x: Vec<f32>,
        dims: (usize, usize, usize),
        device: &Device,
    ) -> Result<Tensor> {
        Tensor::from_vec(x, dims, &Device::Cpu)?.to_device(device)
    }
}

/// HF's extended attention mask: 0 where attended, the dtype's lowest value where padded,
/// shaped (batch, 1, 1, seq) to broadcast over heads and queries.
pub(super) fn attention_bias(batch: &Batch, dtype: DType, device: &Device) -> Result<Tensor> {
    let min = match dtype {
        DType::BF16 => half::bf16::MIN.to_f32(),
        DType::F16 => half::f16::MIN.to_f32(),
        _ => f32::MIN,
    };
    let bias: Vec<f32> = batch
        .attention_mask
        .iter()
        .map(|&m| if m == 0 { min } else { 0.0 })
        .collect();
    Tensor::from_vec(bias, (batch.batch_size, 1, 1, batch.seq_len), device)?.to_dtype(dtype)
}
