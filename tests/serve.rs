//! `kd serve` end to end on loopback: a tiny calibrated teacher behind HTTP answers as
//! `kd predict` does (single texts, pairs, batches), counts what it does in /metrics, refuses
//! what it cannot take (413, 422, 503 with a JSON message), finishes a request in flight on
//! SIGTERM, and refuses to start on a folder kd refuses elsewhere.
mod common;

use common::world::{ok, World};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One calibrated teacher (temperature ≠ 1) shared by every test of this file.
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let parent = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve");
        remove_old_worlds(&parent);
        let w = World::new_in(&parent, 64, 16);
        ok(w.teach("t", &["--calibrate", "--val-fraction", "0.25"]));
        w
    })
}

/// A static is never dropped, so each run leaves its world behind: remove those of runs over
/// an hour old (no run of this file takes that long).
fn remove_old_worlds(parent: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let age = entry.metadata().and_then(|m| m.modified()).ok();
        let old = age.and_then(|t| t.elapsed().ok()) > Some(Duration::from_secs(3600));
        if old {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A running `kd serve`, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    /// `kd serve RUN --port 0 …extra`; returns once it prints its address.
    fn start(run: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kd"))
            .args([
                "serve", run, "--port", "0", "--device", "cpu", "--dtype", "f32",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("kd starts");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("kd serve printed {line:?}"))
            .to_string();
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");
        Server { child, base }
    }

    fn post(&self, body: &str) -> (u16, String) {
        answer(
            ureq::post(&format!("{}/predict", self.base))
                .set("Content-Type", "application/json")
                .send_string(body),
        )
    }

    fn get(&self, path: &str) -> (u16, String) {
        answer(ureq::get(&format!("{}{path}", self.base)).call())
    }

    /// `POST /predict` that must succeed; the answer as JSON.
    fn predict(&self, body: Value) -> Value {
        let (status, text) = self.post(&body.to_string());
        assert_eq!(status, 200, "{body} -> {text}");
        serde_json::from_str(&text).unwrap()
    }

    fn terminate(&self) {
        // SAFETY: sends SIGTERM to the child this test started.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status and body, whatever the status.
fn answer(r: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("request failed: {e}"),
    }
}

/// The scores of one prediction list, by class id, after checking TEI's shape: objects with
/// score and label, best first, plus kd's id.
fn scores(list: &Value) -> Vec<f64> {
    let list = list.as_array().unwrap();
    let mut by_id = vec![f64::NAN; list.len()];
    for (k, p) in list.iter().enumerate() {
        assert!(p["label"].is_string(), "{p}");
        if k > 0 {
            assert!(
                list[k - 1]["score"].as_f64() >= p["score"].as_f64(),
                "{list:?}"
            );
        }
        by_id[p["id"].as_u64().unwrap() as usize] = p["score"].as_f64().unwrap();
    }
    by_id
}

fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

const TEXTS: [&str; 3] = [
    "nasa space chip computer",
    "football coach league goal",
    "shares profit market bank earnings",
];

#[test]
fn predict_answers_as_kd_predict_does_alone_in_pairs_and_in_batches() {
    let w = world();
    let server = Server::start(&w.p("t"), &[]);
    assert_eq!(server.get("/health").0, 200);
    // kd predict on the same texts: row,label,label_name,logit_*,prob_*.
    let csv: String = TEXTS.iter().map(|t| format!("\"{t}\"\n")).collect();
    let predicted = w.predict("t", &csv, &["--dtype", "f32"]);
    for (line, text) in predicted.lines().skip(1).zip(TEXTS) {
        let cols: Vec<&str> = line.split(',').collect();
        let k = (cols.len() - 3) / 2;
        let probs: Vec<f64> = cols[3 + k..].iter().map(|c| c.parse().unwrap()).collect();
        let one = server.predict(serde_json::json!({ "inputs": text }));
        assert!(close(&scores(&one), &probs, 1e-5), "{one} vs {line}");
        assert_eq!(one[0]["label"].as_str(), Some(cols[2]), "{one} vs {line}");
        assert_eq!(one[0]["id"].as_u64().unwrap().to_string(), cols[1]);
    }
    // A batch answers each input as it is answered alone; ["t"] in a batch is one text.
    let batch = server.predict(serde_json::json!({
        "inputs": [[TEXTS[0]], [TEXTS[1], TEXTS[2]], [TEXTS[2]]]
    }));
    let batch = batch.as_array().unwrap();
    assert_eq!(batch.len(), 3);
    let alone = |body: Value| scores(&server.predict(body));
    let pair = alone(serde_json::json!({ "inputs": [TEXTS[1], TEXTS[2]] }));
    assert!(close(
        &scores(&batch[0]),
        &alone(serde_json::json!({ "inputs": TEXTS[0] })),
        1e-5
    ));
    assert!(close(&scores(&batch[1]), &pair, 1e-5));
    assert!(close(
        &scores(&batch[2]),
        &alone(serde_json::json!({ "inputs": [TEXTS[2]] })),
        1e-5
    ));
    assert!(
        close(&pair, &library_pair(w, TEXTS[1], TEXTS[2]), 1e-5),
        "{pair:?}"
    );
    // raw_scores: the logits, whose softmax at the run's temperature is the probabilities.
    let raw = alone(serde_json::json!({ "inputs": TEXTS[0], "raw_scores": true }));
    assert!(raw.iter().any(|&l| !(0.0..=1.0).contains(&l)), "{raw:?}");
    let t = common::world::summary(std::path::Path::new(&w.p("t")))["calibrated_temperature"]
        .as_f64()
        .unwrap();
    let raw32: Vec<f32> = raw.iter().map(|&v| v as f32).collect();
    let probs = kd::model::probabilities(&raw32, t);
    assert!(close(
        &probs,
        &alone(serde_json::json!({ "inputs": TEXTS[0] })),
        1e-5
    ));

    let metrics = server.get("/metrics").1;
    for needle in [
        r#"kd_serve_requests_total{route="/predict",status="200"}"#,
        r#"kd_serve_requests_total{route="/health",status="200"} 1"#,
        r#"kd_serve_request_duration_seconds_bucket{route="/predict""#,
        "kd_serve_batch_rows_bucket",
        "kd_serve_queue_depth 0",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
}

#[test]
fn concurrent_requests_share_a_pass_and_each_gets_its_own_rows() {
    // Five rows gathered into one pass of up to 16.
    concurrent_requests_each_get_their_own_rows("16", |passes| passes < 4);
}

#[test]
fn gathered_rows_run_length_sorted_in_passes_of_max_batch() {
    // Five rows gathered, sorted by length and run in passes of at most 2: three passes, a
    // request's rows possibly split between them.
    concurrent_requests_each_get_their_own_rows("2", |passes| passes == 3);
}

fn concurrent_requests_each_get_their_own_rows(max_batch: &str, passes_ok: fn(u32) -> bool) {
    let w = world();
    let server = Server::start(
        &w.p("t"),
        &["--max-wait-ms", "400", "--max-batch", max_batch],
    );
    let bodies = [
        serde_json::json!({ "inputs": TEXTS[0] }),
        serde_json::json!({ "inputs": [[TEXTS[1]], [TEXTS[2], TEXTS[0]]] }),
        serde_json::json!({ "inputs": [TEXTS[2]] }),
        serde_json::json!({ "inputs": "nasa" }),
    ];
    let together: Vec<Value> = std::thread::scope(|s| {
        let sent: Vec<_> = bodies
            .iter()
            .map(|b| s.spawn(|| server.predict(b.clone())))
            .collect();
        sent.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let metrics = server.get("/metrics").1;
    assert!(metrics.contains("kd_serve_batch_rows_sum 5"), "{metrics}");
    let passes = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kd_serve_batch_rows_count "))
        .unwrap();
    assert!(passes_ok(passes.parse::<u32>().unwrap()), "{metrics}");
    // Each answer is the one the request gets alone (now in a pass of its own).
    let flat = |v: &Value| -> Vec<f64> {
        match v[0].is_array() {
            true => v.as_array().unwrap().iter().flat_map(scores).collect(),
            false => scores(v),
        }
    };
    for (body, got) in bodies.iter().zip(&together) {
        let alone = server.predict(body.clone());
        assert!(
            close(&flat(got), &flat(&alone), 1e-5),
            "{body}: {got} vs {alone}"
        );
    }
}

/// The pair's probabilities from the library, as kd predict would compute them.
fn library_pair(w: &World, a: &str, b: &str) -> Vec<f64> {
    let run = kd::run::load_run(
        w.p("t").as_ref(),
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
    )
    .unwrap();
    let row = kd::data::Example {
        text: a.into(),
        pair: Some(b.into()),
        label: None,
        raw_label: None,
    };
    let pad = run.checkpoint.config.pad_id();
    let batcher = kd::data::tokenize_rows(&run.tokenizer, &[row], pad).unwrap();
    let logits = kd::model::predict_logits(&run.model, &batcher, &[0], 1, "test").unwrap();
    kd::model::probabilities(&logits, run.temperature)
}

/// The error body of a refusal: TEI's {"error", "error_type"}.
fn refusal(server: &Server, body: &str, status: u16, says: &str) {
    let (got, text) = server.post(body);
    assert_eq!(got, status, "{body}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let message = v["error"].as_str().unwrap();
    assert!(message.contains(says), "{body}: {message}");
    assert!(v["error_type"].is_string(), "{text}");
}

#[test]
fn limits_are_refused_with_413_and_422_naming_what_is_wrong() {
    let w = world();
    let server = Server::start(
        &w.p("t"),
        &[
            "--payload-limit",
            "4096",
            "--max-client-batch-size",
            "2",
            "--max-text-chars",
            "500",
            "--max-len",
            "16",
        ],
    );
    let big = serde_json::json!({ "inputs": "nasa ".repeat(1000) }).to_string();
    refusal(&server, &big, 413, "--payload-limit");
    let three = r#"{"inputs": [["a"], ["b"], ["c"]]}"#;
    refusal(&server, three, 413, "--max-client-batch-size");
    let long = serde_json::json!({ "inputs": "x".repeat(501) }).to_string();
    refusal(&server, &long, 422, "--max-text-chars");
    refusal(
        &server,
        r#"{"inputs": [["ok"], [""]]}"#,
        422,
        "`inputs[1][0]` is empty",
    );
    refusal(
        &server,
        r#"{"inputs": {"text": "a"}}"#,
        422,
        "`inputs` must be",
    );
    refusal(&server, r#"{"text": "a"}"#, 422, "`inputs` is missing");
    refusal(&server, "not json", 400, "not JSON");
    // "truncate": false refuses what --max-len 16 would cut; left out, it is cut.
    let words = "nasa space chip ".repeat(10);
    let strict = serde_json::json!({ "inputs": [["a"], [words]], "truncate": false });
    refusal(
        &server,
        &strict.to_string(),
        422,
        "`inputs[1]` is longer than the 16 tokens",
    );
    server.predict(serde_json::json!({ "inputs": words }));
    let metrics = server.get("/metrics").1;
    for status in ["413", "422", "400", "200"] {
        let needle = format!(r#"kd_serve_requests_total{{route="/predict",status="{status}"}}"#);
        assert!(
            metrics.contains(&needle),
            "{needle} missing from\n{metrics}"
        );
    }
}

#[test]
fn a_full_queue_answers_503_and_the_others_are_answered() {
    let w = world();
    // One request in the worker (held 1.5 s), one waiting: a third finds the queue full.
    let server = Server::start(
        &w.p("t"),
        &[
            "--queue-size",
            "1",
            "--max-batch",
            "1",
            "--test-batch-delay-ms",
            "1500",
        ],
    );
    let statuses: Vec<(u16, String)> = std::thread::scope(|s| {
        let sent: Vec<_> = (0..3)
            .map(|_| s.spawn(|| server.post(r#"{"inputs": "nasa space"}"#)))
            .collect();
        sent.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let full: Vec<_> = statuses.iter().filter(|(s, _)| *s == 503).collect();
    assert!(!full.is_empty(), "{statuses:?}");
    assert!(
        full[0].1.contains("--queue-size") && full[0].1.contains("overloaded"),
        "{full:?}"
    );
    assert!(
        statuses.iter().all(|(s, _)| *s == 503 || *s == 200),
        "{statuses:?}"
    );
    let metrics = server.get("/metrics").1;
    assert!(metrics.contains(r#"status="503""#), "{metrics}");
}

#[test]
fn sigterm_lets_the_request_in_flight_finish() {
    let w = world();
    let mut server = Server::start(&w.p("t"), &["--test-batch-delay-ms", "1000"]);
    std::thread::scope(|s| {
        let in_flight = s.spawn(|| server.post(r#"{"inputs": "football coach"}"#));
        // Once the worker has taken the request (it then sleeps 1 s), stop the server.
        let started = Instant::now();
        while !server
            .get("/metrics")
            .1
            .contains("kd_serve_batch_rows_count 1")
        {
            assert!(started.elapsed() < Duration::from_secs(10), "never batched");
            std::thread::sleep(Duration::from_millis(20));
        }
        server.terminate();
        let (status, body) = in_flight.join().unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"score\""), "{body}");
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still running");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

/// `kd serve ARGS` must exit non-zero without listening; returns its stderr.
fn refused_to_start(run: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kd"))
        .args(["serve", run, "--port", "0", "--device", "cpu"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("kd serve {run} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn refuses_to_start_on_a_folder_kd_refuses_elsewhere() {
    let w = world();
    let err = refused_to_start(&w.p("data"));
    assert!(err.contains("not a kd run folder"), "{err}");
    // A run whose log was damaged: kd predict refuses it, and so does kd serve.
    let damaged = w.p("damaged");
    std::fs::create_dir_all(&damaged).unwrap();
    for entry in std::fs::read_dir(w.p("t")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(
                &path,
                std::path::Path::new(&damaged).join(path.file_name().unwrap()),
            )
            .unwrap();
        }
    }
    std::fs::write(std::path::Path::new(&damaged).join("metrics.jsonl"), "").unwrap();
    let err = refused_to_start(&damaged);
    assert!(
        err.contains("metrics.jsonl") && err.contains("damaged"),
        "{err}"
    );
}
