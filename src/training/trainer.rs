//! The training loop shared by `kd teach` and `kd distill`, in named steps: resume, one
//! optimizer step ([`super::step`]), its log line and checkpoint, the epoch's end (validation,
//! epoch scores, checkpoint) and the kept epoch.
//!
//! A resumed run must end with the bits an uninterrupted one ends with, so every RNG is drawn
//! from (seed, epoch) or (seed, step) and the state between steps lives in one [`TrainState`].
use super::data_parallel::{reduced_bytes, share_weights, shared_step};
use super::log::MetricsLog;
use super::metrics::{argmax_rows, evaluate};
use super::optimizer::AdamW;
use super::schedule::{warmup_cosine, warmup_steps};
use super::selection::{Decision, EpochScores, EpochSelector};
use super::state::{copy_params, fresh_state, resume, rng_for, Checkpoints, TrainState};
use super::step::{check_logits, check_loss, loss_ceiling};
use super::step::{new_optimizer, train_step, trained, Objective, StepLoss, TrainSettings};
use crate::data::{Batcher, Dataset};
use crate::distributed::{watchdog, Collective};
use crate::error::{KdError, Result};
use crate::interrupt::{fault_point, stop_point, stop_requested};
use crate::model::{predict_logits_shared, NamedVar, TextClassifier};
use crate::progress::progress_bar;
use indicatif::ProgressBar;
use rand::Rng;
use serde_json::json;
use std::time::Instant;

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

/// Where a training run reports and keeps its state: the metrics log, the checkpoints, the
/// state to resume from (None for a fresh run), and the ranks it shares its batches with.
pub struct Progress<'a> {
    pub log: &'a mut MetricsLog,
    pub checkpoints: &'a mut dyn Checkpoints,
    pub resume: Option<TrainState>,
    pub world: &'a dyn Collective,
}

/// Trains `model`'s adapters and head on `data.train` (and, distilling, `data.unlabelled`),
/// evaluating on `data.val` after every epoch; at the end the model holds the epoch
/// [`EpochSelector`] keeps. Resumed from a [`TrainState`], it ends with the bits an
/// uninterrupted run ends with. Stops at a step boundary, checkpointed, when asked
/// ([`crate::interrupt::request_stop`]).
///
/// [`EpochSelector`]: super::selection::EpochSelector
/// [`TrainState`]: super::state::TrainState
pub fn train(
    model: &TextClassifier,
    batcher: &Batcher,
    data: &Dataset,
    s: &TrainSettings,
    objective: &Objective,
    progress: Progress,
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
    Run::start(model, batcher, data, s, objective, rows, progress)?.run()
}

/// One training run between its first and last step.
struct Run<'a> {
    model: &'a TextClassifier,
    batcher: &'a Batcher,
    data: &'a Dataset,
    s: &'a TrainSettings,
    objective: &'a Objective<'a>,
    /// What is trained: the model's tensors, then the objective's (the projection).
    params: Vec<NamedVar>,
    log: &'a mut MetricsLog,
    checkpoints: &'a mut dyn Checkpoints,
    world: &'a dyn Collective,
    /// Whether the last step's all-reduce carried a stop request (several ranks).
    step_stop: bool,
    /// Seconds in the all-reduce and steps, since the last metrics line.
    reduce_window: (f64, usize),
    /// The rows an epoch passes over, and how many a step takes (over all ranks).
    rows: Vec<usize>,
    global_batch: usize,
    per_epoch: usize,
    total: usize,
    warmup: usize,
    opt: AdamW,
    selector: EpochSelector,
    /// Everything a checkpoint keeps.
    st: TrainState,
    bar: ProgressBar,
}

impl<'a> Run<'a> {
    /// Sets up the optimizer and the epoch selector, from `progress.resume` when there is one.
    pub(super) fn start<'p: 'a>(
        model: &'a TextClassifier,
        batcher: &'a Batcher,
        data: &'a Dataset,
        s: &'a TrainSettings,
        objective: &'a Objective<'a>,
        rows: Vec<usize>,
        progress: Progress<'p>,
    ) -> Result<Self> {
        if progress.world.size() > 1 && objective.repr().is_some() {
            // Its projection is not in the all-reduced gradients yet.
            return Err(KdError::Config(
                "representation distillation (--repr-weight) does not run data-parallel yet: \
                 run it in one process"
                    .into(),
            ));
        }
        // `--batch-size` is per rank: a step takes N × batch rows (HF Trainer's global batch).
        let global_batch = s.batch_size * progress.world.size();
        let per_epoch = rows.len().div_ceil(global_batch);
        let total = s
            .max_steps
            .map_or(per_epoch * s.epochs, |m| m.min(per_epoch * s.epochs));
        let warmup = warmup_steps(total, s.warmup_ratio);
        let params = trained(model, objective);
        let mut opt = new_optimizer(&params, s)?;
        let mut selector = EpochSelector::new(s.select);
        let st = match progress.resume {
            Some(st) => resume(model, &params, &mut opt, &mut selector, st, total)?,
            None => fresh_state(),
        };
        let bar = progress_bar(total, "train");
        bar.inc(st.step as u64);
        let world = progress.world;
        if world.size() > 1 {
            share_weights(world, model)?;
            tracing::info!(
                ranks = world.size(),
                transport = %world.transport(),
                global_batch,
                bytes_per_step = reduced_bytes(model),
                "data-parallel: one all-reduce per step"
            );
        }
        Ok(Self {
            model,
            batcher,
            data,
            s,
            objective,
            params,
            log: progress.log,
            checkpoints: progress.checkpoints,
            world,
            step_stop: false,
            reduce_window: (0.0, 0),
            rows,
            global_batch,
            per_epoch,
            total,
            warmup,
            opt,
            selector,
            st,
            bar,
        })
    }

    /// Runs the remaining steps, epoch by epoch, then restores the kept epoch.
    pub(super) fn run(mut self) -> Result<TrainReport> {
        let mut epoch = self.st.step / self.per_epoch.max(1);
        while self.st.step < self.total {
            // A resumed run skips the batches its epoch had done.
            let done_in_epoch = self.st.step - epoch * self.per_epoch;
            epoch += 1;
            self.epoch_steps(epoch, done_in_epoch)?;
            self.end_epoch(epoch)?;
        }
        self.finish()
    }

    /// The epoch's steps after the first `skip`. The plan is a function of (seed, epoch), so a
    /// resumed run draws the same one.
    fn epoch_steps(&mut self, epoch: usize, skip: usize) -> Result<()> {
        let mut plan_rng = rng_for(self.s.seed, 1, epoch);
        let plan = self
            .batcher
            .training_plan(&self.rows, self.global_batch, &mut plan_rng);
        for rows in plan.into_iter().skip(skip) {
            if self.st.step == self.total {
                break;
            }
            let (loss, lr) = self.step(&rows)?;
            self.report_step(epoch, loss, lr)?;
            self.after_step()?;
        }
        Ok(())
    }

    /// One optimizer step on `rows` (the global batch: every rank's share); returns its losses
    /// and learning rate. Dropout is drawn from (seed, step), so a resumed step draws the masks
    /// it drew the first time.
    fn step(&mut self, rows: &[usize]) -> Result<(StepLoss, f64)> {
        let (s, step) = (self.s, self.st.step);
        let started = Instant::now();
        let lr = s.lr * warmup_cosine(step, self.warmup, self.total);
        let mut rng = rng_for(s.seed, 2, step);
        // GPU dropout masks come from the device's generator (the CPU's from `rng`).
        if !self.model.device().is_cpu() {
            self.model.device().set_seed(rng.random())?;
        }
        let (m, b, o) = (self.model, self.batcher, self.objective);
        let step_loss = if self.world.size() > 1 {
            watchdog::set_phase(format!("training step {}", step + 1));
            let shared = shared_step(self.world, m, b, rows, o, &mut self.opt, lr, s, &mut rng)?;
            self.step_stop = shared.stop;
            self.reduce_window.0 += shared.reduce_seconds;
            self.reduce_window.1 += 1;
            // Representation distillation is refused under several ranks (`Run::new`).
            StepLoss {
                total: shared.loss,
                repr: None,
            }
        } else {
            train_step(m, &b.batch(rows), o, &mut self.opt, lr, s, &mut rng)?
        };
        self.check(step_loss, step)?;
        let loss = step_loss.total;
        let st = &mut self.st;
        st.seconds += started.elapsed().as_secs_f64();
        st.samples += rows.len();
        st.tokens += self.batcher.tokens(rows);
        st.step += 1;
        st.window = (st.window.0 + loss, st.window.1 + 1);
        Ok((step_loss, lr))
    }

    /// Refuses a diverged step: a run that diverged never becomes a finished run folder. The
    /// logits' part of the loss is held to [`loss_ceiling`], the representation term to its
    /// own ([`crate::training::ReprTerm::ceiling`]).
    fn check(&self, loss: StepLoss, step: usize) -> Result<()> {
        let ceiling = loss_ceiling(self.objective, self.model.num_labels());
        let Some((term, repr)) = self.objective.repr().zip(loss.repr) else {
            return check_loss(loss.total, ceiling, step);
        };
        check_loss(repr, term.ceiling(), step)?;
        check_loss(loss.total - term.weight * repr, ceiling, step)
    }

    /// The progress bar after every step; a metrics line (the window's mean loss, and the
    /// representation term of its last step when there is one) every `log_every` steps and
    /// after the last.
    fn report_step(&mut self, epoch: usize, step_loss: StepLoss, lr: f64) -> Result<()> {
        let (st, loss) = (&mut self.st, step_loss.total);
        self.bar.inc(1);
        self.bar.set_message(format!(
            "epoch {epoch} loss {loss:.4} lr {lr:.2e} {:.1} samples/s",
            st.samples as f64 / st.seconds
        ));
        if st.step.is_multiple_of(self.s.log_every.max(1)) || st.step == self.total {
            let mut line = json!({
                "step": st.step, "epoch": epoch, "loss": st.window.0 / st.window.1 as f64,
                "lr": lr, "samples_per_s": st.samples as f64 / st.seconds,
                "tokens_per_s": st.tokens as f64 / st.seconds,
            });
            if let Some(r) = step_loss.repr {
                line["repr_loss"] = json!(r);
            }
            // Several ranks: the mean time a step spent in its all-reduce, for its share.
            let (secs, steps) = std::mem::take(&mut self.reduce_window);
            if steps > 0 {
                line["allreduce_ms"] = json!(1e3 * secs / steps as f64);
            }
            self.log.write(line)?;
            st.window = (0.0, 0);
        }
        Ok(())
    }

    /// Checkpoints when due or asked to stop, and stops when asked. The epoch's last step is
    /// left to [`Self::end_epoch`], which checkpoints after its validation.
    fn after_step(&mut self) -> Result<()> {
        let step = self.st.step;
        // per_epoch is at least 1 here: an empty epoch has no steps.
        let epoch_end = step == self.total || step.is_multiple_of(self.per_epoch);
        // Several ranks stop together: at a stop point (the same step on every rank) or when
        // the step's all-reduce carried a request; a later one is carried by the next step's.
        let stop = match self.world.size() {
            1 => stop_point(step) || stop_requested(),
            _ => stop_point(step) || self.step_stop,
        };
        if !epoch_end && (stop || self.checkpoints.due(step, false)) {
            self.save()?;
        }
        fault_point("KD_FAULT_AFTER_STEP", step);
        if stop && !epoch_end {
            return Err(KdError::Interrupted {
                what: format!("training at step {step} of {}", self.total),
            });
        }
        Ok(())
    }

    /// Validation and the epoch's scores (the selector's best keeps a copy of the weights), then
    /// the epoch's checkpoint, which therefore holds them.
    fn end_epoch(&mut self, epoch: usize) -> Result<()> {
        if !self.data.val.is_empty() {
            let scores = self.validate(epoch)?;
            if self.selector.observe(&scores) {
                self.st.best = Some((scores.clone(), copy_params(&self.params)?));
            }
            self.st.last = Some(scores);
        }
        let stop = self.world.any(stop_requested())?;
        if stop || self.checkpoints.due(self.st.step, true) {
            self.save()?;
        }
        fault_point("KD_FAULT_AFTER_EPOCH", epoch);
        if stop {
            return Err(KdError::Interrupted {
                what: format!(
                    "training after epoch {epoch} (step {} of {})",
                    self.st.step, self.total
                ),
            });
        }
        Ok(())
    }

    /// Puts the kept epoch's weights back into the model and reports the run.
    fn finish(self) -> Result<TrainReport> {
        self.bar.finish_and_clear();
        let st = self.st;
        // Epochs begun, counted from the steps (a run resumed at its last step of a partial
        // final epoch never enters the loop).
        let last_epoch = st.step.div_ceil(self.per_epoch.max(1));
        let selection = self.selector.decide(st.last.as_ref(), last_epoch);
        tracing::info!(epoch = selection.epoch, "kept: {}", selection.reason);
        let mut kept = st.last;
        if let Some((scores, snapshot)) = st.best.filter(|(b, _)| b.epoch == selection.epoch) {
            for (nv, t) in self.params.iter().zip(snapshot) {
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

    /// Fills the state with the model's and optimizer's current tensors and hands it over.
    fn save(&mut self) -> Result<()> {
        let st = &mut self.st;
        st.params = copy_params(&self.params)?;
        (st.adam_step, st.adam_m, st.adam_v) = self.opt.state()?;
        st.metrics_len = self.log.len();
        self.checkpoints.save(st)
    }

    /// Scores the validation rows after `epoch` and logs them.
    fn validate(&mut self, epoch: usize) -> Result<EpochScores> {
        let (model, data) = (self.model, self.data);
        let classes = model.num_labels();
        watchdog::set_phase(format!("validation after epoch {epoch}"));
        let logits = predict_logits_shared(
            self.world,
            model,
            self.batcher,
            &data.val,
            self.s.eval_batch_size,
            "validation",
        )?;
        check_logits(&logits, classes, self.st.step)?;
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
        self.log.write(json!({
            "eval": "validation", "epoch": epoch, "step": self.st.step, "loss": loss,
            "accuracy": eval.accuracy, "macro_f1": eval.macro_f1,
        }))?;
        Ok(scores)
    }
}
