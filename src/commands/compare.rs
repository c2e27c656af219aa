//! `kd compare`: evaluate run folders (or PEFT adapters) side by side on the test split.
use crate::data::{tokenize_rows, DataFiles};
use crate::data::{Example, SplitFiles};
use crate::error::{KdError, Result};
use crate::model::serving::serving_cost;
pub use crate::report::comparison::{
    render_table, save_json, Comparison, PairAgreement, RunResult,
};
use crate::run::{LoadedModel, ModelSource};
use crate::training::calibration::reliability;
use crate::training::evaluate_examples;
use crate::training::metrics::agreement;
use crate::training::TrainSettings;
use candle_core::{DType, Device};
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
    /// Measure rows/s and latency (false: parameters and FLOPs only, for quick checks).
    pub timing: bool,
    /// Also evaluate every model with its encoder layers in int8, named `NAME (int8)`, beside
    /// its `dtype` self.
    pub int8: bool,
}

/// Evaluates every run on the same test file.
pub fn run(req: &CompareRequest) -> Result<Comparison> {
    let sources = req.runs.iter().map(|d| ModelSource::Run(d.clone()));
    let adapters = req.adapters.iter().map(|dir| ModelSource::Adapter {
        dir: dir.clone(),
        model: req.model.clone(),
    });
    let mut loaded = Vec::new();
    for source in sources.chain(adapters) {
        loaded.push((
            source.display_name(),
            source.load(&req.device, req.dtype, req.max_len)?,
        ));
        if req.int8 {
            // A second copy, quantized from f32 weights.
            let mut int8 = source.load(&req.device, DType::F32, req.max_len)?;
            int8.quantize_int8()?;
            loaded.push((format!("{} (int8)", source.display_name()), int8));
        }
    }
    if loaded.is_empty() {
        return Err(KdError::Config(
            "nothing to compare: name run folders or --adapter DIR".into(),
        ));
    }
    let test_split = common_test_split(&loaded, req.data.as_deref())?;
    // Every model's rows are read (and refused) before the first is evaluated.
    let rows = loaded
        .iter()
        .map(|(name, m)| test_rows(name, m, &test_split))
        .collect::<Result<Vec<_>>>()?;
    let mut runs = Vec::new();
    let mut predictions = Vec::new();
    for ((name, m), rows) in loaded.iter().zip(rows) {
        let (result, predicted) = evaluate_one(name, m, &rows, req)?;
        runs.push(result);
        predictions.push(predicted);
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

/// The one test split every model is scored on: `data`'s, else the first run's dataset, read
/// with the columns the runs were trained with (which must agree, since it is read once).
fn common_test_split(loaded: &[(String, LoadedModel)], data: Option<&str>) -> Result<SplitFiles> {
    let data = data
        .map(str::to_string)
        .or_else(|| {
            loaded
                .iter()
                .find_map(|(_, m)| m.run.as_ref().map(|r| r.data.clone()))
        })
        .ok_or_else(|| KdError::Config("pass --data: no run folder names its dataset".into()))?;
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
    Ok(DataFiles::resolve(&data)?
        .with_columns(&columns)
        .test_split()?
        .clone())
}

/// The test rows as `m` reads them (labels checked against its classes, string labels mapped
/// through its names). Refused when one of its classes has no test row of another dataset's
/// split: a run trained on other data (9 classes scored on a 4-class split) would get scores that
/// look comparable and are not. Its own dataset's split may lack a class (`kd teach` scored it so).
fn test_rows(name: &str, m: &LoadedModel, split: &SplitFiles) -> Result<Vec<Example>> {
    let names = m.run.as_ref().and_then(|r| r.label_names.as_deref());
    let classes = m.model.num_labels();
    let rows = split.read_labelled(classes, names)?;
    let mut seen = vec![false; classes];
    for c in rows.iter().filter_map(|r| r.label) {
        seen[c as usize] = true;
    }
    let missing: Vec<String> = (0..classes)
        .filter(|&c| !seen[c])
        .map(|c| m.class_name(c))
        .collect();
    if missing.is_empty() || is_own_split(m, split) {
        return Ok(rows);
    }
    Err(KdError::Config(format!(
        "{name} has {classes} classes but the test split {} has rows of {} (none of class {}): it was trained on other classes; compare it on its own dataset (--data) or alongside runs with the same classes",
        split.describe(),
        classes - missing.len(),
        missing.join(", ")
    )))
}

/// One model's scores and serving cost on its test rows, and its predicted classes (for
/// agreement).
fn evaluate_one(
    name: &str,
    m: &LoadedModel,
    rows: &[Example],
    req: &CompareRequest,
) -> Result<(RunResult, Vec<u32>)> {
    let settings = m.run.as_ref().map(|r| r.train.clone()).unwrap_or_default();
    let settings = TrainSettings {
        max_len: m.max_len,
        ..settings
    };
    let fe = evaluate_examples(&m.model, &m.tokenizer, rows, &m.checkpoint, &settings)?;
    tracing::info!(run = %name, accuracy = fe.evaluation.accuracy, "evaluated");
    let calibration = fe.calibration(m.temperature);
    let classes = fe.evaluation.per_class.len();
    let bins = |t: f64| reliability(&fe.logits, &fe.labels, classes, t);
    let calibrated = m.temperature != 1.0;
    // Timed after evaluating, so the evaluation pass has warmed everything up.
    let batcher = tokenize_rows(&m.tokenizer, rows, m.checkpoint.config.pad_id())?;
    let serving = serving_cost(
        &m.model,
        &m.checkpoint,
        req.dtype,
        &batcher,
        rows.len(),
        req.timing,
    )?;
    let result = RunResult {
        run: name.to_string(),
        model: m.checkpoint.id.clone(),
        trainable_params: m.model.trainable_count(),
        class_names: (0..m.model.num_labels()).map(|c| m.class_name(c)).collect(),
        eval_samples_per_s: fe.samples_per_s,
        calibrated_temperature: calibrated.then_some(m.temperature),
        calibration,
        reliability: bins(m.temperature),
        reliability_uncalibrated: calibrated.then(|| bins(1.0)),
        evaluation: fe.evaluation,
        serving,
    };
    Ok((result, fe.predicted))
}

/// Whether `split` is the test split of the dataset `m` was trained on (the same files).
fn is_own_split(m: &LoadedModel, split: &SplitFiles) -> bool {
    let Some(run) = &m.run else {
        return false;
    };
    let canonical = |paths: &[std::path::PathBuf]| {
        paths
            .iter()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            .collect::<Vec<_>>()
    };
    DataFiles::resolve(&run.data)
        .ok()
        .and_then(|f| f.with_columns(&run.columns).test_split().ok().cloned())
        .is_some_and(|own| canonical(own.paths()) == canonical(split.paths()))
}
