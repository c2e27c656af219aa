//! report.md drawn from made-up runs and sweeps: every linked picture exists, names reach them.
use super::*;
use crate::data::SplitFiles;
use crate::model::serving::{ServingCost, Timing};
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
        serving: serving(sharpness as f64),
    }
}

/// A made-up serving cost: the sharper run is the bigger, slower one.
fn serving(size: f64) -> ServingCost {
    ServingCost {
        params_at_inference: (1e6 * size) as usize,
        mean_tokens: 41.3,
        flops_per_row: 2e8 * size,
        flops_formula: "frozen_base_lora_v1".into(),
        timing: Some(Timing {
            rows_per_s: 3000.0 / size,
            batch_size: 32,
            throughput_rows: 200,
            latency_p50_ms: 1.5 * size,
            latency_p99_ms: 2.5 * size,
            latency_rows: 200,
            device: "cpu".into(),
            dtype: "f32".into(),
            kernels: "CPU: F32 products (AVX-512)".into(),
            threads: Some(2),
        }),
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
    assert_eq!(linked.len(), 2 + 1 + 2 + 2 + 2, "{md}");
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
    // The serving table, and both runs on the accuracy-against-rows/s picture.
    assert!(
        md.contains("| `runs/student` | 1500000 | 41.3 | 0.300 | 2000.0 | 2.25 | 3.75 |"),
        "{md}"
    );
    let pareto = std::fs::read_to_string(dir.join("accuracy-vs-rows-per-s.svg")).unwrap();
    assert!(pareto.contains("Pareto frontier") && pareto.contains("student"));
}

#[test]
fn slugs_are_file_name_safe() {
    assert_eq!(slug("runs/real/student kd"), "student_kd");
    assert_eq!(slug("teacher/"), "teacher");
    assert_eq!(slug("T2_a0.5_s0"), "T2_a0_5_s0");
}
