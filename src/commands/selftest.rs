//! `kd selftest`: checks a device against the CPU reference with the shipped binary alone (the
//! GPU machine has no Rust toolchain, so `cargo test` cannot run there). One random model is
//! built twice from identical weights, f32 on the CPU and in the requested dtype on the device;
//! logits and the gradient of every trainable tensor must agree within the dtype's tolerance.
use crate::data::{Batch, Batcher};
use crate::error::{KdError, Result};
use crate::model::random_init::{seeded_tensors, shape_config};
use crate::model::{LoraSpec, TargetModules, TextClassifier};
use crate::training::loss::cross_entropy;
use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// The comparison.
#[derive(Debug, Serialize)]
pub struct SelftestReport {
    pub device: String,
    pub dtype: String,
    /// Largest |device − CPU| logit, relative to the largest |CPU| logit.
    pub max_rel_logit_diff: f32,
    /// Largest |device − CPU| gradient entry, relative to that tensor's largest |CPU| entry.
    pub max_rel_grad_diff: f32,
    pub worst_grad: String,
    pub tolerance: f32,
    pub passed: bool,
}

fn max_abs(t: &Tensor) -> Result<f32> {
    Ok(t.to_dtype(DType::F32)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?)
}

fn rel_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    let b = b.to_device(a.device())?.to_dtype(a.dtype())?;
    Ok(max_abs(&(a - &b)?)? / max_abs(a)?.max(1e-30))
}

/// Logits and the gradient of every trainable tensor (eval mode, CE with label smoothing).
fn logits_and_grads(model: &TextClassifier, batch: &Batch) -> Result<(Tensor, Vec<Tensor>)> {
    let logits = model.forward(batch, None)?;
    let labels = Tensor::from_slice(&batch.labels, batch.batch_size, model.device())?;
    let grads = cross_entropy(&logits, &labels, 0.1)?.backward()?;
    let g = model
        .trainable()
        .iter()
        .map(|nv| {
            grads
                .get(nv.var.as_tensor())
                .cloned()
                .ok_or_else(|| KdError::Device {
                    device: crate::device::name(model.device()),
                    message: format!("{}: no gradient", nv.name),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((logits, g))
}

/// Compares `device` in `dtype` with the CPU in f32 on a 2-layer random model with LoRA on every
/// linear layer and a padded batch of random token ids.
pub fn run(device: &Device, dtype: DType) -> Result<SelftestReport> {
    let cfg = shape_config("small", 1000).expect("a known shape");
    let targets = ["query", "key", "value", "dense"]
        .map(String::from)
        .to_vec();
    let lora = LoraSpec {
        targets: TargetModules::Suffixes(targets),
        ..LoraSpec::query_value(8, 16.0)
    };
    let weights = seeded_tensors(&cfg, 7)?;
    let build = |dev: &Device, dt: DType| -> Result<TextClassifier> {
        let vb = candle_nn::VarBuilder::from_tensors(weights.clone(), dt, dev);
        Ok(TextClassifier::from_var_builder(vb, &cfg, &lora, 4, 1)?)
    };
    let reference = build(&Device::Cpu, DType::F32)?;
    let tested = build(device, dtype)?;
    // Non-zero B (else A's gradient is zero), identical on both.
    let mut rng = StdRng::seed_from_u64(3);
    for (r, t) in reference.trainable().iter().zip(tested.trainable()) {
        if r.name.contains("lora_B") {
            let v: Vec<f32> = (0..r.var.elem_count())
                .map(|_| rng.random_range(-0.05..0.05))
                .collect();
            let v = Tensor::from_vec(v, r.var.shape(), &Device::Cpu)?;
            r.var.set(&v)?;
            t.var.set(&v.to_device(device)?)?;
        }
    }
    let ids: Vec<Vec<u32>> = (0..16)
        .map(|i| (0..8 + 7 * i).map(|_| rng.random_range(3..1000)).collect())
        .collect();
    let labels = (0..16).map(|i| Some(i % 4)).collect();
    let batch = Batcher::new(ids, labels, cfg.pad_id()).batch(&(0..16).collect::<Vec<_>>());
    let (ref_logits, ref_grads) = logits_and_grads(&reference, &batch)?;
    let (logits, grads) = logits_and_grads(&tested, &batch)?;
    let max_rel_logit_diff = rel_diff(&ref_logits, &logits)?;
    let (mut max_rel_grad_diff, mut worst_grad) = (0f32, String::new());
    for ((nv, a), b) in reference.trainable().iter().zip(&ref_grads).zip(&grads) {
        let d = rel_diff(a, b)?;
        if d > max_rel_grad_diff {
            (max_rel_grad_diff, worst_grad) = (d, nv.name.clone());
        }
    }
    // bf16 keeps 8 bits of mantissa: a few ulps after 2 layers; f32 on another device: 1e-4.
    let tolerance = if dtype == DType::F32 { 1e-4 } else { 5e-2 };
    Ok(SelftestReport {
        device: format!("{device:?}"),
        dtype: format!("{dtype:?}"),
        max_rel_logit_diff,
        max_rel_grad_diff,
        worst_grad,
        tolerance,
        passed: max_rel_logit_diff <= tolerance && max_rel_grad_diff <= tolerance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_f32_agrees_with_itself_and_bf16_within_tolerance() {
        let same = run(&Device::Cpu, DType::F32).unwrap();
        assert!(same.passed && same.max_rel_grad_diff < 1e-6, "{same:?}");
        let bf16 = run(&Device::Cpu, DType::BF16).unwrap();
        assert!(bf16.passed, "{bf16:?}");
        assert!(
            bf16.max_rel_logit_diff > 0.0,
            "bf16 must differ a little from f32"
        );
    }
}
