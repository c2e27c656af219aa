//! A run's configuration: the TOML files in configs/ and the fully resolved `config.toml` that
//! every run folder keeps.
use crate::data::Columns;
use crate::error::{KdError, Result};
use crate::model::LoraSpec;
use crate::training::TrainSettings;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything a `kd teach` or `kd distill` run needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    /// A local checkpoint folder or a Hub id.
    pub model: String,
    /// A dataset folder or a Hub id.
    pub data: String,
    /// Unlabelled files (a transfer set): the teacher scores them into its cache and the student
    /// learns from those logits alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unlabelled: Vec<PathBuf>,
    /// Class names in class order (`--label-names`; else from the data's metadata). A run
    /// folder's config.toml records the names its run used, as transformers' id2label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_names: Option<Vec<String>>,
    /// The run folder.
    pub out: PathBuf,
    /// cpu, cuda, cuda:N or auto.
    #[serde(default = "auto")]
    pub device: String,
    /// The frozen weights' dtype: auto (bf16 on CUDA and on a CPU whose native bf16 kernel beats
    /// f32, f32 on other CPUs), f32, bf16.
    #[serde(default = "auto")]
    pub dtype: String,
    /// In a run folder's config.toml: the run that wrote it (see `summary.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub lora: LoraSpec,
    #[serde(default)]
    pub train: TrainSettings,
    /// Present for a student.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillSettings>,
    /// Which columns hold the text and the label (default: AG News CSV, `text`/`label`).
    #[serde(default, skip_serializing_if = "no_columns")]
    pub columns: Columns,
}

/// The `[distill]` table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DistillSettings {
    /// The teacher's run folder (its logits.bin is read), or several: the student then learns
    /// from their ensemble (the mean of their probabilities at temperature T).
    #[serde(deserialize_with = "one_or_many")]
    pub teacher: Vec<PathBuf>,
    pub temperature: f64,
    /// Weight of the KD term; 0 trains on the labels alone.
    pub alpha: f64,
    /// The student must have fewer trainable parameters than this.
    pub budget: usize,
}

/// `teacher = "a"` or `teacher = ["a", "b"]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    })
}

fn no_columns(c: &Columns) -> bool {
    !c.named()
}

fn auto() -> String {
    "auto".into()
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            epochs: 3,
            max_steps: None,
            batch_size: 32,
            lr: 4e-4,
            warmup_ratio: 0.06,
            weight_decay: 0.01,
            label_smoothing: 0.1,
            max_grad_norm: 1.0,
            max_len: 128,
            seed: 42,
            val_fraction: 0.05,
            select: Default::default(),
            calibrate: false,
            num_labels: None,
            checkpoint_every: None,
            fresh: false,
            cache_chunk_rows: crate::cache::CACHE_CHUNK_ROWS,
            log_every: 50,
            eval_batch_size: 128,
        }
    }
}

impl RunConfig {
    /// Reads a TOML config.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| KdError::io(path, e))?;
        toml::from_str(&text).map_err(|e| KdError::bad_file(path, e.to_string()))
    }

    /// Checks values that would otherwise fail deep inside training.
    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        let fail = |m: String| Err(KdError::Config(m));
        if t.max_steps == Some(0) {
            return fail("--max-steps 0 would write an untrained model".into());
        }
        if t.batch_size == 0 || t.epochs == 0 || t.max_len < 2 {
            return fail("epochs, batch_size must be ≥ 1 and max_len ≥ 2".into());
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return fail(format!("lr {} must be positive", t.lr));
        }
        if !(0.0..1.0).contains(&t.label_smoothing) || !(0.0..=1.0).contains(&t.warmup_ratio) {
            return fail("label_smoothing must be in [0, 1) and warmup_ratio in [0, 1]".into());
        }
        if t.calibrate && t.val_fraction == 0.0 {
            return fail(
                "--calibrate fits a temperature on validation rows: --val-fraction 0 leaves none"
                    .into(),
            );
        }
        self.lora.validate().map_err(KdError::Config)?;
        if let Some(d) = &self.distill {
            if !(0.0..=1.0).contains(&d.alpha) {
                return fail(format!("--alpha {} must be in [0, 1]", d.alpha));
            }
            // Past T = 100 the soft targets are uniform to f32 precision and T² overflows the
            // loss long before 1e30.
            if !(d.temperature > 0.0 && d.temperature <= 100.0) {
                return fail(format!(
                    "--temperature {} is not in (0, 100]",
                    d.temperature
                ));
            }
            if d.alpha > 0.0 && d.teacher.is_empty() {
                return fail("name a teacher run folder (--teacher DIR)".into());
            }
            if d.alpha == 0.0 && !self.unlabelled.is_empty() {
                return fail(
                    "--alpha 0 trains on the labels alone: unlabelled rows need the teacher's logits (drop --unlabelled or raise --alpha)".into(),
                );
            }
        }
        Ok(())
    }

    /// Writes the resolved config as TOML (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self)
            .map_err(|e| KdError::Config(format!("cannot serialise the config: {e}")))?;
        crate::fsutil::write_bytes_atomic(path, text.as_bytes())
    }
}
