//! `kd predict`: label unlabelled rows with a trained run (or a PEFT adapter).
use crate::data::formats::read_rows_to_predict;
pub use crate::data::formats::Header;
use crate::data::tokenize_rows;
use crate::error::{KdError, Result};
use crate::model::predict_logits;
use crate::model::probabilities;
use crate::run::paths::{Output, Paths};
use crate::run::{LoadedModel, ModelSource};
use crate::training::metrics::argmax_rows;
use candle_core::{DType, Device};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What to label, with which model, where.
pub struct PredictRequest {
    pub source: ModelSource,
    /// Rows to label (.csv/.csv.gz, .jsonl, .parquet).
    pub input: PathBuf,
    /// The CSV to write.
    pub output: PathBuf,
    pub batch_size: usize,
    pub device: Device,
    pub dtype: DType,
    /// Run the encoder's layers in int8 (`dtype` is then f32: the weights are quantized from it).
    pub int8: bool,
    /// Truncation (None: the run's own, 128 for an adapter).
    pub max_len: Option<usize>,
    /// Whether a CSV input starts with a header row (detected by default).
    pub header: Header,
}

/// Loads the model and labels the rows; returns the number of rows written. The output is
/// checked first: it must be neither the input nor inside a run folder.
pub fn run(req: &PredictRequest) -> Result<usize> {
    Paths::new()
        .source(&req.source)
        .input("--input", &req.input)
        .output("--output", &req.output, Output::File)
        .check()?;
    let mut loaded = req.source.load(&req.device, req.dtype, req.max_len)?;
    if req.int8 {
        loaded.quantize_int8()?;
    }
    label_rows(&loaded, &req.input, req.header, &req.output, req.batch_size)
}

/// Writes `row,label,label_name,logit_0..logit_K,prob_0..prob_K` for every row of `input`, in
/// input order (probabilities at the run's calibrated temperature, if it has one); a header
/// row of a CSV input is not a row (`row` 0 is the first row after it). Returns the number of
/// rows written.
pub fn label_rows(
    loaded: &LoadedModel,
    input: &Path,
    header: Header,
    output: &Path,
    batch_size: usize,
) -> Result<usize> {
    // The columns the run was trained with.
    let columns = loaded
        .run
        .as_ref()
        .map(|r| r.columns.clone())
        .unwrap_or_default();
    let rows = read_rows_to_predict(input, &columns, header)?;
    let batcher = tokenize_rows(&loaded.tokenizer, &rows, loaded.checkpoint.config.pad_id())?;
    let all: Vec<usize> = (0..rows.len()).collect();
    let logits = predict_logits(&loaded.model, &batcher, &all, batch_size, "predict")?;
    let k = loaded.model.num_labels();
    let labels = argmax_rows(&logits, k);
    crate::fsutil::write_atomic(output, |tmp| {
        let file = std::fs::File::create(tmp).map_err(|e| KdError::io(tmp, e))?;
        let mut w = std::io::BufWriter::new(file);
        let io = |e| KdError::io(tmp, e);
        let logit_cols: Vec<String> = (0..k).map(|c| format!("logit_{c}")).collect();
        let prob_cols: Vec<String> = (0..k).map(|c| format!("prob_{c}")).collect();
        writeln!(
            w,
            "row,label,label_name,{},{}",
            logit_cols.join(","),
            prob_cols.join(",")
        )
        .map_err(io)?;
        for (i, row) in logits.chunks(k).enumerate() {
            let probs: Vec<f32> = probabilities(row, loaded.temperature)
                .into_iter()
                .map(|p| p as f32)
                .collect();
            let fmt = |v: &[f32]| {
                v.iter()
                    .map(|x| format!("{x:.6}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let name = csv_field(&loaded.class_name(labels[i] as usize));
            writeln!(w, "{i},{},{name},{},{}", labels[i], fmt(row), fmt(&probs)).map_err(io)?;
        }
        w.flush().map_err(io)
    })?;
    Ok(rows.len())
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
