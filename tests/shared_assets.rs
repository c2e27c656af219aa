//! Checks on the real assets in ../shared (real tokenizers and pretrained MiniLM checkpoints).
//! A user's clone has no ../shared: then each test says so and passes without checking.
use candle_core::{DType, Device};
use kd::data::TokenizerFiles;
use kd::data::{Batcher, TextTokenizer};
use kd::model::{Checkpoint, LoraSpec, TextClassifier};
use std::path::PathBuf;

fn shared(rel: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipped: {} is absent", p.display());
        None
    }
}

/// The real roberta-base tokenizer, from tokenizer.json and from vocab.json + merges.txt.
#[test]
fn roberta_base_tokenizer_gives_the_known_ids() {
    let Some(dir) = shared("models/roberta-base-tokenizer") else {
        return;
    };
    let json = TextTokenizer::load(&TokenizerFiles::find(&dir).unwrap(), 128).unwrap();
    let bpe = TextTokenizer::load(
        &TokenizerFiles::VocabMerges {
            vocab: dir.join("vocab.json"),
            merges: dir.join("merges.txt"),
        },
        128,
    )
    .unwrap();
    for tok in [&json, &bpe] {
        assert_eq!(
            tok.encode_all(&["Hello world"]).unwrap()[0],
            vec![0, 31414, 232, 2]
        );
    }
    let text = "Wall St. Bears Claw Back Into the Black (Reuters) Reuters - Short-sellers, Wall Street's dwindling\\band of ultra-cynics, are seeing green again.";
    assert_eq!(
        json.encode_all(&[text]).unwrap(),
        bpe.encode_all(&[text]).unwrap()
    );
}

/// A real f16 MiniLM checkpoint loads (pooler ignored), its baked-in padding to 128 is switched
/// off, and it classifies a padded batch with finite logits on CPU in f32.
#[test]
fn minilm_checkpoint_loads_and_runs() {
    let Some(dir) = shared("models/all-MiniLM-L6-v2") else {
        return;
    };
    let ckpt = Checkpoint::resolve(dir.to_str().unwrap()).unwrap();
    assert_eq!(ckpt.config.num_hidden_layers, 6);
    let tok = TextTokenizer::load(&ckpt.tokenizer, 128).unwrap();
    let ids = tok
        .encode_all(&[
            "a short text",
            "a somewhat longer text about markets and stocks",
        ])
        .unwrap();
    assert_eq!(
        ids[0].len(),
        5,
        "the tokenizer's fixed padding must be off: {:?}",
        ids[0]
    );
    let lora = LoraSpec::query_value(8, 32.0);
    let model = TextClassifier::load(&ckpt, &lora, 4, &Device::Cpu, DType::F32, 0).unwrap();
    assert_eq!(model.trainable_count(), 223_108);
    let batch = Batcher::new(ids, vec![Some(0), Some(1)], ckpt.config.pad_id()).batch(&[0, 1]);
    let logits: Vec<Vec<f32>> = model.forward(&batch, None).unwrap().to_vec2().unwrap();
    assert!(logits.iter().flatten().all(|v| v.is_finite()));
}
