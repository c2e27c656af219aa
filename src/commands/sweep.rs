//! `kd sweep`: one student per point of a temperature × α × seed grid, from one teacher cache,
//! with the data prepared and tokenized once. Each point is a run folder `OUT/T{t}_a{α}_s{seed}`
//! (`OUT/a0_s{seed}` for α = 0, where T plays no part); a rerun skips finished points. Writes
//! `OUT/sweep.json` and `OUT/sweep.md`: test accuracy and macro-F1 per (T, α) as mean ± standard
//! deviation over seeds, and each point's paired difference against α = 0 with the same seed.
use super::distill::run_prepared;
use crate::error::{KdError, Result};
pub use crate::report::sweep::{render, GridPoint, Sweep, SweepPoint};
use crate::run::checkpoints::settings_key;
use crate::run::folder::write_json;
use crate::run::identity::Inputs;
use crate::run::load::{check_one_run, read_summary};
use crate::run::{prepare, Prepared};
use crate::run::{RunConfig, Summary};
use std::path::PathBuf;

/// The grid and where it goes.
pub struct SweepRequest {
    /// The student's configuration (with its [distill] table); T, α, seed and out are set per point.
    pub base: RunConfig,
    pub temperatures: Vec<f64>,
    pub alphas: Vec<f64>,
    pub seeds: Vec<u64>,
    pub out: PathBuf,
}

/// Trains the missing points and summarises all of them.
pub fn run(req: &SweepRequest) -> Result<Sweep> {
    if req.temperatures.is_empty() || req.alphas.is_empty() || req.seeds.is_empty() {
        return Err(KdError::Config(
            "kd sweep needs --temperature, --alpha and --seeds, each with at least one value"
                .into(),
        ));
    }
    let (t, a, s) = (&req.temperatures, &req.alphas, &req.seeds);
    crate::run::check_sweep(&req.base, &req.out, t, a, s)?;
    let mut grid: Vec<GridPoint> = Vec::new();
    for &alpha in &req.alphas {
        if alpha == 0.0 {
            grid.push((None, 0.0));
        } else {
            grid.extend(req.temperatures.iter().map(|&t| (Some(t), alpha)));
        }
    }
    // Check every point's settings before any training.
    let points: Vec<Vec<RunConfig>> = grid
        .iter()
        .map(|&(t, alpha)| {
            req.seeds
                .iter()
                .map(|&seed| point_config(req, t, alpha, seed))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    let prepared = prepare(&req.base)?;
    let mut trained = 0;
    let mut results: Vec<Vec<Summary>> = Vec::new();
    for configs in &points {
        let mut per_seed = Vec::new();
        for cfg in configs {
            let summary = match finished_point(cfg, &prepared)? {
                Some(s) => s,
                None => {
                    tracing::info!(point = %cfg.out.display(), "training");
                    trained += 1;
                    run_prepared(cfg, &prepared)?
                }
            };
            per_seed.push(summary);
        }
        results.push(per_seed);
    }
    let sweep = Sweep::summarise(&grid, &req.seeds, &results, trained);
    write_json(&req.out.join(crate::report::sweep::SWEEP_JSON), &sweep)?;
    crate::fsutil::write_bytes_atomic(&req.out.join("sweep.md"), render(&sweep).as_bytes())?;
    Ok(sweep)
}

/// A point is finished when its folder holds a whole run of these very settings made from these
/// very inputs (see [`Inputs`]): a sweep rerun with another grid retrains it, and so does one
/// whose teacher was retrained (or re-cached), or whose data, test split or base model changed,
/// in place, saying what changed.
fn finished_point(cfg: &RunConfig, p: &Prepared) -> Result<Option<Summary>> {
    let Some(summary) = read_summary(&cfg.out)? else {
        return Ok(None);
    };
    if !same_settings(cfg)? {
        return Ok(None);
    }
    let now = Inputs::of(cfg, p)?;
    let why = match &summary.inputs {
        None => Some("it records no inputs (an older kd wrote it)".to_string()),
        Some(then) => Some(now.changes_since(then, true))
            .filter(|c| !c.is_empty())
            .map(|c| format!("{} changed since it was trained", c.join(", "))),
    };
    if let Some(why) = why {
        tracing::warn!("{}: training it again: {why}", cfg.out.display());
        return Ok(None);
    }
    check_one_run(&cfg.out)?;
    Ok(Some(summary))
}

/// Whether the run folder of `cfg` was trained with the settings of `cfg`.
fn same_settings(cfg: &RunConfig) -> Result<bool> {
    let path = cfg.out.join(crate::run::files::CONFIG);
    if !path.is_file() {
        return Ok(false);
    }
    // A run records the class names its data gave; the sweep's config may not name them.
    let saved = RunConfig {
        label_names: cfg.label_names.clone(),
        ..RunConfig::from_file(&path)?
    };
    Ok(settings_key(&saved, "") == settings_key(cfg, ""))
}

/// The student config of one point.
fn point_config(req: &SweepRequest, t: Option<f64>, alpha: f64, seed: u64) -> Result<RunConfig> {
    let mut cfg = req.base.clone();
    let d = cfg
        .distill
        .as_mut()
        .ok_or_else(|| KdError::Config("a student config needs a [distill] table".into()))?;
    d.alpha = alpha;
    if let Some(t) = t {
        d.temperature = t;
    }
    cfg.train.seed = seed;
    let name = match t {
        Some(t) => format!("T{t}_a{alpha}_s{seed}"),
        None => format!("a0_s{seed}"),
    };
    cfg.out = req.out.join(name);
    if alpha == 0.0 {
        // The labels-alone points learn nothing from unlabelled rows.
        cfg.unlabelled.clear();
    }
    cfg.validate()?;
    Ok(cfg)
}
