//! A trained model as a plain transformers folder: `AutoModelForSequenceClassification
//! .from_pretrained(DIR)` loads it with no PEFT and no kd.
//!
//! - `model.safetensors`: the checkpoint's encoder with every LoRA update merged into its base
//!   weight (W + (α/r)·B·A), under the `*ForSequenceClassification` names (`roberta.`/`bert.`
//!   prefix), and the head under the architecture's own names: RoBERTa's `classifier.dense` and
//!   `classifier.out_proj`; BERT's `bert.pooler.dense` (the trained pooler, or the checkpoint's
//!   when it stayed frozen) and `classifier`. Everything in f32.
//! - `config.json`: the checkpoint's, with `architectures`, `id2label` and `label2id`.
//! - the checkpoint's tokenizer files.
use super::checkpoint::Checkpoint;
use super::classifier::{TextClassifier, PEFT_PREFIX};
use super::config::ModelKind;
use crate::error::{KdError, Result};
use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;
use std::path::Path;

/// Tokenizer files copied when the checkpoint has them.
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
];

/// Writes `model` (trained on `checkpoint`) into the new folder `dir`; `names` are the class
/// names (numbers are used when there are none).
pub fn export(
    model: &TextClassifier,
    checkpoint: &Checkpoint,
    names: Option<&[String]>,
    dir: &Path,
) -> Result<()> {
    let kind = model.config().kind();
    let prefix = kind.prefix();
    let mut tensors = base_tensors(checkpoint, prefix)?;
    // Merge each adapter into its frozen weight: W' = W + scaling·B·A.
    for (module, layer) in model.encoder().adapted_modules(prefix) {
        if let Some(lora) = layer.adapter() {
            let name = format!("{module}.weight");
            let w = tensors
                .get(&name)
                .ok_or_else(|| KdError::bad_file(&checkpoint.weights, format!("no `{name}`")))?;
            let update = lora
                .b
                .as_tensor()
                .to_dtype(DType::F32)?
                .matmul(&lora.a.as_tensor().to_dtype(DType::F32)?)?
                .to_device(&Device::Cpu)?;
            let merged = (w + (update * lora.scaling())?)?;
            tensors.insert(name, merged);
        }
    }
    // The head under transformers' names.
    for (name, var) in head_tensors(model) {
        let t = var
            .as_tensor()
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?;
        tensors.insert(name, t);
    }
    let classes = model.num_labels();
    let names: Vec<String> = match names {
        Some(n) => n.to_vec(),
        None => (0..classes).map(|c| format!("LABEL_{c}")).collect(),
    };
    let config = export_config(checkpoint, kind, &names)?;

    if dir.exists() {
        return Err(KdError::bad_file(dir, "exists: choose a new --out"));
    }
    let tmp = dir.with_file_name(format!(
        ".{}.kd-export",
        dir.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| KdError::io(&tmp, e))?;
    let result = (|| -> Result<()> {
        let weights = tmp.join("model.safetensors");
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(&tensors, Some(metadata), &weights)
            .map_err(|e| KdError::bad_file(&weights, e.to_string()))?;
        let text = serde_json::to_string_pretty(&config).expect("serialisable");
        let path = tmp.join("config.json");
        std::fs::write(&path, text).map_err(|e| KdError::io(&path, e))?;
        let source = checkpoint.config_path.parent().unwrap_or(Path::new("."));
        for name in TOKENIZER_FILES {
            let from = source.join(name);
            if from.is_file() {
                std::fs::copy(&from, tmp.join(name)).map_err(|e| KdError::io(&from, e))?;
            }
        }
        std::fs::rename(&tmp, dir).map_err(|e| KdError::io(dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// The checkpoint's encoder tensors in f32 under `prefix.` (bare MiniLM-style names get it),
/// less what the classification model does not have: RoBERTa's pooler and the position-id
/// buffer.
fn base_tensors(checkpoint: &Checkpoint, prefix: &str) -> Result<HashMap<String, Tensor>> {
    let raw = candle_core::safetensors::load(&checkpoint.weights, &Device::Cpu)
        .map_err(|e| KdError::bad_file(&checkpoint.weights, e.to_string()))?;
    let mut out = HashMap::new();
    for (name, t) in raw {
        if let Some(name) = exported_name(&name, prefix) {
            out.insert(name, t.to_dtype(DType::F32)?);
        }
    }
    Ok(out)
}

/// The name under which the export holds the checkpoint's tensor `name` (bare or under
/// `prefix.`), or None for what the classification model does not have. Shared with
/// [`super::serving`], which counts the exported weights without writing them.
pub(crate) fn exported_name(name: &str, prefix: &str) -> Option<String> {
    let bare = name.strip_prefix(&format!("{prefix}.")).unwrap_or(name);
    let keep = bare.starts_with("embeddings.")
        || bare.starts_with("encoder.")
        || (bare.starts_with("pooler.") && prefix == ModelKind::Bert.prefix());
    (keep && !bare.ends_with("position_ids")).then(|| format!("{prefix}.{bare}"))
}

/// The head's tensors under transformers' names (the trainable tensors carry them after PEFT's
/// prefix; LoRA's are merged, not written). They replace a checkpoint tensor of the same name
/// (BERT's trained pooler).
pub(crate) fn head_tensors(model: &TextClassifier) -> impl Iterator<Item = (String, &Var)> {
    let peft = format!("{PEFT_PREFIX}.");
    model.trainable().iter().filter_map(move |nv| {
        let name = nv.name.strip_prefix(&peft)?;
        (!name.contains("lora_")).then(|| (name.to_string(), &nv.var))
    })
}

/// The checkpoint's config.json for `*ForSequenceClassification` with `names`.
fn export_config(
    checkpoint: &Checkpoint,
    kind: ModelKind,
    names: &[String],
) -> Result<serde_json::Value> {
    let path = &checkpoint.config_path;
    let text = std::fs::read_to_string(path).map_err(|e| KdError::io(path, e))?;
    let mut config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| KdError::bad_file(path, e.to_string()))?;
    let architecture = match kind {
        ModelKind::Roberta => "RobertaForSequenceClassification",
        ModelKind::Bert => "BertForSequenceClassification",
    };
    let id2label: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (i.to_string(), n.clone().into()))
        .collect();
    let label2id: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i.into()))
        .collect();
    config["architectures"] = serde_json::json!([architecture]);
    config["id2label"] = id2label.into();
    config["label2id"] = label2id.into();
    config["problem_type"] = "single_label_classification".into();
    Ok(config)
}
