//! `--int8`: compare and report add each run quantized beside its float self, predict and serve
//! run on it, and every int8 kernel gives the same predictions to the last bit (the products are
//! exact integer sums), so a CPU without AMX-INT8 or VNNI labels rows as one with them does.
mod common;
use common::world::{fails, kd, ok, World};

fn predict(w: &World, out: &str, extra: &[&str], envs: &[(&str, &str)]) -> String {
    let (s, test, out) = (w.p("s"), format!("{}/test.csv.gz", w.p("data")), w.p(out));
    let mut args = vec![
        "predict", &s, "--input", &test, "--output", &out, "--device", "cpu",
    ];
    args.extend_from_slice(extra);
    ok(kd(&args, envs));
    std::fs::read_to_string(out).unwrap()
}

#[test]
fn int8_runs_beside_float_and_every_kernel_labels_alike() {
    let w = World::new(64, 40);
    ok(w.teach("t", &["--max-steps", "3"]));
    ok(w.distill("t", "s", &["--max-steps", "3"]));

    // compare: each run twice, the int8 one named and timed as int8.
    let json = w.p("compare.json");
    let (t, s) = (w.p("t"), w.p("s"));
    let args = [
        "compare", &t, &s, "--int8", "--json", &json, "--device", "cpu",
    ];
    let table = ok(kd(&args, &[]));
    assert!(table.contains(&format!("{s} (int8)")), "{table}");
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = c["runs"].as_array().unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r["run"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            t.clone(),
            format!("{t} (int8)"),
            s.clone(),
            format!("{s} (int8)")
        ]
    );
    for (i, r) in runs.iter().enumerate() {
        let timing = &r["serving"]["timing"];
        let int8 = i % 2 == 1;
        assert_eq!(timing["dtype"] == "int8", int8, "{timing}");
        assert_eq!(
            timing["kernels"]
                .as_str()
                .unwrap()
                .contains("int8 products"),
            int8,
            "{timing}"
        );
        // The same exported model: the same parameters.
        assert_eq!(
            r["serving"]["params_at_inference"],
            runs[i - i % 2]["serving"]["params_at_inference"]
        );
    }

    // predict: rows labelled in int8 mostly as in f32, and identically on every kernel.
    let float = predict(&w, "f32.csv", &["--dtype", "f32"], &[]);
    let int8 = predict(&w, "int8.csv", &["--int8"], &[]);
    let portable = predict(
        &w,
        "portable.csv",
        &["--int8"],
        &[("KD_CPU_INT8", "portable")],
    );
    assert_eq!(
        int8, portable,
        "the portable kernel's predictions differ from the native one's"
    );
    let labels = |text: &str| -> Vec<String> {
        text.lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap().to_string())
            .collect()
    };
    let (lf, li) = (labels(&float), labels(&int8));
    assert_eq!(lf.len(), 40);
    let same = lf.iter().zip(&li).filter(|(a, b)| a == b).count();
    assert!(same >= 36, "int8 agrees with f32 on {same} of 40 rows");

    // --int8 picks the weights' precision itself: a --dtype beside it is refused.
    let refused = fails(kd(
        &[
            "predict",
            &s,
            "--input",
            &w.p("x.csv"),
            "--int8",
            "--dtype",
            "bf16",
        ],
        &[],
    ));
    assert!(
        refused.contains("--int8") && refused.contains("--dtype"),
        "{refused}"
    );
}
