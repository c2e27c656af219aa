//! Evaluating a model on labelled rows: metrics, predictions and calibration scores (the
//! no-grad forward pass itself is [`crate::model::predict_logits`]).
use super::calibration::{calibration, Calibration};
use super::metrics::{argmax_rows, evaluate, Evaluation};
use super::TrainSettings;
use crate::data::{tokenize_rows, Example, SplitFiles, TextTokenizer};
use crate::distributed::{Collective, Single};
use crate::error::Result;
use crate::model::{predict_logits_shared, Checkpoint, TextClassifier};
use std::time::Instant;

/// The outcome of evaluating a labelled file.
pub struct FileEvaluation {
    pub evaluation: Evaluation,
    pub predicted: Vec<u32>,
    /// Row-major logits and the labels, for calibration scores.
    pub logits: Vec<f32>,
    pub labels: Vec<u32>,
    pub samples_per_s: f64,
}

impl FileEvaluation {
    /// NLL, Brier and ECE of the probabilities at `temperature`.
    pub fn calibration(&self, temperature: f64) -> Calibration {
        calibration(
            &self.logits,
            &self.labels,
            self.evaluation.per_class.len(),
            temperature,
        )
    }
}

/// Evaluates `model` on every row of a labelled split (string labels mapped through `names`).
pub fn evaluate_file(
    model: &TextClassifier,
    tokenizer: &TextTokenizer,
    split: &SplitFiles,
    names: Option<&[String]>,
    checkpoint: &Checkpoint,
    settings: &TrainSettings,
) -> Result<FileEvaluation> {
    let rows = split.read_labelled(model.num_labels(), names)?;
    evaluate_examples(model, tokenizer, &rows, checkpoint, settings)
}

/// Evaluates `model` on labelled rows (labels already checked against its classes).
pub fn evaluate_examples(
    model: &TextClassifier,
    tokenizer: &TextTokenizer,
    rows: &[Example],
    checkpoint: &Checkpoint,
    settings: &TrainSettings,
) -> Result<FileEvaluation> {
    evaluate_shared(&Single, model, tokenizer, rows, checkpoint, settings)
}

/// [`evaluate_examples`] with the batches shared by the ranks of `world` (every rank gets the
/// whole evaluation).
pub fn evaluate_shared(
    world: &dyn Collective,
    model: &TextClassifier,
    tokenizer: &TextTokenizer,
    rows: &[Example],
    checkpoint: &Checkpoint,
    settings: &TrainSettings,
) -> Result<FileEvaluation> {
    let classes = model.num_labels();
    let batcher = tokenize_rows(tokenizer, rows, checkpoint.config.pad_id())?;
    let all: Vec<usize> = (0..rows.len()).collect();
    let started = Instant::now();
    let bs = settings.eval_batch_size;
    let logits = predict_logits_shared(world, model, &batcher, &all, bs, "test")?;
    let samples_per_s = rows.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let predicted = argmax_rows(&logits, classes);
    let labels: Vec<u32> = rows.iter().map(|r| r.label.expect("labelled")).collect();
    Ok(FileEvaluation {
        evaluation: evaluate(&predicted, &labels, classes),
        predicted,
        logits,
        labels,
        samples_per_s,
    })
}
