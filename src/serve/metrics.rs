//! The server's Prometheus metrics, on the `prometheus` crate (TiKV's): a registry of our own,
//! typed counters and histograms that are safe to update from the model worker's thread, and
//! its text encoder for `GET /metrics`.
use crate::error::{KdError, Result};
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};
use std::time::Duration;

/// Every metric `kd serve` keeps.
pub struct Metrics {
    registry: Registry,
    /// Answered requests by route and status code.
    requests: IntCounterVec,
    /// Time from a request's arrival to its answer, by route.
    latency: HistogramVec,
    /// Rows in each forward pass the worker runs (requests gathered together).
    pub batch_rows: Histogram,
    /// Seconds each gathered batch spends in the model.
    pub inference: Histogram,
    /// Requests waiting in the queue for the worker.
    pub queue_depth: IntGauge,
}

impl Metrics {
    /// Registers the metrics; batch-size buckets run in powers of two up to `max_batch`.
    pub fn new(max_batch: usize) -> Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "kd_serve_requests_total",
                "Requests answered, by route and status",
            ),
            &["route", "status"],
        )
        .map_err(internal)?;
        // 0.5 ms to ~8 s: a tiny student answers in a millisecond, a teacher on a loaded CPU
        // in seconds.
        let seconds = exponential_buckets(0.0005, 2.0, 15).map_err(internal)?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "kd_serve_request_duration_seconds",
                "Time from a request's arrival to its answer, by route",
            )
            .buckets(seconds.clone()),
            &["route"],
        )
        .map_err(internal)?;
        let batch_rows = Histogram::with_opts(
            HistogramOpts::new("kd_serve_batch_rows", "Rows in each forward pass")
                .buckets(row_buckets(max_batch)),
        )
        .map_err(internal)?;
        let inference = Histogram::with_opts(
            HistogramOpts::new(
                "kd_serve_inference_duration_seconds",
                "Seconds each gathered batch spends in the model",
            )
            .buckets(seconds),
        )
        .map_err(internal)?;
        let queue_depth = IntGauge::new("kd_serve_queue_depth", "Requests waiting for the model")
            .map_err(internal)?;
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(batch_rows.clone()),
            Box::new(inference.clone()),
            Box::new(queue_depth.clone()),
        ] {
            registry.register(m).map_err(internal)?;
        }
        Ok(Self {
            registry,
            requests,
            latency,
            batch_rows,
            inference,
            queue_depth,
        })
    }

    /// Counts one answered request.
    pub fn record(&self, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
        self.latency
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding our own well-formed families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// 1, 2, 4, … below `max_batch`, then `max_batch` itself.
fn row_buckets(max_batch: usize) -> Vec<f64> {
    let mut b: Vec<f64> = std::iter::successors(Some(1usize), |n| n.checked_mul(2))
        .take_while(|&n| n < max_batch)
        .map(|n| n as f64)
        .collect();
    b.push(max_batch.max(1) as f64);
    b
}

fn internal(e: prometheus::Error) -> KdError {
    KdError::Internal(format!("metrics: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let m = Metrics::new(24).unwrap();
        assert_eq!(row_buckets(24), [1.0, 2.0, 4.0, 8.0, 16.0, 24.0]);
        assert_eq!(row_buckets(1), [1.0]);
        m.record("/predict", 200, Duration::from_millis(3));
        m.batch_rows.observe(5.0);
        m.queue_depth.set(2);
        let text = m.render();
        assert!(text.contains(r#"kd_serve_requests_total{route="/predict",status="200"} 1"#));
        assert!(text.contains("kd_serve_batch_rows_count 1"));
        assert!(text.contains("kd_serve_queue_depth 2"));
        assert!(text.contains("kd_serve_request_duration_seconds_bucket"));
    }
}
