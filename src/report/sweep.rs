//! A sweep's results: sweep.json (written by `kd sweep`, read by `kd report`) and sweep.md.
use super::charts::HeatMap;
use crate::error::{KdError, Result};
use crate::run::Summary;
use crate::training::metrics::{mean, sample_sd};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The summary file of a sweep folder.
pub const SWEEP_JSON: &str = "sweep.json";

/// One (T, α) over the seeds.
#[derive(Debug, Serialize, Deserialize)]
pub struct SweepPoint {
    pub temperature: Option<f64>,
    pub alpha: f64,
    /// Per seed: (seed, test accuracy, macro-F1); NaN without a test split (null in the JSON).
    #[serde(deserialize_with = "runs_nan_if_null")]
    pub runs: Vec<(u64, f64, f64)>,
    #[serde(deserialize_with = "nan_if_null")]
    pub accuracy_mean: f64,
    /// Sample standard deviations over seeds (None with one seed).
    pub accuracy_sd: Option<f64>,
    #[serde(deserialize_with = "nan_if_null")]
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

/// One grid point's settings: (T, None where α = 0 makes it meaningless; α).
pub type GridPoint = (Option<f64>, f64);

impl Sweep {
    /// Summarises the runs of every grid point (`results[k][i]`: point k, seed i): mean and
    /// sample sd over seeds, and the paired difference against the α = 0 point of the same seed.
    pub fn summarise(
        grid: &[GridPoint],
        seeds: &[u64],
        results: &[Vec<Summary>],
        trained: usize,
    ) -> Self {
        let alpha0 = grid.iter().position(|&(_, a)| a == 0.0);
        let accuracy = |s: &Summary| s.test_accuracy.unwrap_or(f64::NAN);
        let summarise = |k: usize| -> SweepPoint {
            let (t, alpha) = grid[k];
            let acc: Vec<f64> = results[k].iter().map(accuracy).collect();
            let f1: Vec<f64> = results[k]
                .iter()
                .map(|s| s.test_macro_f1.unwrap_or(f64::NAN))
                .collect();
            let paired = alpha0.filter(|&z| z != k).map(|z| {
                let d: Vec<f64> = acc
                    .iter()
                    .zip(&results[z])
                    .map(|(a, s0)| a - accuracy(s0))
                    .collect();
                (mean(&d), spread(&d).map(|s| s / (d.len() as f64).sqrt()))
            });
            SweepPoint {
                temperature: t,
                alpha,
                runs: seeds
                    .iter()
                    .zip(acc.iter().zip(&f1))
                    .map(|(&s, (&a, &f))| (s, a, f))
                    .collect(),
                accuracy_mean: mean(&acc),
                accuracy_sd: spread(&acc),
                macro_f1_mean: mean(&f1),
                macro_f1_sd: spread(&f1),
                vs_alpha0_mean: paired.map(|p| p.0),
                vs_alpha0_se: paired.and_then(|p| p.1),
            }
        };
        Sweep {
            points: (0..grid.len()).map(summarise).collect(),
            trained,
        }
    }
}

/// The sample standard deviation, or None for fewer than two values (one seed has no spread).
fn spread(v: &[f64]) -> Option<f64> {
    (v.len() > 1).then(|| sample_sd(v))
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

/// JSON writes NaN as null; read it back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn runs_nan_if_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<(u64, f64, f64)>, D::Error> {
    let runs = Vec::<(u64, Option<f64>, Option<f64>)>::deserialize(d)?;
    let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
    Ok(runs
        .into_iter()
        .map(|(s, a, f)| (s, nan(a), nan(f)))
        .collect())
}

/// Test accuracy (mean over seeds) per T (columns) and α (rows, largest first); α = 0 takes no
/// T, so its one value fills its row.
pub fn heat_map(name: &str, s: &Sweep) -> HeatMap {
    let mut temperatures: Vec<f64> = s.points.iter().filter_map(|p| p.temperature).collect();
    temperatures.sort_by(f64::total_cmp);
    temperatures.dedup();
    let mut alphas: Vec<f64> = s.points.iter().map(|p| p.alpha).collect();
    alphas.sort_by(|a, b| b.total_cmp(a));
    alphas.dedup();
    // A sweep of α = 0 alone has no temperature: one column for "any".
    let columns: Vec<Option<f64>> = if temperatures.is_empty() {
        vec![None]
    } else {
        temperatures.iter().copied().map(Some).collect()
    };
    let value = |alpha: f64, t: Option<f64>| {
        s.points
            .iter()
            .find(|p| p.alpha == alpha && (p.temperature.is_none() || p.temperature == t))
            .map(|p| 100.0 * p.accuracy_mean)
            .filter(|v| v.is_finite())
    };
    let grid: Vec<Vec<Option<f64>>> = alphas
        .iter()
        .map(|&a| columns.iter().map(|&t| value(a, t)).collect())
        .collect();
    let known = grid.iter().flatten().flatten();
    let lo = known.clone().fold(f64::INFINITY, |m, &v| m.min(v));
    let hi = known.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let seeds = s.points.iter().map(|p| p.runs.len()).max().unwrap_or(0);
    HeatMap {
        title: format!(
            "{name}: test accuracy (%), mean over {seeds} seed{}",
            if seeds == 1 { "" } else { "s" }
        ),
        x_label: "temperature T".into(),
        y_label: "α (weight of the KD term)".into(),
        columns: columns
            .iter()
            .map(|t| t.map_or("any".into(), |t| format!("{t}")))
            .collect(),
        rows: alphas.iter().map(|a| format!("α = {a}")).collect(),
        shade: grid
            .iter()
            .map(|row| {
                row.iter()
                    .map(|v| v.map_or(0.0, |v| 0.15 + 0.7 * (v - lo) / (hi - lo).max(1e-9)))
                    .collect()
            })
            .collect(),
        text: grid
            .iter()
            .map(|row| {
                row.iter()
                    .map(|v| v.map_or("–".into(), |v| format!("{v:.2}")))
                    .collect()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_without_test_scores_reads_back_as_nan() {
        let json = r#"{"points": [{"temperature": null, "alpha": 0.0, "runs": [[1, null, null]],
            "accuracy_mean": null, "accuracy_sd": null, "macro_f1_mean": null,
            "macro_f1_sd": null, "vs_alpha0_mean": null, "vs_alpha0_se": null}], "trained": 1}"#;
        let s: Sweep = serde_json::from_str(json).unwrap();
        assert!(s.points[0].accuracy_mean.is_nan() && s.points[0].runs[0].1.is_nan());
        let map = heat_map("sw", &s);
        assert_eq!(
            (map.columns, map.text),
            (vec!["any".to_string()], vec![vec!["–".to_string()]])
        );
    }
}
