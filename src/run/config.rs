//! A run's configuration: the TOML files in configs/ and the fully resolved `config.toml` that
//! every run folder keeps.
use super::limits::{Limit, CLASSES, COUNT, FRACTION, POSITIVE, REPR_WEIGHT, TEMPERATURE, WEIGHT};
use crate::data::Columns;
use crate::error::{KdError, Result};
use crate::model::LoraSpec;
use crate::training::{ReprLoss, TrainSettings};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything a `kd teach` or `kd distill` run needs. Unknown keys are refused (see
/// [`RunConfig::from_toml`]): a misspelt setting would otherwise be dropped without a word.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
    /// Weight β of the representation term (the teacher's `representations.bin` matched
    /// through a projection); 0 (the default) leaves it out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repr_weight: f64,
    /// How the representations are compared: cosine (default) or mse.
    #[serde(default, skip_serializing_if = "is_cosine")]
    pub repr_loss: ReprLoss,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn is_cosine(l: &ReprLoss) -> bool {
    *l == ReprLoss::Cosine
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
            cache_representations: false,
            log_every: 50,
            eval_batch_size: 128,
        }
    }
}

impl RunConfig {
    /// Reads a TOML config.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| KdError::io(path, e))?;
        Self::from_toml(&text).map_err(|e| match e {
            TomlError::UnknownKey(m) => KdError::Config(format!("{}{m}", path.display())),
            TomlError::Other(m) => KdError::bad_file(path, m),
        })
    }

    /// Parses a config's text. Every key kd has ever written is still known, so run folders
    /// and configs of older kd versions load; any other key is refused, with the closest known
    /// one as a suggestion.
    pub fn from_toml(text: &str) -> std::result::Result<Self, TomlError> {
        toml::from_str(text).map_err(|e| match unknown_key(text, &e) {
            Some(m) => TomlError::UnknownKey(m),
            None => TomlError::Other(e.to_string()),
        })
    }

    /// Checks values that would otherwise fail deep inside training, or train something other
    /// than asked; each refusal names the flag, the config key and the value at fault.
    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        let fail = |m: String| Err(KdError::Config(m));
        if t.max_steps == Some(0) {
            return fail("--max-steps 0 would write an untrained model".into());
        }
        for (flag, key, value, limit) in self.numeric_settings() {
            limit.check(flag, key, value).map_err(KdError::Config)?;
        }
        if t.calibrate && t.val_fraction == 0.0 {
            return fail(
                "--calibrate fits a temperature on validation rows: --val-fraction 0 leaves none"
                    .into(),
            );
        }
        self.lora.validate().map_err(KdError::Config)?;
        if let Some(d) = &self.distill {
            if d.alpha > 0.0 && d.teacher.is_empty() {
                return fail("name a teacher run folder (--teacher DIR)".into());
            }
            if d.alpha == 0.0 && !self.unlabelled.is_empty() {
                return fail(
                    "--alpha 0 trains on the labels alone: unlabelled rows need the teacher's logits (drop --unlabelled or raise --alpha)".into(),
                );
            }
            check_repr(d)?;
        }
        Ok(())
    }

    /// Every numeric setting: its flag (if it has one), its config key, its value and the
    /// values it may take.
    fn numeric_settings(&self) -> Vec<(Option<&'static str>, &'static str, f64, Limit)> {
        let (t, l) = (&self.train, &self.lora);
        let mut all = vec![
            (Some("--epochs"), "[train] epochs", t.epochs as f64, COUNT),
            (
                Some("--batch-size"),
                "[train] batch_size",
                t.batch_size as f64,
                COUNT,
            ),
            (Some("--lr"), "[train] lr", t.lr, POSITIVE),
            (
                Some("--warmup-ratio"),
                "[train] warmup_ratio",
                t.warmup_ratio,
                WEIGHT,
            ),
            (None, "[train] weight_decay", t.weight_decay, WEIGHT),
            (
                Some("--label-smoothing"),
                "[train] label_smoothing",
                t.label_smoothing,
                FRACTION,
            ),
            (None, "[train] max_grad_norm", t.max_grad_norm, POSITIVE),
            // The tokenizer refuses a length that leaves no room for text beside its special
            // tokens (it knows how many it adds).
            (
                Some("--max-len"),
                "[train] max_len",
                t.max_len as f64,
                COUNT,
            ),
            (
                Some("--val-fraction"),
                "[train] val_fraction",
                t.val_fraction,
                FRACTION,
            ),
            (
                Some("--cache-chunk-rows"),
                "[train] cache_chunk_rows",
                t.cache_chunk_rows as f64,
                COUNT,
            ),
            (None, "[train] log_every", t.log_every as f64, COUNT),
            (
                None,
                "[train] eval_batch_size",
                t.eval_batch_size as f64,
                COUNT,
            ),
            (Some("--lora-r"), "[lora] r", l.r as f64, COUNT),
            (Some("--lora-alpha"), "[lora] alpha", l.alpha, POSITIVE),
            (None, "[lora] dropout", l.dropout, FRACTION),
        ];
        let optional = [
            (Some("--max-steps"), "[train] max_steps", t.max_steps, COUNT),
            (
                Some("--checkpoint-every"),
                "[train] checkpoint_every",
                t.checkpoint_every,
                COUNT,
            ),
            (
                Some("--num-labels"),
                "[train] num_labels",
                t.num_labels,
                CLASSES,
            ),
        ];
        all.extend(
            optional
                .into_iter()
                .filter_map(|(f, k, v, l)| Some((f, k, v? as f64, l))),
        );
        if let Some(d) = &self.distill {
            all.extend([
                (
                    Some("--temperature"),
                    "[distill] temperature",
                    d.temperature,
                    TEMPERATURE,
                ),
                (Some("--alpha"), "[distill] alpha", d.alpha, WEIGHT),
                (Some("--budget"), "[distill] budget", d.budget as f64, COUNT),
                (
                    Some("--repr-weight"),
                    "[distill] repr_weight",
                    d.repr_weight,
                    REPR_WEIGHT,
                ),
            ]);
        }
        all
    }

    /// Writes the resolved config as TOML (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self)
            .map_err(|e| KdError::Config(format!("cannot serialise the config: {e}")))?;
        crate::fsutil::write_bytes_atomic(path, text.as_bytes())
    }
}

/// The representation term needs what it reads: the logits of one teacher (α > 0), whose
/// representations it matches. An ensemble has no single representation space to match.
fn check_repr(d: &DistillSettings) -> Result<()> {
    if d.repr_weight == 0.0 {
        return Ok(());
    }
    if d.alpha == 0.0 {
        return Err(KdError::Config(
            "--repr-weight needs a teacher: with --alpha 0 the student learns from the labels alone (raise --alpha or drop --repr-weight)".into(),
        ));
    }
    if d.teacher.len() > 1 {
        return Err(KdError::Config(format!(
            "--repr-weight matches one teacher's representations, but {} teachers were given (an ensemble has no single representation space): name one --teacher or drop --repr-weight",
            d.teacher.len()
        )));
    }
    Ok(())
}

/// Why a config's text was not read.
#[derive(Debug)]
pub enum TomlError {
    /// A key or table kd does not know: the message (after the file's name) says where, and
    /// which known key was probably meant.
    UnknownKey(String),
    /// Anything else (a syntax error, a missing key, a wrong type), as the TOML reader words it.
    Other(String),
}

/// Names other tools give kd's keys (transformers, PEFT), which edit distance would not find.
const SYNONYMS: &[(&str, &str)] = &[
    ("learning_rate", "lr"),
    ("num_epochs", "epochs"),
    ("num_train_epochs", "epochs"),
    ("max_length", "max_len"),
    ("max_seq_length", "max_len"),
    ("rank", "r"),
    ("lora_r", "r"),
    ("lora_alpha", "alpha"),
    ("lora_dropout", "dropout"),
    ("target_modules", "targets"),
    ("layers_to_transform", "layers"),
    ("T", "temperature"),
];

/// ", line N: unknown key `k` in [table]: did you mean `known`? (known there: …)" for serde's
/// unknown-field error, whose message names the key and every key its table allows.
fn unknown_key(text: &str, e: &toml::de::Error) -> Option<String> {
    let rest = e.message().strip_prefix("unknown field `")?;
    let names: Vec<&str> = rest.split('`').step_by(2).collect();
    let (key, known) = (names[0], &names[1..]);
    let at = e.span().map_or(0, |s| s.start).min(text.len());
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..line_start].lines().count() + 1;
    let known_list = known.join(", ");
    let guess = suggestion(key, known);
    if text[line_start..].trim_start().starts_with('[') {
        let hint = guess.map_or("remove or correct it".into(), |k| {
            format!("did you mean [{k}]?")
        });
        return Some(format!(
            ", line {line}: unknown section [{key}]: {hint} (the top level knows: {known_list})"
        ));
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find(|l| l.starts_with('['))
        .unwrap_or("the top level");
    let hint = guess.map_or("remove or correct it".into(), |k| {
        format!("did you mean `{k}`?")
    });
    Some(format!(
        ", line {line}: unknown key `{key}` in {table}: {hint} (known there: {known_list})"
    ))
}

/// The known key `key` was probably meant to be: a synonym from another tool, or the closest by
/// edit distance (transpositions counted as one edit) when it is at most a third of the word.
fn suggestion<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    if let Some((_, k)) = SYNONYMS.iter().find(|(from, _)| *from == key) {
        if let Some(k) = known.iter().find(|n| *n == k) {
            return Some(k);
        }
    }
    let lower = key.to_lowercase();
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&lower, k), *k))
        .filter(|(d, k)| *d <= (k.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}
