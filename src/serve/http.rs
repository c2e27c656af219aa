//! The routes: `POST /predict`, `GET /health` and `GET /metrics`, and the layer that counts
//! every answered request.
use super::batching::{Queue, Refused};
use super::error::ApiError;
use super::metrics::Metrics;
use super::request::{self, PredictRequest};
use super::Limits;
use crate::data::tokenize::Encoded;
use crate::data::{Example, TextTokenizer};
use crate::model::probabilities;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// What every handler shares.
pub struct App {
    pub queue: Queue,
    pub tokenizer: TextTokenizer,
    /// Class names by id (the id itself where the run has no names).
    pub labels: Vec<String>,
    /// The softmax temperature of the probabilities: the run's calibrated one, else 1.
    pub temperature: f64,
    pub limits: Limits,
    /// `--queue-size`, to say it in a 503.
    pub queue_size: usize,
    pub metrics: Arc<Metrics>,
}

/// The server's routes over `app`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/predict", post(predict))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        // A route layer runs after routing, so it sees the matched route (a bounded label)
        // rather than whatever path a client sent.
        .route_layer(middleware::from_fn_with_state(app.clone(), track))
        .layer(DefaultBodyLimit::max(app.limits.payload_limit))
        .with_state(app)
}

/// One class's score, in TEI's `Prediction` shape plus the class id.
#[derive(Debug, Serialize)]
pub struct Prediction {
    pub score: f32,
    pub label: String,
    /// The class index (TEI sends only the name; kd adds it, as clients that key by index
    /// need it and extra fields are ignored by TEI's clients).
    pub id: usize,
}

/// TEI's `PredictResponse`: one list for one input, a list of lists for a batch.
#[derive(Serialize)]
#[serde(untagged)]
enum PredictResponse {
    Single(Vec<Prediction>),
    Batch(Vec<Vec<Prediction>>),
}

async fn predict(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PredictResponse>, ApiError> {
    let body = body.map_err(|e| body_refusal(e, app.limits.payload_limit))?;
    let req = request::parse(&body, &app.limits)?;
    // Tokenized here, on the runtime's threads, so the model's thread only runs the model.
    let encoded = encode(&app, &req)?;
    let answer = app.queue.submit(encoded).map_err(|r| match r {
        Refused::Full => ApiError::overloaded(format!(
            "the queue is full ({} requests waiting, --queue-size): retry later",
            app.queue_size
        )),
        Refused::Stopped => ApiError::unhealthy("the model worker has stopped"),
    })?;
    let logits = answer
        .await
        .map_err(|_| ApiError::backend("the model worker stopped before answering"))?
        .map_err(ApiError::backend)?;
    let classes = app.labels.len();
    let mut lists: Vec<Vec<Prediction>> = logits
        .chunks(classes)
        .map(|row| app.predictions(row, req.raw_scores))
        .collect();
    Ok(Json(if req.batch {
        PredictResponse::Batch(lists)
    } else {
        PredictResponse::Single(lists.pop().unwrap_or_default())
    }))
}

/// 413 when the body is over `--payload-limit`, 400 when it could not be read.
fn body_refusal(e: BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(format!(
            "the request body is over the limit of {limit} bytes (--payload-limit)"
        ))
    } else {
        ApiError::bad_body(format!("the request body could not be read: {e}"))
    }
}

/// Token ids of every input; with `"truncate": false`, a text the model would cut is refused.
fn encode(app: &App, req: &PredictRequest) -> Result<Encoded, ApiError> {
    let rows: Vec<Example> = req
        .inputs
        .iter()
        .map(|i| Example {
            text: i.text.clone(),
            pair: i.pair.clone(),
            label: None,
            raw_label: None,
        })
        .collect();
    let (encoded, cut) = app
        .tokenizer
        .encode_rows_marked(&rows)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    if req.truncate == Some(false) {
        if let Some(k) = cut.iter().position(|&c| c) {
            return Err(ApiError::invalid(format!(
                "`{}` is longer than the {} tokens the model reads: shorten it, or send \"truncate\": true to cut it",
                req.inputs[k].field,
                app.tokenizer.max_len()
            )));
        }
    }
    Ok(encoded)
}

impl App {
    /// A row's scores, best first (TEI's order): probabilities at the run's temperature, as
    /// kd predict writes them, or the logits themselves with `raw_scores`.
    fn predictions(&self, logits: &[f32], raw: bool) -> Vec<Prediction> {
        let scores: Vec<f32> = if raw {
            logits.to_vec()
        } else {
            probabilities(logits, self.temperature)
                .into_iter()
                .map(|p| p as f32)
                .collect()
        };
        let mut out: Vec<Prediction> = scores
            .into_iter()
            .enumerate()
            .map(|(id, score)| Prediction {
                score,
                label: self.labels[id].clone(),
                id,
            })
            .collect();
        // Stable: equal scores keep class order.
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        out
    }
}

/// 200 while the model worker runs, 503 once it has stopped.
async fn health(State(app): State<Arc<App>>) -> Result<Json<serde_json::Value>, ApiError> {
    if app.queue.worker_alive() {
        Ok(Json(serde_json::json!({ "status": "ok" })))
    } else {
        Err(ApiError::unhealthy("the model worker has stopped"))
    }
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

/// Counts each answered request by route and status, and times it.
async fn track(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status();
    app.metrics
        .record(&route, status.as_u16(), started.elapsed());
    if status.is_client_error() || status.is_server_error() {
        tracing::debug!(%route, %status, "refused");
    }
    response
}
