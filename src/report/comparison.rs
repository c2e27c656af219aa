//! Runs side by side: what `kd compare` prints and writes as JSON, and what `kd report` draws.
use crate::data::SplitFiles;
use crate::error::Result;
use crate::model::serving::{ServingCost, Timing};
use crate::run::folder::write_json;
use crate::training::calibration::{Calibration, ReliabilityBin};
use crate::training::metrics::Evaluation;
use serde::Serialize;

/// One model's results.
#[derive(Debug, Serialize)]
pub struct RunResult {
    pub run: String,
    pub model: String,
    pub trainable_params: usize,
    /// Class names in class order (numbers when the run has none).
    pub class_names: Vec<String>,
    pub eval_samples_per_s: f64,
    #[serde(flatten)]
    pub evaluation: Evaluation,
    /// The run's calibrated softmax temperature, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibrated_temperature: Option<f64>,
    /// NLL, Brier score and ECE of its probabilities (at its temperature).
    pub calibration: Calibration,
    /// Reliability-diagram bins at its temperature, and at 1 when it was calibrated (for
    /// `kd report`; not in the JSON).
    #[serde(skip)]
    pub reliability: Vec<ReliabilityBin>,
    #[serde(skip)]
    pub reliability_uncalibrated: Option<Vec<ReliabilityBin>>,
    /// What it costs to serve: parameters and FLOPs, and (unless `--no-timing`) rows/s and
    /// latency here. Nothing reads compare.json back; an older one simply lacks this.
    pub serving: ServingCost,
}

/// Agreement (same argmax) of two runs.
#[derive(Debug, Serialize)]
pub struct PairAgreement {
    pub a: String,
    pub b: String,
    pub agreement: f64,
}

/// The whole comparison, as written to JSON.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// The test split's file (or Parquet shards), written as a list of paths.
    #[serde(rename = "test_files")]
    pub test_split: SplitFiles,
    pub runs: Vec<RunResult>,
    pub agreement: Vec<PairAgreement>,
}

/// The comparison as a plain-text table.
pub fn render_table(c: &Comparison) -> String {
    let mut s = format!("test split: {}\n", c.test_split.describe());
    s.push_str(&format!(
        "{:<28} {:>9} {:>9} {:>7} {:>7} {:>7} {:>12} {:>10}  {}\n",
        "run", "accuracy", "macro-F1", "NLL", "Brier", "ECE", "trainable", "eval/s", "per-class F1"
    ));
    for r in &c.runs {
        let f1: Vec<String> = r
            .evaluation
            .per_class
            .iter()
            .zip(&r.class_names)
            .map(|(p, name)| format!("{name} {:.3}", p.f1))
            .collect();
        s.push_str(&format!(
            "{:<28} {:>8.2}% {:>9.4} {:>7.4} {:>7.4} {:>7.4} {:>12} {:>10.1}  {}\n",
            r.run,
            100.0 * r.evaluation.accuracy,
            r.evaluation.macro_f1,
            r.calibration.nll,
            r.calibration.brier,
            r.calibration.ece,
            r.trainable_params,
            r.eval_samples_per_s,
            f1.join(" ")
        ));
    }
    s.push_str(&render_serving(c));
    for p in &c.agreement {
        s.push_str(&format!(
            "agreement {} vs {}: {:.2}%\n",
            p.a,
            p.b,
            100.0 * p.agreement
        ));
    }
    for r in &c.runs {
        s.push_str(&format!(
            "confusion (rows true, columns predicted) {}:\n",
            r.run
        ));
        let width = r
            .class_names
            .iter()
            .map(|n| n.len())
            .max()
            .unwrap_or(1)
            .max(6);
        let head: Vec<String> = r
            .class_names
            .iter()
            .map(|n| format!("{n:>width$}"))
            .collect();
        s.push_str(&format!("  {:<width$}{}\n", "", head.join("")));
        for (row, name) in r.evaluation.confusion.iter().zip(&r.class_names) {
            let cells: Vec<String> = row.iter().map(|v| format!("{v:>width$}")).collect();
            s.push_str(&format!("  {name:<width$}{}\n", cells.join("")));
        }
    }
    s
}

/// The serving-cost table: one line per run, then what the timing ran on.
pub fn render_serving(c: &Comparison) -> String {
    let mut s = format!(
        "serving cost (LoRA merged; FLOPs at the mean test length, special tokens included):\n{:<28} {:>14} {:>10} {:>11} {:>11} {:>10} {:>10}\n",
        "run", "params@infer", "mean len", "GFLOPs/row", "rows/s @32", "p50 ms @1", "p99 ms @1"
    );
    for r in &c.runs {
        let v = &r.serving;
        let timed = |f: fn(&Timing) -> f64, digits: usize| {
            v.timing
                .as_ref()
                .map_or("–".into(), |t| format!("{:.digits$}", f(t)))
        };
        s.push_str(&format!(
            "{:<28} {:>14} {:>10.1} {:>11.3} {:>11} {:>10} {:>10}\n",
            r.run,
            v.params_at_inference,
            v.mean_tokens,
            v.flops_per_row / 1e9,
            timed(|t| t.rows_per_s, 1),
            timed(|t| t.latency_p50_ms, 2),
            timed(|t| t.latency_p99_ms, 2),
        ));
    }
    s.push_str(&format!("{}\n", measured_on(c)));
    s
}

/// One line on what the timing ran on (the runs of one comparison share device and dtype), or
/// that it was skipped.
pub fn measured_on(c: &Comparison) -> String {
    match c.runs.iter().find_map(|r| r.serving.timing.as_ref()) {
        Some(t) => format!(
            "timed on {} in {} ({}{}): rows/s over the {} test rows in length-sorted batches of {}, latency over {} rows one at a time",
            t.device,
            t.dtype,
            t.kernels,
            t.threads.map_or(String::new(), |n| format!(", {n} threads")),
            t.throughput_rows,
            t.batch_size,
            t.latency_rows
        ),
        None => "timing skipped (--no-timing)".into(),
    }
}

/// Writes the comparison JSON atomically.
pub fn save_json(c: &Comparison, path: &std::path::Path) -> Result<()> {
    write_json(path, c)
}
