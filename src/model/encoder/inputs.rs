//! What the layer stack starts from: the summed, normalised embeddings ([`Embeddings`], HF's
//! `BertEmbeddings`/`RobertaEmbeddings`), the additive attention mask ([`attention_bias`]), and
//! both as plain f32 rows for the slice paths ([`SliceInputs`]).
use super::{train_dropout, FrozenLayerNorm};
use crate::data::Batch;
use crate::model::config::{EncoderConfig, ModelKind};
use crate::nn::activation_dtype;
use crate::nn::cpu::attention::Queries;
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

/// How the slice paths (fused, int8) lay a batch's tokens out and which rows they hand back.
#[derive(Clone, Copy, Debug)]
pub(super) struct SliceRows {
    /// Real tokens only, sequence after sequence: no work on padding. Each real token's values
    /// are the padded layout's bits (every kernel is row by row, attention per sequence, and a
    /// padded key's weight is an exact 0), so this only skips work. Off: the padded batch.
    pub(super) pack: bool,
    /// Every token's last hidden state, or each sequence's first only (the last layer then
    /// works its queries, output projection, LayerNorms and FFN on those rows alone).
    pub(super) last: Queries,
}

impl SliceRows {
    /// Packed, returning `last`'s rows.
    pub(super) fn packed(last: Queries) -> Self {
        Self { pack: true, last }
    }
}

/// What a forward pass over plain slices starts from (the fused and int8 paths): the summed,
/// normalised embeddings as rows of f32, the additive attention mask per row, how many rows each
/// sequence has, and the (batch, seq, hidden) shape of the batch.
pub(super) struct SliceInputs {
    pub(super) x: Vec<f32>,
    pub(super) mask: Vec<f32>,
    pub(super) lengths: Vec<usize>,
    pub(super) dims: (usize, usize, usize),
}

impl SliceInputs {
    /// The batch's tokens, packed when `pack` and each row's real tokens come first (as kd's
    /// batches have them; otherwise the padded batch).
    pub(super) fn new(encoder: &super::Encoder, batch: &Batch, pack: bool) -> Result<Self> {
        let device = encoder.embeddings.device();
        let x = encoder.embeddings.forward(batch, &mut None)?;
        let dims = x.dims3()?;
        let x = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        if let Some(lengths) = real_lengths(batch).filter(|_| pack) {
            let (l, h) = (dims.1, dims.2);
            let x: Vec<f32> = (lengths.iter().enumerate())
                .flat_map(|(b, &len)| &x[b * l * h..(b * l + len) * h])
                .copied()
                .collect();
            let mask = vec![0.0; x.len() / h.max(1)];
            return Ok(Self {
                x,
                mask,
                lengths,
                dims,
            });
        }
        let mask = attention_bias(batch, DType::F32, device)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self {
            x,
            mask,
            lengths: vec![dims.1; dims.0],
            dims,
        })
    }

    /// The last layer's output `x` as a tensor on `device`: with every query, (batch, seq,
    /// hidden) with zeros where padding was left out; with first queries, (batch, 1, hidden).
    pub(super) fn finish(&self, x: Vec<f32>, rows: Queries, device: &Device) -> Result<Tensor> {
        let (b, l, h) = self.dims;
        let out = match rows {
            // No layer ran (x still holds every token) or every sequence is one token.
            Queries::First if x.len() != b * h => first_rows(&x, &self.lengths, h),
            Queries::First => x,
            Queries::Every if x.len() == b * l * h => x,
            Queries::Every => {
                let mut out = vec![0f32; b * l * h];
                let runs = out.chunks_mut(l * h).zip(&self.lengths);
                let mut src = x.chunks(h.max(1));
                for (row, &len) in runs {
                    for dst in row.chunks_mut(h).take(len) {
                        dst.copy_from_slice(src.next().expect("a row per real token"));
                    }
                }
                out
            }
        };
        let shape = match rows {
            Queries::Every => (b, l, h),
            Queries::First => (b, 1, h),
        };
        Tensor::from_vec(out, shape, &Device::Cpu)?.to_device(device)
    }
}

/// Each sequence's first row of `x` (rows of `width`, sequences of `lengths` rows).
pub(super) fn first_rows(x: &[f32], lengths: &[usize], width: usize) -> Vec<f32> {
    let starts = crate::nn::cpu::row_runs::starts(lengths);
    starts
        .iter()
        .flat_map(|&s| &x[s * width..(s + 1) * width])
        .copied()
        .collect()
}

/// Each row's real tokens, where every row has some and they come before its padding (None
/// otherwise).
fn real_lengths(batch: &Batch) -> Option<Vec<usize>> {
    let l = batch.seq_len;
    (batch.attention_mask.chunks(l.max(1)))
        .map(|row| {
            let len = row.iter().take_while(|&&m| m != 0).count();
            (len > 0 && row[len..].iter().all(|&m| m == 0)).then_some(len)
        })
        .collect()
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

/// Checks that packing a batch's tokens and working the last layer on first queries only skip
/// work without changing a bit: `forward` (a slice path) with every layout gives each real
/// token's padded-layout hidden state, zeros at padding, and the first rows alone likewise.
#[cfg(test)]
pub(super) fn assert_packing_keeps_bits(
    batch: &Batch,
    forward: impl Fn(SliceRows) -> Result<Tensor>,
) -> Result<()> {
    let run = |pack, last| forward(SliceRows { pack, last });
    let padded = run(false, Queries::Every)?;
    let (b, l, _) = padded.dims3()?;
    let real = Tensor::new(batch.attention_mask.as_slice(), &Device::Cpu)?
        .to_dtype(DType::F32)?
        .reshape((b, l, 1))?;
    let want = padded
        .broadcast_mul(&real)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let packed = run(true, Queries::Every)?.flatten_all()?.to_vec1::<f32>()?;
    assert!(packed == want, "packed tokens change the hidden states");
    let firsts = padded.narrow(1, 0, 1)?.flatten_all()?.to_vec1::<f32>()?;
    for pack in [false, true] {
        let got = run(pack, Queries::First)?;
        assert_eq!(got.dims3()?, (b, 1, padded.dim(2)?));
        let got = got.flatten_all()?.to_vec1::<f32>()?;
        assert!(
            got == firsts,
            "first queries (packed: {pack}) change the first rows"
        );
    }
    Ok(())
}
