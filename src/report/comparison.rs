//! Runs side by side: what `kd compare` prints and writes as JSON, and what `kd report` draws.
use crate::data::SplitFiles;
use crate::error::Result;
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

/// Writes the comparison JSON atomically.
pub fn save_json(c: &Comparison, path: &std::path::Path) -> Result<()> {
    write_json(path, c)
}
