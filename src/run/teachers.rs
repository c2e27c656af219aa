//! A student's teachers: finished run folders whose memory-mapped logit caches it learns from.
//! The rules that make a cache usable live here: it was made from these very rows, and it names
//! the same classes (that no output lands on a teacher is `paths`' rule).
use super::config::{DistillSettings, RunConfig};
use super::folder::files;
use super::load::check_one_run;
use super::prepare::Prepared;
use crate::cache::{LogitCache, ReprCache};
use crate::error::{KdError, Result};
use std::path::Path;

/// Opens every teacher's cache (none when α = 0: the labels alone), each checked against the
/// student's data: a finished run, the same classes by name and count, the same rows.
pub fn open_teachers(d: &DistillSettings, p: &Prepared) -> Result<Vec<LogitCache>> {
    if d.alpha <= 0.0 {
        return Ok(Vec::new());
    }
    d.teacher.iter().map(|t| open_teacher(t, p)).collect()
}

fn open_teacher(teacher: &Path, p: &Prepared) -> Result<LogitCache> {
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
    Ok(cache)
}

/// The teacher's representations when the student matches them (β > 0; `caches` holds the one
/// teacher's logits, already checked against the student's rows): refused when the teacher
/// cached none, when they come from another teacher run or other rows than its logits, or
/// when their width is not the teacher's hidden size (read from its adapter's head).
pub fn open_representations(
    d: &DistillSettings,
    caches: &[LogitCache],
) -> Result<Option<ReprCache>> {
    if d.repr_weight == 0.0 {
        return Ok(None);
    }
    let (Some(teacher), [logits]) = (d.teacher.first(), caches) else {
        return Err(KdError::Internal(
            "the representation term without exactly one teacher's logits".into(),
        ));
    };
    let path = teacher.join(files::REPRESENTATIONS);
    if !path.is_file() {
        return Err(KdError::Config(format!(
            "--repr-weight {} needs the teacher's representations, but {} has no {}: train it with kd teach --cache-representations (or drop --repr-weight)",
            d.repr_weight,
            teacher.display(),
            files::REPRESENTATIONS
        )));
    }
    let cache = ReprCache::open(&path)?;
    cache.check_matches(logits)?;
    let adapter = teacher.join(crate::model::adapter::ADAPTER_WEIGHTS);
    cache.check_width(crate::model::adapter::hidden_size(teacher)?, &adapter)?;
    Ok(Some(cache))
}
