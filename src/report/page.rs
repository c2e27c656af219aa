//! report.md and the pictures beside it: the comparison's tables, training curves, a confusion
//! matrix and a reliability diagram per run, and a T × α heat map per sweep.
use super::charts::{save, HeatMap, LineChart, ReliabilityDiagram, Series};
use super::comparison::{Comparison, RunResult};
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
mod tests {
    use super::*;
    use crate::data::SplitFiles;
    use crate::report::comparison::PairAgreement;
    use crate::report::sweep::SweepPoint;
    use crate::training::calibration::{calibration, reliability};
    use crate::training::log::{LossPoint, ValidationPoint};
    use crate::training::metrics::{argmax_rows, evaluate};

    /// A run of 3 classes scored on 200 made-up rows, `temperature` as its calibration.
    fn run_result(name: &str, sharpness: f32, temperature: Option<f64>) -> RunResult {
        let labels: Vec<u32> = (0..200).map(|i| i % 3).collect();
        let logits: Vec<f32> = (0..200)
            .flat_map(|i| {
                let noise = ((i * 37 % 11) as f32 - 5.0) / 3.0;
                (0..3).map(move |c| {
                    if c == i % 3 {
                        sharpness + noise
                    } else {
                        noise * (c as f32 - 1.0)
                    }
                })
            })
            .collect();
        let t = temperature.unwrap_or(1.0);
        RunResult {
            run: name.into(),
            model: "tiny".into(),
            trainable_params: 1234,
            class_names: vec!["World".into(), "Sports".into(), "Sci/Tech".into()],
            eval_samples_per_s: 1.0,
            evaluation: evaluate(&argmax_rows(&logits, 3), &labels, 3),
            calibrated_temperature: temperature,
            calibration: calibration(&logits, &labels, 3, t),
            reliability: reliability(&logits, &labels, 3, t),
            reliability_uncalibrated: temperature.map(|_| reliability(&logits, &labels, 3, 1.0)),
        }
    }

    fn history(scale: f64) -> History {
        History {
            training: (1..=20)
                .map(|k| LossPoint {
                    step: 10 * k,
                    epoch: 1 + k / 10,
                    loss: scale / k as f64,
                })
                .collect(),
            validation: (1..=3)
                .map(|e| ValidationPoint {
                    step: 70 * e,
                    epoch: e,
                    loss: 0.5,
                    accuracy: 0.7 + 0.05 * e as f64,
                })
                .collect(),
        }
    }

    fn sweep() -> Sweep {
        let point = |t: Option<f64>, alpha: f64, acc: f64| SweepPoint {
            temperature: t,
            alpha,
            runs: vec![(0, acc, acc), (1, acc + 0.01, acc)],
            accuracy_mean: acc + 0.005,
            accuracy_sd: Some(0.007),
            macro_f1_mean: acc,
            macro_f1_sd: Some(0.0),
            vs_alpha0_mean: (alpha > 0.0).then_some(acc - 0.85),
            vs_alpha0_se: (alpha > 0.0).then_some(0.002),
        };
        let mut points = vec![point(None, 0.0, 0.85)];
        for (i, t) in [1.0, 2.0, 4.0].into_iter().enumerate() {
            points.push(point(Some(t), 0.5, 0.86 + 0.005 * i as f64));
            points.push(point(Some(t), 0.9, 0.855 + 0.004 * i as f64));
        }
        Sweep { points, trained: 7 }
    }

    #[test]
    fn a_report_draws_every_picture_it_links() {
        let tmp = tempfile::tempdir().unwrap();
        // KD_KEEP_REPORT=DIR keeps the pictures for a person to look at.
        let dir = std::env::var_os("KD_KEEP_REPORT").map_or(tmp.path().to_path_buf(), Into::into);
        std::fs::create_dir_all(&dir).unwrap();
        let c = Comparison {
            test_split: SplitFiles::single(Path::new("data/test.csv")),
            runs: vec![
                run_result("runs/teacher", 3.0, Some(1.7)),
                run_result("runs/student", 1.5, None),
            ],
            agreement: vec![PairAgreement {
                a: "runs/teacher".into(),
                b: "runs/student".into(),
                agreement: 0.9,
            }],
        };
        let s = sweep();
        // One temperature: a single-column heat map.
        let mut one = sweep();
        one.points
            .retain(|p| p.temperature.is_none_or(|t| t == 2.0));
        let report = Report {
            comparison: Some(&c),
            histories: vec![Some(history(1.0)), Some(history(1.4))],
            sweeps: vec![("runs/sweep".into(), &s), ("runs/one".into(), &one)],
        };
        write(&report, &dir).unwrap();
        let md = std::fs::read_to_string(dir.join(REPORT_MD)).unwrap();
        let linked: Vec<&str> = md
            .split("](")
            .skip(1)
            .map(|rest| &rest[..rest.find(')').unwrap()])
            .collect();
        assert_eq!(linked.len(), 2 + 2 + 2 + 2, "{md}");
        for svg in linked {
            let text = std::fs::read_to_string(dir.join(svg)).unwrap();
            assert!(text.starts_with("<svg"), "{svg}");
            let png = std::fs::read(dir.join(svg).with_extension("png")).unwrap();
            assert_eq!(&png[1..4], b"PNG", "{svg}");
        }
        // Names reach the pictures and the tables.
        let confusion = std::fs::read_to_string(dir.join("confusion-1-teacher.svg")).unwrap();
        assert!(confusion.contains("Sci/Tech") && confusion.contains("predicted class"));
        let reliability = std::fs::read_to_string(dir.join("reliability-1-teacher.svg")).unwrap();
        assert!(reliability.contains("after: T = 1.700") && reliability.contains("before: T = 1"));
        assert!(md.contains("| Sci/Tech |") && md.contains("| 1.700 |"));
        assert!(
            md.contains("| 2 | 0.5 |"),
            "the sweep table is in the report: {md}"
        );
    }

    #[test]
    fn slugs_are_file_name_safe() {
        assert_eq!(slug("runs/real/student kd"), "student_kd");
        assert_eq!(slug("teacher/"), "teacher");
        assert_eq!(slug("T2_a0.5_s0"), "T2_a0_5_s0");
    }
}
