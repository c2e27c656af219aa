//! `kd distill`: train the student on the teacher's cached logits and the labels.
use crate::error::{KdError, Result};
use crate::model::params::check_budget;
use crate::run::folder::{open_run, save_trained};
use crate::run::{check_run, finish, fresh_model, open_teachers, prepare, Prepared};
use crate::run::{RunConfig, Summary};
use crate::training::{train, Objective};

/// Trains the student described by `cfg` (which must have a `[distill]` table). Its `--out`
/// is checked first: not a teacher, not inside one, not holding one.
pub fn run(cfg: &RunConfig) -> Result<Summary> {
    check_run(cfg)?;
    let p = prepare(cfg)?;
    train_student(cfg, &p)
}

/// [`run`] on data already prepared (`kd sweep` prepares once for all its points; the
/// validation rows are those of the preparation). The point's `--out` is checked as `run`'s.
pub fn run_prepared(cfg: &RunConfig, p: &Prepared) -> Result<Summary> {
    check_run(cfg)?;
    train_student(cfg, p)
}

/// The student of a checked `cfg` on prepared data: budget, teachers' caches, training.
fn train_student(cfg: &RunConfig, p: &Prepared) -> Result<Summary> {
    cfg.validate()?;
    let d = cfg
        .distill
        .as_ref()
        .ok_or_else(|| KdError::Config("a student config needs a [distill] table".into()))?;
    let count = check_budget(&p.checkpoint.config, &cfg.lora, p.data.num_labels, d.budget)?;
    // The teachers are never run: their logits come from the memory-mapped caches.
    let caches = open_teachers(d, p)?;

    let model = fresh_model(cfg, p)?;
    debug_assert_eq!(model.trainable_count(), count);
    let mut open = open_run(cfg, p, &model)?;
    tracing::info!(trainable = count, budget = d.budget, "student");
    let objective = if caches.is_empty() {
        Objective::Supervised
    } else {
        Objective::Distill {
            teachers: &caches,
            temperature: d.temperature,
            alpha: d.alpha,
        }
    };
    let progress = open.progress();
    let report = train(
        &model, &p.batcher, &p.data, &cfg.train, &objective, progress,
    )?;
    // Rank 0 alone writes (`run` is None on the other ranks of a data-parallel run).
    let run = open.run;
    if let Some(run) = &run {
        save_trained(cfg, &model, p.label_names.as_deref(), run)?;
    }
    finish(cfg, p, &model, &report, "student", None, run)
}
