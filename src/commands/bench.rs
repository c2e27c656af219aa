//! `kd bench`: training-step and logit-caching throughput on real AG News texts, for a
//! checkpoint folder or a randomly initialised model of a named shape. Prints the same figures as
//! the PyTorch peer (`bench/peer_hf.py`), so the two can be compared in one run.
use crate::data::formats::read_examples;
use crate::data::tokenize_rows;
use crate::data::TokenizerFiles;
use crate::data::{Batcher, TextTokenizer};
use crate::error::{KdError, Result};
use crate::model::params::trainable_breakdown;
use crate::model::random_init::{shape_config, RandomWeights, SHAPES};
use crate::model::{Checkpoint, EncoderConfig, LoraSpec, TextClassifier};
use crate::training::{new_optimizer, predict_logits, train_step, Objective, TrainSettings};
use candle_core::{DType, Device};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// What to measure.
pub struct BenchRequest {
    /// A checkpoint folder or Hub id; or else `shape`.
    pub model: Option<String>,
    /// A named shape with random weights (see [`SHAPES`]).
    pub shape: Option<String>,
    /// The tokenizer folder for `shape`.
    pub tokenizer: Option<PathBuf>,
    /// AG News texts (e.g. test.csv.gz), repeated to fill the run.
    pub data: PathBuf,
    pub lora: LoraSpec,
    pub batch_size: usize,
    pub max_len: usize,
    pub warmup_steps: usize,
    pub steps: usize,
    pub cache_rows: usize,
    pub cache_batch_size: usize,
    pub device: Device,
    pub dtype: DType,
    /// Peak dense bf16 throughput the MFU is measured against, in TFLOP/s.
    pub peak_tflops: f64,
}

/// The measurements (keys match the peer script's JSON).
#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub script: &'static str,
    pub model: String,
    pub device: String,
    /// The CPU's model and its bf16 instructions (recorded with every figure: kd's machines
    /// change between sessions).
    pub cpu: String,
    pub dtype: String,
    pub layers: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub batch_size: usize,
    pub max_len: usize,
    pub lora_r: usize,
    pub trainable_params: usize,
    pub steps: usize,
    pub train_samples: usize,
    pub train_tokens: usize,
    pub train_padded_tokens: usize,
    pub train_seconds: f64,
    pub train_samples_per_s: f64,
    pub train_tokens_per_s: f64,
    pub train_tflops: f64,
    pub train_mfu: f64,
    pub cache_rows: usize,
    pub cache_tokens: usize,
    pub cache_padded_tokens: usize,
    pub cache_seconds: f64,
    pub cache_samples_per_s: f64,
    pub cache_tokens_per_s: f64,
    pub cache_tflops: f64,
    pub cache_mfu: f64,
    /// Peak memory by the end of training (see [`crate::device::MemoryMeter`]), in bytes.
    pub train_peak_mem_bytes: Option<u64>,
    /// Peak memory by the end of the run, caching pass included, in bytes.
    pub peak_mem_bytes: Option<u64>,
    pub mfu_formula: &'static str,
}

/// FLOPs of the shapes actually run (the peer's `frozen_base_lora_v1`): with N = L·(4H² + 2HF)
/// frozen matmul weights, a training step costs 4·N·T (forward + activation gradients, no weight
/// gradients) + 12·L·H·Σ(B·S²) (attention) + 6·N_lora·T, and inference 2·N·T + 4·L·H·Σ(B·S²),
/// with T = Σ B·S padded tokens.
struct FlopModel {
    n: f64,
    n_lora: f64,
    lh: f64,
}

impl FlopModel {
    fn new(cfg: &EncoderConfig, lora: &LoraSpec) -> Self {
        let (l, h, f) = (
            cfg.num_hidden_layers as f64,
            cfg.hidden_size as f64,
            cfg.intermediate_size as f64,
        );
        let n_lora: usize = trainable_breakdown(cfg, lora, 4)
            .iter()
            .filter(|m| !m.module.starts_with("classifier"))
            .map(|m| m.params)
            .sum();
        Self {
            n: l * (4.0 * h * h + 2.0 * h * f),
            n_lora: n_lora as f64,
            lh: l * h,
        }
    }
    fn train(&self, b: usize, s: usize) -> f64 {
        let t = (b * s) as f64;
        4.0 * self.n * t + 12.0 * self.lh * (b * s * s) as f64 + 6.0 * self.n_lora * t
    }
    fn infer(&self, b: usize, s: usize) -> f64 {
        2.0 * self.n * (b * s) as f64 + 4.0 * self.lh * (b * s * s) as f64
    }
}

/// Builds the model and tokenizer the request names.
fn build(req: &BenchRequest, labels: usize) -> Result<(TextClassifier, TextTokenizer, String)> {
    if let Some(model) = &req.model {
        let ckpt = Checkpoint::resolve(model)?;
        let m = TextClassifier::load(&ckpt, &req.lora, labels, &req.device, req.dtype, 0)?;
        let tok = TextTokenizer::load(&ckpt.tokenizer, req.max_len.min(ckpt.config.max_tokens()))?;
        return Ok((m, tok, model.clone()));
    }
    let shape = req.shape.as_deref().unwrap_or("roberta-base");
    let dir = req.tokenizer.clone().ok_or_else(|| {
        KdError::Config("--shape needs --tokenizer DIR (e.g. the roberta-base tokenizer)".into())
    })?;
    let files = TokenizerFiles::find(&dir)?;
    let tok = TextTokenizer::load(&files, req.max_len)?;
    let cfg = shape_config(shape, tok.vocab_size()).ok_or_else(|| {
        KdError::Config(format!(
            "--shape {shape}: known shapes are {}",
            SHAPES.join(", ")
        ))
    })?;
    let vb =
        candle_nn::VarBuilder::from_backend(Box::new(RandomWeights), req.dtype, req.device.clone());
    let m = TextClassifier::from_var_builder(vb, &cfg, &req.lora, labels, 0)?;
    Ok((m, tok, format!("{shape} (random weights)")))
}

/// Runs the measurement.
pub fn run(req: &BenchRequest) -> Result<BenchReport> {
    let rows = read_examples(&req.data, true)?;
    let mut memory = crate::device::MemoryMeter::start(&req.device);
    let (model, tok, name) = build(req, 4)?;
    let cfg = model.config().clone();
    let flops = FlopModel::new(&cfg, &req.lora);
    // Repeat the texts to fill both phases, so every row index is distinct.
    let needed = rows.len().max(req.cache_rows).max(req.batch_size);
    let cycled: Vec<_> = (0..needed).map(|i| rows[i % rows.len()].clone()).collect();
    let batcher: Batcher = tokenize_rows(&tok, &cycled, cfg.pad_id())?;
    let settings = TrainSettings {
        batch_size: req.batch_size,
        max_len: req.max_len,
        lr: 5e-4,
        ..Default::default()
    };
    let mut opt = new_optimizer(&model, &settings)?;
    let mut rng = StdRng::seed_from_u64(0);
    // Training draws from at least one full batch of rows, so every timed batch is full.
    let all: Vec<usize> = (0..rows.len().max(req.batch_size)).collect();
    let mut plan = Vec::new();
    while plan.len() < req.warmup_steps + req.steps {
        plan.extend(batcher.training_plan(&all, req.batch_size, &mut rng));
    }
    let (mut samples, mut tokens, mut padded, mut train_flops) = (0, 0, 0, 0.0);
    let mut started = Instant::now();
    for (i, chunk) in plan.iter().take(req.warmup_steps + req.steps).enumerate() {
        if i == req.warmup_steps {
            started = Instant::now();
        }
        let batch = batcher.batch(chunk);
        train_step(
            &model,
            &batch,
            &Objective::Supervised,
            &mut opt,
            5e-4,
            &settings,
            &mut rng,
        )?;
        memory.sample();
        if i >= req.warmup_steps {
            samples += batch.batch_size;
            tokens += batch.real_tokens();
            padded += batch.batch_size * batch.seq_len;
            train_flops += flops.train(batch.batch_size, batch.seq_len);
        }
    }
    let train_seconds = started.elapsed().as_secs_f64().max(1e-9);
    let train_peak = memory.peak_bytes();

    let cache: Vec<usize> = (0..req.cache_rows).collect();
    let (mut cache_tokens, mut cache_padded, mut cache_flops) = (0, 0, 0.0);
    for chunk in batcher.eval_plan(&cache, req.cache_batch_size) {
        let b = batcher.batch(&chunk);
        cache_tokens += b.real_tokens();
        cache_padded += b.batch_size * b.seq_len;
        cache_flops += flops.infer(b.batch_size, b.seq_len);
    }
    let started = Instant::now();
    let logits = predict_logits(&model, &batcher, &cache, req.cache_batch_size, "cache")?;
    let cache_seconds = started.elapsed().as_secs_f64().max(1e-9);
    if logits.iter().any(|v| !v.is_finite()) {
        return Err(KdError::Device {
            device: crate::device::name(&req.device),
            message: "the caching pass of a random model produced non-finite logits".into(),
        });
    }
    let peak = req.peak_tflops * 1e12;
    Ok(BenchReport {
        script: "kd bench",
        model: name,
        device: crate::device::name(&req.device),
        cpu: crate::nn::cpu_description(),
        dtype: format!("{:?}", req.dtype),
        layers: cfg.num_hidden_layers,
        hidden: cfg.hidden_size,
        ffn: cfg.intermediate_size,
        batch_size: req.batch_size,
        max_len: req.max_len,
        lora_r: req.lora.r,
        trainable_params: model.trainable_count(),
        steps: req.steps,
        train_samples: samples,
        train_tokens: tokens,
        train_padded_tokens: padded,
        train_seconds,
        train_samples_per_s: samples as f64 / train_seconds,
        train_tokens_per_s: tokens as f64 / train_seconds,
        train_tflops: train_flops / train_seconds / 1e12,
        train_mfu: train_flops / train_seconds / peak,
        cache_rows: req.cache_rows,
        cache_tokens,
        cache_padded_tokens: cache_padded,
        cache_seconds,
        cache_samples_per_s: req.cache_rows as f64 / cache_seconds,
        cache_tokens_per_s: cache_tokens as f64 / cache_seconds,
        cache_tflops: cache_flops / cache_seconds / 1e12,
        cache_mfu: cache_flops / cache_seconds / peak,
        train_peak_mem_bytes: train_peak,
        peak_mem_bytes: memory.peak_bytes(),
        mfu_formula: "frozen_base_lora_v1",
    })
}
