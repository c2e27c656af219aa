//! PEFT's adapter folder: `adapter_config.json` and `adapter_model.safetensors`, read and
//! written in PEFT's own layout and names so that adapters move between kd and PEFT.
use super::classifier::{TextClassifier, PEFT_PREFIX};
use super::config::ModelKind;
use super::head::Pooler;
use super::lora::{LoraSpec, TargetModules};
use crate::error::{KdError, Result};
use crate::fsutil::{write_atomic, write_bytes_atomic};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// File names PEFT uses.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// File names PEFT uses.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// The fields of PEFT's `adapter_config.json` for a LoRA sequence classifier.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeftConfig {
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    pub target_modules: TargetModules,
    #[serde(default)]
    pub layers_to_transform: Option<LayerList>,
    #[serde(default)]
    pub layers_pattern: Option<serde_json::Value>,
    #[serde(default = "default_bias")]
    pub bias: String,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub inference_mode: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub lora_bias: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_modules: Option<serde_json::Value>,
    #[serde(default)]
    pub rank_pattern: HashMap<String, serde_json::Value>,
    #[serde(default)]
    pub alpha_pattern: HashMap<String, serde_json::Value>,
}

/// PEFT accepts one layer index or a list.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LayerList {
    One(usize),
    Many(Vec<usize>),
}

fn default_bias() -> String {
    "none".into()
}

impl PeftConfig {
    /// The config PEFT would write for `lora` on `base_model`, a model of family `kind`.
    pub fn from_spec(lora: &LoraSpec, base_model: &str, kind: ModelKind) -> Self {
        // PEFT's SEQ_CLS task adds "classifier" and "score"; a trained BERT pooler is one more.
        let mut modules_to_save = vec!["classifier".to_string(), "score".to_string()];
        if kind == ModelKind::Bert && lora.pooler == Pooler::Trainable {
            modules_to_save.push("pooler".into());
        }
        Self {
            peft_type: "LORA".into(),
            task_type: Some("SEQ_CLS".into()),
            base_model_name_or_path: Some(base_model.into()),
            r: lora.r,
            lora_alpha: lora.alpha,
            lora_dropout: lora.dropout,
            target_modules: lora.targets.clone(),
            layers_to_transform: lora.layers.clone().map(LayerList::Many),
            layers_pattern: None,
            bias: "none".into(),
            modules_to_save: Some(modules_to_save),
            use_rslora: lora.use_rslora,
            fan_in_fan_out: false,
            inference_mode: true,
            use_dora: false,
            lora_bias: false,
            exclude_modules: None,
            rank_pattern: HashMap::new(),
            alpha_pattern: HashMap::new(),
        }
    }

    /// The LoRA spec, refusing PEFT features kd does not implement.
    pub fn to_spec(&self, path: &Path) -> Result<LoraSpec> {
        let refuse = |what: &str| {
            Err(KdError::bad_file(
                path,
                format!("{what} is not supported by kd"),
            ))
        };
        if self.peft_type != "LORA" {
            return refuse(&format!("peft_type `{}`", self.peft_type));
        }
        if self.bias != "none" {
            return refuse(&format!("bias `{}`", self.bias));
        }
        if self.fan_in_fan_out {
            return refuse("fan_in_fan_out");
        }
        if !self.rank_pattern.is_empty() || !self.alpha_pattern.is_empty() {
            return refuse("rank_pattern/alpha_pattern");
        }
        if self.use_dora || self.lora_bias {
            return refuse("use_dora/lora_bias");
        }
        if self.exclude_modules.as_ref().is_some_and(|v| !v.is_null()) {
            return refuse("exclude_modules");
        }
        let layers = self.layers_to_transform.as_ref().map(|l| match l {
            LayerList::One(i) => vec![*i],
            LayerList::Many(v) => v.clone(),
        });
        Ok(LoraSpec {
            r: self.r,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            targets: self.target_modules.clone(),
            layers,
            use_rslora: self.use_rslora,
            pooler: if self.modules_to_save.iter().flatten().any(|m| m == "pooler") {
                Pooler::Trainable
            } else {
                Pooler::Frozen
            },
        })
    }
}

/// Reads `dir/adapter_config.json`.
pub fn read_config(dir: &Path) -> Result<PeftConfig> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| KdError::io(&path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| KdError::bad_file(&path, format!("not a PEFT LoRA adapter config: {e}")))
}

/// Reads `dir/adapter_model.safetensors` onto `device`.
pub fn read_weights(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let path = dir.join(ADAPTER_WEIGHTS);
    if !path.is_file() {
        return Err(KdError::NotFound(format!("{}: not found", path.display())));
    }
    candle_core::safetensors::load(&path, device)
        .map_err(|e| KdError::bad_file(&path, format!("unreadable safetensors: {e}")))
}

/// The number of classes an adapter's head was trained for, from the output bias under the
/// family's name (RoBERTa: `classifier.out_proj`, BERT: `classifier`).
pub fn num_labels(weights: &HashMap<String, Tensor>, dir: &Path, kind: ModelKind) -> Result<usize> {
    let path = dir.join(ADAPTER_WEIGHTS);
    let roberta_head = format!("{PEFT_PREFIX}.classifier.out_proj.bias");
    if kind == ModelKind::Bert && weights.contains_key(&roberta_head) {
        return Err(KdError::bad_file(
            path,
            "has RoBERTa's head (classifier.dense/out_proj) on a BERT-family model: it was written by a kd older than 0.2, which did not use BERT's own pooler + classifier; train it again",
        ));
    }
    let key = match kind {
        ModelKind::Roberta => roberta_head,
        ModelKind::Bert => format!("{PEFT_PREFIX}.classifier.bias"),
    };
    let bias = weights
        .get(&key)
        .ok_or_else(|| KdError::bad_file(&path, format!("missing head tensor `{key}`")))?;
    Ok(bias.dim(0)?)
}

/// The safetensors metadata key under which kd records the run that wrote an adapter.
pub const RUN_ID_KEY: &str = "kd_run_id";

/// Writes the model's adapters and head as a PEFT adapter folder; `run_id` goes into the
/// weights file's metadata (PEFT ignores it; `format: pt` is what PEFT writes).
pub fn save(
    model: &TextClassifier,
    base_model: &str,
    dir: &Path,
    run_id: Option<&str>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| KdError::io(dir, e))?;
    let config = PeftConfig::from_spec(model.lora(), base_model, model.config().kind());
    let json = serde_json::to_string_pretty(&config).expect("serialisable");
    write_bytes_atomic(&dir.join(ADAPTER_CONFIG), json.as_bytes())?;
    let tensors: HashMap<String, Tensor> = model
        .trainable()
        .iter()
        .map(|nv| Ok((nv.name.clone(), nv.var.as_tensor().to_device(&Device::Cpu)?)))
        .collect::<candle_core::Result<_>>()?;
    let mut metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    if let Some(id) = run_id {
        metadata.insert(RUN_ID_KEY.into(), id.into());
    }
    write_atomic(&dir.join(ADAPTER_WEIGHTS), |tmp| {
        safetensors::serialize_to_file(&tensors, Some(metadata), tmp)
            .map_err(|e| KdError::bad_file(tmp, e.to_string()))
    })
}

/// The run id recorded in `dir/adapter_model.safetensors`, if any (reads the header only).
pub fn read_run_id(dir: &Path) -> Result<Option<String>> {
    let json = read_header(dir)?;
    Ok(json["__metadata__"][RUN_ID_KEY]
        .as_str()
        .map(str::to_string))
}

/// The width of the hidden states the adapter's head reads (its output layer's input width,
/// under either family's name): the model's hidden size, from the header alone.
pub fn hidden_size(dir: &Path) -> Result<usize> {
    let json = read_header(dir)?;
    ["classifier.out_proj.weight", "classifier.weight"]
        .iter()
        .find_map(|name| json[format!("{PEFT_PREFIX}.{name}")]["shape"][1].as_u64())
        .map(|h| h as usize)
        .ok_or_else(|| {
            KdError::bad_file(
                dir.join(ADAPTER_WEIGHTS),
                "no classifier weight to read the hidden size from",
            )
        })
}

/// The JSON header of `dir/adapter_model.safetensors` (tensor shapes and metadata).
fn read_header(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join(ADAPTER_WEIGHTS);
    let mut file = std::fs::File::open(&path).map_err(|e| KdError::io(&path, e))?;
    let mut len = [0u8; 8];
    std::io::Read::read_exact(&mut file, &mut len).map_err(|e| KdError::io(&path, e))?;
    let n = u64::from_le_bytes(len) as usize;
    let size = file.metadata().map_err(|e| KdError::io(&path, e))?.len() as usize;
    if n > size.saturating_sub(8) {
        return Err(KdError::bad_file(&path, "truncated safetensors header"));
    }
    let mut header = vec![0u8; n];
    std::io::Read::read_exact(&mut file, &mut header).map_err(|e| KdError::io(&path, e))?;
    serde_json::from_slice(&header)
        .map_err(|e| KdError::bad_file(&path, format!("unreadable safetensors header: {e}")))
}
