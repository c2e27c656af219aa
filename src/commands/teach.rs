//! `kd teach`: fine-tune the teacher, then cache its logits over every training row and every
//! unlabelled row.
use super::pipeline::{finish, fresh_model, prepare};
use crate::cache::{self, CacheHeader};
use crate::error::Result;
use crate::run::folder::{files, save_trained, start_metrics};
use crate::run::{RunConfig, StagedRun, Summary};
use crate::training::{cache_logits, train, Objective, Shard, CACHE_CHUNK_ROWS};
use std::time::Instant;

/// Trains the teacher described by `cfg` and writes its run folder, `logits.bin` included.
pub fn run(cfg: &RunConfig) -> Result<Summary> {
    let p = prepare(cfg)?;
    let model = fresh_model(cfg, &p)?;
    let run = StagedRun::begin(&cfg.out)?;
    tracing::info!(trainable = model.trainable_count(), "teacher");
    let mut log = start_metrics(&run)?;
    let report = train(
        &model,
        &p.batcher,
        &p.data,
        &cfg.train,
        &Objective::Supervised,
        &mut log,
    )?;
    save_trained(cfg, &model, &run)?;

    // One pass over every row (validation and unlabelled rows included), stored in file order.
    let all: Vec<usize> = (0..p.data.rows.len()).collect();
    let started = Instant::now();
    let logits = cache_logits(
        &model,
        &p.batcher,
        &all,
        cfg.train.eval_batch_size,
        CACHE_CHUNK_ROWS,
        Shard::ALL,
    )?;
    let cache_rate = all.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let header = CacheHeader {
        rows: all.len(),
        classes: model.num_labels(),
        fingerprint: cache::fingerprint(p.data.parts().0),
        labelled: p.data.labelled,
        unlabelled_fingerprint: cache::fingerprint(p.data.parts().1),
        teacher: format!("{} ({})", cfg.out.display(), cfg.model),
        run_id: Some(run.run_id().to_string()),
    };
    cache::write(&run.dir().join(files::LOGITS), &header, &logits)?;
    tracing::info!(
        rows = all.len(),
        samples_per_s = cache_rate,
        "cached teacher logits"
    );
    finish(cfg, &p, &model, &report, "teacher", Some(cache_rate), run)
}
