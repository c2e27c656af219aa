//! Finding a checkpoint: a local folder, the Hugging Face cache, or a download through hf-hub.
use super::config::EncoderConfig;
use crate::data::TokenizerFiles;
use crate::error::{KdError, Result};
use std::path::{Path, PathBuf};

/// A resolved checkpoint folder and what kd needs from it.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// How the user named it (a path or a Hub id), recorded in run folders and logit caches.
    pub id: String,
    /// The encoder configuration.
    pub config: EncoderConfig,
    /// `config.json`.
    pub config_path: PathBuf,
    /// `model.safetensors` (memory-mapped when loaded).
    pub weights: PathBuf,
    /// `tokenizer.json`, or `vocab.json` + `merges.txt`.
    pub tokenizer: TokenizerFiles,
}

const FILES_HINT: &str =
    "pass a local folder with config.json, model.safetensors and tokenizer.json (or vocab.json + merges.txt)";

impl Checkpoint {
    /// `--max-len`, capped by what the checkpoint's position table allows.
    pub fn max_len(&self, requested: usize) -> usize {
        requested.min(self.config.max_tokens())
    }

    /// Resolves `model`: a folder if one exists at that path, else a Hub id looked up in the
    /// local HF cache (works offline) and then downloaded with hf-hub.
    pub fn resolve(model: &str) -> Result<Self> {
        let path = Path::new(model);
        if path.is_dir() {
            return Self::from_dir(model, path);
        }
        if path.exists() {
            return Err(KdError::NotFound(format!(
                "model `{model}` is a file, not a folder: {FILES_HINT}"
            )));
        }
        match hub_snapshot(model) {
            Ok(dir) => Self::from_dir(model, &dir),
            Err(why) => Err(KdError::NotFound(format!(
                "model `{model}` is not a local folder, not in the Hugging Face cache, and could not be downloaded ({why}): {FILES_HINT}"
            ))),
        }
    }

    /// Reads a checkpoint folder.
    pub fn from_dir(id: &str, dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(KdError::NotFound(format!(
                "{}: no config.json: {FILES_HINT}",
                dir.display()
            )));
        }
        let config = EncoderConfig::from_file(&config_path)?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(KdError::NotFound(format!(
                "{}: no model.safetensors: {FILES_HINT}",
                dir.display()
            )));
        }
        let tokenizer = TokenizerFiles::find(dir)
            .map_err(|e| KdError::NotFound(format!("{e}: {FILES_HINT}")))?;
        Ok(Self {
            id: id.to_string(),
            config,
            config_path,
            weights,
            tokenizer,
        })
    }
}

/// The folder holding `id`'s files: from the HF cache if complete there, else downloaded.
fn hub_snapshot(id: &str) -> std::result::Result<PathBuf, String> {
    let cache = hf_hub::Cache::from_env();
    let repo = cache.model(id.to_string());
    if let (Some(config), Some(_)) = (repo.get("config.json"), repo.get("model.safetensors")) {
        let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
        if TokenizerFiles::find(&dir).is_ok() {
            return Ok(dir);
        }
    }
    let api = crate::hub::online_api()?;
    let repo = api.model(id.to_string());
    let config = repo.get("config.json").map_err(|e| e.to_string())?;
    repo.get("model.safetensors").map_err(|e| e.to_string())?;
    if repo.get("tokenizer.json").is_err() {
        repo.get("vocab.json").map_err(|e| e.to_string())?;
        repo.get("merges.txt").map_err(|e| e.to_string())?;
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}
