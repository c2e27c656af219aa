//! The flags of the commands that use trained models: compare, report, export and predict.
use super::device::DeviceArgs;
use clap::Args;
use kd::commands::compare::CompareRequest;
use kd::commands::predict::{Header, PredictRequest};
use kd::commands::report::ReportRequest;
use kd::run::limits::{whole, COUNT};
use kd::run::ModelSource;
use std::path::PathBuf;

#[derive(Args)]
pub struct CompareArgs {
    /// Run folders to evaluate (e.g. teacher student)
    pub runs: Vec<PathBuf>,
    /// PEFT adapter folders to evaluate as well (with --model)
    #[arg(long)]
    pub adapter: Vec<PathBuf>,
    /// Base model for --adapter folders [default: the adapter's base_model_name_or_path]
    #[arg(long)]
    pub model: Option<String>,
    /// Where to write the comparison as JSON
    #[arg(long, default_value = "compare.json")]
    pub json: PathBuf,
    /// Also evaluate each model with its encoder layers in int8 (CPU: AMX-INT8 or AVX-512 VNNI;
    /// adapters merged, weights per output channel, activations per row), as "NAME (int8)"
    #[arg(long)]
    pub int8: bool,
    #[command(flatten)]
    pub eval: EvalArgs,
}

impl CompareArgs {
    pub fn to_request(&self) -> anyhow::Result<CompareRequest> {
        let (model, data) = (self.model.as_deref(), self.eval.data.as_deref());
        kd::run::check_compare(&self.json, &self.runs, &self.adapter, model, data)?;
        let (device, dtype) = self.eval.device.select_for_int8(self.int8)?;
        Ok(CompareRequest {
            runs: self.runs.clone(),
            adapters: self.adapter.clone(),
            model: self.model.clone(),
            data: self.eval.data.clone(),
            device,
            dtype,
            max_len: self.eval.max_len,
            timing: !self.eval.no_timing,
            int8: self.int8,
        })
    }
}

#[derive(Args)]
pub struct ReportArgs {
    /// Run folders (compared in the order given) and sweep folders (folders with sweep.json)
    #[arg(required = true)]
    pub folders: Vec<PathBuf>,
    /// The report folder (new, empty, or an earlier report: it is replaced whole)
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
    /// Also evaluate each run with its encoder layers in int8, as "NAME (int8)" (see kd compare)
    #[arg(long)]
    pub int8: bool,
    #[command(flatten)]
    pub eval: EvalArgs,
}

impl ReportArgs {
    pub fn into_request(self) -> anyhow::Result<ReportRequest> {
        let (device, dtype) = self.eval.device.select_for_int8(self.int8)?;
        Ok(ReportRequest {
            folders: self.folders,
            data: self.eval.data,
            out: self.out,
            device,
            dtype,
            max_len: self.eval.max_len,
            timing: !self.eval.no_timing,
            int8: self.int8,
        })
    }
}

/// How compare and report evaluate runs on a test split.
#[derive(Args)]
pub struct EvalArgs {
    /// Dataset whose test split is used [default: the first run's dataset]
    #[arg(long)]
    pub data: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Truncate every model's inputs to this many tokens [default: each run's own; 128 for
    /// compare's --adapter folders]
    #[arg(long, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub max_len: Option<usize>,
    /// Skip timing (rows/s at batch 32, latency at batch 1): report parameters and FLOPs only
    #[arg(long)]
    pub no_timing: bool,
}

/// A trained model: a run folder, or a PEFT adapter folder on a base model.
#[derive(Args)]
pub struct ModelArgs {
    /// The run folder
    pub run: Option<PathBuf>,
    /// A PEFT adapter folder instead of a run folder (with --model)
    #[arg(long, conflicts_with = "run")]
    pub adapter: Option<PathBuf>,
    /// Base model for --adapter [default: the adapter's base_model_name_or_path]
    #[arg(long)]
    pub model: Option<String>,
}

impl ModelArgs {
    pub fn into_source(self) -> kd::Result<ModelSource> {
        ModelSource::from_flags(self.run, self.adapter, self.model)
    }
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub source: ModelArgs,
    /// The folder to create
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct PredictArgs {
    #[command(flatten)]
    pub source: ModelArgs,
    /// Rows to label (.csv/.csv.gz with optional class column, .jsonl, .parquet)
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long, default_value = "preds.csv")]
    pub output: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Truncate rows to this many tokens [default: the run's own, 128 for --adapter]
    #[arg(long, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub max_len: Option<usize>,
    #[arg(long, default_value_t = 128, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub batch_size: usize,
    /// Run the encoder's layers in int8 (CPU: AMX-INT8 or AVX-512 VNNI; adapters merged, weights
    /// per output channel, activations per row); the weights are read in f32 first
    #[arg(long, conflicts_with = "dtype")]
    pub int8: bool,
    /// The CSV input's first row names its columns: skip it [default: detected, a first row of
    /// column names such as title,description or text]
    #[arg(long, conflicts_with = "no_header")]
    pub header: bool,
    /// The CSV input's first row is a row to label, whatever it says
    #[arg(long)]
    pub no_header: bool,
}

impl PredictArgs {
    pub fn into_request(self) -> anyhow::Result<PredictRequest> {
        let (device, dtype) = self.device.select_for_int8(self.int8)?;
        let dtype = if self.int8 {
            candle_core::DType::F32
        } else {
            dtype
        };
        Ok(PredictRequest {
            source: self.source.into_source()?,
            input: self.input,
            output: self.output,
            batch_size: self.batch_size,
            device,
            dtype,
            int8: self.int8,
            max_len: self.max_len,
            header: match (self.header, self.no_header) {
                (true, _) => Header::Present,
                (_, true) => Header::Absent,
                _ => Header::Detect,
            },
        })
    }
}
