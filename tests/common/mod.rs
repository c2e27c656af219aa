//! Test helpers: tiny random BERT/RoBERTa checkpoints, tiny tokenizers and a small synthetic
//! dataset whose classes are learnable, all written to temporary folders (no downloads).
#![allow(dead_code)]
pub mod mock_hub;
pub mod parquet_file;
pub mod world;
use candle_core::{Device, Tensor};
use kd::model::head::normal;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// Words that mark each class; the rest is filler shared by all classes.
pub const CLASS_WORDS: [&[&str]; 4] = [
    &[
        "election", "minister", "treaty", "embassy", "troops", "summit",
    ],
    &["football", "coach", "league", "goal", "tennis", "season"],
    &["shares", "profit", "market", "bank", "stocks", "earnings"],
    &["software", "internet", "chip", "space", "computer", "nasa"],
];
pub const FILLER: &[&str] = &[
    "the", "a", "on", "in", "after", "new", "report", "says", "week", "today", "of", "and", "to",
    "for", "with", "big", "first", "over", "more", "year",
];

fn all_words() -> Vec<&'static str> {
    let mut w: Vec<&str> = CLASS_WORDS.iter().flat_map(|c| c.iter().copied()).collect();
    w.extend_from_slice(FILLER);
    w
}

/// Shape of a tiny encoder.
pub struct TinyShape {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
}

pub const TINY: TinyShape = TinyShape {
    hidden: 32,
    layers: 2,
    heads: 4,
    ffn: 64,
};

fn randn(rng: &mut StdRng, shape: &[usize], std: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(normal(rng, n, std), shape, &Device::Cpu).unwrap()
}

fn ln(rng: &mut StdRng, t: &mut HashMap<String, Tensor>, name: &str, h: usize) {
    let w: Vec<f32> = normal(rng, h, 0.1).into_iter().map(|v| 1.0 + v).collect();
    t.insert(
        format!("{name}.weight"),
        Tensor::from_vec(w, h, &Device::Cpu).unwrap(),
    );
    t.insert(format!("{name}.bias"), randn(rng, &[h], 0.1));
}

fn linear(rng: &mut StdRng, t: &mut HashMap<String, Tensor>, name: &str, i: usize, o: usize) {
    t.insert(format!("{name}.weight"), randn(rng, &[o, i], 0.15));
    t.insert(format!("{name}.bias"), randn(rng, &[o], 0.05));
}

/// Random encoder weights under HF names, with `prefix` ("" or "roberta.").
fn write_weights(
    dir: &Path,
    prefix: &str,
    s: &TinyShape,
    vocab: usize,
    positions: usize,
    types: usize,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut t = HashMap::new();
    let h = s.hidden;
    t.insert(
        format!("{prefix}embeddings.word_embeddings.weight"),
        randn(&mut rng, &[vocab, h], 0.5),
    );
    t.insert(
        format!("{prefix}embeddings.position_embeddings.weight"),
        randn(&mut rng, &[positions, h], 0.1),
    );
    t.insert(
        format!("{prefix}embeddings.token_type_embeddings.weight"),
        randn(&mut rng, &[types, h], 0.1),
    );
    ln(
        &mut rng,
        &mut t,
        &format!("{prefix}embeddings.LayerNorm"),
        h,
    );
    for l in 0..s.layers {
        let b = format!("{prefix}encoder.layer.{l}");
        for m in ["query", "key", "value"] {
            linear(&mut rng, &mut t, &format!("{b}.attention.self.{m}"), h, h);
        }
        linear(
            &mut rng,
            &mut t,
            &format!("{b}.attention.output.dense"),
            h,
            h,
        );
        ln(
            &mut rng,
            &mut t,
            &format!("{b}.attention.output.LayerNorm"),
            h,
        );
        linear(
            &mut rng,
            &mut t,
            &format!("{b}.intermediate.dense"),
            h,
            s.ffn,
        );
        linear(&mut rng, &mut t, &format!("{b}.output.dense"), s.ffn, h);
        ln(&mut rng, &mut t, &format!("{b}.output.LayerNorm"), h);
    }
    // A pooler, as real BERT checkpoints have: kd must ignore it.
    linear(&mut rng, &mut t, &format!("{prefix}pooler.dense"), h, h);
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
}

/// A tiny BERT checkpoint (no tensor prefix) with a WordPiece tokenizer.json that bakes in
/// fixed padding and truncation, as the MiniLM tokenizers do.
pub fn write_bert(dir: &Path, seed: u64) {
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::bert::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    use tokenizers::processors::bert::BertProcessing;
    std::fs::create_dir_all(dir).unwrap();
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .map(String::from)
        .to_vec();
    vocab.extend(all_words().iter().map(|w| w.to_string()));
    let vocab_txt = dir.join("vocab.txt");
    std::fs::write(&vocab_txt, vocab.join("\n") + "\n").unwrap();
    let wp = WordPiece::from_file(vocab_txt.to_str().unwrap())
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(wp);
    tok.with_normalizer(Some(BertNormalizer::default()));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), 3),
        ("[CLS]".into(), 2),
    )));
    tok.with_padding(Some(tokenizers::PaddingParams {
        strategy: tokenizers::PaddingStrategy::Fixed(64),
        ..Default::default()
    }));
    tok.with_truncation(Some(tokenizers::TruncationParams {
        max_length: 64,
        ..Default::default()
    }))
    .unwrap();
    tok.save(dir.join("tokenizer.json"), false).unwrap();
    let positions = 64;
    let config = serde_json::json!({
        "model_type": "bert", "vocab_size": vocab.len(), "hidden_size": TINY.hidden,
        "num_hidden_layers": TINY.layers, "num_attention_heads": TINY.heads,
        "intermediate_size": TINY.ffn, "hidden_act": "gelu", "max_position_embeddings": positions,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    write_weights(dir, "", &TINY, vocab.len(), positions, 2, seed);
}

/// GPT-2's byte-to-unicode table (byte-level BPE's alphabet).
fn byte_alphabet() -> Vec<char> {
    let mut bs: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec![' '; 256];
    for (b, c) in bs.iter().zip(cs) {
        table[*b as usize] = char::from_u32(c).unwrap();
    }
    table
}

/// A tiny RoBERTa checkpoint (tensors under `roberta.`, as roberta-base's) with a byte-level
/// BPE given as vocab.json + merges.txt that merges every known word into one token.
pub fn write_roberta(dir: &Path, seed: u64) {
    write_roberta_shaped(dir, seed, &TINY);
}

/// [`write_roberta`] of another shape (a teacher wider than the tiny BERT student, say).
pub fn write_roberta_shaped(dir: &Path, seed: u64, shape: &TinyShape) {
    std::fs::create_dir_all(dir).unwrap();
    let mut vocab: Vec<String> = ["<s>", "<pad>", "</s>", "<unk>"].map(String::from).to_vec();
    vocab.extend(byte_alphabet().iter().map(|c| c.to_string()));
    let mut merges: Vec<String> = Vec::new();
    for w in all_words() {
        for form in [format!("Ġ{w}"), w.to_string()] {
            let chars: Vec<String> = form.chars().map(|c| c.to_string()).collect();
            let mut cur = chars[0].clone();
            for c in &chars[1..] {
                let merged = format!("{cur}{c}");
                if !vocab.contains(&merged) {
                    merges.push(format!("{cur} {c}"));
                    vocab.push(merged.clone());
                }
                cur = merged;
            }
        }
    }
    let map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), (i as u64).into()))
        .collect();
    std::fs::write(
        dir.join("vocab.json"),
        serde_json::Value::Object(map).to_string(),
    )
    .unwrap();
    let mut m = std::fs::File::create(dir.join("merges.txt")).unwrap();
    writeln!(m, "#version: 0.2").unwrap();
    for line in &merges {
        writeln!(m, "{line}").unwrap();
    }
    let positions = 66;
    let config = serde_json::json!({
        "model_type": "roberta", "vocab_size": vocab.len(), "hidden_size": shape.hidden,
        "num_hidden_layers": shape.layers, "num_attention_heads": shape.heads,
        "intermediate_size": shape.ffn, "hidden_act": "gelu", "max_position_embeddings": positions,
        "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0,
        "eos_token_id": 2
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    write_weights(dir, "roberta.", shape, vocab.len(), positions, 1, seed);
}

/// One synthetic AG-News-style row of class `c`.
fn row(rng: &mut StdRng, c: usize) -> (String, String) {
    let pick = |rng: &mut StdRng, class_share: f64, n: usize| -> String {
        (0..n)
            .map(|_| {
                if rng.random_bool(class_share) {
                    *CLASS_WORDS[c].choose(rng).unwrap()
                } else {
                    *FILLER.choose(rng).unwrap()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let title_len = rng.random_range(2..5);
    let body_len = rng.random_range(4..20);
    (pick(rng, 0.5, title_len), pick(rng, 0.3, body_len))
}

/// Writes `dir/train.csv` and `dir/test.csv.gz` in AG News' CSV form (class 1..4, quoted).
pub fn write_dataset(dir: &Path, train: usize, test: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut lines = |n: usize| -> String {
        (0..n)
            .map(|i| {
                let c = i % 4;
                let (t, d) = row(&mut rng, c);
                format!("\"{}\",\"{t}\",\"{d}\"\n", c + 1)
            })
            .collect()
    };
    std::fs::write(dir.join("train.csv"), lines(train)).unwrap();
    let test_csv = lines(test);
    let f = std::fs::File::create(dir.join("test.csv.gz")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    gz.write_all(test_csv.as_bytes()).unwrap();
    gz.finish().unwrap();
}

/// The largest absolute difference between two tensors of one shape, in f32.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(candle_core::DType::F32).unwrap();
    let b = b.to_dtype(candle_core::DType::F32).unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
