//! `kd distill`: train the student on the teacher's cached logits and the labels.
use crate::cache::ReprCache;
use crate::error::{KdError, Result};
use crate::model::params::{check_training_budget, ModuleCount};
use crate::model::TextClassifier;
use crate::run::folder::{open_run, save_trained};
use crate::run::{check_run, finish, fresh_model, open_representations, open_teachers, prepare};
use crate::run::{DistillSettings, Prepared, RunConfig, Summary};
use crate::training::repr::PROJECTION;
use crate::training::{train, trained, Objective, Projection, ReprTerm};

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
    // The teachers are never run: their logits (and representations) come from memory-mapped
    // caches, each refused here, before any weights are read, if it cannot be used.
    let caches = open_teachers(d, p)?;
    let reprs = open_representations(d, &caches)?;
    let student_hidden = p.checkpoint.config.hidden_size;
    let projection = reprs.as_ref().map(|r| ModuleCount {
        module: PROJECTION.into(),
        params: Projection::count(student_hidden, r.header().width),
    });
    let (lora, labels) = (&cfg.lora, p.data.num_labels);
    let extra: Vec<ModuleCount> = projection.into_iter().collect();
    let count = check_training_budget(&p.checkpoint.config, lora, labels, d.budget, &extra)?;

    let model = fresh_model(cfg, p)?;
    debug_assert_eq!(model.trainable_count(), count);
    let term = match &reprs {
        Some(cache) => Some(repr_term(cfg, d, cache, &model)?),
        None => None,
    };
    let objective = if caches.is_empty() {
        Objective::Supervised
    } else {
        Objective::Distill {
            teachers: &caches,
            temperature: d.temperature,
            alpha: d.alpha,
            repr: term.as_ref(),
        }
    };
    let mut open = open_run(cfg, p, &trained(&model, &objective))?;
    let projected = extra.first().map_or(0, |m| m.params);
    tracing::info!(
        trainable = count,
        projection = projected,
        budget = d.budget,
        "student"
    );
    let progress = open.progress();
    let report = train(
        &model, &p.batcher, &p.data, &cfg.train, &objective, progress,
    )?;
    // Rank 0 alone writes (`run` is None on the other ranks of a data-parallel run).
    let run = open.run;
    // The adapter holds the student's own tensors: the projection is not part of it.
    if let Some(run) = &run {
        save_trained(cfg, &model, p.label_names.as_deref(), run)?;
    }
    finish(cfg, p, &model, &report, "student", None, run)
}

/// The representation term: the teacher's cache, β, the comparison, and a fresh projection
/// from the student's width to the teacher's, drawn from the run's seed.
fn repr_term<'a>(
    cfg: &RunConfig,
    d: &DistillSettings,
    cache: &'a ReprCache,
    model: &TextClassifier,
) -> Result<ReprTerm<'a>> {
    let dtype = crate::nn::compute_dtype(model.trainable()[0].var.dtype());
    let projection = Projection::new(
        model.hidden_size(),
        cache.header().width,
        cfg.train.seed,
        dtype,
        model.device(),
    )?;
    Ok(ReprTerm {
        cache,
        weight: d.repr_weight,
        loss: d.repr_loss,
        projection,
    })
}
