//! The serving cost `kd compare` reports: parameters at inference equal what `kd export` writes
//! (LoRA merged), FLOPs per row follow the formula at the mean test length, and rows/s and
//! latency are measured unless `--no-timing`.
mod common;
use common::world::{kd, ok, World};
use common::TINY;
use std::path::Path;

/// The element count of every tensor in an exported model.safetensors.
fn exported_elements(dir: &Path) -> usize {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .iter()
        .map(|(_, t)| t.shape().iter().product::<usize>())
        .sum()
}

fn compare(w: &World, extra: &[&str]) -> (String, serde_json::Value) {
    let json = w.p("compare.json");
    let (t, s) = (w.p("t"), w.p("s"));
    let mut args = vec!["compare", &t, &s, "--json", &json, "--device", "cpu"];
    args.extend_from_slice(extra);
    let table = ok(kd(&args, &[]));
    let c = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (table, c)
}

#[test]
fn compare_reports_what_each_run_costs_to_serve() {
    let w = World::new(64, 24);
    ok(w.teach("t", &["--max-steps", "2"]));
    ok(w.distill("t", "s", &["--max-steps", "2"]));
    let (table, c) = compare(&w, &[]);
    for column in [
        "params@infer",
        "GFLOPs/row",
        "rows/s @32",
        "p50 ms @1",
        "p99 ms @1",
    ] {
        assert!(table.contains(column), "{column} in {table}");
    }
    assert!(table.contains("timed on cpu in "), "{table}");

    // RoBERTa (its checkpoint's pooler dropped) and BERT (its trained pooler replacing the
    // checkpoint's): the count is the exported file's, LoRA merged into the base weights.
    for (i, run) in ["t", "s"].into_iter().enumerate() {
        let out = w.p(&format!("{run}-hf"));
        ok(kd(&["export", &w.p(run), "--out", &out], &[]));
        let serving = &c["runs"][i]["serving"];
        assert_eq!(
            serving["params_at_inference"].as_u64().unwrap() as usize,
            exported_elements(Path::new(&out)),
            "{run}: {serving}"
        );
        // FLOPs/row = 2·N·L + 4·layers·H·L² at the mean length L (special tokens included).
        let mean = serving["mean_tokens"].as_f64().unwrap();
        assert!(mean > 2.0 && mean <= 32.0, "{mean}");
        let (h, f, layers) = (TINY.hidden as f64, TINY.ffn as f64, TINY.layers as f64);
        let l = mean.round();
        let n = layers * (4.0 * h * h + 2.0 * h * f);
        let expected = 2.0 * n * l + 4.0 * layers * h * l * l;
        assert_eq!(serving["flops_per_row"].as_f64().unwrap(), expected);

        let timing = &serving["timing"];
        assert!(timing["rows_per_s"].as_f64().unwrap() > 0.0, "{timing}");
        let (p50, p99) = (
            timing["latency_p50_ms"].as_f64().unwrap(),
            timing["latency_p99_ms"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p99, "{timing}");
        assert_eq!(timing["latency_rows"], 24);
        assert_eq!(timing["batch_size"], 32);
        assert!(timing["kernels"].as_str().unwrap().starts_with("CPU"));
    }
    // Each run is counted on its own checkpoint (the tiny BERT and RoBERTa differ in vocabulary).
    assert_ne!(
        c["runs"][0]["serving"]["params_at_inference"],
        c["runs"][1]["serving"]["params_at_inference"]
    );

    // --no-timing: parameters and FLOPs still, no timing, and the table says so.
    let (table, quick) = compare(&w, &["--no-timing"]);
    assert!(table.contains("timing skipped (--no-timing)"), "{table}");
    for i in 0..2 {
        let (a, b) = (&c["runs"][i]["serving"], &quick["runs"][i]["serving"]);
        assert!(b.get("timing").is_none(), "{b}");
        assert_eq!(a["params_at_inference"], b["params_at_inference"]);
        assert_eq!(a["flops_per_row"], b["flops_per_row"]);
    }

    // A PEFT adapter on its base model costs what the run does.
    let json = w.p("adapter.json");
    let (s, bert, data) = (w.p("s"), w.p("bert"), w.p("data"));
    ok(kd(
        &[
            "compare",
            "--adapter",
            &s,
            "--model",
            &bert,
            "--data",
            &data,
            "--json",
            &json,
            "--max-len",
            "32",
            "--no-timing",
            "--device",
            "cpu",
        ],
        &[],
    ));
    let a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        a["runs"][0]["serving"]["params_at_inference"],
        c["runs"][1]["serving"]["params_at_inference"]
    );
    assert_eq!(
        a["runs"][0]["serving"]["mean_tokens"],
        c["runs"][1]["serving"]["mean_tokens"]
    );
}
