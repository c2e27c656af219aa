//! What a trained model costs to serve: its parameters at inference (LoRA merged, as `kd export`
//! writes them), its FLOPs per row at a mean length, and its measured rows/s and latency here.
//!
//! This lives in `model/` rather than `training/`: it is parameter counting, FLOPs and no-grad
//! inference applied to a finished model, and needs nothing from training (no loss, metrics or
//! optimizer). `kd compare` and `kd report` present it (`report::comparison`).
use super::export::{exported_name, head_tensors};
use super::flops::FlopModel;
use super::{predict_logits, Checkpoint, EncoderConfig, LoraSpec, TextClassifier};
use crate::data::Batcher;
use crate::error::{KdError, Result};
use candle_core::DType;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// The batch size of the throughput figure (rows/s).
pub const THROUGHPUT_BATCH: usize = 32;
/// How many test rows, spread evenly over the split, are timed one at a time for latency.
pub const LATENCY_ROWS: usize = 200;
/// Untimed single-row passes before the latency sample (allocations, caches, kernel choice).
const WARMUP_ROWS: usize = 10;

/// One model's serving cost.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServingCost {
    /// Weights of the model as exported (encoder with LoRA merged, the head): LoRA adds nothing
    /// once merged.
    pub params_at_inference: usize,
    /// Mean tokens per test row after truncation, special tokens (`<s>`/`</s>`,
    /// `[CLS]`/`[SEP]`) included: what the encoder actually runs on.
    pub mean_tokens: f64,
    /// FLOPs of one row's forward pass at `mean_tokens` rounded to a whole token.
    pub flops_per_row: f64,
    /// How FLOPs are counted (encoder matmuls and attention; embeddings and head left out).
    pub flops_formula: String,
    /// Measured on this machine; absent when timing was skipped (`--no-timing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
}

/// Measured speed, with what it was measured on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timing {
    /// Test rows per second, every test row in length-sorted batches of `batch_size` (as kd's
    /// caching and evaluation passes batch them).
    pub rows_per_s: f64,
    pub batch_size: usize,
    pub throughput_rows: usize,
    /// Median and 99th percentile (nearest rank) of one row's forward pass, logits back on the
    /// host; tokenizing is not timed.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_rows: usize,
    /// `cpu`, `cuda:N`.
    pub device: String,
    /// The frozen weights' dtype.
    pub dtype: String,
    /// Which kernels ran the products ([`crate::nn::kernels_used`]).
    pub kernels: String,
    /// Threads of the CPU pool (None on a GPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

/// The serving cost of `model` (loaded from `checkpoint` with frozen weights in `dtype`) on the
/// tokenized test rows of `batcher` (`rows` of them); `timed` runs the measurements, which take
/// about as long as evaluating the rows again.
pub fn serving_cost(
    model: &TextClassifier,
    checkpoint: &Checkpoint,
    dtype: DType,
    batcher: &Batcher,
    rows: usize,
    timed: bool,
) -> Result<ServingCost> {
    let all: Vec<usize> = (0..rows).collect();
    let tokens: usize = batcher
        .eval_plan(&all, 256)
        .iter()
        .map(|chunk| batcher.batch(chunk).real_tokens())
        .sum();
    let mean_tokens = tokens as f64 / rows.max(1) as f64;
    Ok(ServingCost {
        params_at_inference: inference_params(model, checkpoint)?,
        mean_tokens,
        flops_per_row: flops_per_row(model.config(), model.lora(), mean_tokens),
        flops_formula: FlopModel::FORMULA.into(),
        timing: timed
            .then(|| measure(model, dtype, batcher, rows))
            .transpose()?,
    })
}

/// The element count of every tensor `kd export` writes: the checkpoint's encoder tensors under
/// the export's names (read from the safetensors header, no weights loaded) and the head's,
/// which replace a checkpoint tensor of the same name. LoRA's merge changes no shape.
pub fn inference_params(model: &TextClassifier, checkpoint: &Checkpoint) -> Result<usize> {
    let prefix = model.config().kind().prefix();
    let mut counts: HashMap<String, usize> = header_shapes(&checkpoint.weights)?
        .into_iter()
        .filter_map(|(name, shape)| Some((exported_name(&name, prefix)?, shape.iter().product())))
        .collect();
    counts.extend(head_tensors(model).map(|(name, var)| (name, var.elem_count())));
    Ok(counts.values().sum())
}

/// FLOPs of one row's forward pass at `mean_tokens` (rounded): [`FlopModel::infer`]`(1, L)`.
/// LoRA is left out (merged, it costs nothing), whatever `lora` says.
pub fn flops_per_row(cfg: &EncoderConfig, lora: &LoraSpec, mean_tokens: f64) -> f64 {
    let length = mean_tokens.round().max(1.0) as usize;
    FlopModel::new(cfg, lora).infer(1, length)
}

/// Each tensor's shape, from a safetensors file's header alone.
fn header_shapes(path: &Path) -> Result<Vec<(String, Vec<usize>)>> {
    use std::io::Read;
    let bad = |why: String| KdError::bad_file(path, why);
    let mut file = std::fs::File::open(path).map_err(|e| KdError::io(path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| KdError::io(path, e))?;
    let size = file.metadata().map_err(|e| KdError::io(path, e))?.len();
    let n = u64::from_le_bytes(len);
    if n > size.saturating_sub(8) {
        return Err(bad("truncated safetensors header".into()));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|e| KdError::io(path, e))?;
    #[derive(Deserialize)]
    struct Entry {
        shape: Vec<usize>,
    }
    let mut json: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("unreadable safetensors header: {e}")))?;
    json.remove("__metadata__");
    json.into_iter()
        .map(|(name, v)| {
            let entry: Entry = serde_json::from_value(v)
                .map_err(|e| bad(format!("safetensors header entry `{name}`: {e}")))?;
            Ok((name, entry.shape))
        })
        .collect()
}

/// Rows/s at [`THROUGHPUT_BATCH`] over every row, then latency at batch 1 over a fixed sample.
fn measure(model: &TextClassifier, dtype: DType, batcher: &Batcher, rows: usize) -> Result<Timing> {
    let _no_grad = crate::nn::no_grad();
    let all: Vec<usize> = (0..rows).collect();
    let plan = batcher.eval_plan(&all, THROUGHPUT_BATCH);
    if let Some(middle) = plan.get(plan.len() / 2) {
        model.forward(&batcher.batch(middle), None)?;
    }
    let started = Instant::now();
    predict_logits(model, batcher, &all, THROUGHPUT_BATCH, "rows/s @32")?;
    let rows_per_s = rows as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let sample = latency_sample(rows, LATENCY_ROWS);
    for &r in sample.iter().cycle().take(WARMUP_ROWS.min(sample.len())) {
        one_row(model, batcher, r)?;
    }
    let mut ms = sample
        .iter()
        .map(|&r| one_row(model, batcher, r))
        .collect::<Result<Vec<f64>>>()?;
    ms.sort_by(f64::total_cmp);
    let device = model.device();
    Ok(Timing {
        rows_per_s,
        batch_size: THROUGHPUT_BATCH,
        throughput_rows: rows,
        latency_p50_ms: percentile(&ms, 0.50),
        latency_p99_ms: percentile(&ms, 0.99),
        latency_rows: ms.len(),
        device: crate::device::name(device),
        dtype: match model.encoder().int8() {
            Some(_) => "int8".into(),
            None => format!("{dtype:?}").to_lowercase(),
        },
        kernels: match model.encoder().int8() {
            Some(layers) => format!(
                "CPU: int8 products on {} (weights per output channel, activations per row), \
                 f32 between them",
                layers.kernel().name()
            ),
            None => crate::nn::kernels_used(device, dtype),
        },
        threads: device.is_cpu().then(rayon::current_num_threads),
    })
}

/// Milliseconds of one row's forward pass, its logits copied to the host (which waits for a GPU).
fn one_row(model: &TextClassifier, batcher: &Batcher, row: usize) -> Result<f64> {
    let batch = batcher.batch(&[row]);
    let started = Instant::now();
    let logits = model.forward(&batch, None)?;
    logits.flatten_all()?.to_vec1::<f32>()?;
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

/// `k` row indices spread evenly over `rows` (all of them when there are fewer): the same rows
/// for every model and every run of `kd compare`.
pub fn latency_sample(rows: usize, k: usize) -> Vec<usize> {
    let k = k.min(rows);
    (0..k).map(|i| i * rows / k).collect()
}

/// The nearest-rank `p` quantile of ascending `sorted` values (NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::random_init::shape_config;

    #[test]
    fn flops_per_row_is_one_forward_pass_at_the_mean_length() {
        // roberta-base's shape: N = 12·(4·768² + 2·768·3072) matmul weights.
        let cfg = shape_config("roberta-base", 50265).unwrap();
        let n = 12.0 * (4.0 * 768.0 * 768.0 + 2.0 * 768.0 * 3072.0);
        let at = |l: f64| 2.0 * n * l + 4.0 * 12.0 * 768.0 * l * l;
        let (r8, r64) = (
            LoraSpec::query_value(8, 32.0),
            LoraSpec::query_value(64, 16.0),
        );
        assert_eq!(flops_per_row(&cfg, &r8, 41.0), at(41.0));
        // Rounded to a whole token; LoRA (merged) adds nothing.
        assert_eq!(flops_per_row(&cfg, &r8, 40.6), at(41.0));
        assert_eq!(flops_per_row(&cfg, &r64, 40.6), at(41.0));
        assert_eq!(flops_per_row(&cfg, &r8, 0.2), at(1.0));
        // Mostly 2·N per token at short lengths: 7.03 GFLOPs for 41 tokens.
        assert!((at(41.0) / 1e9 - 7.03).abs() < 0.01, "{}", at(41.0));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 100.0);
        assert_eq!(percentile(&v, 0.99), 198.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn the_latency_sample_is_spread_and_fixed() {
        assert_eq!(latency_sample(10, 200), (0..10).collect::<Vec<_>>());
        let s = latency_sample(7600, 200);
        assert_eq!((s.len(), s[0], s[1], s[199]), (200, 0, 38, 7562));
    }
}
