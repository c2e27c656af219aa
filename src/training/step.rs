//! One optimizer step and what it needs: the run's settings, the objective (labels, or a
//! teacher's cached logits) and the optimizer.
use super::loss::{cross_entropy, distillation_mixed};
use super::optimizer::{AdamW, AdamWConfig};
use super::repr::ReprTerm;
use super::selection::Select;
use crate::cache::{ensemble, LogitCache};
use crate::data::Batch;
use crate::error::{KdError, Result};
use crate::model::{NamedVar, TextClassifier};
use candle_core::backprop::GradStore;
use candle_core::Tensor;
use rand::rngs::StdRng;

/// Optimisation settings (the `[train]` table of a config). Unknown keys are refused: a
/// misspelt one (`learning_rate`, `epoch`) would otherwise be dropped without a word.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// The teacher's caching pass also writes each row's sentence representation
    /// (`representations.bin`), which a student matches with `--repr-weight`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache_representations: bool,
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
    /// rows, teacher logits read from the cache; plus β·L_repr on every row when `repr` is set.
    Distill {
        /// One cache per teacher; several are distilled from as their ensemble.
        teachers: &'a [LogitCache],
        temperature: f64,
        alpha: f64,
        /// The representation term (one teacher's representations, through a projection).
        repr: Option<&'a ReprTerm<'a>>,
    },
}

impl Objective<'_> {
    /// The representation term, when there is one.
    pub fn repr(&self) -> Option<&ReprTerm<'_>> {
        match self {
            Objective::Distill { repr, .. } => *repr,
            Objective::Supervised => None,
        }
    }

    /// Tensors the objective trains beside the model's (the representation projection): they
    /// are optimised, clipped and checkpointed with the model's, and never exported.
    pub fn trainable(&self) -> Vec<NamedVar> {
        self.repr().map_or_else(Vec::new, |r| r.projection.named())
    }
}

/// The tensors a run trains: the model's, then the objective's (in checkpoint order).
pub fn trained(model: &TextClassifier, objective: &Objective) -> Vec<NamedVar> {
    let mut params = model.trainable().to_vec();
    params.extend(objective.trainable());
    params
}

/// What one step's loss was: the total, and the unweighted representation term in it.
#[derive(Clone, Copy, Debug)]
pub struct StepLoss {
    pub total: f64,
    pub repr: Option<f64>,
}

/// AdamW over `params` (the model's trainable tensors and the objective's) with the run's
/// weight decay.
pub fn new_optimizer(params: &[NamedVar], s: &TrainSettings) -> Result<AdamW> {
    let cfg = AdamWConfig {
        weight_decay: s.weight_decay,
        ..Default::default()
    };
    Ok(AdamW::new(params, cfg)?)
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
) -> Result<StepLoss> {
    let (loss, repr, mut grads) = gradients(model, batch, objective, s, rng)?;
    apply_gradients(opt, &mut grads, lr, s)?;
    step_losses(&loss, repr.as_ref())
}

/// The step's loss and its representation term as numbers.
pub fn step_losses(loss: &Tensor, repr: Option<&Tensor>) -> Result<StepLoss> {
    Ok(StepLoss {
        total: loss.to_scalar::<f32>()? as f64,
        repr: repr
            .map(|r| r.to_scalar::<f32>())
            .transpose()?
            .map(f64::from),
    })
}

/// Clipping and AdamW on `grads` (the batch's mean gradient).
pub fn apply_gradients(
    opt: &mut AdamW,
    grads: &mut GradStore,
    lr: f64,
    s: &TrainSettings,
) -> Result<()> {
    opt.clip_grad_norm(grads, s.max_grad_norm)?;
    opt.step(grads, lr)?;
    Ok(())
}

/// The forward pass with dropout, the batch's mean loss, the unweighted representation term
/// inside it (when the objective has one), and the loss's gradients.
pub fn gradients(
    model: &TextClassifier,
    batch: &Batch,
    objective: &Objective,
    s: &TrainSettings,
    rng: &mut StdRng,
) -> Result<(Tensor, Option<Tensor>, GradStore)> {
    let (loss, repr) = step_loss(model, batch, objective, s, rng)?;
    let grads = loss.backward()?;
    Ok((loss, repr, grads))
}

/// The loss of `batch` under `objective` (with dropout from `rng`), and the unweighted
/// representation term inside it when the objective has one.
pub fn step_loss(
    model: &TextClassifier,
    batch: &Batch,
    objective: &Objective,
    s: &TrainSettings,
    rng: &mut StdRng,
) -> Result<(Tensor, Option<Tensor>)> {
    let device = model.device();
    let (logits, student_repr) = match objective.repr() {
        Some(_) => {
            let (logits, r) = model.forward_with_representation(batch, Some(rng))?;
            (logits, Some(r))
        }
        None => (model.forward(batch, Some(rng))?, None),
    };
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
            ..
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
    match (objective.repr(), student_repr) {
        (Some(term), Some(student)) => {
            let r = term.loss(&student, &batch.rows)?;
            Ok(((loss + (&r * term.weight)?)?, Some(r)))
        }
        _ => Ok((loss, None)),
    }
}

/// The widest spread of one row's logits (largest minus smallest) a healthy classifier reaches.
/// Fine-tuned classifiers span about 10 to 30; past about 104, f32's softmax already rounds
/// every other class to probability 0, so a spread of 1000 is ten times beyond the point where
/// growing it changes any prediction or probability. Only a diverging run gets there.
pub const MAX_HEALTHY_LOGIT_SPREAD: f64 = 1000.0;

/// The largest training loss any batch can have while every row's logits span at most
/// G = [`MAX_HEALTHY_LOGIT_SPREAD`]. With K classes, −log p_c = log Σ_j exp(z_j − z_c) ≤ G + ln K
/// for every class c, so any cross-entropy (label-smoothed or not) is at most G + ln K. At
/// temperature T the spread is G/T and KL(p_t ‖ p_s) ≤ CE(p_t, p_s) ≤ G/T + ln K whatever the
/// teacher, so T²·KL ≤ T·G + T²·ln K. Every row's loss (CE, T²·KL, or their α-mix) and so the
/// batch mean is at most max(T, 1)·G + max(T², 1)·ln K: a loss above that means some row's
/// logits span more than G, and it cannot fire on a healthy run (4 classes: 1001; T = 4: 4022).
pub fn loss_ceiling(objective: &Objective, classes: usize) -> f64 {
    let t = match objective {
        Objective::Supervised => 1.0,
        Objective::Distill { temperature, .. } => temperature.max(1.0),
    };
    t * MAX_HEALTHY_LOGIT_SPREAD + t * t * (classes.max(2) as f64).ln()
}

/// Refuses a training loss that is non-finite or above `ceiling` ([`loss_ceiling`]).
pub fn check_loss(loss: f64, ceiling: f64, step: usize) -> Result<()> {
    let why = if !loss.is_finite() {
        "non-finite".to_string()
    } else if loss > ceiling {
        format!("above {ceiling:.0}, the most a loss reaches while every row's logits span under {MAX_HEALTHY_LOGIT_SPREAD}")
    } else {
        return Ok(());
    };
    Err(KdError::Diverged {
        what: "the training loss".into(),
        value: loss,
        step,
        why,
    })
}

/// Refuses validation logits holding a non-finite value or a row spanning more than
/// [`MAX_HEALTHY_LOGIT_SPREAD`]. The logits are checked, not the validation loss: that is
/// clamped (a probability of 0 counts as f64's smallest), so it cannot show the spread.
pub fn check_logits(logits: &[f32], classes: usize, step: usize) -> Result<()> {
    let mut widest = 0.0f64;
    for row in logits.chunks(classes.max(1)) {
        let (lo, hi) = row
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &z| {
                (lo.min(z as f64), hi.max(z as f64))
            });
        if row.iter().any(|z| !z.is_finite()) {
            widest = f64::NAN;
            break;
        }
        widest = widest.max(hi - lo);
    }
    if widest <= MAX_HEALTHY_LOGIT_SPREAD {
        return Ok(());
    }
    Err(KdError::Diverged {
        what: "the validation logits' spread".into(),
        value: widest,
        step,
        why: format!("a healthy classifier's stays far under {MAX_HEALTHY_LOGIT_SPREAD}"),
    })
}

#[cfg(test)]
mod tests {
    use super::super::loss::{cross_entropy, distillation_mixed};
    use super::*;
    use candle_core::Device;

    /// Logits of spread exactly G, each row's label (or the teacher's favourite) placed where the
    /// student is most wrong: the worst loss a healthy run could have stays under the ceiling.
    #[test]
    fn the_worst_loss_within_the_healthy_spread_stays_under_the_ceiling() -> Result<()> {
        let dev = Device::Cpu;
        let g = MAX_HEALTHY_LOGIT_SPREAD as f32;
        for classes in [2usize, 4, 9] {
            let mut student = vec![0.0f32; classes];
            student[0] = -g;
            let student = Tensor::from_vec(student, (1, classes), &dev)?;
            let labels = Tensor::new(&[0u32], &dev)?;
            let supervised = loss_ceiling(&Objective::Supervised, classes);
            for smoothing in [0.0, 0.1] {
                let ce = cross_entropy(&student, &labels, smoothing)?.to_scalar::<f32>()? as f64;
                assert!(
                    ce > 0.9 * g as f64 && ce <= supervised,
                    "{ce} vs {supervised}"
                );
            }
            let mut teacher = vec![-g; classes];
            teacher[0] = g;
            let teacher = Tensor::from_vec(teacher, (1, classes), &dev)?;
            for t in [0.5, 1.0, 4.0, 100.0] {
                for (alpha, labelled) in [(1.0, true), (0.5, true), (0.5, false)] {
                    let kd = distillation_mixed(
                        &student,
                        &teacher,
                        &labels,
                        &[labelled],
                        t,
                        alpha,
                        0.1,
                    )?
                    .to_scalar::<f32>()? as f64;
                    let ceiling = loss_ceiling(
                        &Objective::Distill {
                            teachers: &[],
                            temperature: t,
                            alpha,
                            repr: None,
                        },
                        classes,
                    );
                    assert!(
                        kd <= ceiling,
                        "K={classes} T={t} α={alpha}: {kd} > {ceiling}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn diverged_losses_and_logits_are_refused_by_step() {
        let ceiling = loss_ceiling(&Objective::Supervised, 4);
        assert!((1001.0..1002.0).contains(&ceiling));
        assert!(check_loss(1.2, ceiling, 3).is_ok());
        let err = check_loss(8.7e9, ceiling, 3).unwrap_err().to_string();
        assert!(
            err.contains("loss became 8700000000 at step 3") && err.contains("diverged"),
            "{err}"
        );
        assert!(check_loss(f64::NAN, ceiling, 3)
            .unwrap_err()
            .to_string()
            .contains("non-finite"));
        assert!(check_logits(&[30.0, -30.0, 0.0, 1.0], 2, 5).is_ok());
        assert!(check_logits(&[3e9, -1.0], 2, 5).is_err());
        assert!(check_logits(&[f32::NAN, 0.0], 2, 5).is_err());
    }
}
