//! Class names: from a Hub Parquet file's ClassLabel metadata or --label-names, recorded in the
//! run folder, written by kd predict, shown by kd compare, and checked between teacher and
//! student.
mod common;

use common::parquet_file::write_parquet_with_names;
use common::world::{fails, kd, ok, World};
use std::path::Path;

const NAMES: [&str; 4] = ["World", "Sports", "Business", "Sci/Tech"];

/// The world's CSV rows as a Parquet dataset folder whose label column is a ClassLabel.
fn parquet_dataset(w: &World) -> String {
    let dir = w.dir.path().join("pq");
    std::fs::create_dir_all(&dir).unwrap();
    let read = |name: &str| {
        kd::data::SplitFiles::single(&w.dir.path().join("data").join(name))
            .read(true)
            .unwrap()
    };
    for (split, rows) in [("train", read("train.csv")), ("test", read("test.csv.gz"))] {
        let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
        let labels: Vec<i64> = rows.iter().map(|r| r.label.unwrap() as i64).collect();
        write_parquet_with_names(
            &dir.join(format!("{split}.parquet")),
            &texts,
            &labels,
            Some(&NAMES),
        );
    }
    dir.to_string_lossy().into_owned()
}

#[test]
fn class_names_come_from_the_data_and_reach_predict_and_compare() {
    let w = World::new(60, 20);
    let data = parquet_dataset(&w);
    ok(w.run_training(
        "teach",
        &w.p("roberta"),
        &data,
        "t",
        &["--max-steps", "3"],
        &[],
    ));
    let config = kd::run::RunConfig::from_file(&Path::new(&w.p("t")).join("config.toml")).unwrap();
    assert_eq!(config.label_names.unwrap(), NAMES);

    let predicted = w.predict("t", "\"nasa space chip\"\n\"football coach\"\n", &[]);
    let text = predicted;
    for line in text.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        let id: usize = cells[1].parse().unwrap();
        assert_eq!(cells[2], NAMES[id], "{line}");
    }
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
    assert!(
        table.contains("Sci/Tech") && table.contains("Business"),
        "{table}"
    );

    // A student whose names differ from its teacher's is refused; so is a count that is not
    // the number of classes.
    let err = fails(w.distill_on("pq", "t", "s", &["--label-names", "a,b,c,d"]));
    assert!(
        err.contains("names its classes World, Sports, Business, Sci/Tech"),
        "{err}"
    );
    let err = fails(w.teach("u", &["--label-names", "x,y"]));
    assert!(
        err.contains("--label-names names 2 classes") && err.contains("has 4"),
        "{err}"
    );
}

#[test]
fn kd_export_writes_a_transformers_folder_with_the_names() {
    let w = World::new(60, 20);
    let data = parquet_dataset(&w);
    ok(w.run_training(
        "teach",
        &w.p("bert"),
        &data,
        "t",
        &["--max-steps", "2"],
        &[],
    ));
    let out = w.p("exported");
    ok(kd(&["export", &w.p("t"), "--out", &out], &[]));
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&out).join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["id2label"]["3"], "Sci/Tech");
    assert_eq!(config["label2id"]["Sports"], 1);
    let bytes = std::fs::read(Path::new(&out).join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names: Vec<String> = st.names().into_iter().map(String::from).collect();
    for want in [
        "bert.pooler.dense.weight",
        "classifier.weight",
        "bert.encoder.layer.0.attention.self.query.weight",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("lora")), "{names:?}");
    assert!(Path::new(&out).join("tokenizer.json").is_file());
    let err = fails(kd(&["export", &w.p("t"), "--out", &out], &[]));
    assert!(err.contains("exists"), "{err}");
}
