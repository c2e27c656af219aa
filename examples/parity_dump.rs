//! Dumps kd's logits and gradients for the first N rows of a dataset file, as one padded batch,
//! for comparison with HF transformers + PEFT (scripts/real_shape_parity.py drives it).
//!
//! cargo run --release --example parity_dump -- MODEL_DIR ADAPTER_DIR DATA_FILE ROWS OUT.safetensors [cpu|cuda] [f32|bf16]
use candle_core::Tensor;
use kd::commands::evaluate::load_adapter;
use kd::commands::pipeline::tokenize_rows;
use kd::data::formats::read_examples;
use kd::training::loss::cross_entropy;
use std::collections::HashMap;
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        a.len() >= 6,
        "usage: parity_dump MODEL ADAPTER DATA ROWS OUT [device] [dtype]"
    );
    let device = kd::device::select(a.get(6).map_or("cpu", String::as_str))?;
    let dtype = kd::device::weight_dtype(a.get(7).map_or("f32", String::as_str), &device)?;
    let loaded = load_adapter(Path::new(&a[2]), Some(&a[1]), &device, dtype, 128)?;
    let rows: usize = a[4].parse()?;
    let examples: Vec<_> = read_examples(Path::new(&a[3]), true)?
        .into_iter()
        .take(rows)
        .collect();
    let batcher = tokenize_rows(
        &loaded.tokenizer,
        &examples,
        loaded.checkpoint.config.pad_id(),
    )?;
    let batch = batcher.batch(&(0..examples.len()).collect::<Vec<_>>());
    let logits = loaded.model.forward(&batch, None)?;
    let labels = Tensor::from_slice(&batch.labels, batch.batch_size, &device)?;
    let loss = cross_entropy(&logits, &labels, 0.1)?;
    let grads = loss.backward()?;
    let cpu = candle_core::Device::Cpu;
    let mut out: HashMap<String, Tensor> = HashMap::new();
    out.insert(
        "logits".into(),
        logits.to_dtype(candle_core::DType::F32)?.to_device(&cpu)?,
    );
    out.insert(
        "loss".into(),
        loss.to_dtype(candle_core::DType::F32)?.to_device(&cpu)?,
    );
    let ids: Vec<i64> = batch.input_ids.iter().map(|&v| v as i64).collect();
    out.insert(
        "input_ids".into(),
        Tensor::from_vec(ids, (batch.batch_size, batch.seq_len), &cpu)?,
    );
    for nv in loaded.model.trainable() {
        let g = grads
            .get(nv.var.as_tensor())
            .expect("every trainable tensor has a gradient");
        out.insert(
            format!("grad.{}", nv.name),
            g.to_dtype(candle_core::DType::F32)?.to_device(&cpu)?,
        );
    }
    candle_core::safetensors::save(&out, &a[5])?;
    println!(
        "wrote {} ({} rows × {} tokens)",
        a[5], batch.batch_size, batch.seq_len
    );
    Ok(())
}
