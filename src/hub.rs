//! The Hugging Face Hub client, for files not found locally or in the HF cache.

/// An hf-hub client built from the environment (HF_HOME, HF_ENDPOINT, HF_TOKEN), or why there
/// is none: `HF_HUB_OFFLINE=1` forbids network access, as it does for HF's Python libraries.
/// Downloads show a progress bar when stderr is a terminal (roberta-base is 500 MB).
pub(crate) fn online_api() -> Result<hf_hub::api::sync::Api, String> {
    use std::io::IsTerminal;
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1") {
        return Err("HF_HUB_OFFLINE=1 and the cache lacks it".into());
    }
    hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(std::io::stderr().is_terminal())
        .build()
        .map_err(|e| e.to_string())
}
