//! One optimizer step and what it needs: the run's settings, the objective (labels, or a
//! teacher's cached logits) and the optimizer.
use super::loss::{cross_entropy, distillation_mixed};
use super::optimizer::{AdamW, AdamWConfig};
use super::selection::Select;
use crate::cache::{ensemble, LogitCache};
use crate::data::Batch;
use crate::error::{KdError, Result};
use crate::model::TextClassifier;
use candle_core::Tensor;
use rand::rngs::StdRng;

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
    crate::cache::CACHE_CHUNK_ROWS
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
