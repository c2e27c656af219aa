//! Batched forward passes without gradients: caching a teacher's logits, evaluating, predicting.
use super::calibration::{calibration, Calibration};
use super::log::progress_bar;
use super::metrics::{argmax_rows, evaluate, Evaluation};
use super::TrainSettings;
use crate::data::Batcher;
use crate::data::{tokenize_rows, Example, SplitFiles, TextTokenizer};
use crate::error::Result;
use crate::model::{Checkpoint, TextClassifier};
use std::time::Instant;

/// Logits for `rows` (rows.len() × classes, in the order of `rows`), batched by length.
pub fn predict_logits(
    model: &TextClassifier,
    batcher: &Batcher,
    rows: &[usize],
    batch_size: usize,
    what: &str,
) -> Result<Vec<f32>> {
    let classes = model.num_labels();
    let position: std::collections::HashMap<usize, usize> =
        rows.iter().enumerate().map(|(k, &r)| (r, k)).collect();
    let mut out = vec![0f32; rows.len() * classes];
    let plan = batcher.eval_plan(rows, batch_size.max(1));
    let bar = progress_bar(rows.len(), what);
    let _no_grad = crate::nn::no_grad();
    for chunk in plan {
        let batch = batcher.batch(&chunk);
        let logits = model.forward(&batch, None)?;
        let values = logits.flatten_all()?.to_vec1::<f32>()?;
        for (j, &r) in batch.rows.iter().enumerate() {
            let k = position[&r];
            out[k * classes..(k + 1) * classes]
                .copy_from_slice(&values[j * classes..(j + 1) * classes]);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Rows per caching chunk. The caching pass batches each chunk of rows on its own, so a chunk's
/// logits do not depend on the rows outside it: N processes that each score every N-th chunk
/// (`kd cache --shard i/N`) produce, merged, the very bits one process does.
pub const CACHE_CHUNK_ROWS: usize = 4096;

/// Which chunks of a caching pass one process scores: shard `index` of `count` takes chunks
/// `index`, `index + count`, … (all chunks for 0 of 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole pass.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether chunk `k` belongs to this shard.
    pub fn owns(&self, k: usize) -> bool {
        k % self.count == self.index
    }
}

/// The caching pass: logits of `rows`, chunk by chunk (`chunk_rows` rows each, batched by
/// length within the chunk), for the chunks `shard` owns, concatenated in chunk order.
pub fn cache_logits(
    model: &TextClassifier,
    batcher: &Batcher,
    rows: &[usize],
    batch_size: usize,
    chunk_rows: usize,
    shard: Shard,
) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for k in 0..rows.len().div_ceil(chunk_rows.max(1)) {
        if shard.owns(k) {
            out.extend(cache_chunk(
                model, batcher, rows, batch_size, chunk_rows, k,
            )?);
        }
    }
    Ok(out)
}

/// Chunk `k` of the caching pass over `rows`.
pub fn cache_chunk(
    model: &TextClassifier,
    batcher: &Batcher,
    rows: &[usize],
    batch_size: usize,
    chunk_rows: usize,
    k: usize,
) -> Result<Vec<f32>> {
    let chunk_rows = chunk_rows.max(1);
    let chunk = &rows[k * chunk_rows..((k + 1) * chunk_rows).min(rows.len())];
    predict_logits(model, batcher, chunk, batch_size, "cache")
}

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
    let classes = model.num_labels();
    let batcher = tokenize_rows(tokenizer, rows, checkpoint.config.pad_id())?;
    let all: Vec<usize> = (0..rows.len()).collect();
    let started = Instant::now();
    let logits = predict_logits(model, &batcher, &all, settings.eval_batch_size, "test")?;
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
