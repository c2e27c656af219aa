//! `kd teach`: fine-tune the teacher, then cache its logits over every training row and every
//! unlabelled row.
use super::pipeline::{finish, fresh_model, prepare};
use crate::cache::{self, CacheHeader};
use crate::error::Result;
use crate::run::checkpoints::cache_in_chunks;
use crate::run::folder::{files, open_run, save_trained};
use crate::run::{RunConfig, Summary};
use crate::training::inference::cache_chunk;
use crate::training::{train, Objective};
use std::time::Instant;

/// Trains the teacher described by `cfg` and writes its run folder, `logits.bin` included.
pub fn run(cfg: &RunConfig) -> Result<Summary> {
    let p = prepare(cfg)?;
    let model = fresh_model(cfg, &p)?;
    let mut open = open_run(cfg, &p.data.rows, &model)?;
    tracing::info!(trainable = model.trainable_count(), "teacher");
    let report = train(
        &model,
        &p.batcher,
        &p.data,
        &cfg.train,
        &Objective::Supervised,
        open.progress(),
    )?;
    let run = open.run;
    save_trained(cfg, &model, p.label_names.as_deref(), &run)?;

    // One pass over every row (validation and unlabelled rows included), stored in file order,
    // chunk by chunk: an interrupted pass resumes at the first chunk it had not finished.
    let all: Vec<usize> = (0..p.data.rows.len()).collect();
    let chunk_rows = cfg.train.cache_chunk_rows.max(1);
    let started = Instant::now();
    let logits = cache_in_chunks(run.dir(), all.len().div_ceil(chunk_rows), |k| {
        cache_chunk(
            &model,
            &p.batcher,
            &all,
            cfg.train.eval_batch_size,
            chunk_rows,
            k,
        )
    })?;
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
