//! A sweep's results: sweep.json (written by `kd sweep`, read by `kd report`) and sweep.md.
use crate::error::{KdError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The summary file of a sweep folder.
pub const SWEEP_JSON: &str = "sweep.json";

/// One (T, α) over the seeds.
#[derive(Debug, Serialize, Deserialize)]
pub struct SweepPoint {
    pub temperature: Option<f64>,
    pub alpha: f64,
    /// Per seed: (seed, test accuracy, macro-F1).
    pub runs: Vec<(u64, f64, f64)>,
    pub accuracy_mean: f64,
    /// Sample standard deviations over seeds (None with one seed).
    pub accuracy_sd: Option<f64>,
    pub macro_f1_mean: f64,
    pub macro_f1_sd: Option<f64>,
    /// Mean over seeds of (this point − α=0 with the same seed), test accuracy, and its
    /// standard error (None for α = 0 itself, or without an α = 0 point).
    pub vs_alpha0_mean: Option<f64>,
    pub vs_alpha0_se: Option<f64>,
}

/// The whole sweep, as written to sweep.json.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sweep {
    pub points: Vec<SweepPoint>,
    /// Points trained by this invocation (the others were already finished).
    pub trained: usize,
}

/// sweep.md: one row per (T, α).
pub fn render(s: &Sweep) -> String {
    let mut md = String::from(
        "| T | α | test accuracy (mean ± sd) | macro-F1 (mean ± sd) | − α=0, paired (mean ± se) | seeds |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for p in &s.points {
        let t = p.temperature.map_or("–".to_string(), |t| t.to_string());
        let pm = |v: Option<f64>, scale: f64, digits: usize| {
            v.map_or(" ± n/a".to_string(), |v| {
                format!(" ± {:.*}", digits, scale * v)
            })
        };
        let vs = match p.vs_alpha0_mean {
            Some(m) => format!("{:+.2}{} pt", 100.0 * m, pm(p.vs_alpha0_se, 100.0, 2)),
            None => "–".into(),
        };
        md.push_str(&format!(
            "| {t} | {} | {:.2}{}% | {:.4}{} | {vs} | {} |\n",
            p.alpha,
            100.0 * p.accuracy_mean,
            pm(p.accuracy_sd, 100.0, 2),
            p.macro_f1_mean,
            pm(p.macro_f1_sd, 1.0, 4),
            p.runs.len()
        ));
    }
    md
}

/// Reads DIR/sweep.json.
pub fn read(dir: &Path) -> Result<Sweep> {
    let path = dir.join(SWEEP_JSON);
    let text = std::fs::read_to_string(&path).map_err(|e| KdError::io(&path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| KdError::bad_file(&path, format!("not a kd sweep summary: {e}")))
}
