//! Finishing a training run: test scores, the fitted temperature, summary.json, and the staged
//! folder committed in one step.
use super::folder::{files, write_json};
use super::prepare::Prepared;
use super::{RunConfig, StagedRun, Summary};
use crate::error::Result;
use crate::model::predict_logits;
use crate::model::TextClassifier;
use crate::training::calibration::fit_temperature;
use crate::training::{evaluate_examples, FileEvaluation, TrainReport};

/// Evaluates on the test split when there is one, writes summary.json (the run's last file) and
/// commits the staged run: the run folder is replaced by the new run in one step.
pub fn finish(
    cfg: &RunConfig,
    p: &Prepared,
    model: &TextClassifier,
    report: &TrainReport,
    role: &str,
    cache_samples_per_s: Option<f64>,
    run: StagedRun,
) -> Result<Summary> {
    let test = test_scores(cfg, p, model)?;
    let temperature = if cfg.train.calibrate {
        Some(calibrate(cfg, p, model)?)
    } else {
        None
    };
    let repr = cfg.distill.as_ref().filter(|d| d.repr_weight > 0.0);
    let summary = Summary {
        run_id: Some(run.run_id().to_string()),
        role: role.into(),
        model: cfg.model.clone(),
        data: cfg.data.clone(),
        device: format!("{:?}/{:?}", p.device, p.dtype),
        kernels: Some(crate::nn::kernels_used(&p.device, p.dtype)),
        trainable_params: model.trainable_count(),
        steps: report.steps,
        kept_epoch: report.selection.epoch,
        selection: Some(report.selection.clone()),
        val_loss: report.val_loss,
        val_accuracy: report.val_accuracy,
        test_accuracy: test.as_ref().map(|t| t.evaluation.accuracy),
        test_macro_f1: test.as_ref().map(|t| t.evaluation.macro_f1),
        calibrated_temperature: temperature,
        test_calibration: test
            .as_ref()
            .map(|t| t.calibration(temperature.unwrap_or(1.0))),
        test_calibration_before: test
            .as_ref()
            .filter(|_| temperature.is_some())
            .map(|t| t.calibration(1.0)),
        train_seconds: report.train_seconds,
        train_samples_per_s: report.train_samples_per_s,
        train_tokens_per_s: report.train_tokens_per_s,
        cache_samples_per_s,
        temperature: cfg
            .distill
            .as_ref()
            .filter(|d| d.alpha > 0.0)
            .map(|d| d.temperature),
        alpha: cfg.distill.as_ref().map(|d| d.alpha),
        repr_weight: repr.map(|d| d.repr_weight),
        repr_loss: repr.map(|d| d.repr_loss),
        inputs: run.inputs().cloned(),
    };
    write_json(&run.dir().join(files::SUMMARY), &summary)?;
    run.commit()?;
    Ok(summary)
}

/// The kept model's scores on the test split, when the data has one.
fn test_scores(
    cfg: &RunConfig,
    p: &Prepared,
    model: &TextClassifier,
) -> Result<Option<FileEvaluation>> {
    p.test
        .as_ref()
        .map(|rows| evaluate_examples(model, &p.tokenizer, rows, &p.checkpoint, &cfg.train))
        .transpose()
}

/// Temperature scaling: the softmax temperature that minimises the kept model's NLL on the
/// validation rows.
fn calibrate(cfg: &RunConfig, p: &Prepared, model: &TextClassifier) -> Result<f64> {
    let logits = predict_logits(
        model,
        &p.batcher,
        &p.data.val,
        cfg.train.eval_batch_size,
        "calibrate",
    )?;
    let labels: Vec<u32> = p.data.val.iter().map(|&i| p.data.label(i)).collect();
    let t = fit_temperature(&logits, &labels, model.num_labels());
    tracing::info!(temperature = t, "calibrated on the validation rows");
    Ok(t)
}
