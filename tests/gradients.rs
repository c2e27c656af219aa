//! Gradients are checked, not assumed: candle's fused LayerNorm and softmax have no backward
//! pass, so kd attaches its own. These tests show that every trainable tensor receives a
//! gradient, that frozen weights receive none, and that the gradients are the derivatives of
//! the loss (central finite differences in f64), the representation term's included.
mod common;

use candle_core::{DType, Device, Tensor};
use kd::data::{Batch, Batcher, TextTokenizer};
use kd::model::{Checkpoint, LoraSpec, NamedVar, TargetModules, TextClassifier};
use kd::training::loss::distillation;
use kd::training::repr::repr_loss;
use kd::training::{Projection, ReprLoss};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TEXTS: [&str; 5] = [
    "election troops summit after the treaty",
    "football coach",
    "shares profit and market earnings today for the bank with more stocks",
    "nasa space chip",
    "the report says",
];

fn all_targets() -> LoraSpec {
    let targets = [
        "query",
        "key",
        "value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ];
    LoraSpec {
        targets: TargetModules::Suffixes(targets.map(String::from).to_vec()),
        ..LoraSpec::query_value(4, 8.0)
    }
}

fn setup(kind: &str, dtype: DType) -> (tempfile::TempDir, TextClassifier, Batch) {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join(kind);
    match kind {
        "bert" => common::write_bert(&model_dir, 3),
        _ => common::write_roberta(&model_dir, 4),
    }
    let ckpt = Checkpoint::resolve(model_dir.to_str().unwrap()).unwrap();
    let model = TextClassifier::load(&ckpt, &all_targets(), 4, &Device::Cpu, dtype, 11).unwrap();
    // B starts at zero (so A's gradient is zero by construction): give it values first.
    let mut rng = StdRng::seed_from_u64(5);
    for nv in model.trainable() {
        if nv.name.contains("lora_B") || nv.name.ends_with("bias") {
            let n = nv.var.elem_count();
            let v: Vec<f64> = (0..n).map(|_| rng.random_range(-0.3..0.3)).collect();
            let t = Tensor::from_vec(v, nv.var.shape(), &Device::Cpu)
                .unwrap()
                .to_dtype(nv.var.dtype())
                .unwrap();
            nv.var.set(&t).unwrap();
        }
    }
    let tok = TextTokenizer::load(&ckpt.tokenizer, 16).unwrap();
    let ids = tok.encode_all(&TEXTS).unwrap();
    let labels = vec![Some(0), Some(1), Some(2), Some(3), Some(0)];
    let batch = Batcher::new(ids, labels, ckpt.config.pad_id()).batch(&[0, 1, 2, 3, 4]);
    assert!(
        batch.attention_mask.contains(&0),
        "the batch must exercise padding"
    );
    (dir, model, batch)
}

fn loss(model: &TextClassifier, batch: &Batch, rng: Option<&mut StdRng>) -> Tensor {
    kd_term(&model.forward(batch, rng).unwrap(), batch)
}

/// The distillation loss of `logits` against fixed teacher logits and the batch's labels.
fn kd_term(logits: &Tensor, batch: &Batch) -> Tensor {
    let dev = Device::Cpu;
    let teacher = Tensor::new(
        &[
            [1.0f32, -0.5, 0.2, 0.0],
            [0.1, 2.0, -1.0, 0.3],
            [0.0, 0.0, 1.5, -0.2],
            [-1.0, 0.4, 0.2, 2.2],
            [0.7, 0.1, 0.1, 0.1],
        ],
        &dev,
    )
    .unwrap();
    let labels = Tensor::from_slice(&batch.labels, batch.batch_size, &dev).unwrap();
    distillation(
        logits,
        &teacher.to_dtype(logits.dtype()).unwrap(),
        &labels,
        2.0,
        0.5,
        0.1,
    )
    .unwrap()
}

fn every_trainable_tensor_gets_a_gradient(kind: &str) {
    let (_dir, model, batch) = setup(kind, DType::F32);
    // 2 layers × 6 targets × (A, B) + 4 head tensors.
    assert_eq!(model.trainable().len(), 2 * 6 * 2 + 4);
    for train_mode in [false, true] {
        let mut rng = StdRng::seed_from_u64(9);
        let l = loss(&model, &batch, train_mode.then_some(&mut rng));
        let grads = l.backward().unwrap();
        for nv in model.trainable() {
            let g = grads
                .get(nv.var.as_tensor())
                .unwrap_or_else(|| panic!("{kind}: {} has no gradient", nv.name));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{kind}: {} gradient norm {norm}",
                nv.name
            );
        }
        // Frozen weights are not differentiated: no gradient buffer, no wasted matmul. (This
        // model's weights are f32, so weight() is the tensor the graph saw; a layer on the native
        // bf16 kernel keeps no tensor for it, only its packing.)
        for (name, layer) in model
            .encoder()
            .adapted_modules(model.config().kind().prefix())
        {
            assert!(
                grads.get(&layer.base().weight().unwrap()).is_none(),
                "{kind}: frozen {name}.weight got a gradient"
            );
        }
    }
}

#[test]
fn every_trainable_tensor_gets_a_gradient_bert() {
    every_trainable_tensor_gets_a_gradient("bert");
}

#[test]
fn every_trainable_tensor_gets_a_gradient_roberta() {
    every_trainable_tensor_gets_a_gradient("roberta");
}

/// Central differences on a sample of entries of every LoRA and head tensor, in f64.
fn finite_differences(kind: &str) {
    let (_dir, model, batch) = setup(kind, DType::F64);
    let checked = central_differences(kind, model.trainable(), || loss(&model, &batch, None));
    assert_eq!(checked, 3 * model.trainable().len());
}

/// Checks the gradient of `f` (an f64 loss) against central differences on three entries of
/// each of `params`; returns how many entries it checked.
fn central_differences(kind: &str, params: &[NamedVar], f: impl Fn() -> Tensor) -> usize {
    let l0 = f();
    assert_eq!(l0.dtype(), DType::F64);
    let grads = l0.backward().unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let h = 1e-5;
    let mut checked = 0;
    for nv in params {
        let analytic: Vec<f64> = grads
            .get(nv.var.as_tensor())
            .unwrap_or_else(|| panic!("{kind}: {} has no gradient", nv.name))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let original = nv.var.as_tensor().copy().unwrap();
        let values: Vec<f64> = original.flatten_all().unwrap().to_vec1().unwrap();
        for _ in 0..3 {
            let i = rng.random_range(0..values.len());
            let at = |delta: f64| -> f64 {
                let mut v = values.clone();
                v[i] += delta;
                nv.var
                    .set(&Tensor::from_vec(v, original.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                f().to_scalar::<f64>().unwrap()
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h);
            nv.var.set(&original).unwrap();
            let err = (numeric - analytic[i]).abs();
            assert!(
                err <= 1e-7 + 1e-5 * analytic[i].abs(),
                "{kind} {}[{i}]: analytic {:e} vs numeric {numeric:e}",
                nv.name,
                analytic[i]
            );
            checked += 1;
        }
    }
    checked
}

/// The representation term: α·T²·KL + (1−α)·CE + β·L_repr, the student's representation
/// projected from the tiny encoder's 32 dimensions to a wider teacher's 40.
/// Every trainable tensor, the projection included, gets the derivative of the whole loss.
fn finite_differences_with_representations(kind: &str, repr: ReprLoss) {
    let (_dir, model, batch) = setup(kind, DType::F64);
    let (rows, teacher_width) = (batch.batch_size, 40);
    let projection = Projection::new(32, teacher_width, 3, DType::F64, &Device::Cpu).unwrap();
    // A non-zero bias, so that its gradient is checked away from the origin too.
    let bias = &projection.named()[1].var;
    bias.set(&Tensor::full(0.1f64, teacher_width, &Device::Cpu).unwrap())
        .unwrap();
    let teacher: Vec<f64> = (0..rows * teacher_width)
        .map(|i| (i as f64 * 0.37).sin() * 2.0)
        .collect();
    let teacher = Tensor::from_vec(teacher, (rows, teacher_width), &Device::Cpu).unwrap();
    let total = || {
        let (logits, student) = model.forward_with_representation(&batch, None).unwrap();
        let projected = projection.forward(&student).unwrap();
        let r = repr_loss(&projected, &teacher, repr).unwrap();
        (kd_term(&logits, &batch) + (r * 0.7).unwrap()).unwrap()
    };
    let mut params = model.trainable().to_vec();
    params.extend(projection.named());
    let checked = central_differences(kind, &params, total);
    assert_eq!(checked, 3 * params.len());
}

#[test]
fn finite_differences_with_cosine_representations_bert() {
    finite_differences_with_representations("bert", ReprLoss::Cosine);
}

#[test]
fn finite_differences_with_mse_representations_roberta() {
    finite_differences_with_representations("roberta", ReprLoss::Mse);
}

#[test]
fn finite_differences_bert() {
    finite_differences("bert");
}

#[test]
fn finite_differences_roberta() {
    finite_differences("roberta");
}

/// Mixed precision: frozen weights in bf16, adapters, head and loss in f32. Every trainable
/// tensor still gets a gradient, and the logits stay close to the f32 model's.
#[test]
fn bf16_frozen_weights_train_in_f32() {
    let (_dir, model32, batch) = setup("bert", DType::F32);
    let (_dir16, model16, _) = setup("bert", DType::BF16);
    for nv in model16.trainable() {
        assert_eq!(nv.var.dtype(), DType::F32, "{} must train in f32", nv.name);
    }
    let l = loss(&model16, &batch, None);
    assert_eq!(l.dtype(), DType::F32);
    let grads = l.backward().unwrap();
    for nv in model16.trainable() {
        let g = grads
            .get(nv.var.as_tensor())
            .unwrap_or_else(|| panic!("{} has no gradient", nv.name));
        assert_eq!(g.dtype(), DType::F32);
        assert!(
            g.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0,
            "{}",
            nv.name
        );
    }
    let a = model32.forward(&batch, None).unwrap();
    let b = model16.forward(&batch, None).unwrap();
    let diff = common::max_abs_diff(&a, &b);
    assert!(diff < 0.05, "bf16 logits drift {diff} from f32");
}

/// The CPU's native bf16 kernels (AMX or AVX-512 BF16): frozen weights packed in bf16,
/// activations and gradients rounded to bf16 only inside the frozen layers' products. Every
/// gradient of a training step lies within 3% (relative L2) of the f32 model's: bf16 keeps 8
/// bits of mantissa, and the f32 path kd used before on bf16 weights was 2.8% off on the same
/// kind of check (`kd selftest --dtype bf16`). Skipped, saying so, on a CPU without them.
#[test]
fn native_bf16_training_step_matches_f32() {
    let Some(kernel) = kd::nn::cpu::bf16_matmul::native_kernel() else {
        eprintln!("skipped: this CPU has no native bf16 kernel (AMX-BF16 or AVX-512 BF16)");
        return;
    };
    let (_dir, model32, batch) = setup("roberta", DType::F32);
    let (_dir16, model16, _) = setup("roberta", DType::BF16);
    let hidden = model16.encoder().forward(&batch, None).unwrap();
    assert_eq!(
        hidden.dtype(),
        DType::F32,
        "activations stay f32 under {kernel:?}"
    );
    let g32 = loss(&model32, &batch, None).backward().unwrap();
    let g16 = loss(&model16, &batch, None).backward().unwrap();
    for (a, b) in model32.trainable().iter().zip(model16.trainable()) {
        let ga = g32.get(a.var.as_tensor()).unwrap();
        let gb = g16.get(b.var.as_tensor()).unwrap();
        let norm = |t: &Tensor| {
            t.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .sqrt()
        };
        let rel = norm(&(ga - gb).unwrap()) / norm(ga).max(1e-12);
        assert!(
            rel < 0.03,
            "{}: {kernel:?} gradient {rel:.4} off f32",
            a.name
        );
    }
}

/// kd builds on a patched candle-core (vendor/): a node's first gradient is stored as it is
/// instead of being added to zeros. Gradients that arrive more than once, through broadcasts,
/// transposed (strided) views and a tensor used twice in one op must still sum exactly.
#[test]
fn patched_gradient_accumulation_sums_every_path() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let x = candle_core::Var::from_vec(vec![0.5f64, -1.0, 2.0, 3.0, 0.25, -0.75], (2, 3), &dev)?;
    let b = candle_core::Var::from_vec(vec![1.0f64, 2.0, 3.0], 3, &dev)?;
    let xt = x.as_tensor();
    // f = Σ(x² + x) + Σ(xᵀ·1) + Σ(x + b) + Σ((x·x)ᵀ)   (x·x: x used twice in one op)
    let f = ((xt * xt)? + xt)?.sum_all()?;
    let f = (f + xt
        .t()?
        .matmul(&Tensor::ones((2, 1), DType::F64, &dev)?)?
        .sum_all()?)?;
    let f = (f + xt.broadcast_add(b.as_tensor())?.sum_all()?)?;
    let f = (f + (xt * xt)?.t()?.contiguous()?.sum_all()?)?;
    let grads = f.backward()?;
    let gx: Vec<Vec<f64>> = grads.get(xt).expect("x has a gradient").to_vec2()?;
    let xs: Vec<Vec<f64>> = xt.to_vec2()?;
    for (gr, xr) in gx.iter().zip(&xs) {
        for (g, v) in gr.iter().zip(xr) {
            // d/dx: (2x + 1) + 1 + 1 + 2x
            assert_eq!(*g, 4.0 * v + 3.0);
        }
    }
    let gb: Vec<f64> = grads
        .get(b.as_tensor())
        .expect("b has a gradient")
        .to_vec1()?;
    assert_eq!(gb, vec![2.0; 3], "b is broadcast over 2 rows");
    Ok(())
}
