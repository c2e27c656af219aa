//! What a run folder is: its file names, the summary, and writing its files.
use super::checkpoints::{settings_key, RunCheckpoints};
use super::config::RunConfig;
use super::identity::Inputs;
use super::prepare::Prepared;
use super::staging::StagedRun;
use crate::distributed::Collective;
use crate::error::Result;
use crate::model::{adapter, NamedVar, TextClassifier};
use crate::training::calibration::Calibration;
use crate::training::{MetricsLog, Progress, TrainState};
use serde::Serialize;
use std::path::Path;

pub(crate) use super::files;

/// `summary.json`.
#[derive(Debug, Serialize, serde::Deserialize, Clone)]
pub struct Summary {
    /// The id that config.toml, the adapter, metrics.jsonl and logits.bin of this run share
    /// (absent in folders written before run ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub role: String,
    /// The kd that wrote the run: `0.1.0 (commit)` ([`crate::version`]; absent before it was
    /// recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kd: Option<String>,
    pub model: String,
    pub data: String,
    pub device: String,
    /// The kernels the products ran on ([`crate::nn::kernels_used`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernels: Option<String>,
    pub trainable_params: usize,
    pub steps: usize,
    /// The epoch whose weights the run kept (`best_epoch` in summaries before `--select`).
    #[serde(alias = "best_epoch")]
    pub kept_epoch: usize,
    /// How it was chosen (`--select`) and why, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<crate::training::selection::Decision>,
    /// The kept epoch's validation NLL and accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub test_macro_f1: Option<f64>,
    /// The softmax temperature fitted on the validation rows (`--calibrate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrated_temperature: Option<f64>,
    /// Test NLL, Brier and ECE at the calibrated temperature (at 1 without one) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_calibration: Option<Calibration>,
    /// ... and at 1, before calibration (with `--calibrate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_calibration_before: Option<Calibration>,
    pub train_seconds: f64,
    pub train_samples_per_s: f64,
    pub train_tokens_per_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_samples_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// The representation term's weight β and comparison (students with β > 0 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repr_weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repr_loss: Option<crate::training::ReprLoss>,
    /// What the run was made from (base model, rows, test split, teachers, kernels): a rerun of
    /// `kd sweep` reuses the run only if these are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Inputs>,
    /// The ranks of a data-parallel run (absent for one process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks: Option<usize>,
}

/// Saves the trained adapter and the resolved config.toml (with the class names the run used)
/// into the staged run, both carrying its run id.
pub fn save_trained(
    cfg: &RunConfig,
    model: &TextClassifier,
    label_names: Option<&[String]>,
    run: &StagedRun,
) -> Result<()> {
    adapter::save(model, &cfg.model, run.dir(), Some(run.run_id()))?;
    let recorded = RunConfig {
        run_id: Some(run.run_id().to_string()),
        label_names: label_names.map(<[String]>::to_vec),
        ..cfg.clone()
    };
    recorded.save(&run.dir().join(files::CONFIG))
}

/// A training run's folder, opened: the staged run (rank 0's alone: the other ranks of a
/// data-parallel run write nothing), its metrics log, its checkpoints, the state of the
/// interrupted run it continues, if any, and the ranks it trains with.
pub struct OpenRun {
    pub run: Option<StagedRun>,
    pub log: MetricsLog,
    pub checkpoints: RunCheckpoints,
    pub resume: Option<TrainState>,
    pub world: &'static dyn Collective,
}

impl OpenRun {
    /// What the training loop reports to and resumes from (the resume state is handed over
    /// once).
    pub fn progress(&mut self) -> Progress<'_> {
        Progress {
            log: &mut self.log,
            checkpoints: &mut self.checkpoints,
            resume: self.resume.take(),
            world: self.world,
        }
    }
}

/// Starts the run of `cfg` into its staged folder, or continues the interrupted one found there
/// (unless `--fresh`) when it was made with the same settings and inputs (see [`Inputs`]: the
/// base model, the rows `p` prepared, the teachers' logits, the dtype and kernels) and the same
/// number of ranks. `params` are the tensors the run trains (the model's and its objective's), in
/// the order the checkpoints keep them. Rank 0 opens the folder and hands the checkpoint it
/// resumes to the others.
pub fn open_run(cfg: &RunConfig, p: &Prepared, params: &[NamedVar]) -> Result<OpenRun> {
    let world = crate::distributed::world();
    let names: Vec<String> = params.iter().map(|nv| nv.name.clone()).collect();
    if !world.leads() {
        let checkpoints = RunCheckpoints::follower(names);
        let mut bytes = Vec::new();
        world.broadcast_bytes(&mut bytes)?;
        let resume = match bytes.is_empty() {
            true => None,
            false => Some(checkpoints.state_from(&bytes)?),
        };
        let (run, log) = (None, MetricsLog::discard());
        return Ok(OpenRun {
            run,
            log,
            checkpoints,
            resume,
            world,
        });
    }
    let inputs = Inputs::of(cfg, p)?;
    let (mut run, kept) = StagedRun::begin_resumable(&cfg.out, !cfg.train.fresh)?;
    let key = settings_key(cfg, &inputs.data);
    let every = cfg.train.checkpoint_every;
    let checkpoints =
        RunCheckpoints::new(run.dir(), key, inputs.clone(), names, every).with_ranks(world.size());
    let (resume, mut bytes) = match kept {
        true => checkpoints.load()?.unzip(),
        false => (None, None),
    };
    if kept && resume.is_none() {
        run.reset()?;
    }
    world.broadcast_bytes(bytes.get_or_insert_with(Vec::new))?;
    run.set_inputs(inputs);
    let metrics = run.dir().join(files::METRICS);
    let log = match &resume {
        Some(st) => MetricsLog::resume(&metrics, st.metrics_len)?,
        None => {
            let mut log = MetricsLog::create(&metrics)?;
            log.write(serde_json::json!({ "run_id": run.run_id() }))?;
            log
        }
    };
    Ok(OpenRun {
        run: Some(run),
        log,
        checkpoints,
        resume,
        world,
    })
}

/// Writes pretty JSON atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    crate::fsutil::write_bytes_atomic(path, text.as_bytes())
}
