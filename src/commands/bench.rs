//! `kd bench`: training-step and logit-caching throughput on real AG News texts, for a
//! checkpoint folder or a randomly initialised model of a named shape. Prints the same figures as
//! the PyTorch peer (`bench/peer_hf.py`), so the two can be compared in one run.
use crate::data::formats::read_examples;
use crate::data::tokenize_rows;
use crate::data::TokenizerFiles;
use crate::data::{Batch, Batcher, TextTokenizer};
use crate::error::{KdError, Result};
use crate::model::flops::FlopModel;
use crate::model::predict_logits;
use crate::model::random_init::{shape_config, RandomWeights, SHAPES};
use crate::model::{Checkpoint, LoraSpec, TextClassifier};
use crate::run::limits::{real_in, whole, Limit::AtLeast, COUNT, POSITIVE};
use crate::training::{new_optimizer, train_step, Objective, TrainSettings};
use candle_core::{DType, Device};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// What to measure; the fields are `kd bench`'s flags.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchSettings {
    /// Checkpoint folder or Hub id
    #[arg(long, conflicts_with = "shape")]
    pub model: Option<String>,
    /// Random weights of a named shape: roberta-base or small
    #[arg(long)]
    pub shape: Option<String>,
    /// Tokenizer folder for --shape (tokenizer.json or vocab.json + merges.txt)
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// AG News texts, e.g. ../shared/data/ag_news/test.csv.gz (repeated to fill the run)
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 32, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub batch_size: usize,
    /// Tokens per row, special tokens included (the tokenizer refuses a length that leaves no
    /// room for text)
    #[arg(long, default_value_t = 128, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub max_len: usize,
    /// Untimed steps first
    #[arg(long, default_value_t = 3, value_parser = whole(AtLeast(0)), allow_negative_numbers = true)]
    pub warmup_steps: usize,
    /// Timed training steps
    #[arg(long, default_value_t = 20, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub steps: usize,
    /// Rows in the timed caching pass
    #[arg(long, default_value_t = 1024, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub cache_rows: usize,
    #[arg(long, default_value_t = 128, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub cache_batch_size: usize,
    #[arg(long, default_value_t = 8, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub lora_r: usize,
    #[arg(long, default_value_t = 32.0, value_parser = real_in(POSITIVE), allow_negative_numbers = true)]
    pub lora_alpha: f64,
    /// Peak dense TFLOP/s for the MFU (H100 bf16: 800)
    #[arg(long, default_value_t = 800.0, value_parser = real_in(POSITIVE), allow_negative_numbers = true)]
    pub peak_tflops: f64,
}

/// What to measure, on which device.
pub struct BenchRequest {
    pub settings: BenchSettings,
    pub device: Device,
    pub dtype: DType,
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

/// Builds the model and tokenizer the request names.
fn build(req: &BenchRequest, labels: usize) -> Result<(TextClassifier, TextTokenizer, String)> {
    let s = &req.settings;
    let lora = s.lora();
    if let Some(model) = &s.model {
        let ckpt = Checkpoint::resolve(model)?;
        let m = TextClassifier::load(&ckpt, &lora, labels, &req.device, req.dtype, 0)?;
        let tok = TextTokenizer::load(&ckpt.tokenizer, s.max_len.min(ckpt.config.max_tokens()))?;
        return Ok((m, tok, model.clone()));
    }
    let shape = s.shape.as_deref().unwrap_or("roberta-base");
    let dir = s.tokenizer.clone().ok_or_else(|| {
        KdError::Config("--shape needs --tokenizer DIR (e.g. the roberta-base tokenizer)".into())
    })?;
    let files = TokenizerFiles::find(&dir)?;
    let tok = TextTokenizer::load(&files, s.max_len)?;
    let cfg = shape_config(shape, tok.vocab_size()).ok_or_else(|| {
        KdError::Config(format!(
            "--shape {shape}: known shapes are {}",
            SHAPES.join(", ")
        ))
    })?;
    let vb =
        candle_nn::VarBuilder::from_backend(Box::new(RandomWeights), req.dtype, req.device.clone());
    let m = TextClassifier::from_var_builder(vb, &cfg, &lora, labels, 0)?;
    Ok((m, tok, format!("{shape} (random weights)")))
}

impl BenchSettings {
    fn lora(&self) -> LoraSpec {
        LoraSpec::query_value(self.lora_r, self.lora_alpha)
    }
}

/// What one timed phase did: rows, real and padded tokens, FLOPs and seconds.
#[derive(Default)]
struct Phase {
    samples: usize,
    tokens: usize,
    padded: usize,
    flops: f64,
    seconds: f64,
}

impl Phase {
    fn add(&mut self, batch: &Batch, flops: f64) {
        self.samples += batch.batch_size;
        self.tokens += batch.real_tokens();
        self.padded += batch.batch_size * batch.seq_len;
        self.flops += flops;
    }
}

/// Runs the measurement.
pub fn run(req: &BenchRequest) -> Result<BenchReport> {
    let s = &req.settings;
    let rows = read_examples(&s.data, true)?;
    let mut memory = crate::device::MemoryMeter::start(&req.device);
    let (model, tok, name) = build(req, 4)?;
    let cfg = model.config().clone();
    let flops = FlopModel::new(&cfg, &s.lora());
    // Repeat the texts to fill both phases, so every row index is distinct.
    let needed = rows.len().max(s.cache_rows).max(s.batch_size);
    let cycled: Vec<_> = (0..needed).map(|i| rows[i % rows.len()].clone()).collect();
    let batcher: Batcher = tokenize_rows(&tok, &cycled, cfg.pad_id())?;
    let train = time_training(&model, &batcher, rows.len(), s, &flops, &mut memory)?;
    let train_peak = memory.peak_bytes();
    let cache = time_caching(&model, &batcher, s, &flops, &req.device)?;
    let peak = s.peak_tflops * 1e12;
    Ok(BenchReport {
        script: "kd bench",
        model: name,
        device: crate::device::name(&req.device),
        cpu: crate::nn::cpu_description(),
        dtype: format!("{:?}", req.dtype),
        layers: cfg.num_hidden_layers,
        hidden: cfg.hidden_size,
        ffn: cfg.intermediate_size,
        batch_size: s.batch_size,
        max_len: s.max_len,
        lora_r: s.lora_r,
        trainable_params: model.trainable_count(),
        steps: s.steps,
        train_samples: train.samples,
        train_tokens: train.tokens,
        train_padded_tokens: train.padded,
        train_seconds: train.seconds,
        train_samples_per_s: train.samples as f64 / train.seconds,
        train_tokens_per_s: train.tokens as f64 / train.seconds,
        train_tflops: train.flops / train.seconds / 1e12,
        train_mfu: train.flops / train.seconds / peak,
        cache_rows: s.cache_rows,
        cache_tokens: cache.tokens,
        cache_padded_tokens: cache.padded,
        cache_seconds: cache.seconds,
        cache_samples_per_s: s.cache_rows as f64 / cache.seconds,
        cache_tokens_per_s: cache.tokens as f64 / cache.seconds,
        cache_tflops: cache.flops / cache.seconds / 1e12,
        cache_mfu: cache.flops / cache.seconds / peak,
        train_peak_mem_bytes: train_peak,
        peak_mem_bytes: memory.peak_bytes(),
        mfu_formula: FlopModel::FORMULA,
    })
}

/// Warmup steps, then `steps` timed training steps in length-grouped batches of the first
/// `distinct_rows` rows (at least one full batch, so every timed batch is full).
fn time_training(
    model: &TextClassifier,
    batcher: &Batcher,
    distinct_rows: usize,
    s: &BenchSettings,
    flops: &FlopModel,
    memory: &mut crate::device::MemoryMeter,
) -> Result<Phase> {
    let settings = TrainSettings {
        batch_size: s.batch_size,
        max_len: s.max_len,
        lr: 5e-4,
        ..Default::default()
    };
    let mut opt = new_optimizer(model.trainable(), &settings)?;
    let mut rng = StdRng::seed_from_u64(0);
    let all: Vec<usize> = (0..distinct_rows.max(s.batch_size)).collect();
    let mut plan = Vec::new();
    while plan.len() < s.warmup_steps + s.steps {
        plan.extend(batcher.training_plan(&all, s.batch_size, &mut rng));
    }
    let mut phase = Phase::default();
    let mut started = Instant::now();
    for (i, chunk) in plan.iter().take(s.warmup_steps + s.steps).enumerate() {
        if i == s.warmup_steps {
            started = Instant::now();
        }
        let batch = batcher.batch(chunk);
        let objective = Objective::Supervised;
        train_step(
            model, &batch, &objective, &mut opt, 5e-4, &settings, &mut rng,
        )?;
        memory.sample();
        if i >= s.warmup_steps {
            phase.add(&batch, flops.train(batch.batch_size, batch.seq_len));
        }
    }
    phase.seconds = started.elapsed().as_secs_f64().max(1e-9);
    Ok(phase)
}

/// The timed caching pass over the first `cache_rows` rows, sorted by length as kd caches.
fn time_caching(
    model: &TextClassifier,
    batcher: &Batcher,
    s: &BenchSettings,
    flops: &FlopModel,
    device: &Device,
) -> Result<Phase> {
    let rows: Vec<usize> = (0..s.cache_rows).collect();
    let mut phase = Phase::default();
    for chunk in batcher.eval_plan(&rows, s.cache_batch_size) {
        let b = batcher.batch(&chunk);
        phase.add(&b, flops.infer(b.batch_size, b.seq_len));
    }
    let started = Instant::now();
    let logits = predict_logits(model, batcher, &rows, s.cache_batch_size, "cache")?;
    phase.seconds = started.elapsed().as_secs_f64().max(1e-9);
    if logits.iter().any(|v| !v.is_finite()) {
        return Err(KdError::Device {
            device: crate::device::name(device),
            message: "the caching pass of a random model produced non-finite logits".into(),
        });
    }
    Ok(phase)
}
