//! Finishing a training run: test scores, the fitted temperature, summary.json, and the staged
//! folder committed in one step. In a data-parallel run every rank scores its share of the test
//! and validation rows; rank 0 writes and commits, then hands the summary to the others.
use super::folder::{files, write_json};
use super::prepare::Prepared;
use super::{RunConfig, StagedRun, Summary};
use crate::distributed::{watchdog, Collective};
use crate::error::{KdError, Result};
use crate::model::{predict_logits_shared, TextClassifier};
use crate::training::calibration::fit_temperature;
use crate::training::{evaluate_shared, FileEvaluation, TrainReport};

/// Evaluates on the test split when there is one, writes summary.json (the run's last file) and
/// commits the staged run (rank 0's: `run` is None on the others): the run folder is replaced
/// by the new run in one step.
pub fn finish(
    cfg: &RunConfig,
    p: &Prepared,
    model: &TextClassifier,
    report: &TrainReport,
    role: &str,
    cache_samples_per_s: Option<f64>,
    run: Option<StagedRun>,
) -> Result<Summary> {
    let world = crate::distributed::world();
    watchdog::set_phase("the test scores");
    let test = test_scores(cfg, p, model, world)?;
    let temperature = if cfg.train.calibrate {
        Some(calibrate(cfg, p, model, world)?)
    } else {
        None
    };
    let repr = cfg.distill.as_ref().filter(|d| d.repr_weight > 0.0);
    let Some(run) = run else {
        // Rank 0 writes while the others wait for its summary.
        let mut bytes = Vec::new();
        world.broadcast_bytes(&mut bytes)?;
        return serde_json::from_slice(&bytes)
            .map_err(|e| KdError::Internal(format!("rank 0's summary: {e}")));
    };
    let summary = Summary {
        run_id: Some(run.run_id().to_string()),
        role: role.into(),
        kd: Some(crate::version().into()),
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
        ranks: (world.size() > 1).then_some(world.size()),
    };
    write_json(&run.dir().join(files::SUMMARY), &summary)?;
    run.commit()?;
    if world.size() > 1 {
        world.broadcast_bytes(&mut serde_json::to_vec(&summary).expect("serialisable"))?;
    }
    Ok(summary)
}

/// The kept model's scores on the test split, when the data has one.
fn test_scores(
    cfg: &RunConfig,
    p: &Prepared,
    model: &TextClassifier,
    world: &dyn Collective,
) -> Result<Option<FileEvaluation>> {
    p.test
        .as_ref()
        .map(|rows| evaluate_shared(world, model, &p.tokenizer, rows, &p.checkpoint, &cfg.train))
        .transpose()
}

/// Temperature scaling: the softmax temperature that minimises the kept model's NLL on the
/// validation rows.
fn calibrate(
    cfg: &RunConfig,
    p: &Prepared,
    model: &TextClassifier,
    world: &dyn Collective,
) -> Result<f64> {
    let logits = predict_logits_shared(
        world,
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
