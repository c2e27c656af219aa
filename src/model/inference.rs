//! What a model predicts, without gradients: logits for rows of a batcher, batched by length,
//! and the probabilities of a row of logits at a temperature.
use super::TextClassifier;
use crate::data::Batcher;
use crate::error::Result;
use crate::progress::progress_bar;

/// Logits for `rows` (rows.len() × classes, in the order of `rows`), batched by length, with a
/// progress bar named `what`.
pub fn predict_logits(
    model: &TextClassifier,
    batcher: &Batcher,
    rows: &[usize],
    batch_size: usize,
    what: &str,
) -> Result<Vec<f32>> {
    let bar = progress_bar(rows.len(), what);
    let out = logits_by_length(model, batcher, rows, batch_size, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    Ok(out)
}

/// [`predict_logits`] without the progress bar: `done(n)` is told after each batch of `n`
/// rows. `kd serve` runs it per gathered batch, where a bar per batch would only flicker.
pub fn logits_by_length(
    model: &TextClassifier,
    batcher: &Batcher,
    rows: &[usize],
    batch_size: usize,
    mut done: impl FnMut(usize),
) -> Result<Vec<f32>> {
    let classes = model.num_labels();
    let position: std::collections::HashMap<usize, usize> =
        rows.iter().enumerate().map(|(k, &r)| (r, k)).collect();
    let mut out = vec![0f32; rows.len() * classes];
    let plan = batcher.eval_plan(rows, batch_size.max(1));
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
        done(chunk.len());
    }
    Ok(out)
}

/// Softmax of `row / temperature` in f64.
pub fn probabilities(row: &[f32], temperature: f64) -> Vec<f64> {
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64 / temperature));
    let exp: Vec<f64> = row
        .iter()
        .map(|&v| (v as f64 / temperature - max).exp())
        .collect();
    let sum: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}
