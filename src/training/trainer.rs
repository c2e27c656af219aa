//! The training loop shared by `kd teach` and `kd distill`.
use super::inference::predict_logits;
use super::log::{progress_bar, MetricsLog};
use super::loss::{cross_entropy, distillation_mixed};
use super::metrics::{argmax_rows, evaluate};
use super::optimizer::{AdamW, AdamWConfig};
use super::schedule::{warmup_cosine, warmup_steps};
use super::selection::{Decision, EpochScores, EpochSelector, Select};
use crate::cache::LogitCache;
use crate::data::{Batch, Batcher, Dataset};
use crate::error::{KdError, Result};
use crate::model::TextClassifier;
use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use std::time::Instant;

/// Optimisation settings (the `[train]` table of a config).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TrainSettings {
    pub epochs: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub label_smoothing: f64,
    pub max_grad_norm: f64,
    pub max_len: usize,
    pub seed: u64,
    pub val_fraction: f64,
    /// How the kept epoch is chosen (absent in configs written before `--select` existed).
    #[serde(default)]
    pub select: Select,
    /// The number of classes, when the data does not say (labels must be 0..K−1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_labels: Option<usize>,
    /// Fit a softmax temperature on the validation rows after training (temperature scaling);
    /// `kd predict` and `kd compare` then use it.
    #[serde(default)]
    pub calibrate: bool,
    pub log_every: usize,
    pub eval_batch_size: usize,
}

/// What the loss compares the model's logits with.
pub enum Objective<'a> {
    /// Cross-entropy with the labels (the teacher).
    Supervised,
    /// α·T²·KL(teacher ‖ student) + (1−α)·CE on labelled rows and T²·KL alone on unlabelled
    /// rows, teacher logits read from the cache.
    Distill {
        /// One cache per teacher; several are distilled from as their ensemble.
        teachers: &'a [LogitCache],
        temperature: f64,
        alpha: f64,
    },
}

/// What a training run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainReport {
    pub steps: usize,
    /// Which epoch's weights the model holds, and why.
    pub selection: Decision,
    /// The kept epoch's validation loss (NLL) and accuracy.
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub train_seconds: f64,
    pub train_samples_per_s: f64,
    pub train_tokens_per_s: f64,
}

/// Trains `model`'s adapters and head on `data.train`, evaluating on `data.val` after every
/// epoch; at the end the model holds the epoch [`EpochSelector`] keeps.
pub fn train(
    model: &TextClassifier,
    batcher: &Batcher,
    data: &Dataset,
    s: &TrainSettings,
    objective: &Objective,
    log: &mut MetricsLog,
) -> Result<TrainReport> {
    if s.batch_size == 0 || s.epochs == 0 {
        return Err(KdError::Config(
            "epochs and batch size must be at least 1".into(),
        ));
    }
    // Distillation also learns from the unlabelled rows (the teacher scored them); an epoch is
    // one pass over both.
    let rows: Vec<usize> = match objective {
        Objective::Supervised => data.train.clone(),
        Objective::Distill { .. } => data.train.iter().chain(&data.unlabelled).copied().collect(),
    };
    let per_epoch = rows.len().div_ceil(s.batch_size);
    let total = s
        .max_steps
        .map_or(per_epoch * s.epochs, |m| m.min(per_epoch * s.epochs));
    let warmup = warmup_steps(total, s.warmup_ratio);
    let mut opt = new_optimizer(model, s)?;
    let mut rng = StdRng::seed_from_u64(s.seed);
    // GPU dropout masks come from the device's generator (the CPU's from `rng`).
    if !model.device().is_cpu() {
        model.device().set_seed(s.seed)?;
    }
    let bar = progress_bar(total, "train");
    let (mut step, mut seconds, mut samples, mut tokens) = (0usize, 0f64, 0usize, 0usize);
    let mut selector = EpochSelector::new(s.select);
    let mut best: Option<(EpochScores, Vec<Tensor>)> = None;
    let mut last: Option<EpochScores> = None;
    let mut epoch = 0;
    while step < total {
        epoch += 1;
        let mut window = (0f64, 0usize); // loss sum, steps since last log
        for rows in batcher.training_plan(&rows, s.batch_size, &mut rng) {
            if step == total {
                break;
            }
            let started = Instant::now();
            let batch = batcher.batch(&rows);
            let lr = s.lr * warmup_cosine(step, warmup, total);
            let loss = train_step(model, &batch, objective, &mut opt, lr, s, &mut rng)?;
            if !loss.is_finite() {
                return Err(KdError::Config(format!(
                    "the loss became {loss} at step {step}: lower --lr"
                )));
            }
            seconds += started.elapsed().as_secs_f64();
            samples += batch.batch_size;
            tokens += batch.real_tokens();
            step += 1;
            window = (window.0 + loss, window.1 + 1);
            bar.inc(1);
            bar.set_message(format!(
                "epoch {epoch} loss {loss:.4} lr {lr:.2e} {:.1} samples/s",
                samples as f64 / seconds
            ));
            if step % s.log_every.max(1) == 0 || step == total {
                log.write(json!({
                    "step": step, "epoch": epoch, "loss": window.0 / window.1 as f64, "lr": lr,
                    "samples_per_s": samples as f64 / seconds,
                    "tokens_per_s": tokens as f64 / seconds,
                }))?;
                window = (0.0, 0);
            }
        }
        if !data.val.is_empty() {
            let scores = validate(model, batcher, data, s, epoch, step, log)?;
            if selector.observe(&scores) {
                let snapshot = model
                    .trainable()
                    .iter()
                    .map(|nv| nv.var.as_tensor().copy())
                    .collect::<candle_core::Result<Vec<_>>>()?;
                best = Some((scores.clone(), snapshot));
            }
            last = Some(scores);
        }
    }
    bar.finish_and_clear();
    let selection = selector.decide(last.as_ref(), epoch);
    tracing::info!(epoch = selection.epoch, "kept: {}", selection.reason);
    let mut kept = last;
    if let Some((scores, snapshot)) = best.filter(|(b, _)| b.epoch == selection.epoch) {
        for (nv, t) in model.trainable().iter().zip(snapshot) {
            nv.var.set(&t)?;
        }
        kept = Some(scores);
    }
    Ok(TrainReport {
        steps: step,
        selection,
        val_loss: kept.as_ref().map(EpochScores::loss),
        val_accuracy: kept.as_ref().map(EpochScores::accuracy),
        train_seconds: seconds,
        train_samples_per_s: samples as f64 / seconds.max(1e-9),
        train_tokens_per_s: tokens as f64 / seconds.max(1e-9),
    })
}

/// Scores the validation rows after `epoch`, logs them and returns them per row.
fn validate(
    model: &TextClassifier,
    batcher: &Batcher,
    data: &Dataset,
    s: &TrainSettings,
    epoch: usize,
    step: usize,
    log: &mut MetricsLog,
) -> Result<EpochScores> {
    let classes = model.num_labels();
    let logits = predict_logits(model, batcher, &data.val, s.eval_batch_size, "validation")?;
    let labels: Vec<u32> = data.val.iter().map(|&i| data.label(i)).collect();
    let scores = EpochScores::from_logits(epoch, &logits, &labels, classes);
    let eval = evaluate(&argmax_rows(&logits, classes), &labels, classes);
    let loss = scores.loss();
    tracing::info!(
        epoch,
        loss,
        accuracy = eval.accuracy,
        macro_f1 = eval.macro_f1,
        "validation"
    );
    log.write(json!({
        "eval": "validation", "epoch": epoch, "step": step, "loss": loss,
        "accuracy": eval.accuracy, "macro_f1": eval.macro_f1,
    }))?;
    Ok(scores)
}

/// AdamW over the model's trainable tensors with the run's weight decay.
pub fn new_optimizer(model: &TextClassifier, s: &TrainSettings) -> Result<AdamW> {
    let cfg = AdamWConfig {
        weight_decay: s.weight_decay,
        ..Default::default()
    };
    Ok(AdamW::new(model.trainable(), cfg)?)
}

/// One optimizer step on `batch` (forward with dropout, loss, backward, clipping, AdamW);
/// returns the loss.
pub fn train_step(
    model: &TextClassifier,
    batch: &Batch,
    objective: &Objective,
    opt: &mut AdamW,
    lr: f64,
    s: &TrainSettings,
    rng: &mut StdRng,
) -> Result<f64> {
    let device = model.device();
    let logits = model.forward(batch, Some(rng))?;
    let labels = Tensor::from_slice(&batch.labels, batch.batch_size, device)?;
    let loss = match objective {
        Objective::Supervised => {
            if !batch.all_labelled() {
                return Err(KdError::Config(
                    "unlabelled rows can only be learnt from a teacher's logits".into(),
                ));
            }
            cross_entropy(&logits, &labels, s.label_smoothing)?
        }
        Objective::Distill {
            teachers,
            temperature,
            alpha,
        } => {
            let shape = (batch.batch_size, model.num_labels());
            let logits_of_teachers = crate::cache::ensemble(teachers, &batch.rows, *temperature);
            let teacher = Tensor::from_vec(logits_of_teachers, shape, device)?;
            distillation_mixed(
                &logits,
                &teacher,
                &labels,
                &batch.labelled,
                *temperature,
                *alpha,
                s.label_smoothing,
            )?
        }
    };
    let mut grads = loss.backward()?;
    opt.clip_grad_norm(&mut grads, s.max_grad_norm)?;
    opt.step(&grads, lr)?;
    Ok(loss.to_scalar::<f32>()? as f64)
}
