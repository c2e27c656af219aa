//! What a model predicts, without gradients: logits for rows of a batcher, batched by length,
//! and the probabilities of a row of logits at a temperature.
use super::TextClassifier;
use crate::data::Batcher;
use crate::distributed::{Collective, Single};
use crate::error::Result;
use crate::progress::progress_bar;

/// Logits for `rows` (rows.len() × classes, in the order of `rows`), batched by length.
pub fn predict_logits(
    model: &TextClassifier,
    batcher: &Batcher,
    rows: &[usize],
    batch_size: usize,
    what: &str,
) -> Result<Vec<f32>> {
    predict_logits_shared(&Single, model, batcher, rows, batch_size, what)
}

/// [`predict_logits`] shared by the ranks of `world`: the same batches as one process makes,
/// batch k scored by rank k mod N, gathered on every rank. Each batch is the one a single
/// process scores, so the logits are its bits (for the same weights).
pub fn predict_logits_shared(
    world: &dyn Collective,
    model: &TextClassifier,
    batcher: &Batcher,
    rows: &[usize],
    batch_size: usize,
    what: &str,
) -> Result<Vec<f32>> {
    let classes = model.num_labels();
    let position: std::collections::HashMap<usize, usize> =
        rows.iter().enumerate().map(|(k, &r)| (r, k)).collect();
    let plan = batcher.eval_plan(rows, batch_size.max(1));
    let (rank, size) = (world.rank(), world.size());
    let mine: Vec<&Vec<usize>> = plan.iter().skip(rank).step_by(size).collect();
    let bar = progress_bar(mine.iter().map(|b| b.len()).sum(), what);
    let _no_grad = crate::nn::no_grad();
    let mut scored = Vec::with_capacity(rows.len() * classes / size.max(1));
    for chunk in mine {
        let batch = batcher.batch(chunk);
        let logits = model.forward(&batch, None)?;
        scored.extend(logits.flatten_all()?.to_vec1::<f32>()?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let gathered = world.all_gather(&scored)?;
    // Rank r's part holds its batches r, r + N, … in order; the parts follow in rank order.
    let order = (0..size).flat_map(|r| plan.iter().skip(r).step_by(size));
    let mut out = vec![0f32; rows.len() * classes];
    let mut at = 0;
    for &r in order.flatten() {
        let k = position[&r];
        out[k * classes..(k + 1) * classes].copy_from_slice(&gathered[at..at + classes]);
        at += classes;
    }
    if at != gathered.len() {
        return Err(crate::error::KdError::Internal(format!(
            "{what}: gathered {} logits for {} rows",
            gathered.len(),
            rows.len()
        )));
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
