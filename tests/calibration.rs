//! Calibration: compare reports NLL, Brier and ECE; --calibrate fits a temperature on the
//! validation rows that predict and compare then use.
mod common;

use common::world::{fails, kd, ok, summary, World};
use std::path::Path;

#[test]
fn calibrate_fits_a_temperature_that_predict_and_compare_use() {
    let w = World::new(120, 40);
    ok(w.teach("t", &["--calibrate", "--val-fraction", "0.25"]));
    let s = summary(Path::new(&w.p("t")));
    let t = s["calibrated_temperature"].as_f64().unwrap();
    assert!(t > 0.05 && t < 20.0, "{t}");
    for key in ["nll", "brier", "ece"] {
        assert!(s["test_calibration"][key].is_f64(), "{s}");
        assert!(s["test_calibration_before"][key].is_f64(), "{s}");
    }
    // Temperature scaling lowers (or keeps) the validation NLL it was fitted on; on test it is
    // reported before and after.
    let json = w.p("c.json");
    let out = ok(kd(
        &[
            "compare",
            &w.p("t"),
            "--data",
            &w.p("data"),
            "--device",
            "cpu",
            "--json",
            &json,
        ],
        &[],
    ));
    assert!(out.contains("NLL") && out.contains("ECE"), "{out}");
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(c["runs"][0]["calibrated_temperature"].as_f64(), Some(t));
    assert_eq!(c["runs"][0]["calibration"], s["test_calibration"]);
    // kd predict's probabilities are the softmax of logits / t.
    let predicted = w.predict("t", "\"nasa space chip\"\n", &[]);
    let line = predicted.lines().nth(1).unwrap().to_string();
    let v: Vec<f64> = line
        .split(',')
        .skip(3)
        .map(|x| x.parse().unwrap())
        .collect();
    let (logits, probs) = v.split_at(4);
    let z: Vec<f64> = logits.iter().map(|l| (l / t).exp()).collect();
    let sum: f64 = z.iter().sum();
    for (p, e) in probs.iter().zip(&z) {
        assert!((p - e / sum).abs() < 1e-4, "{line}");
    }
    let err = fails(w.teach("u", &["--calibrate", "--val-fraction", "0"]));
    assert!(err.contains("--calibrate"), "{err}");
}
