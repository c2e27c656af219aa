//! What a run folder is: its file names, the summary, and writing its files.
use super::config::RunConfig;
use super::staging::StagedRun;
use crate::error::Result;
use crate::model::{adapter, TextClassifier};
use crate::training::calibration::Calibration;
use crate::training::MetricsLog;
use serde::Serialize;
use std::path::Path;

/// Names of the files in a run folder.
pub mod files {
    pub const CONFIG: &str = "config.toml";
    pub const METRICS: &str = "metrics.jsonl";
    pub const SUMMARY: &str = "summary.json";
    pub const LOGITS: &str = "logits.bin";
}

/// `summary.json`.
#[derive(Debug, Serialize, serde::Deserialize, Clone)]
pub struct Summary {
    /// The id that config.toml, the adapter, metrics.jsonl and logits.bin of this run share
    /// (absent in folders written before run ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
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
    /// The softmax temperature fitted on the validation rows (`--calibrate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrated_temperature: Option<f64>,
    /// Test NLL, Brier and ECE at the calibrated temperature (at 1 without one) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_calibration: Option<Calibration>,
    /// ... and at 1, before calibration (with `--calibrate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_calibration_before: Option<Calibration>,
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

/// Saves the trained adapter and the resolved config.toml into the staged run, both carrying
/// its run id.
pub fn save_trained(cfg: &RunConfig, model: &TextClassifier, run: &StagedRun) -> Result<()> {
    adapter::save(model, &cfg.model, run.dir(), Some(run.run_id()))?;
    let recorded = RunConfig {
        run_id: Some(run.run_id().to_string()),
        ..cfg.clone()
    };
    recorded.save(&run.dir().join(files::CONFIG))
}

/// Starts the staged run's metrics.jsonl, whose first line names the run.
pub fn start_metrics(run: &StagedRun) -> Result<MetricsLog> {
    let mut log = MetricsLog::create(&run.dir().join(files::METRICS))?;
    log.write(serde_json::json!({ "run_id": run.run_id() }))?;
    Ok(log)
}

/// Writes pretty JSON atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    crate::fsutil::write_bytes_atomic(path, text.as_bytes())
}
