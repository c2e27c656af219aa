//! Loading trained models: run folders and PEFT adapter folders.
use super::config::RunConfig;
use super::folder::{files, Summary};
use crate::cache;
use crate::data::TextTokenizer;
use crate::error::{KdError, Result};
use crate::model::head::Pooler;
use crate::model::{adapter, Checkpoint, ModelKind, TextClassifier};
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};

/// A trained model ready for inference.
pub struct LoadedModel {
    pub model: TextClassifier,
    pub tokenizer: TextTokenizer,
    pub checkpoint: Checkpoint,
    /// The run's config, when loaded from a run folder.
    pub run: Option<RunConfig>,
    pub max_len: usize,
    /// The softmax temperature of its probabilities: the run's calibrated one, else 1.
    pub temperature: f64,
}

impl LoadedModel {
    /// The name of class `c` (its number when the run has no names).
    pub fn class_name(&self, c: usize) -> String {
        self.run
            .as_ref()
            .and_then(|r| r.label_names.as_ref())
            .and_then(|n| n.get(c).cloned())
            .unwrap_or_else(|| c.to_string())
    }
}

impl LoadedModel {
    /// Quantizes the encoder's layers to int8 for inference on the CPU (`--int8`): adapters
    /// merged, weights per output channel, activations per row ([`TextClassifier::quantize_int8`]).
    /// Load the model in f32 first, so that the weights are quantized from full precision.
    pub fn quantize_int8(&mut self) -> Result<()> {
        if !self.model.device().is_cpu() {
            return Err(KdError::Config(
                "--int8 runs on the CPU (int8 products on AMX-INT8 or AVX-512 VNNI): add --device cpu"
                    .into(),
            ));
        }
        let layers = self.model.quantize_int8()?;
        tracing::info!(
            kernel = layers.kernel().name(),
            weight_mb = layers.weight_bytes() as f64 / 1e6,
            "encoder layers quantized to int8"
        );
        Ok(())
    }

    /// Truncates inputs to `max_len` tokens (capped by the checkpoint's positions) instead of
    /// the length the model was loaded with.
    pub fn set_max_len(&mut self, max_len: usize) -> Result<()> {
        self.max_len = self.checkpoint.max_len(max_len);
        self.tokenizer = TextTokenizer::load(&self.checkpoint.tokenizer, self.max_len)?;
        Ok(())
    }
}

/// Loads a run folder (`config.toml` + the PEFT adapter files kd writes).
pub fn load_run(dir: &Path, device: &Device, dtype: DType) -> Result<LoadedModel> {
    let config_path = dir.join(files::CONFIG);
    if !config_path.is_file() {
        return Err(KdError::NotFound(format!(
            "{}: not a kd run folder (no {}); for a PEFT adapter folder use --adapter DIR --model ID",
            dir.display(),
            files::CONFIG
        )));
    }
    check_one_run(dir)?;
    let run = RunConfig::from_file(&config_path)?;
    let mut loaded = load_adapter(dir, Some(&run.model), device, dtype, run.train.max_len)?;
    loaded.run = Some(run);
    if let Some(summary) = read_summary(dir)? {
        loaded.temperature = summary.calibrated_temperature.unwrap_or(1.0);
    }
    Ok(loaded)
}

/// A trained model to load: a kd run folder, or a PEFT adapter folder on a base model.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// A finished run folder.
    Run(PathBuf),
    /// A PEFT adapter folder on `model` (default: its `base_model_name_or_path`).
    Adapter { dir: PathBuf, model: Option<String> },
}

impl ModelSource {
    /// `run` or `adapter` (with `model`), whichever was named; the command line allows one.
    pub fn from_flags(
        run: Option<PathBuf>,
        adapter: Option<PathBuf>,
        model: Option<String>,
    ) -> Result<Self> {
        match (run, adapter) {
            (Some(run), None) => Ok(Self::Run(run)),
            (None, Some(dir)) => Ok(Self::Adapter { dir, model }),
            _ => Err(KdError::Config(
                "name a run folder, or --adapter DIR (with --model)".into(),
            )),
        }
    }

    /// Loads the model. `max_len` truncates its inputs: a run keeps its own when it is `None`,
    /// an adapter takes 128.
    pub fn load(
        &self,
        device: &Device,
        dtype: DType,
        max_len: Option<usize>,
    ) -> Result<LoadedModel> {
        match self {
            Self::Run(dir) => {
                let mut m = load_run(dir, device, dtype)?;
                if let Some(max_len) = max_len {
                    m.set_max_len(max_len)?;
                }
                Ok(m)
            }
            Self::Adapter { dir, model } => {
                load_adapter(dir, model.as_deref(), device, dtype, max_len.unwrap_or(128))
            }
        }
    }

    /// The folder, as named in tables.
    pub fn display_name(&self) -> String {
        match self {
            Self::Run(dir) | Self::Adapter { dir, .. } => dir.display().to_string(),
        }
    }
}

/// Loads a PEFT adapter folder onto `model` (default: the adapter's `base_model_name_or_path`).
pub fn load_adapter(
    dir: &Path,
    model: Option<&str>,
    device: &Device,
    dtype: DType,
    max_len: usize,
) -> Result<LoadedModel> {
    let config = adapter::read_config(dir)?;
    let mut spec = config.to_spec(&dir.join(adapter::ADAPTER_CONFIG))?;
    let model_id = model
        .map(str::to_string)
        .or(config
            .base_model_name_or_path
            .clone()
            .filter(|m| !m.is_empty()))
        .ok_or_else(|| {
            KdError::Config(format!(
                "{}: the adapter names no base model: pass --model",
                dir.display()
            ))
        })?;
    let checkpoint = Checkpoint::resolve(&model_id)?;
    let weights = adapter::read_weights(dir, device)?;
    let kind = checkpoint.config.kind();
    let labels = adapter::num_labels(&weights, dir, kind)?;
    if kind == ModelKind::Roberta {
        // RoBERTa's head has no pooler: whatever modules_to_save says, there is none to freeze.
        spec.pooler = Pooler::default();
    }
    let model = TextClassifier::load(&checkpoint, &spec, labels, device, dtype, 0)?;
    let weights_path = dir.join(adapter::ADAPTER_WEIGHTS);
    model.set_trainable(&weights, &weights_path)?;
    let used: std::collections::HashSet<&str> = model
        .trainable()
        .iter()
        .map(|nv| nv.name.as_str())
        .collect();
    if let Some(extra) = weights.keys().find(|k| !used.contains(k.as_str())) {
        return Err(KdError::bad_file(
            weights_path,
            format!("tensor `{extra}` matches no module of the model (check target_modules)"),
        ));
    }
    let max_len = checkpoint.max_len(max_len);
    let tokenizer = TextTokenizer::load(&checkpoint.tokenizer, max_len)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        checkpoint,
        run: None,
        max_len,
        temperature: 1.0,
    })
}

/// Refuses a run folder whose files come from different runs: summary.json, config.toml, the
/// adapter and logits.bin each record their run's id, and all present must agree. Folders
/// written before run ids (none recorded anywhere) load as they are.
pub fn check_one_run(dir: &Path) -> Result<()> {
    let mut ids: Vec<(&str, Option<String>)> = Vec::new();
    if let Some(s) = read_summary(dir)? {
        ids.push((files::SUMMARY, s.run_id));
    }
    let config = dir.join(files::CONFIG);
    if config.is_file() {
        ids.push((files::CONFIG, RunConfig::from_file(&config)?.run_id));
    }
    if dir.join(adapter::ADAPTER_WEIGHTS).is_file() {
        ids.push((adapter::ADAPTER_WEIGHTS, adapter::read_run_id(dir)?));
    }
    if let Some(id) = metrics_run_id(&dir.join(files::METRICS))? {
        ids.push((files::METRICS, id));
    }
    let logits = dir.join(files::LOGITS);
    if logits.is_file() {
        ids.push((files::LOGITS, cache::read_header(&logits)?.run_id));
    }
    let reprs = dir.join(files::REPRESENTATIONS);
    if reprs.is_file() {
        let id = cache::repr::read_header(&reprs)?.run_id;
        ids.push((files::REPRESENTATIONS, Some(id).filter(|s| !s.is_empty())));
    }
    let first = ids.first().map(|(_, id)| id.clone()).unwrap_or_default();
    if ids.iter().all(|(_, id)| *id == first) {
        return Ok(());
    }
    let parts: Vec<String> = ids
        .iter()
        .map(|(name, id)| format!("{name} {}", id.as_deref().unwrap_or("(none)")))
        .collect();
    Err(KdError::bad_file(
        dir,
        format!(
            "its files come from different runs ({}): run the command again to rewrite the folder",
            parts.join(", ")
        ),
    ))
}

/// The run id on the first line of a run's metrics.jsonl (None inside: a log written before run
/// ids), or None when there is no log. An empty or unreadable first line is damage, not
/// another run, and is reported as such.
fn metrics_run_id(metrics: &Path) -> Result<Option<Option<String>>> {
    let Ok(file) = std::fs::File::open(metrics) else {
        return Ok(None);
    };
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(file), &mut first)
        .map_err(|e| KdError::io(metrics, e))?;
    let damaged = |what: String| {
        KdError::bad_file(
            metrics,
            format!("{what}, but a run writes its run id there: the run's log was damaged; run the command that made the run again to rewrite the folder (or remove metrics.jsonl to use the model without its log)"),
        )
    };
    if first.trim().is_empty() {
        return Err(damaged("is empty".into()));
    }
    let record: serde_json::Value =
        serde_json::from_str(&first).map_err(|e| damaged(format!("line 1 is not JSON ({e})")))?;
    Ok(Some(record["run_id"].as_str().map(str::to_string)))
}

/// `dir/summary.json`, when there is one.
pub fn read_summary(dir: &Path) -> Result<Option<Summary>> {
    let path = dir.join(files::SUMMARY);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| KdError::io(&path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| KdError::bad_file(&path, format!("not a kd summary: {e}")))
}
