//! How kd finds its inputs (Hub ids through the HF cache or a download, Parquet and JSONL
//! datasets) and `kd bench`.
mod common;

use common::mock_hub::{HubRepo, MockHub, COMMIT};
use common::parquet_file::write_parquet;
use common::world::{fails, kd, ok, summary, World};
use kd::data::read_examples;
use std::path::Path;

/// A Hub id resolves from the standard HF cache layout, offline.
#[test]
fn hub_ids_resolve_from_the_local_cache() {
    let w = World::new(60, 20);
    let snapshot = w
        .dir
        .path()
        .join("hf/hub/models--kd-test--tiny-bert/snapshots/0123abc");
    std::fs::create_dir_all(&snapshot).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(w.dir.path().join("bert").join(f), snapshot.join(f)).unwrap();
    }
    let refs = w.dir.path().join("hf/hub/models--kd-test--tiny-bert/refs");
    std::fs::create_dir_all(&refs).unwrap();
    std::fs::write(refs.join("main"), "0123abc").unwrap();
    let hf_home = w.p("hf");
    let hf = [("HF_HOME", hf_home.as_str())];
    let quick = ["--max-steps", "2"];
    ok(w.run_training("teach", "kd-test/tiny-bert", "data", "t", &quick, &hf));
    let s = summary(Path::new(&w.p("t")));
    assert_eq!(s["model"], "kd-test/tiny-bert");
}

/// With an empty cache, Hub ids are downloaded with hf-hub (from a local stand-in for the Hub):
/// a RoBERTa without tokenizer.json (its vocab.json + merges.txt are fetched instead) and a
/// dataset's Parquet shards (every shard of a split, in order) land in the standard HF cache,
/// where a second run finds them offline.
#[test]
fn hub_ids_download_into_the_hf_cache() {
    let w = World::new(60, 20);
    let roberta = w.dir.path().join("roberta");
    let model_files = [
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
    ]
    .map(|f| (f.to_string(), std::fs::read(roberta.join(f)).unwrap()))
    .to_vec();
    let parquet_dir = w.dir.path().join("parquet");
    std::fs::create_dir_all(&parquet_dir).unwrap();
    let mut data_files = vec![("README.md".to_string(), b"# news\n".to_vec())];
    // The training rows in two shards (read in name order as one table), the test rows in one.
    let train = read_examples(&w.dir.path().join("data/train.csv"), true).unwrap();
    let test = read_examples(&w.dir.path().join("data/test.csv.gz"), true).unwrap();
    let shards = [
        ("train-00000-of-00002", &train[..35]),
        ("train-00001-of-00002", &train[35..]),
        ("test-00000-of-00001", &test[..]),
    ];
    for (shard, rows) in shards {
        let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
        let labels: Vec<i64> = rows.iter().map(|r| i64::from(r.label.unwrap())).collect();
        let path = parquet_dir.join(format!("{shard}.parquet"));
        write_parquet(&path, &texts, &labels);
        data_files.push((
            format!("data/{shard}.parquet"),
            std::fs::read(&path).unwrap(),
        ));
    }
    let hub = MockHub::serve(vec![
        HubRepo {
            kind: "models",
            id: "kd-test/tiny-roberta".into(),
            files: model_files,
        },
        HubRepo {
            kind: "datasets",
            id: "kd-test/news".into(),
            files: data_files,
        },
    ]);
    let hf_home = w.p("hf");
    let online = [
        ("HF_HOME", hf_home.as_str()),
        ("HF_ENDPOINT", hub.endpoint.as_str()),
        ("HF_HUB_OFFLINE", "0"),
    ];
    let (model, data, quick) = ("kd-test/tiny-roberta", "kd-test/news", ["--max-steps", "2"]);
    ok(w.run_training("teach", model, data, "online", &quick, &online));

    let requested = hub.requested();
    assert!(
        requested.contains(&"/api/datasets/kd-test/news/revision/main".to_string())
            && requested.iter().any(|r| r.ends_with("/tokenizer.json"))
            && !requested.iter().any(|r| r.ends_with("README.md")),
        "unexpected requests: {requested:?}"
    );
    let cache = w.dir.path().join("hf/hub");
    let snapshot = |repo: &str| cache.join(repo).join("snapshots").join(COMMIT);
    for f in [
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
    ] {
        let cached = std::fs::read(snapshot("models--kd-test--tiny-roberta").join(f)).unwrap();
        assert_eq!(cached, std::fs::read(roberta.join(f)).unwrap(), "{f}");
    }
    for (shard, _) in shards {
        let path = format!("data/{shard}.parquet");
        assert!(snapshot("datasets--kd-test--news").join(path).is_file());
    }
    let s = summary(Path::new(&w.p("online")));
    assert_eq!(
        (s["model"].as_str(), s["data"].as_str()),
        (Some(model), Some(data))
    );
    assert!(
        s["test_accuracy"].is_number(),
        "the test shard was not evaluated"
    );
    // Both training shards, in order: the cache's fingerprint is that of the CSV's 60 rows.
    let cache = kd::cache::LogitCache::open(&Path::new(&w.p("online")).join("logits.bin")).unwrap();
    cache.check_matches(&train, &[], &[]).unwrap();

    // Offline, from the cache alone (the endpoint now points nowhere).
    let offline = [
        ("HF_HOME", hf_home.as_str()),
        ("HF_ENDPOINT", "http://127.0.0.1:9"),
    ];
    ok(w.run_training("teach", model, data, "offline", &quick, &offline));
    // An id the Hub does not have: one error naming it and the Hub's answer.
    let err = fails(w.run_training("teach", "kd-test/missing", data, "x", &quick, &online));
    assert!(
        err.contains("kd-test/missing") && err.contains("404"),
        "{err}"
    );
}

/// Parquet files in the Hub's ag_news layout are read (0-based int64 labels).
#[test]
fn reads_the_hub_parquet_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.parquet");
    write_parquet(&path, &["Wall St. Bears Claw Back", "Stocks up"], &[2, 3]);
    let rows = read_examples(&path, true).unwrap();
    assert_eq!(rows[0].text, "Wall St. Bears Claw Back");
    assert_eq!(
        rows.iter().map(|r| r.label).collect::<Vec<_>>(),
        [Some(2), Some(3)]
    );
}

/// JSONL datasets are accepted like CSV.
#[test]
fn jsonl_datasets_work() {
    let w = World::new(60, 20);
    let dir = w.dir.path().join("jsonl");
    std::fs::create_dir_all(&dir).unwrap();
    for split in ["train", "test"] {
        let rows = kd::data::read_examples(
            &w.dir.path().join(if split == "train" {
                "data/train.csv"
            } else {
                "data/test.csv.gz"
            }),
            true,
        )
        .unwrap();
        let lines: Vec<String> = rows
            .iter()
            .map(|r| serde_json::json!({"text": r.text, "label": r.label}).to_string())
            .collect();
        std::fs::write(dir.join(format!("{split}.jsonl")), lines.join("\n")).unwrap();
    }
    let bert = w.p("bert");
    ok(w.run_training("teach", &bert, "jsonl", "t", &["--max-steps", "2"], &[]));
    let o = w.p("t");
    assert!(summary(Path::new(&o))["test_accuracy"].is_number());
}

/// `kd bench` on a random model of a named shape: no weights needed, JSON on the last line.
#[test]
fn bench_measures_a_random_model_of_a_named_shape() {
    let w = World::new(40, 20);
    let test = format!("{}/test.csv.gz", w.p("data"));
    let out = ok(kd(
        &[
            "bench",
            "--shape",
            "small",
            "--tokenizer",
            &w.p("roberta"),
            "--data",
            &test,
            "--steps",
            "2",
            "--warmup-steps",
            "1",
            "--cache-rows",
            "30",
            "--cache-batch-size",
            "8",
            "--device",
            "cpu",
        ],
        &[],
    ));
    let line = out
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .expect("a RESULT line");
    let r: serde_json::Value = serde_json::from_str(&line["RESULT ".len()..]).unwrap();
    assert_eq!(r["layers"], 2);
    assert_eq!(r["train_samples"], 64);
    assert!(r["train_samples_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["train_tokens"].as_u64().unwrap() <= r["train_padded_tokens"].as_u64().unwrap());
    assert!(r["cache_samples_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["peak_mem_bytes"].as_u64().unwrap() > 0);
    let err = fails(kd(
        &[
            "bench",
            "--shape",
            "huge",
            "--tokenizer",
            &w.p("roberta"),
            "--data",
            &test,
            "--device",
            "cpu",
        ],
        &[],
    ));
    assert!(
        err.contains("known shapes are roberta-base, small"),
        "{err}"
    );
}
