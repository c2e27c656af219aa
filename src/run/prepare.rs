//! Preparing a training run, the first step `kd teach`, `kd distill`, `kd sweep` and `kd cache`
//! share: device, checkpoint, data and tokenizer resolved, and every input checked before any
//! training.
use super::RunConfig;
use crate::data::labels::label_names;
use crate::data::{tokenize_rows, Batcher, DataFiles, Dataset, Example, TextTokenizer};
use crate::device;
use crate::error::{KdError, Result};
use crate::model::{Checkpoint, TextClassifier};
use candle_core::{DType, Device};

/// Data, tokenizer and model, ready to train.
pub struct Prepared {
    pub device: Device,
    pub dtype: DType,
    pub checkpoint: Checkpoint,
    pub files: DataFiles,
    pub data: Dataset,
    pub tokenizer: TextTokenizer,
    pub batcher: Batcher,
    /// The test split's rows, read and checked before any training.
    pub test: Option<Vec<Example>>,
    /// Class names, when the run has them.
    pub label_names: Option<Vec<String>>,
}

/// The dataset of `cfg` as its run reads it (training rows, validation rows and the split's
/// settings), with `unlabelled` files after them.
pub fn load_data(
    cfg: &RunConfig,
    unlabelled: &[std::path::PathBuf],
) -> Result<(DataFiles, Dataset)> {
    let files = DataFiles::resolve(&cfg.data)?.with_columns(&cfg.columns);
    let data = Dataset::load_with_unlabelled(
        files.train_split()?,
        files.validation.as_ref(),
        unlabelled,
        cfg.train.val_fraction,
        cfg.train.seed,
        cfg.train.num_labels,
        cfg.label_names.as_deref(),
    )?;
    Ok((files, data))
}

/// Resolves device, checkpoint and data, and tokenizes the training rows.
pub fn prepare(cfg: &RunConfig) -> Result<Prepared> {
    cfg.validate()?;
    let device = device::select(&cfg.device)?;
    let dtype = device::weight_dtype(&cfg.dtype, &device)?;
    tracing::info!(kernels = %crate::nn::kernels_used(&device, dtype), "device");
    let checkpoint = Checkpoint::resolve(&cfg.model)?;
    let (files, data) = load_data(cfg, &cfg.unlabelled)?;
    // String labels name their classes; else --label-names or the data's metadata may.
    let label_names = match &data.label_names {
        Some(names) => Some(names.clone()),
        None => label_names(
            files.train_split()?,
            cfg.label_names.as_deref(),
            data.num_labels,
        )?,
    };
    let max_len = checkpoint.max_len(cfg.train.max_len);
    let tokenizer = TextTokenizer::load(&checkpoint.tokenizer, max_len)?;
    let batcher = tokenize_rows(&tokenizer, &data.rows, checkpoint.config.pad_id())?;
    if cfg.train.calibrate && data.val.is_empty() {
        return Err(KdError::Config(
            "--calibrate fits a temperature on validation rows, and there are none".into(),
        ));
    }
    // A bad test split fails now, not after hours of training.
    let test = match &files.test {
        Some(split) => Some(split.read_labelled(data.num_labels, label_names.as_deref())?),
        None => None,
    };
    tracing::info!(
        model = %cfg.model, train = data.train.len(), val = data.val.len(),
        unlabelled = data.unlabelled.len(),
        classes = data.num_labels, ?device, ?dtype, "prepared"
    );
    Ok(Prepared {
        device,
        dtype,
        checkpoint,
        files,
        data,
        tokenizer,
        batcher,
        test,
        label_names,
    })
}

/// Loads the model with fresh adapters for this run.
pub fn fresh_model(cfg: &RunConfig, p: &Prepared) -> Result<TextClassifier> {
    let model = TextClassifier::load(
        &p.checkpoint,
        &cfg.lora,
        p.data.num_labels,
        &p.device,
        p.dtype,
        cfg.train.seed,
    )?;
    if model.has_fresh_pooler() {
        tracing::warn!("the checkpoint has no pooler.dense weights: the pooler starts as transformers initialises it (N(0, 0.02²), zero bias) and trains");
    }
    Ok(model)
}
