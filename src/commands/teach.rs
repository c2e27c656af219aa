//! `kd teach`: fine-tune the teacher, then cache its logits over every training row.
use super::config::RunConfig;
use super::pipeline::{
    files, finish, fresh_model, prepare, save_trained, start_run_folder, Summary,
};
use crate::cache::{self, CacheHeader};
use crate::error::Result;
use crate::training::{predict_logits, train, MetricsLog, Objective};
use std::time::Instant;

/// Trains the teacher described by `cfg` and writes its run folder, `logits.bin` included.
pub fn run(cfg: &RunConfig) -> Result<Summary> {
    let p = prepare(cfg)?;
    let model = fresh_model(cfg, &p)?;
    start_run_folder(cfg)?;
    tracing::info!(trainable = model.trainable_count(), "teacher");
    let mut log = MetricsLog::create(&cfg.out.join(files::METRICS))?;
    let report = train(
        &model,
        &p.batcher,
        &p.data,
        &cfg.train,
        &Objective::Supervised,
        &mut log,
    )?;
    save_trained(cfg, &model)?;

    // One pass over every training row (validation slice included), stored in file order.
    let all: Vec<usize> = (0..p.data.rows.len()).collect();
    let started = Instant::now();
    let logits = predict_logits(&model, &p.batcher, &all, cfg.train.eval_batch_size, "cache")?;
    let cache_rate = all.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let header = CacheHeader {
        rows: all.len(),
        classes: model.num_labels(),
        fingerprint: cache::fingerprint(&p.data.rows),
        teacher: format!("{} ({})", cfg.out.display(), cfg.model),
    };
    cache::write(&cfg.out.join(files::LOGITS), &header, &logits)?;
    tracing::info!(
        rows = all.len(),
        samples_per_s = cache_rate,
        "cached teacher logits"
    );
    finish(cfg, &p, &model, &report, "teacher", Some(cache_rate))
}
