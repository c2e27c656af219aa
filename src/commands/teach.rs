//! `kd teach`: fine-tune the teacher, then cache its logits over every training row and every
//! unlabelled row (and, with `--cache-representations`, each row's sentence representation).
//! Under `mpirun`/`srun` every rank runs this, sharing each batch, the validation, the caching
//! pass and the test scores; rank 0 alone writes the run folder.
use crate::cache::{CacheHeader, Keep, Pass};
use crate::distributed::{world, Collective};
use crate::error::{KdError, Result};
use crate::model::TextClassifier;
use crate::run::folder::{files, open_run, save_trained};
use crate::run::{finish, fresh_model, prepare, Prepared, StagedRun};
use crate::run::{RunConfig, Summary};
use crate::training::{train, Objective};

/// Trains the teacher described by `cfg` and writes its run folder, `logits.bin` included.
pub fn run(cfg: &RunConfig) -> Result<Summary> {
    crate::run::check_run(cfg)?;
    let p = prepare(cfg)?;
    let model = fresh_model(cfg, &p)?;
    let mut open = open_run(cfg, &p, model.trainable())?;
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
    if let Some(run) = &run {
        save_trained(cfg, &model, p.label_names.as_deref(), run)?;
    }
    let cache_rate = cache_logits(cfg, &p, &model, run.as_ref(), world())?;
    finish(cfg, &p, &model, &report, "teacher", Some(cache_rate), run)
}

/// One pass over every row (validation and unlabelled rows included), stored in file order,
/// chunk by chunk: an interrupted pass resumes at the first chunk it had not finished, if that
/// chunk was scored by this very run from the same inputs. Returns rows scored per second.
fn cache_logits(
    cfg: &RunConfig,
    p: &Prepared,
    model: &TextClassifier,
    run: Option<&StagedRun>,
    world: &dyn Collective,
) -> Result<f64> {
    let pass = Pass {
        model,
        batcher: &p.batcher,
        rows: p.data.rows.len(),
        batch_size: cfg.train.eval_batch_size,
        chunk_rows: cfg.train.cache_chunk_rows,
        representations: cfg.train.cache_representations,
    };
    let Some(run) = run else {
        // Another rank than 0: scores the chunks dealt to it; rank 0 keeps them.
        return pass.write_shared(world, None);
    };
    let (labelled, unlabelled) = p.data.parts();
    let teacher = format!("{} ({})", cfg.out.display(), cfg.model);
    let header = CacheHeader::new(
        labelled,
        unlabelled,
        model.num_labels(),
        teacher,
        run.run_id(),
    );
    let inputs = run
        .inputs()
        .ok_or_else(|| KdError::Internal("a training run without its inputs".into()))?;
    let made = pass.made(
        run.run_id(),
        &inputs.base_model(),
        &inputs.data,
        &inputs.kernels,
    );
    let logits = run.dir().join(files::LOGITS);
    let reprs = run.dir().join(files::REPRESENTATIONS);
    let keep = Keep {
        dir: run.dir(),
        made: &made,
        header: &header,
        path: &logits,
        repr_path: &reprs,
    };
    let cache_rate = pass.write_shared(world, Some(keep))?;
    tracing::info!(
        rows = header.rows,
        representations = pass.repr_width(),
        samples_per_s = cache_rate,
        "cached teacher logits"
    );
    Ok(cache_rate)
}
