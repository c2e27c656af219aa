//! Loading trained models (run folders and PEFT adapter folders) and evaluating them on a file.
use super::config::RunConfig;
use super::pipeline::{effective_max_len, files, tokenize_rows};
use crate::data::{SplitFiles, TextTokenizer};
use crate::error::{KdError, Result};
use crate::model::head::Pooler;
use crate::model::{adapter, Checkpoint, ModelKind, TextClassifier};
use crate::training::metrics::{argmax_rows, evaluate, Evaluation};
use crate::training::{predict_logits, TrainSettings};
use candle_core::{DType, Device};
use std::path::Path;
use std::time::Instant;

/// A trained model ready for inference.
pub struct LoadedModel {
    pub model: TextClassifier,
    pub tokenizer: TextTokenizer,
    pub checkpoint: Checkpoint,
    /// The run's config, when loaded from a run folder.
    pub run: Option<RunConfig>,
    pub max_len: usize,
}

/// Loads a run folder (`config.toml` + the PEFT adapter files kd writes).
pub fn load_run(dir: &Path, device: &Device, dtype: DType) -> Result<LoadedModel> {
    let config_path = dir.join(files::CONFIG);
    if !config_path.is_file() {
        return Err(KdError::NotFound(format!(
            "{}: not a kd run folder (no {}); for a PEFT adapter folder use --adapter DIR --model ID",
            dir.display(),
            files::CONFIG
        )));
    }
    let run = RunConfig::from_file(&config_path)?;
    let mut loaded = load_adapter(dir, Some(&run.model), device, dtype, run.train.max_len)?;
    loaded.run = Some(run);
    Ok(loaded)
}

/// Loads a PEFT adapter folder onto `model` (default: the adapter's `base_model_name_or_path`).
pub fn load_adapter(
    dir: &Path,
    model: Option<&str>,
    device: &Device,
    dtype: DType,
    max_len: usize,
) -> Result<LoadedModel> {
    let config = adapter::read_config(dir)?;
    let mut spec = config.to_spec(&dir.join(adapter::ADAPTER_CONFIG))?;
    let model_id = model
        .map(str::to_string)
        .or(config
            .base_model_name_or_path
            .clone()
            .filter(|m| !m.is_empty()))
        .ok_or_else(|| {
            KdError::Config(format!(
                "{}: the adapter names no base model: pass --model",
                dir.display()
            ))
        })?;
    let checkpoint = Checkpoint::resolve(&model_id)?;
    let weights = adapter::read_weights(dir, device)?;
    let kind = checkpoint.config.kind();
    let labels = adapter::num_labels(&weights, dir, kind)?;
    if kind == ModelKind::Roberta {
        // RoBERTa's head has no pooler: whatever modules_to_save says, there is none to freeze.
        spec.pooler = Pooler::default();
    }
    let model = TextClassifier::load(&checkpoint, &spec, labels, device, dtype, 0)?;
    let weights_path = dir.join(adapter::ADAPTER_WEIGHTS);
    model.set_trainable(&weights, &weights_path)?;
    let used: std::collections::HashSet<&str> = model
        .trainable()
        .iter()
        .map(|nv| nv.name.as_str())
        .collect();
    if let Some(extra) = weights.keys().find(|k| !used.contains(k.as_str())) {
        return Err(KdError::bad_file(
            weights_path,
            format!("tensor `{extra}` matches no module of the model (check target_modules)"),
        ));
    }
    let max_len = effective_max_len(max_len, &checkpoint);
    let tokenizer = TextTokenizer::load(&checkpoint.tokenizer, max_len)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        checkpoint,
        run: None,
        max_len,
    })
}

/// The outcome of evaluating a labelled file.
pub struct FileEvaluation {
    pub evaluation: Evaluation,
    pub predicted: Vec<u32>,
    pub samples_per_s: f64,
}

/// Evaluates `model` on every row of a labelled split (one file or the Hub's Parquet shards).
pub fn evaluate_file(
    model: &TextClassifier,
    tokenizer: &TextTokenizer,
    split: &SplitFiles,
    checkpoint: &Checkpoint,
    settings: &TrainSettings,
) -> Result<FileEvaluation> {
    let classes = model.num_labels();
    let rows = split.read_checked(true, |r| {
        let label = r.label.unwrap_or(0);
        (label as usize >= classes)
            .then(|| format!("label {label} but the model has {classes} classes"))
    })?;
    let batcher = tokenize_rows(tokenizer, &rows, checkpoint.config.pad_id())?;
    let all: Vec<usize> = (0..rows.len()).collect();
    let started = Instant::now();
    let logits = predict_logits(model, &batcher, &all, settings.eval_batch_size, "test")?;
    let samples_per_s = rows.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let predicted = argmax_rows(&logits, classes);
    let labels: Vec<u32> = rows.iter().map(|r| r.label.expect("labelled")).collect();
    Ok(FileEvaluation {
        evaluation: evaluate(&predicted, &labels, classes),
        predicted,
        samples_per_s,
    })
}
