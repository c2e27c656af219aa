//! `kd parity-dump` (hidden): logits and gradients for the first N rows of a dataset file as one
//! padded batch, for comparison with HF transformers + PEFT by scripts/real_shape_parity.py. A
//! subcommand rather than an example so that the shipped CUDA binary can run it on a GPU.
use crate::data::formats::read_examples;
use crate::data::tokenize_rows;
use crate::error::Result;
use crate::run::load_adapter;
use crate::training::loss::cross_entropy;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Writes `logits`, `loss`, `input_ids` and `grad.<PEFT name>` (cross-entropy with label
/// smoothing 0.1, eval mode) to `out` as safetensors; returns (rows, tokens per row).
pub fn run(
    model: &str,
    adapter: &Path,
    data: &Path,
    rows: usize,
    out: &Path,
    device: &Device,
    dtype: DType,
) -> Result<(usize, usize)> {
    let loaded = load_adapter(adapter, Some(model), device, dtype, 128)?;
    let examples: Vec<_> = read_examples(data, true)?.into_iter().take(rows).collect();
    let pad = loaded.checkpoint.config.pad_id();
    let batcher = tokenize_rows(&loaded.tokenizer, &examples, pad)?;
    let batch = batcher.batch(&(0..examples.len()).collect::<Vec<_>>());
    let logits = loaded.model.forward(&batch, None)?;
    let labels = Tensor::from_slice(&batch.labels, batch.batch_size, device)?;
    let loss = cross_entropy(&logits, &labels, 0.1)?;
    let grads = loss.backward()?;
    let host = |t: &Tensor| t.to_dtype(DType::F32)?.to_device(&Device::Cpu);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    tensors.insert("logits".into(), host(&logits)?);
    tensors.insert("loss".into(), host(&loss)?);
    let ids: Vec<i64> = batch.input_ids.iter().map(|&v| v as i64).collect();
    let shape = (batch.batch_size, batch.seq_len);
    tensors.insert(
        "input_ids".into(),
        Tensor::from_vec(ids, shape, &Device::Cpu)?,
    );
    for nv in loaded.model.trainable() {
        if let Some(g) = grads.get(nv.var.as_tensor()) {
            tensors.insert(format!("grad.{}", nv.name), host(g)?);
        }
    }
    crate::fsutil::write_atomic(out, |tmp| {
        Ok(candle_core::safetensors::save(&tensors, tmp)?)
    })?;
    Ok(shape)
}
