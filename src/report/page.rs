//! report.md and the pictures beside it: the comparison's tables, training curves, a confusion
//! matrix and a reliability diagram per run, and a T × α heat map per sweep.
use super::charts::{save, HeatMap, LineChart, ReliabilityDiagram, Series};
use super::comparison::{Comparison, RunResult};
use super::pareto::serving_section;
use super::sweep::{heat_map, render, Sweep};
use crate::error::{KdError, Result};
use crate::training::calibration::expected_calibration_error;
use crate::training::log::History;
use std::fmt::Write;
use std::path::Path;

/// The report's name inside its folder.
pub const REPORT_MD: &str = "report.md";
/// report.md's first line: how kd knows a report folder it may replace.
pub const TITLE: &str = "# kd report\n";

/// What one report shows.
pub struct Report<'a> {
    /// The runs evaluated side by side on one test split.
    pub comparison: Option<&'a Comparison>,
    /// Per run of the comparison, in its order: what its metrics.jsonl recorded.
    pub histories: Vec<Option<History>>,
    /// (folder as named, summary) per sweep.
    pub sweeps: Vec<(String, &'a Sweep)>,
}

/// Writes report.md and its pictures into `dir`.
pub fn write(r: &Report, dir: &Path) -> Result<()> {
    let mut md = format!(
        "{TITLE}\nEach picture is an SVG (shown here) with a PNG of the same name beside it.\n\n"
    );
    if let Some(c) = r.comparison {
        comparison_section(c, &r.histories, dir, &mut md)?;
    }
    for (i, (name, sweep)) in r.sweeps.iter().enumerate() {
        let stem = format!("sweep-{}-{}", i + 1, slug(name));
        save(&heat_map(name, sweep), &dir.join(&stem))?;
        let _ = write!(md, "## Sweep `{name}`\n\n{}\n", render(sweep));
        if sweep.points.iter().any(|p| p.alpha == 0.0) {
            md.push_str("α = 0 trains on the labels alone (T plays no part), so its one value fills its row.\n\n");
        }
        let _ = write!(md, "![test accuracy over T and α]({stem}.svg)\n\n");
    }
    let path = dir.join(REPORT_MD);
    std::fs::write(&path, md).map_err(|e| KdError::io(&path, e))
}

fn comparison_section(
    c: &Comparison,
    histories: &[Option<History>],
    dir: &Path,
    md: &mut String,
) -> Result<()> {
    let rows = c.runs.first().map_or(0, |r| r.evaluation.rows);
    let _ = writeln!(
        md,
        "Test split: `{}` ({rows} rows).\n\n## Runs\n",
        c.test_split.describe()
    );
    md.push_str(
        "| run | model | trainable | accuracy | macro-F1 | NLL | Brier | ECE | calibrated T |\n",
    );
    md.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for r in &c.runs {
        let _ = writeln!(
            md,
            "| `{}` | `{}` | {} | {:.2}% | {:.4} | {:.4} | {:.4} | {:.2}% | {} |",
            r.run,
            r.model,
            r.trainable_params,
            100.0 * r.evaluation.accuracy,
            r.evaluation.macro_f1,
            r.calibration.nll,
            r.calibration.brier,
            100.0 * r.calibration.ece,
            r.calibrated_temperature
                .map_or("–".to_string(), |t| format!("{t:.3}"))
        );
    }
    per_class_table(c, md);
    for p in &c.agreement {
        let _ = writeln!(
            md,
            "- `{}` and `{}` predict the same class on {:.2}% of the rows.",
            p.a,
            p.b,
            100.0 * p.agreement
        );
    }
    md.push('\n');
    serving_section(c, dir, md)?;
    training_curves(c, histories, dir, md)?;
    md.push_str("## Confusion matrices\n\nRows: true class; columns: predicted class; the shade is the share of the row.\n\n");
    for (i, r) in c.runs.iter().enumerate() {
        let stem = format!("confusion-{}-{}", i + 1, slug(&r.run));
        save(&confusion(r), &dir.join(&stem))?;
        let _ = writeln!(md, "![confusion matrix of {}]({stem}.svg)\n", r.run);
    }
    md.push_str("## Calibration\n\nAccuracy against confidence in 15 equal-width bins of the top probability; the diagonal is perfect calibration, grey bars the share of rows per bin.\n\n");
    for (i, r) in c.runs.iter().enumerate() {
        let stem = format!("reliability-{}-{}", i + 1, slug(&r.run));
        save(&reliability(r), &dir.join(&stem))?;
        let _ = writeln!(md, "![reliability diagram of {}]({stem}.svg)\n", r.run);
    }
    Ok(())
}

fn per_class_table(c: &Comparison, md: &mut String) {
    let Some(first) = c.runs.first() else { return };
    md.push_str("\n### F1 per class\n\n| class |");
    for r in &c.runs {
        let _ = write!(md, " `{}` |", r.run);
    }
    md.push_str("\n| --- |");
    md.push_str(&" ---: |".repeat(c.runs.len()));
    md.push('\n');
    // Classes are matched by name: runs need not list them in one order.
    for name in &first.class_names {
        let _ = write!(md, "| {name} |");
        for r in &c.runs {
            match r.class_names.iter().position(|n| n == name) {
                Some(k) => {
                    let _ = write!(md, " {:.4} |", r.evaluation.per_class[k].f1);
                }
                None => md.push_str(" – |"),
            }
        }
        md.push('\n');
    }
    md.push('\n');
}

fn training_curves(
    c: &Comparison,
    histories: &[Option<History>],
    dir: &Path,
    md: &mut String,
) -> Result<()> {
    // One line per run that recorded points of the kind `points` picks.
    let series = |points: &dyn Fn(&History) -> Vec<(f64, f64)>| -> Vec<Series> {
        c.runs
            .iter()
            .zip(histories)
            .filter_map(|(r, h)| Some((&r.run, points(h.as_ref()?))))
            .filter(|(_, p)| !p.is_empty())
            .map(|(name, points)| Series {
                name: name.clone(),
                points,
            })
            .collect()
    };
    let charts = [
        (
            "training-loss",
            "training loss",
            LineChart {
                title: "training loss (mean since the previous record)".into(),
                whole_x: true,
                x_label: "step".into(),
                y_label: "loss".into(),
                series: series(&|h| h.training.iter().map(|p| (p.step as f64, p.loss)).collect()),
            },
        ),
        (
            "validation-accuracy",
            "validation accuracy",
            LineChart {
                title: "validation accuracy after each epoch".into(),
                whole_x: true,
                x_label: "epoch".into(),
                y_label: "accuracy (%)".into(),
                series: series(&|h| {
                    let epochs = h.validation.iter();
                    epochs
                        .map(|p| (p.epoch as f64, 100.0 * p.accuracy))
                        .collect()
                }),
            },
        ),
    ];
    if charts.iter().all(|(_, _, chart)| chart.series.is_empty()) {
        return Ok(());
    }
    md.push_str("## Training\n\n");
    for (stem, alt, chart) in charts.iter().filter(|(_, _, c)| !c.series.is_empty()) {
        save(chart, &dir.join(stem))?;
        let _ = write!(md, "![{alt}]({stem}.svg)\n\n");
    }
    Ok(())
}

fn confusion(r: &RunResult) -> HeatMap {
    let m = &r.evaluation.confusion;
    HeatMap {
        title: format!("{}: {:.2}% right", r.run, 100.0 * r.evaluation.accuracy),
        x_label: "predicted class".into(),
        y_label: "true class".into(),
        columns: r.class_names.clone(),
        rows: r.class_names.clone(),
        shade: m
            .iter()
            .map(|row| {
                let total = row.iter().sum::<usize>().max(1) as f64;
                row.iter().map(|&v| v as f64 / total).collect()
            })
            .collect(),
        text: m
            .iter()
            .map(|row| row.iter().map(|v| v.to_string()).collect())
            .collect(),
    }
}

fn reliability(r: &RunResult) -> ReliabilityDiagram {
    let ece = |bins| 100.0 * expected_calibration_error(bins);
    let series = match (&r.reliability_uncalibrated, r.calibrated_temperature) {
        (Some(before), Some(t)) => vec![
            (
                format!("before: T = 1, ECE {:.2}%", ece(before)),
                before.clone(),
            ),
            (
                format!("after: T = {t:.3}, ECE {:.2}%", ece(&r.reliability)),
                r.reliability.clone(),
            ),
        ],
        _ => vec![(
            format!("ECE {:.2}%", ece(&r.reliability)),
            r.reliability.clone(),
        )],
    };
    ReliabilityDiagram {
        title: format!("reliability: {}", r.run),
        series,
    }
}

/// A file-name-safe form of a run's folder name (its last component).
fn slug(run: &str) -> String {
    let last = Path::new(run)
        .file_name()
        .map_or(run.to_string(), |n| n.to_string_lossy().into_owned());
    let s: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "run".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests;
