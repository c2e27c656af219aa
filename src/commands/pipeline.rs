//! What `kd teach` and `kd distill` share: preparing data and model, and finishing a run folder.
use super::config::RunConfig;
use super::evaluate::evaluate_file;
use crate::data::{Batcher, DataFiles, Dataset, Example, TextTokenizer};
use crate::device;
use crate::error::{KdError, Result};
use crate::model::{adapter, Checkpoint, TextClassifier};
use crate::training::TrainReport;
use candle_core::{DType, Device};
use serde::Serialize;
use std::path::Path;

/// Names of the files in a run folder.
pub mod files {
    pub const CONFIG: &str = "config.toml";
    pub const METRICS: &str = "metrics.jsonl";
    pub const SUMMARY: &str = "summary.json";
    pub const LOGITS: &str = "logits.bin";
}

/// Data, tokenizer and model, ready to train.
pub struct Prepared {
    pub device: Device,
    pub dtype: DType,
    pub checkpoint: Checkpoint,
    pub files: DataFiles,
    pub data: Dataset,
    pub tokenizer: TextTokenizer,
    pub batcher: Batcher,
}

/// Tokenizes rows into a batcher with the checkpoint's pad id.
pub fn tokenize_rows(tokenizer: &TextTokenizer, rows: &[Example], pad_id: u32) -> Result<Batcher> {
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let ids = tokenizer.encode_all(&texts)?;
    Ok(Batcher::new(
        ids,
        rows.iter().map(|r| r.label).collect(),
        pad_id,
    ))
}

/// `--max-len`, capped by what the checkpoint's position table allows.
pub fn effective_max_len(requested: usize, checkpoint: &Checkpoint) -> usize {
    requested.min(checkpoint.config.max_tokens())
}

/// Resolves device, checkpoint and data, and tokenizes the training rows.
pub fn prepare(cfg: &RunConfig) -> Result<Prepared> {
    cfg.validate()?;
    let device = device::select(&cfg.device)?;
    let dtype = device::weight_dtype(&cfg.dtype, &device)?;
    let checkpoint = Checkpoint::resolve(&cfg.model)?;
    let files = DataFiles::resolve(&cfg.data)?;
    let data = Dataset::load(
        files.train_split()?,
        files.validation.as_ref(),
        cfg.train.val_fraction,
        cfg.train.seed,
    )?;
    let max_len = effective_max_len(cfg.train.max_len, &checkpoint);
    let tokenizer = TextTokenizer::load(&checkpoint.tokenizer, max_len)?;
    let batcher = tokenize_rows(&tokenizer, &data.rows, checkpoint.config.pad_id())?;
    tracing::info!(
        model = %cfg.model, train = data.train.len(), val = data.val.len(),
        classes = data.num_labels, ?device, ?dtype, "prepared"
    );
    Ok(Prepared {
        device,
        dtype,
        checkpoint,
        files,
        data,
        tokenizer,
        batcher,
    })
}

/// Loads the model with fresh adapters for this run.
pub fn fresh_model(cfg: &RunConfig, p: &Prepared) -> Result<TextClassifier> {
    TextClassifier::load(
        &p.checkpoint,
        &cfg.lora,
        p.data.num_labels,
        &p.device,
        p.dtype,
        cfg.train.seed,
    )
}

/// `summary.json`.
#[derive(Debug, Serialize, serde::Deserialize, Clone)]
pub struct Summary {
    pub role: String,
    pub model: String,
    pub data: String,
    pub device: String,
    pub trainable_params: usize,
    pub steps: usize,
    /// The epoch whose weights the run kept (`best_epoch` in summaries before `--select`).
    #[serde(alias = "best_epoch")]
    pub kept_epoch: usize,
    /// How it was chosen (`--select`) and why, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<crate::training::selection::Decision>,
    /// The kept epoch's validation NLL and accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub test_macro_f1: Option<f64>,
    pub train_seconds: f64,
    pub train_samples_per_s: f64,
    pub train_tokens_per_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_samples_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
}

/// Saves the trained adapter and the resolved config.toml (atomically, in that order), right
/// after training: a run folder's config always describes its adapter.
pub fn save_trained(cfg: &RunConfig, model: &TextClassifier) -> Result<()> {
    adapter::save(model, &cfg.model, &cfg.out)?;
    cfg.save(&cfg.out.join(files::CONFIG))
}

/// Evaluates on the test split when there is one and writes summary.json, the run's last file.
pub fn finish(
    cfg: &RunConfig,
    p: &Prepared,
    model: &TextClassifier,
    report: &TrainReport,
    role: &str,
    cache_samples_per_s: Option<f64>,
) -> Result<Summary> {
    let test = match &p.files.test {
        Some(split) => Some(evaluate_file(
            model,
            &p.tokenizer,
            split,
            &p.checkpoint,
            &cfg.train,
        )?),
        None => None,
    };
    let summary = Summary {
        role: role.into(),
        model: cfg.model.clone(),
        data: cfg.data.clone(),
        device: format!("{:?}/{:?}", p.device, p.dtype),
        trainable_params: model.trainable_count(),
        steps: report.steps,
        kept_epoch: report.selection.epoch,
        selection: Some(report.selection.clone()),
        val_loss: report.val_loss,
        val_accuracy: report.val_accuracy,
        test_accuracy: test.as_ref().map(|t| t.evaluation.accuracy),
        test_macro_f1: test.as_ref().map(|t| t.evaluation.macro_f1),
        train_seconds: report.train_seconds,
        train_samples_per_s: report.train_samples_per_s,
        train_tokens_per_s: report.train_tokens_per_s,
        cache_samples_per_s,
        temperature: cfg
            .distill
            .as_ref()
            .filter(|d| d.alpha > 0.0)
            .map(|d| d.temperature),
        alpha: cfg.distill.as_ref().map(|d| d.alpha),
    };
    write_json(&cfg.out.join(files::SUMMARY), &summary)?;
    Ok(summary)
}

/// Writes pretty JSON atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    crate::fsutil::write_bytes_atomic(path, text.as_bytes())
}

/// Creates the run folder. Its config.toml is written by [`save_trained`], with the adapter, so a
/// run that fails never pairs a new config with an earlier run's adapter.
pub fn start_run_folder(cfg: &RunConfig) -> Result<()> {
    std::fs::create_dir_all(&cfg.out).map_err(|e| KdError::io(&cfg.out, e))
}
