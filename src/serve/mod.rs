//! `kd serve`: a trained model behind HTTP, on axum (hyper on tokio).
//!
//! - [`http`]: the routes (`POST /predict` in text-embeddings-inference's shape, `GET /health`,
//!   `GET /metrics`) and the layer that counts requests;
//! - [`request`]: reading and checking a `/predict` body;
//! - [`batching`]: the bounded queue and the one worker thread that owns the model and runs
//!   gathered requests as one batch;
//! - [`metrics`]: the Prometheus metrics;
//! - [`error`]: refusals in TEI's error shape.
//!
//! Shutdown: on SIGTERM or SIGINT the server stops accepting connections, every request in
//! flight gets its answer, and the worker stops once the queue is drained.
mod batching;
mod error;
mod http;
mod metrics;
mod request;

pub use batching::BatchSettings;

use crate::error::{KdError, Result};
use crate::run::LoadedModel;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What a request may hold.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Bytes of a request body; more is refused with 413.
    pub payload_limit: usize,
    /// Sequences in one batch request; more is refused with 413.
    pub max_client_batch_size: usize,
    /// Characters of one text; more is refused with 422.
    pub max_text_chars: usize,
}

/// Where to listen, how to batch, what to take.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub host: String,
    /// 0 lets the system pick a free port (the address is reported once bound).
    pub port: u16,
    pub batching: BatchSettings,
    pub limits: Limits,
}

/// Serves `loaded` until SIGTERM or SIGINT. `on_listening` is told the bound address once the
/// server accepts connections. Returns once every request in flight has been answered.
pub fn serve(
    loaded: LoadedModel,
    config: ServeConfig,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<()> {
    // Each request is tokenized, serially, on the HTTP thread that received it. Left parallel,
    // tokenizers would run on rayon's global pool, where the model's matmuls run: a request's
    // few texts would wait behind another batch's forward pass.
    tokenizers::utils::parallelism::set_parallelism(false);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kd-serve-http")
        .build()
        .map_err(|e| KdError::Serve(format!("cannot start the async runtime: {e}")))?;
    let worker = runtime.block_on(run(loaded, config, on_listening))?;
    // The router, and with it the last queue handle, is gone: the worker finishes what is
    // queued and ends.
    worker
        .join()
        .map_err(|_| KdError::Internal("the model worker panicked".into()))?;
    tracing::info!("stopped");
    Ok(())
}

/// Binds, starts the worker, serves until a stop signal; returns the worker to join.
async fn run(
    loaded: LoadedModel,
    config: ServeConfig,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<std::thread::JoinHandle<()>> {
    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .await
        .map_err(|e| {
            KdError::Serve(format!(
                "cannot listen on {}:{}: {e}",
                config.host, config.port
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| KdError::Serve(format!("the bound address: {e}")))?;
    let (app, worker) = start_app(loaded, &config)?;
    on_listening(addr);
    tracing::info!(
        "serving {} classes on http://{addr} (max batch {} rows, max wait {:?}, queue {})",
        app.labels.len(),
        config.batching.max_batch,
        config.batching.max_wait,
        config.batching.queue_size
    );
    axum::serve(listener, http::router(app))
        .with_graceful_shutdown(stop_signal())
        .await
        .map_err(|e| KdError::Serve(format!("the server failed: {e}")))?;
    Ok(worker)
}

/// Splits the loaded model: the model goes to the worker thread, the tokenizer and the class
/// names to the handlers.
fn start_app(
    loaded: LoadedModel,
    config: &ServeConfig,
) -> Result<(Arc<http::App>, std::thread::JoinHandle<()>)> {
    let labels: Vec<String> = (0..loaded.model.num_labels())
        .map(|c| loaded.class_name(c))
        .collect();
    let pad_id = loaded.checkpoint.config.pad_id();
    let metrics = Arc::new(metrics::Metrics::new(config.batching.max_batch)?);
    let (queue, worker) = batching::start(
        loaded.model,
        pad_id,
        config.batching.clone(),
        metrics.clone(),
    )
    .map_err(|e| KdError::Serve(format!("cannot start the model worker: {e}")))?;
    let app = Arc::new(http::App {
        queue,
        tokenizer: loaded.tokenizer,
        labels,
        temperature: loaded.temperature,
        limits: config.limits.clone(),
        queue_size: config.batching.queue_size,
        metrics,
    });
    Ok((app, worker))
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn stop_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate() => {}
    }
    tracing::info!("stopping: no new connections; answering the requests in flight");
}

#[cfg(unix)]
async fn terminate() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending::<()>().await;
}
