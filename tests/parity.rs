//! Exactness against Hugging Face transformers + PEFT: fixtures written by
//! tests/fixtures/make_parity.py (committed; CI never runs Python) are loaded through kd's own
//! loaders and every number is compared: token ids, logits, losses, gradients, and the tensors
//! after three AdamW steps with warmup + cosine and gradient clipping.
//!
//! Where kd differs from HF on purpose: dropout masks come from kd's own seeded RNG, so the
//! fixtures are taken in eval mode (no dropout) and training-mode outputs are not compared.
mod common;

use candle_core::{DType, Device, Tensor};
use common::max_abs_diff;
use kd::data::Batcher;
use kd::model::head::Pooler;
use kd::model::params::trainable_count;
use kd::model::{Checkpoint, EncoderConfig, LoraSpec, TargetModules};
use kd::run::load_adapter;
use kd::training::loss::{cross_entropy, distillation};
use kd::training::optimizer::{AdamW, AdamWConfig};
use kd::training::schedule::warmup_cosine;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const TOL: f32 = 1e-5;
const CASES: [&str; 4] = ["roberta_qv", "roberta_targeted", "bert_qv", "bert_targeted"];

fn fixture_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(case)
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    let d = max_abs_diff(got, want);
    assert!(d <= TOL, "{what}: max |kd − PEFT| = {d:e} > {TOL:e}");
}

struct Fixture {
    dir: PathBuf,
    meta: serde_json::Value,
    expected: HashMap<String, Tensor>,
}

fn load_fixture(case: &str) -> Fixture {
    let dir = fixture_dir(case);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let expected =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    Fixture {
        dir,
        meta,
        expected,
    }
}

/// Tokenizes the fixture's texts with kd's tokenizer and batcher and checks the ids and mask.
fn kd_batch(f: &Fixture, loaded: &kd::run::LoadedModel) -> kd::data::Batch {
    let texts: Vec<&str> = f.meta["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let labels: Vec<Option<u32>> = f.meta["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| Some(l.as_u64().unwrap() as u32))
        .collect();
    let ids = loaded.tokenizer.encode_all(&texts).unwrap();
    let batcher = Batcher::new(ids, labels, loaded.checkpoint.config.pad_id());
    let rows: Vec<usize> = (0..texts.len()).collect();
    let batch = batcher.batch(&rows);
    let want_ids: Vec<i64> = f.expected["input_ids"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want_mask: Vec<i64> = f.expected["attention_mask"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let got_ids: Vec<i64> = batch.input_ids.iter().map(|&v| v as i64).collect();
    let got_mask: Vec<i64> = batch.attention_mask.iter().map(|&v| v as i64).collect();
    assert_eq!(got_ids, want_ids, "token ids differ from HF's tokenizer");
    assert_eq!(got_mask, want_mask, "attention mask differs");
    batch
}

fn check_case(case: &str) {
    let f = load_fixture(case);
    let model_dir = f.dir.join("model");
    let max_len = f.meta["max_len"].as_u64().unwrap() as usize;
    // The adapter folder exactly as PEFT saved it, through kd's loader.
    let loaded = load_adapter(
        &f.dir.join("adapter"),
        Some(model_dir.to_str().unwrap()),
        &Device::Cpu,
        DType::F32,
        max_len,
    )
    .unwrap();
    let model = &loaded.model;
    // BERT cases: the pooler trains (bert_qv) or stays frozen (bert_targeted), as PEFT's
    // modules_to_save says.
    if let Some(pooler) = f.meta["pooler"].as_str() {
        let want: Pooler = serde_json::from_value(pooler.into()).unwrap();
        assert_eq!(model.lora().pooler, want, "{case}: pooler");
        let trains_pooler = model
            .trainable()
            .iter()
            .any(|nv| nv.name.contains(".pooler."));
        assert_eq!(trains_pooler, want == Pooler::Trainable, "{case}");
    }
    assert_eq!(
        model.trainable_count() as u64,
        f.meta["trainable_params"].as_u64().unwrap(),
        "{case}: trainable parameter count"
    );
    let batch = kd_batch(&f, &loaded);

    let logits = model.forward(&batch, None).unwrap();
    assert_close(&format!("{case} logits"), &logits, &f.expected["logits"]);

    let labels = Tensor::from_slice(&batch.labels, batch.batch_size, &Device::Cpu).unwrap();
    let teacher = &f.expected["teacher_logits"];
    let (t, alpha, ls) = (
        f.meta["temperature"].as_f64().unwrap(),
        f.meta["alpha"].as_f64().unwrap(),
        f.meta["label_smoothing"].as_f64().unwrap(),
    );
    let ce = cross_entropy(&logits, &labels, ls).unwrap();
    assert_close(&format!("{case} CE loss"), &ce, &f.expected["loss_ce"]);
    let kd_loss = distillation(&logits, teacher, &labels, t, alpha, ls).unwrap();
    assert_close(&format!("{case} KD loss"), &kd_loss, &f.expected["loss_kd"]);

    let grads = kd_loss.backward().unwrap();
    for nv in model.trainable() {
        let g = grads
            .get(nv.var.as_tensor())
            .unwrap_or_else(|| panic!("{case}: no gradient for {}", nv.name));
        assert_close(
            &format!("{case} grad {}", nv.name),
            g,
            &f.expected[&format!("grad.{}", nv.name)],
        );
    }

    // Three AdamW steps with PEFT's parameter groups, warmup + cosine, clipping.
    let m = &f.meta;
    let mut opt = AdamW::new(
        model.trainable(),
        AdamWConfig {
            beta1: m["betas"][0].as_f64().unwrap(),
            beta2: m["betas"][1].as_f64().unwrap(),
            eps: m["eps"].as_f64().unwrap(),
            weight_decay: m["weight_decay"].as_f64().unwrap(),
        },
    )
    .unwrap();
    let (warmup, total) = (
        m["warmup_steps"].as_u64().unwrap() as usize,
        m["total_steps"].as_u64().unwrap() as usize,
    );
    let lr = m["lr"].as_f64().unwrap();
    for step in 0..m["steps_taken"].as_u64().unwrap() as usize {
        let want_lr = m["lrs"][step].as_f64().unwrap();
        let got_lr = lr * warmup_cosine(step, warmup, total);
        assert!(
            (got_lr - want_lr).abs() < 1e-12,
            "{case}: lr at step {step}: {got_lr} vs {want_lr}"
        );
        let logits = model.forward(&batch, None).unwrap();
        let loss = distillation(&logits, teacher, &labels, t, alpha, ls).unwrap();
        let mut grads = loss.backward().unwrap();
        let norm = opt
            .clip_grad_norm(&mut grads, m["max_grad_norm"].as_f64().unwrap())
            .unwrap();
        let want_norm = m["grad_norms"][step].as_f64().unwrap();
        assert!(
            (norm - want_norm).abs() < 1e-4,
            "{case}: grad norm at step {step}: {norm} vs {want_norm}"
        );
        opt.step(&grads, got_lr).unwrap();
    }
    for nv in model.trainable() {
        assert_close(
            &format!("{case} after 3 steps {}", nv.name),
            nv.var.as_tensor(),
            &f.expected[&format!("step.{}", nv.name)],
        );
    }

    // Round trip: kd writes its adapter in PEFT's layout; PEFT loaded it (make_parity.py
    // --roundtrip) and its logits were committed. They must equal kd's own.
    let out = tempfile::tempdir().unwrap();
    kd::model::adapter::save(model, model_dir.to_str().unwrap(), out.path(), None).unwrap();
    if std::env::var("KD_WRITE_ROUNDTRIP").is_ok_and(|v| v == "1") {
        let dest = f.dir.join("kd_adapter");
        std::fs::create_dir_all(&dest).unwrap();
        for name in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(out.path().join(name), dest.join(name)).unwrap();
        }
    }
    let reloaded = load_adapter(
        out.path(),
        Some(model_dir.to_str().unwrap()),
        &Device::Cpu,
        DType::F32,
        max_len,
    )
    .unwrap();
    let kd_logits = model.forward(&batch, None).unwrap();
    let again = reloaded.model.forward(&batch, None).unwrap();
    assert_eq!(
        max_abs_diff(&kd_logits, &again),
        0.0,
        "{case}: kd's adapter does not reload exactly"
    );
    // Export: the same model as a plain transformers folder (LoRA merged, the architecture's own
    // head); make_parity.py --roundtrip loaded it with AutoModelForSequenceClassification.
    let exported = out.path().join("export");
    kd::model::export::export(model, &loaded.checkpoint, None, &exported).unwrap();
    if std::env::var("KD_WRITE_ROUNDTRIP").is_ok_and(|v| v == "1") {
        let dest = f.dir.join("kd_export");
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::create_dir_all(&dest).unwrap();
        for e in std::fs::read_dir(&exported).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
        }
    }
    let hf = candle_core::safetensors::load(f.dir.join("kd_export.safetensors"), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{case}: no kd_export.safetensors ({e}); run KD_WRITE_ROUNDTRIP=1 cargo test --test parity, then make_parity.py --roundtrip"));
    let d = max_abs_diff(&kd_logits, &hf["logits"]);
    assert!(
        d <= 1e-4,
        "{case}: transformers' logits of kd's export differ by {d:e}"
    );

    let peft = candle_core::safetensors::load(f.dir.join("kd_roundtrip.safetensors"), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{case}: no kd_roundtrip.safetensors ({e}); run KD_WRITE_ROUNDTRIP=1 cargo test --test parity, then make_parity.py --roundtrip"));
    assert_close(
        &format!("{case} PEFT logits of kd's adapter"),
        &kd_logits,
        &peft["logits"],
    );
}

#[test]
fn roberta_query_value_matches_peft() {
    check_case(CASES[0]);
}

#[test]
fn roberta_targeted_layers_match_peft() {
    check_case(CASES[1]);
}

#[test]
fn bert_query_value_matches_peft() {
    check_case(CASES[2]);
}

#[test]
fn bert_targeted_layers_match_peft() {
    check_case(CASES[3]);
}

/// PEFT's counts for the real roberta-base config, from config.json alone.
#[test]
fn trainable_counts_match_peft_for_roberta_base() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity/param_counts.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut config: serde_json::Value = doc["config"].clone();
    config["model_type"] = "roberta".into();
    let cfg: EncoderConfig = serde_json::from_value(config).unwrap();
    let labels = doc["config"]["num_labels"].as_u64().unwrap_or(4) as usize;
    let mut seen = Vec::new();
    for case in doc["cases"].as_array().unwrap() {
        let targets: Vec<String> = serde_json::from_value(case["target_modules"].clone()).unwrap();
        let spec = LoraSpec {
            r: case["r"].as_u64().unwrap() as usize,
            alpha: case["lora_alpha"].as_f64().unwrap(),
            dropout: 0.1,
            targets: TargetModules::Suffixes(targets),
            layers: serde_json::from_value(case["layers_to_transform"].clone()).unwrap(),
            use_rslora: false,
            pooler: Default::default(),
        };
        let want = case["trainable_params"].as_u64().unwrap() as usize;
        assert_eq!(trainable_count(&cfg, &spec, labels), want, "r={}", spec.r);
        seen.push(want);
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![741_124, 796_420, 888_580, 999_172]);
}

/// The fixture checkpoints load through the same resolver the CLI uses.
#[test]
fn fixture_checkpoints_resolve() {
    for case in CASES {
        let dir = fixture_dir(case).join("model");
        let c = Checkpoint::resolve(dir.to_str().unwrap()).unwrap();
        assert_eq!(c.config.num_hidden_layers, 3);
    }
}

/// An adapter that an earlier kd trained on a BERT-family model carries RoBERTa's head: it is
/// refused in one line rather than loaded onto a different head.
#[test]
fn an_old_kd_bert_adapter_is_refused() {
    let f = load_fixture("bert_qv");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        f.dir.join("adapter/adapter_config.json"),
        dir.path().join("adapter_config.json"),
    )
    .unwrap();
    let mut weights = candle_core::safetensors::load(
        f.dir.join("adapter/adapter_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for (old, new) in [
        ("classifier.weight", "classifier.out_proj.weight"),
        ("classifier.bias", "classifier.out_proj.bias"),
    ] {
        let t = weights.remove(&format!("base_model.model.{old}")).unwrap();
        weights.insert(format!("base_model.model.{new}"), t);
    }
    candle_core::safetensors::save(&weights, dir.path().join("adapter_model.safetensors")).unwrap();
    let model_dir = f.dir.join("model");
    let err = load_adapter(
        dir.path(),
        Some(model_dir.to_str().unwrap()),
        &Device::Cpu,
        DType::F32,
        24,
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(
        err.contains("RoBERTa's head") && err.contains("train it again"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
