//! The training loop shared by `kd teach` and `kd distill`.
use super::calibration::ensemble;
use super::inference::predict_logits;
use super::log::{progress_bar, MetricsLog};
use super::loss::{cross_entropy, distillation_mixed};
use super::metrics::{argmax_rows, evaluate};
use super::optimizer::{AdamW, AdamWConfig};
use super::schedule::{warmup_cosine, warmup_steps};
use super::selection::{Decision, EpochScores, EpochSelector, Select};
use super::state::{fault_point, rng_for, stop_point, stop_requested, Checkpoints, TrainState};
use crate::cache::LogitCache;
use crate::data::{Batch, Batcher, Dataset};
use crate::error::{KdError, Result};
use crate::model::TextClassifier;
use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::Rng;
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
    /// Checkpoint every N steps (default: every 5 minutes of training, and every epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<usize>,
    /// Start over even where an interrupted run left a checkpoint (never saved).
    #[serde(skip)]
    pub fresh: bool,
    /// Rows per chunk of the caching pass (each chunk is kept as soon as it is scored).
    #[serde(default = "default_chunk_rows")]
    pub cache_chunk_rows: usize,
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

fn default_chunk_rows() -> usize {
    super::inference::CACHE_CHUNK_ROWS
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

/// Where a training run reports and keeps its state: the metrics log, the checkpoints, and the
/// state to resume from (None for a fresh run).
pub struct Progress<'a> {
    pub log: &'a mut MetricsLog,
    pub checkpoints: &'a mut dyn Checkpoints,
    pub resume: Option<TrainState>,
}

/// Trains `model`'s adapters and head on `data.train` (and, distilling, `data.unlabelled`),
/// evaluating on `data.val` after every epoch; at the end the model holds the epoch
/// [`EpochSelector`] keeps. Resumed from a [`TrainState`], it ends with the bits an
/// uninterrupted run ends with. Stops at a step boundary, checkpointed, when asked
/// ([`super::state::request_stop`]).
pub fn train(
    model: &TextClassifier,
    batcher: &Batcher,
    data: &Dataset,
    s: &TrainSettings,
    objective: &Objective,
    progress: Progress,
) -> Result<TrainReport> {
    let Progress {
        log,
        checkpoints,
        resume,
    } = progress;
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
    let mut selector = EpochSelector::new(s.select);
    let mut st = match resume {
        Some(mut st) => {
            // Checkpoints are read onto the CPU; the model may live on a GPU.
            for (nv, t) in model.trainable().iter().zip(&st.params) {
                nv.var
                    .set(&t.to_device(model.device())?.to_dtype(nv.var.dtype())?)?;
            }
            if let Some((_, snapshot)) = &mut st.best {
                for t in snapshot.iter_mut() {
                    *t = t.to_device(model.device())?;
                }
            }
            opt.restore(st.adam_step, &st.adam_m, &st.adam_v)?;
            selector.remember(st.best.as_ref().map(|b| &b.0));
            tracing::info!(step = st.step, total, "resuming");
            st
        }
        None => TrainState {
            step: 0,
            params: Vec::new(),
            adam_step: 0,
            adam_m: Vec::new(),
            adam_v: Vec::new(),
            best: None,
            last: None,
            window: (0.0, 0),
            seconds: 0.0,
            samples: 0,
            tokens: 0,
            metrics_len: 0,
        },
    };
    let bar = progress_bar(total, "train");
    bar.inc(st.step as u64);
    let mut epoch = st.step / per_epoch.max(1);
    while st.step < total {
        // The epoch's plan is a function of (seed, epoch): a resumed run skips the batches done.
        let done_in_epoch = st.step - epoch * per_epoch;
        epoch += 1;
        let mut plan_rng = rng_for(s.seed, 1, epoch);
        let plan = batcher.training_plan(&rows, s.batch_size, &mut plan_rng);
        for rows in plan.into_iter().skip(done_in_epoch) {
            if st.step == total {
                break;
            }
            let step = st.step;
            let started = Instant::now();
            let batch = batcher.batch(&rows);
            let lr = s.lr * warmup_cosine(step, warmup, total);
            let mut rng = rng_for(s.seed, 2, step);
            // GPU dropout masks come from the device's generator (the CPU's from `rng`).
            if !model.device().is_cpu() {
                model.device().set_seed(rng.random())?;
            }
            let loss = train_step(model, &batch, objective, &mut opt, lr, s, &mut rng)?;
            if !loss.is_finite() {
                return Err(KdError::Diverged {
                    what: "the training loss".into(),
                    value: loss,
                    step,
                });
            }
            st.seconds += started.elapsed().as_secs_f64();
            st.samples += batch.batch_size;
            st.tokens += batch.real_tokens();
            st.step += 1;
            st.window = (st.window.0 + loss, st.window.1 + 1);
            bar.inc(1);
            bar.set_message(format!(
                "epoch {epoch} loss {loss:.4} lr {lr:.2e} {:.1} samples/s",
                st.samples as f64 / st.seconds
            ));
            if st.step % s.log_every.max(1) == 0 || st.step == total {
                log.write(json!({
                    "step": st.step, "epoch": epoch, "loss": st.window.0 / st.window.1 as f64,
                    "lr": lr, "samples_per_s": st.samples as f64 / st.seconds,
                    "tokens_per_s": st.tokens as f64 / st.seconds,
                }))?;
                st.window = (0.0, 0);
            }
            let epoch_end = st.step == total || st.step % per_epoch == 0;
            stop_point(st.step);
            let stop = stop_requested();
            // The epoch's last step is checkpointed after its validation, below.
            if !epoch_end && (stop || checkpoints.due(st.step, false)) {
                save_state(model, &opt, &mut st, log, checkpoints)?;
            }
            fault_point("KD_FAULT_AFTER_STEP", st.step);
            if stop && !epoch_end {
                return Err(KdError::Interrupted {
                    what: format!("training at step {} of {total}", st.step),
                });
            }
        }
        if !data.val.is_empty() {
            let scores = validate(model, batcher, data, s, epoch, st.step, log)?;
            if selector.observe(&scores) {
                st.best = Some((scores.clone(), copy_params(model)?));
            }
            st.last = Some(scores);
        }
        let stop = stop_requested();
        if stop || checkpoints.due(st.step, true) {
            save_state(model, &opt, &mut st, log, checkpoints)?;
        }
        fault_point("KD_FAULT_AFTER_EPOCH", epoch);
        if stop {
            return Err(KdError::Interrupted {
                what: format!("training after epoch {epoch} (step {} of {total})", st.step),
            });
        }
    }
    bar.finish_and_clear();
    // Epochs begun, counted from the steps (a run resumed at its last step of a partial final
    // epoch never enters the loop above).
    let last_epoch = st.step.div_ceil(per_epoch.max(1));
    let selection = selector.decide(st.last.as_ref(), last_epoch);
    tracing::info!(epoch = selection.epoch, "kept: {}", selection.reason);
    let mut kept = st.last;
    if let Some((scores, snapshot)) = st.best.filter(|(b, _)| b.epoch == selection.epoch) {
        for (nv, t) in model.trainable().iter().zip(snapshot) {
            nv.var.set(&t)?;
        }
        kept = Some(scores);
    }
    Ok(TrainReport {
        steps: st.step,
        selection,
        val_loss: kept.as_ref().map(EpochScores::loss),
        val_accuracy: kept.as_ref().map(EpochScores::accuracy),
        train_seconds: st.seconds,
        train_samples_per_s: st.samples as f64 / st.seconds.max(1e-9),
        train_tokens_per_s: st.tokens as f64 / st.seconds.max(1e-9),
    })
}

/// Copies of the trainable tensors (a snapshot that later steps do not change).
fn copy_params(model: &TextClassifier) -> Result<Vec<Tensor>> {
    Ok(model
        .trainable()
        .iter()
        .map(|nv| nv.var.as_tensor().copy())
        .collect::<candle_core::Result<Vec<_>>>()?)
}

/// Fills `st` with the model's and optimizer's current tensors and hands it to `checkpoints`.
fn save_state(
    model: &TextClassifier,
    opt: &AdamW,
    st: &mut TrainState,
    log: &MetricsLog,
    checkpoints: &mut dyn Checkpoints,
) -> Result<()> {
    st.params = copy_params(model)?;
    (st.adam_step, st.adam_m, st.adam_v) = opt.state()?;
    st.metrics_len = log.len();
    checkpoints.save(st)
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
                return Err(KdError::Internal(
                    "unlabelled rows reached a supervised step: they can only be learnt from a teacher's logits".into(),
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
            let logits_of_teachers = ensemble(teachers, &batch.rows, *temperature);
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
