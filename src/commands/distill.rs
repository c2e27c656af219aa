//! `kd distill`: train the student on the teacher's cached logits and the labels.
use super::pipeline::{finish, fresh_model, prepare, Prepared};
use crate::cache::LogitCache;
use crate::error::{KdError, Result};
use crate::model::params::{format_breakdown, trainable_breakdown};
use crate::run::folder::{files, open_run, save_trained};
use crate::run::load::check_one_run;
use crate::run::{RunConfig, Summary};
use crate::training::{train, Objective};

/// Trains the student described by `cfg` (which must have a `[distill]` table).
pub fn run(cfg: &RunConfig) -> Result<Summary> {
    let p = prepare(cfg)?;
    run_prepared(cfg, &p)
}

/// [`run`] on data already prepared (`kd sweep` prepares once for all its points; the
/// validation rows are those of the preparation).
pub fn run_prepared(cfg: &RunConfig, p: &Prepared) -> Result<Summary> {
    cfg.validate()?;
    let d = cfg
        .distill
        .as_ref()
        .ok_or_else(|| KdError::Config("a student config needs a [distill] table".into()))?;

    // Refuse an over-budget student before any weights are touched.
    let breakdown = trainable_breakdown(&p.checkpoint.config, &cfg.lora, p.data.num_labels);
    let count: usize = breakdown.iter().map(|m| m.params).sum();
    if count >= d.budget {
        return Err(KdError::OverBudget {
            count,
            budget: d.budget,
            breakdown: format_breakdown(&breakdown),
        });
    }

    // Writing the student over a teacher would delete the logits it learns from.
    let canonical = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    if let Some(t) = d
        .teacher
        .iter()
        .find(|t| canonical(t).is_some() && canonical(t) == canonical(&cfg.out))
    {
        return Err(KdError::Config(format!(
            "--out {} is the teacher's run folder {}: choose another --out",
            cfg.out.display(),
            t.display()
        )));
    }

    // The teachers are never run: their logits come from the memory-mapped caches.
    let mut caches = Vec::new();
    if d.alpha > 0.0 {
        for teacher in &d.teacher {
            check_one_run(teacher)?;
            let names = RunConfig::from_file(&teacher.join(files::CONFIG))?.label_names;
            if let (Some(t), Some(s)) = (&names, &p.label_names) {
                if t != s {
                    return Err(KdError::Config(format!(
                        "the teacher {} names its classes {}, the student's data {}",
                        teacher.display(),
                        t.join(", "),
                        s.join(", ")
                    )));
                }
            }
            let cache = LogitCache::open(&teacher.join(files::LOGITS))?;
            let (labelled, unlabelled) = p.data.parts();
            cache.check_matches(labelled, unlabelled, &p.data.unlabelled_files)?;
            if cache.header().classes != p.data.num_labels {
                return Err(KdError::bad_file(
                    cache.path(),
                    format!(
                        "{} classes, the data has {}",
                        cache.header().classes,
                        p.data.num_labels
                    ),
                ));
            }
            caches.push(cache);
        }
    }

    let model = fresh_model(cfg, p)?;
    debug_assert_eq!(model.trainable_count(), count);
    let mut open = open_run(cfg, &p.data.rows, &model)?;
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
    let report = train(
        &model,
        &p.batcher,
        &p.data,
        &cfg.train,
        &objective,
        open.progress(),
    )?;
    let run = open.run;
    save_trained(cfg, &model, p.label_names.as_deref(), &run)?;
    finish(cfg, p, &model, &report, "student", None, run)
}
