//! Datasets beyond AG News: named text and label columns in CSV (with a header), JSONL and
//! Parquet, integer or string labels, and one clear error for a missing column, an empty text or
//! a label training never saw.
mod common;

use common::world::{fails, kd, ok, World};
use std::path::Path;

/// The world's rows (texts and 4 classes), as (text, class).
fn rows(w: &World, file: &str) -> Vec<(String, u32)> {
    kd::data::SplitFiles::single(&w.dir.path().join("data").join(file))
        .read(true)
        .unwrap()
        .into_iter()
        .map(|r| (r.text, r.label.unwrap()))
        .collect()
}

fn csv_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[test]
fn an_sst2_like_csv_with_a_header_trains_and_predicts() {
    let w = World::new(60, 20);
    let dir = w.dir.path().join("sst");
    std::fs::create_dir(&dir).unwrap();
    for (split, file) in [("train", "train.csv"), ("test", "test.csv.gz")] {
        let mut text = String::from("idx,sentence,label\n");
        for (i, (t, c)) in rows(&w, file).iter().enumerate() {
            text.push_str(&format!("{i},{},{}\n", csv_quote(t), c % 2));
        }
        std::fs::write(dir.join(format!("{split}.csv")), text).unwrap();
    }
    let args = [
        "--text-column",
        "sentence",
        "--label-column",
        "label",
        "--max-steps",
        "4",
    ];
    ok(w.run_training("teach", &w.p("roberta"), "sst", "t", &args, &[]));
    let config = kd::run::RunConfig::from_file(&Path::new(&w.p("t")).join("config.toml")).unwrap();
    assert_eq!(config.columns.text, ["sentence"]);
    // predict reads the run's columns.
    let predicted = w.predict("t", "sentence\n\"nasa space chip\"\n", &[]);
    assert_eq!(predicted.lines().count(), 2);
    // A column that is not there is named.
    let err = fails(w.run_training(
        "teach",
        &w.p("roberta"),
        "sst",
        "u",
        &["--text-column", "review"],
        &[],
    ));
    assert!(
        err.contains("train.csv") && err.contains("no column `review`") && err.contains("sentence"),
        "{err}"
    );
}

#[test]
fn jsonl_with_other_columns_and_string_labels() {
    let w = World::new(60, 20);
    let dir = w.dir.path().join("reviews");
    std::fs::create_dir(&dir).unwrap();
    let names = ["world", "sports", "business", "tech"];
    for (split, file) in [("train", "train.csv"), ("test", "test.csv.gz")] {
        let lines: String = rows(&w, file)
            .iter()
            .map(|(t, c)| {
                serde_json::json!({"body": t, "topic": names[*c as usize]}).to_string() + "\n"
            })
            .collect();
        std::fs::write(dir.join(format!("{split}.jsonl")), lines).unwrap();
    }
    let args = [
        "--text-column",
        "body",
        "--label-column",
        "topic",
        "--max-steps",
        "4",
    ];
    ok(w.run_training("teach", &w.p("roberta"), "reviews", "t", &args, &[]));
    let config = kd::run::RunConfig::from_file(&Path::new(&w.p("t")).join("config.toml")).unwrap();
    // String labels map to classes in sorted order, recorded as the run's names.
    assert_eq!(
        config.label_names.unwrap(),
        ["business", "sports", "tech", "world"]
    );
    let table = ok(kd(
        &[
            "compare",
            &w.p("t"),
            "--device",
            "cpu",
            "--json",
            &w.p("c.json"),
        ],
        &[],
    ));
    assert!(table.contains("business"), "{table}");

    // A test label that training never saw, and an empty text, are refused by file and row.
    let mut test = std::fs::read_to_string(dir.join("test.jsonl")).unwrap();
    test.push_str("{\"body\": \"odd one\", \"topic\": \"weather\"}\n");
    std::fs::write(dir.join("test.jsonl"), test).unwrap();
    let err = fails(w.run_training("teach", &w.p("roberta"), "reviews", "u", &args, &[]));
    assert!(
        err.contains("test.jsonl, row 21") && err.contains("`weather` never seen in training"),
        "{err}"
    );
    let mut train = std::fs::read_to_string(dir.join("train.jsonl")).unwrap();
    train.push_str("{\"body\": \"  \", \"topic\": \"sports\"}\n");
    std::fs::write(dir.join("train.jsonl"), train).unwrap();
    let err = fails(w.run_training("teach", &w.p("roberta"), "reviews", "u", &args, &[]));
    assert!(
        err.contains("train.jsonl, row 61") && err.contains("empty text"),
        "{err}"
    );
}

#[test]
fn an_nli_like_pair_dataset_with_string_labels() {
    let w = World::new(60, 20);
    let dir = w.dir.path().join("nli");
    std::fs::create_dir(&dir).unwrap();
    let names = ["contradiction", "entailment", "neutral"];
    for (split, file) in [("train", "train.csv"), ("test", "test.csv.gz")] {
        let lines: String = rows(&w, file)
            .iter()
            .map(|(t, c)| {
                let (premise, hypothesis) = t.split_at(t.len() / 2);
                let label = names[*c as usize % 3];
                serde_json::json!({"premise": premise, "hypothesis": hypothesis, "label": label})
                    .to_string()
                    + "\n"
            })
            .collect();
        std::fs::write(dir.join(format!("{split}.jsonl")), lines).unwrap();
    }
    let args = [
        "--text-column",
        "premise",
        "--text-pair-column",
        "hypothesis",
        "--max-steps",
        "4",
    ];
    ok(w.run_training("teach", &w.p("bert"), "nli", "t", &args, &[]));
    let config = kd::run::RunConfig::from_file(&Path::new(&w.p("t")).join("config.toml")).unwrap();
    assert_eq!(config.columns.text_pair.as_deref(), Some("hypothesis"));
    assert_eq!(config.label_names.unwrap(), names);

    // The pair is tokenized as a pair: [CLS] a [SEP] b [SEP], the second segment of type 1.
    let ckpt = kd::model::Checkpoint::resolve(&w.p("bert")).unwrap();
    let tok = kd::data::TextTokenizer::load(&ckpt.tokenizer, 32).unwrap();
    let row = kd::data::Example {
        text: "the team won".into(),
        pair: Some("the game".into()),
        ..Default::default()
    };
    let batcher = kd::data::tokenize_rows(&tok, &[row], 0).unwrap();
    let batch = batcher.batch(&[0]);
    let types = batch.token_types.clone().unwrap();
    let first_one = types.iter().position(|&t| t == 1).unwrap();
    let sep = 3; // [SEP] in the tiny BERT vocabulary
    assert_eq!(batch.input_ids[first_one - 1], sep, "{:?}", batch.input_ids);
    assert_eq!(*batch.input_ids.last().unwrap(), sep);
    assert!(types[first_one..].iter().all(|&t| t == 1));
}
