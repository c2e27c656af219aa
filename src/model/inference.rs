//! What a model predicts, without gradients: logits (and representations) for rows of a batcher,
//! batched by length, shared by the ranks of a data-parallel world, and the probabilities of a row
//! of logits at a temperature.
use super::TextClassifier;
use crate::data::Batcher;
use crate::distributed::{Collective, Single};
use crate::error::Result;
use crate::progress::progress_bar;
use candle_core::{DType, Tensor};

/// Logits for `rows` (rows.len() × classes, in the order of `rows`), batched by length, with a
/// progress bar named `what`.
pub fn predict_logits(
    model: &TextClassifier,
    batcher: &Batcher,
    rows: &[usize],
    batch_size: usize,
    what: &str,
) -> Result<Vec<f32>> {
    predict_rows_shared(&Single, model, batcher, rows, batch_size, what, false)
}

/// [`predict_logits`] shared by the ranks of `world` (see [`predict_rows_shared`]).
pub fn predict_logits_shared(
    world: &dyn Collective,
    model: &TextClassifier,
    batcher: &Batcher,
    rows: &[usize],
    batch_size: usize,
    what: &str,
) -> Result<Vec<f32>> {
    predict_rows_shared(world, model, batcher, rows, batch_size, what, false)
}

/// What the model gives each of `rows`, in the order of `rows`, batched by length, with a
/// progress bar named `what`: its logits, followed, with `representations`, by its sentence
/// representation (see [`TextClassifier::forward_with_representation`]): rows.len() × (classes
/// [+ hidden]).
pub fn predict_rows(
    model: &TextClassifier,
    batcher: &Batcher,
    rows: &[usize],
    batch_size: usize,
    what: &str,
    representations: bool,
) -> Result<Vec<f32>> {
    predict_rows_shared(
        &Single,
        model,
        batcher,
        rows,
        batch_size,
        what,
        representations,
    )
}

/// [`predict_rows`] shared by the ranks of `world`: the same batches as one process makes, batch
/// k scored by rank k mod N, gathered on every rank. Each batch is the one a single process
/// scores, so the values are its bits (for the same weights).
pub fn predict_rows_shared(
    world: &dyn Collective,
    model: &TextClassifier,
    batcher: &Batcher,
    rows: &[usize],
    batch_size: usize,
    what: &str,
    representations: bool,
) -> Result<Vec<f32>> {
    let plan = batcher.eval_plan(rows, batch_size.max(1));
    let (rank, size) = (world.rank(), world.size());
    let mine: Vec<&Vec<usize>> = plan.iter().skip(rank).step_by(size).collect();
    let bar = progress_bar(mine.iter().map(|b| b.len()).sum(), what);
    let scored = score_batches(model, batcher, mine.iter().copied(), representations, |n| {
        bar.inc(n as u64)
    })?;
    bar.finish_and_clear();
    let gathered = world.all_gather(&scored)?;
    // Rank r's part holds its batches r, r + N, … in order; the parts follow in rank order.
    let order = (0..size).flat_map(|r| plan.iter().skip(r).step_by(size));
    place(
        rows,
        order.flatten(),
        &gathered,
        width(model, representations),
        what,
    )
}

/// [`predict_logits`] without the progress bar, in one process: `done(n)` is told after each
/// batch of `n` rows. `kd serve` runs it per gathered batch, where a bar per batch would only
/// flicker.
pub fn logits_by_length(
    model: &TextClassifier,
    batcher: &Batcher,
    rows: &[usize],
    batch_size: usize,
    done: impl FnMut(usize),
) -> Result<Vec<f32>> {
    let plan = batcher.eval_plan(rows, batch_size.max(1));
    let scored = score_batches(model, batcher, &plan, false, done)?;
    place(
        rows,
        plan.iter().flatten(),
        &scored,
        width(model, false),
        "predict",
    )
}

/// Values a row gets: its logits, and its representation when asked.
fn width(model: &TextClassifier, representations: bool) -> usize {
    model.num_labels()
        + if representations {
            model.hidden_size()
        } else {
            0
        }
}

/// Each batch's values, row after row, in the order of `batches`.
fn score_batches<'a>(
    model: &TextClassifier,
    batcher: &Batcher,
    batches: impl IntoIterator<Item = &'a Vec<usize>>,
    representations: bool,
    mut done: impl FnMut(usize),
) -> Result<Vec<f32>> {
    let _no_grad = crate::nn::no_grad();
    let mut scored = Vec::new();
    for chunk in batches {
        let batch = batcher.batch(chunk);
        let values = if representations {
            let (logits, repr) = model.forward_with_representation(&batch, None)?;
            let parts = [logits.to_dtype(DType::F32)?, repr.to_dtype(DType::F32)?];
            Tensor::cat(&parts, 1)?
        } else {
            model.forward(&batch, None)?
        };
        scored.extend(values.flatten_all()?.to_vec1::<f32>()?);
        done(chunk.len());
    }
    Ok(scored)
}

/// `values` (rows in `order`, `width` each) put back in the order of `rows`.
fn place<'a>(
    rows: &[usize],
    order: impl Iterator<Item = &'a usize>,
    values: &[f32],
    width: usize,
    what: &str,
) -> Result<Vec<f32>> {
    let position: std::collections::HashMap<usize, usize> =
        rows.iter().enumerate().map(|(k, &r)| (r, k)).collect();
    let mut out = vec![0f32; rows.len() * width];
    let mut at = 0;
    for &r in order {
        let k = position[&r];
        out[k * width..(k + 1) * width].copy_from_slice(&values[at..at + width]);
        at += width;
    }
    if at != values.len() {
        return Err(crate::error::KdError::Internal(format!(
            "{what}: {} values for {} rows of {width}",
            values.len(),
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
