//! `kd sweep`: one student per point of a temperature × α × seed grid, from one teacher cache,
//! with the data prepared and tokenized once. Each point is a run folder `OUT/T{t}_a{α}_s{seed}`
//! (`OUT/a0_s{seed}` for α = 0, where T plays no part); a rerun skips finished points. Writes
//! `OUT/sweep.json` and `OUT/sweep.md`: test accuracy and macro-F1 per (T, α) as mean ± standard
//! deviation over seeds, and each point's paired difference against α = 0 with the same seed.
//!
//! Points are independent, so a sweep can be shared out: the points are numbered p = 0, 1, … in
//! the order of sweep.json (α as given, each α > 0 with every T in turn, α = 0 once; within each,
//! the seeds as given), and `--shard i/N` trains the points with p % N = i into the folders a
//! whole sweep uses, writing no sweep.json. `--merge` trains nothing: it gathers every point,
//! refusing missing ones and ones made from other settings or inputs (the rerun rules below),
//! and writes sweep.json and sweep.md as a whole sweep does (`trained` 0).
use super::distill::run_prepared;
use crate::error::{KdError, Result};
pub use crate::report::sweep::{render, GridPoint, Sweep, SweepPoint};
use crate::run::checkpoints::settings_key;
use crate::run::folder::write_json;
use crate::run::identity::Inputs;
use crate::run::load::{check_one_run, read_summary};
use crate::run::{prepare, Prepared};
use crate::run::{RunConfig, Summary};
use crate::shard::Shard;
use std::path::PathBuf;

/// The grid and where it goes.
pub struct SweepRequest {
    /// The student's configuration (with its [distill] table); T, α, seed and out are set per point.
    pub base: RunConfig,
    pub temperatures: Vec<f64>,
    pub alphas: Vec<f64>,
    pub seeds: Vec<u64>,
    pub out: PathBuf,
    pub mode: SweepMode,
}

/// Which part of the sweep this invocation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepMode {
    /// Train every missing point and write sweep.json.
    Whole,
    /// Train the missing points p with p % N = i; write no sweep.json.
    Shard(Shard),
    /// Train nothing; gather the points the shards trained into sweep.json.
    Merge,
}

/// What a sweep invocation did.
pub enum SweepDone {
    /// sweep.json and sweep.md were written (a whole sweep, or a merge).
    Written(Sweep),
    /// A shard trained `trained` of the `owned` points it takes, of `total`.
    Shard {
        shard: Shard,
        trained: usize,
        owned: usize,
        total: usize,
    },
}

/// Runs the request: trains the missing points of the whole sweep or of one shard, or merges.
pub fn run(req: &SweepRequest) -> Result<SweepDone> {
    if req.temperatures.is_empty() || req.alphas.is_empty() || req.seeds.is_empty() {
        return Err(KdError::Config(
            "kd sweep needs --temperature, --alpha and --seeds, each with at least one value"
                .into(),
        ));
    }
    let (t, a, s) = (&req.temperatures, &req.alphas, &req.seeds);
    crate::run::check_sweep(&req.base, &req.out, t, a, s)?;
    let grid = grid(req);
    // Check every point's settings before any training.
    let configs: Vec<RunConfig> = grid
        .iter()
        .flat_map(|&(t, alpha)| req.seeds.iter().map(move |&seed| (t, alpha, seed)))
        .map(|(t, alpha, seed)| point_config(req, t, alpha, seed))
        .collect::<Result<_>>()?;
    let prepared = prepare(&req.base)?;
    let (summaries, trained) = match req.mode {
        SweepMode::Whole => train(&configs, &prepared, Shard::ALL)?,
        SweepMode::Merge => (gather(req, &configs, &prepared)?, 0),
        SweepMode::Shard(shard) => {
            let (done, trained) = train(&configs, &prepared, shard)?;
            let (owned, total) = (done.len(), configs.len());
            tracing::info!("shard {shard}: {owned} of {total} points finished; kd sweep --merge gathers them once every shard has");
            return Ok(SweepDone::Shard {
                shard,
                trained,
                owned,
                total,
            });
        }
    };
    let results: Vec<Vec<Summary>> = summaries
        .chunks(req.seeds.len())
        .map(<[Summary]>::to_vec)
        .collect();
    let sweep = Sweep::summarise(&grid, &req.seeds, &results, trained);
    write_json(&req.out.join(crate::report::sweep::SWEEP_JSON), &sweep)?;
    crate::fsutil::write_bytes_atomic(&req.out.join("sweep.md"), render(&sweep).as_bytes())?;
    Ok(SweepDone::Written(sweep))
}

/// The (T, α) points: α as given, each α > 0 with every T in turn, α = 0 once (T plays no part).
fn grid(req: &SweepRequest) -> Vec<GridPoint> {
    let mut grid: Vec<GridPoint> = Vec::new();
    for &alpha in &req.alphas {
        if alpha == 0.0 {
            grid.push((None, 0.0));
        } else {
            grid.extend(req.temperatures.iter().map(|&t| (Some(t), alpha)));
        }
    }
    grid
}

/// Trains the points of `shard` that are not finished; returns the summaries of its points, in
/// order, and how many it trained.
fn train(configs: &[RunConfig], p: &Prepared, shard: Shard) -> Result<(Vec<Summary>, usize)> {
    let mut trained = 0;
    let mut summaries = Vec::new();
    for cfg in configs
        .iter()
        .enumerate()
        .filter(|(k, _)| shard.owns(*k))
        .map(|(_, c)| c)
    {
        let summary = match point_state(cfg, p)? {
            PointState::Finished(s) => *s,
            state => {
                if let PointState::Stale(why) = state {
                    tracing::warn!("{}: training it again: {why}", cfg.out.display());
                }
                tracing::info!(point = %cfg.out.display(), "training");
                trained += 1;
                run_prepared(cfg, p)?
            }
        };
        summaries.push(summary);
    }
    Ok((summaries, trained))
}

/// The summaries of every point, which the shards must have finished from these very settings
/// and inputs; refuses, naming each point that is not so.
fn gather(req: &SweepRequest, configs: &[RunConfig], p: &Prepared) -> Result<Vec<Summary>> {
    let mut summaries = Vec::new();
    let mut problems = Vec::new();
    for (k, cfg) in configs.iter().enumerate() {
        let name = cfg.out.file_name().unwrap_or_default().to_string_lossy();
        let problem = match point_state(cfg, p)? {
            PointState::Finished(s) => {
                summaries.push(*s);
                continue;
            }
            PointState::Missing => "not finished".to_string(),
            PointState::OtherSettings => "trained with other settings".to_string(),
            PointState::Stale(why) => why,
        };
        problems.push(format!("point {k} {name} ({problem})"));
    }
    if problems.is_empty() {
        return Ok(summaries);
    }
    Err(KdError::SweepIncomplete {
        out: req.out.clone(),
        problems: format!(
            "{} of {} points cannot be merged: {}",
            problems.len(),
            configs.len(),
            problems.join("; ")
        ),
    })
}

/// Where a point's run folder stands.
enum PointState {
    /// A whole run of the point's settings, from the current inputs.
    Finished(Box<Summary>),
    /// No finished run.
    Missing,
    /// A run of another grid's (or other flags') settings.
    OtherSettings,
    /// A run whose inputs changed since, and why.
    Stale(String),
}

/// A point is finished when its folder holds a whole run of these very settings made from these
/// very inputs (see [`Inputs`]): a sweep rerun with another grid retrains it, and so does one
/// whose teacher was retrained (or re-cached), or whose data, test split or base model changed,
/// in place, saying what changed.
fn point_state(cfg: &RunConfig, p: &Prepared) -> Result<PointState> {
    let Some(summary) = read_summary(&cfg.out)? else {
        return Ok(PointState::Missing);
    };
    if !same_settings(cfg)? {
        return Ok(PointState::OtherSettings);
    }
    let now = Inputs::of(cfg, p)?;
    let why = match &summary.inputs {
        None => Some("it records no inputs (an older kd wrote it)".to_string()),
        Some(then) => Some(now.changes_since(then, true))
            .filter(|c| !c.is_empty())
            .map(|c| format!("{} changed since it was trained", c.join(", "))),
    };
    if let Some(why) = why {
        return Ok(PointState::Stale(why));
    }
    check_one_run(&cfg.out)?;
    Ok(PointState::Finished(Box::new(summary)))
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
        // The labels-alone points learn nothing from unlabelled rows, nor from the teacher's
        // representations.
        cfg.unlabelled.clear();
        if let Some(d) = cfg.distill.as_mut() {
            d.repr_weight = 0.0;
        }
    }
    cfg.validate()?;
    Ok(cfg)
}
