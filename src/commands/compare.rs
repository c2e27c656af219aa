//! `kd compare`: evaluate run folders (or PEFT adapters) side by side on the test split.
use crate::data::{DataFiles, SplitFiles};
use crate::error::{KdError, Result};
use crate::run::folder::write_json;
use crate::run::{load_adapter, load_run, LoadedModel};
use crate::training::calibration::Calibration;
use crate::training::evaluate_file;
use crate::training::metrics::{agreement, Evaluation};
use crate::training::TrainSettings;
use candle_core::{DType, Device};
use serde::Serialize;
use std::path::PathBuf;

/// What to compare.
pub struct CompareRequest {
    /// kd run folders.
    pub runs: Vec<PathBuf>,
    /// PEFT adapter folders, loaded onto `model`.
    pub adapters: Vec<PathBuf>,
    /// The base model for adapters (default: each adapter's base_model_name_or_path).
    pub model: Option<String>,
    /// The dataset whose test split is used (default: the first run's data).
    pub data: Option<String>,
    pub device: Device,
    pub dtype: DType,
    /// Truncation for every model (None: each run's own, 128 for adapters).
    pub max_len: Option<usize>,
}

/// One model's results.
#[derive(Debug, Serialize)]
pub struct RunResult {
    pub run: String,
    pub model: String,
    pub trainable_params: usize,
    /// Class names in class order (numbers when the run has none).
    pub class_names: Vec<String>,
    pub eval_samples_per_s: f64,
    #[serde(flatten)]
    pub evaluation: Evaluation,
    /// The run's calibrated softmax temperature, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibrated_temperature: Option<f64>,
    /// NLL, Brier score and ECE of its probabilities (at its temperature).
    pub calibration: Calibration,
}

/// Agreement (same argmax) of two runs.
#[derive(Debug, Serialize)]
pub struct PairAgreement {
    pub a: String,
    pub b: String,
    pub agreement: f64,
}

/// The whole comparison, as written to JSON.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// The test split's file (or Parquet shards), written as a list of paths.
    #[serde(rename = "test_files")]
    pub test_split: SplitFiles,
    pub runs: Vec<RunResult>,
    pub agreement: Vec<PairAgreement>,
}

/// Evaluates every run on the same test file.
pub fn run(req: &CompareRequest) -> Result<Comparison> {
    let mut loaded: Vec<(String, LoadedModel)> = Vec::new();
    for dir in &req.runs {
        let mut m = load_run(dir, &req.device, req.dtype)?;
        if let Some(max_len) = req.max_len {
            m.set_max_len(max_len)?;
        }
        loaded.push((dir.display().to_string(), m));
    }
    for dir in &req.adapters {
        let m = load_adapter(
            dir,
            req.model.as_deref(),
            &req.device,
            req.dtype,
            req.max_len.unwrap_or(128),
        )?;
        loaded.push((dir.display().to_string(), m));
    }
    if loaded.is_empty() {
        return Err(KdError::Config(
            "nothing to compare: name run folders or --adapter DIR".into(),
        ));
    }
    let data = req
        .data
        .clone()
        .or_else(|| {
            loaded
                .iter()
                .find_map(|(_, m)| m.run.as_ref().map(|r| r.data.clone()))
        })
        .ok_or_else(|| KdError::Config("pass --data: no run folder names its dataset".into()))?;
    // The columns the runs were trained with: one test split is read once, so they must agree.
    let mut all_columns = loaded
        .iter()
        .filter_map(|(name, m)| Some((name, &m.run.as_ref()?.columns)));
    let columns = all_columns
        .next()
        .map(|(_, c)| c.clone())
        .unwrap_or_default();
    if let Some((name, other)) = all_columns.find(|(_, c)| **c != columns) {
        return Err(KdError::Config(format!(
            "{name} reads other columns ({other:?}) than the first run ({columns:?}): compare them separately"
        )));
    }
    let test_split = DataFiles::resolve(&data)?
        .with_columns(&columns)
        .test_split()?
        .clone();
    let mut runs = Vec::new();
    let mut predictions = Vec::new();
    for (name, m) in &loaded {
        let settings = m.run.as_ref().map(|r| r.train.clone()).unwrap_or_default();
        let settings = TrainSettings {
            max_len: m.max_len,
            ..settings
        };
        let names = m.run.as_ref().and_then(|r| r.label_names.as_deref());
        let fe = evaluate_file(
            &m.model,
            &m.tokenizer,
            &test_split,
            names,
            &m.checkpoint,
            &settings,
        )?;
        tracing::info!(run = %name, accuracy = fe.evaluation.accuracy, "evaluated");
        let calibration = fe.calibration(m.temperature);
        predictions.push(fe.predicted);
        runs.push(RunResult {
            run: name.clone(),
            model: m.checkpoint.id.clone(),
            trainable_params: m.model.trainable_count(),
            class_names: (0..m.model.num_labels()).map(|c| m.class_name(c)).collect(),
            eval_samples_per_s: fe.samples_per_s,
            calibrated_temperature: (m.temperature != 1.0).then_some(m.temperature),
            calibration,
            evaluation: fe.evaluation,
        });
    }
    let mut pairs = Vec::new();
    for i in 0..runs.len() {
        for j in i + 1..runs.len() {
            pairs.push(PairAgreement {
                a: runs[i].run.clone(),
                b: runs[j].run.clone(),
                agreement: agreement(&predictions[i], &predictions[j]),
            });
        }
    }
    Ok(Comparison {
        test_split,
        runs,
        agreement: pairs,
    })
}

/// The comparison as a plain-text table.
pub fn render_table(c: &Comparison) -> String {
    let mut s = format!("test split: {}\n", c.test_split.describe());
    s.push_str(&format!(
        "{:<28} {:>9} {:>9} {:>7} {:>7} {:>7} {:>12} {:>10}  {}\n",
        "run", "accuracy", "macro-F1", "NLL", "Brier", "ECE", "trainable", "eval/s", "per-class F1"
    ));
    for r in &c.runs {
        let f1: Vec<String> = r
            .evaluation
            .per_class
            .iter()
            .zip(&r.class_names)
            .map(|(p, name)| format!("{name} {:.3}", p.f1))
            .collect();
        s.push_str(&format!(
            "{:<28} {:>8.2}% {:>9.4} {:>7.4} {:>7.4} {:>7.4} {:>12} {:>10.1}  {}\n",
            r.run,
            100.0 * r.evaluation.accuracy,
            r.evaluation.macro_f1,
            r.calibration.nll,
            r.calibration.brier,
            r.calibration.ece,
            r.trainable_params,
            r.eval_samples_per_s,
            f1.join(" ")
        ));
    }
    for p in &c.agreement {
        s.push_str(&format!(
            "agreement {} vs {}: {:.2}%\n",
            p.a,
            p.b,
            100.0 * p.agreement
        ));
    }
    for r in &c.runs {
        s.push_str(&format!(
            "confusion (rows true, columns predicted) {}:\n",
            r.run
        ));
        let width = r
            .class_names
            .iter()
            .map(|n| n.len())
            .max()
            .unwrap_or(1)
            .max(6);
        let head: Vec<String> = r
            .class_names
            .iter()
            .map(|n| format!("{n:>width$}"))
            .collect();
        s.push_str(&format!("  {:<width$}{}\n", "", head.join("")));
        for (row, name) in r.evaluation.confusion.iter().zip(&r.class_names) {
            let cells: Vec<String> = row.iter().map(|v| format!("{v:>width$}")).collect();
            s.push_str(&format!("  {name:<width$}{}\n", cells.join("")));
        }
    }
    s
}

/// Writes the comparison JSON atomically.
pub fn save_json(c: &Comparison, path: &std::path::Path) -> Result<()> {
    write_json(path, c)
}
