//! Dynamic batching. One worker thread owns the model (a forward pass already uses every core,
//! so two at once would only contend); requests wait in a bounded queue, and the worker
//! gathers them up to `--max-batch` rows or `--max-wait-ms`, whichever comes first, runs them
//! as one length-sorted batch and sends each request its own rows' logits.
//!
//! The queue is std's `sync_channel`: `try_send` refuses at once when it is full (the 503),
//! `recv_timeout` bounds the wait for company, and the worker needs no async runtime. Answers
//! go back on tokio oneshot channels, which a plain thread may send on.
use super::metrics::Metrics;
use crate::data::tokenize::Encoded;
use crate::data::Batcher;
use crate::model::{logits_by_length, TextClassifier};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How requests are gathered into batches.
#[derive(Clone, Debug)]
pub struct BatchSettings {
    /// Rows per forward pass the worker gathers before it runs (a request is never split
    /// across passes; a larger one runs alone, in chunks of this many rows).
    pub max_batch: usize,
    /// How long the first request of a batch waits for others to join it.
    pub max_wait: Duration,
    /// Requests that may wait for the worker; one more is refused with 503.
    pub queue_size: usize,
    /// Test knob: the worker sleeps this long before each pass, so that tests can fill the
    /// queue and stop the server with a request in flight.
    pub delay: Duration,
}

/// Logits (rows × classes, in the request's order), or why the pass failed.
pub type Answer = Result<Vec<f32>, String>;

/// One request's tokenized rows and where its answer goes.
struct Job {
    encoded: Encoded,
    reply: oneshot::Sender<Answer>,
}

impl Job {
    fn rows(&self) -> usize {
        self.encoded.0.len()
    }
}

/// Why a request was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `--queue-size` requests are already waiting.
    Full,
    /// The worker has stopped.
    Stopped,
}

/// The sending end of the queue, shared by the HTTP handlers.
pub struct Queue {
    tx: SyncSender<Job>,
    metrics: Arc<Metrics>,
    alive: Arc<AtomicBool>,
}

impl Queue {
    /// Queues a request's rows; the receiver gets their logits.
    pub fn submit(&self, encoded: Encoded) -> Result<oneshot::Receiver<Answer>, Refused> {
        let (reply, answer) = oneshot::channel();
        // Up before the send: the worker may take the job, and lower the gauge, at once.
        self.metrics.queue_depth.inc();
        match self.tx.try_send(Job { encoded, reply }) {
            Ok(()) => Ok(answer),
            Err(e) => {
                self.metrics.queue_depth.dec();
                Err(match e {
                    TrySendError::Full(_) => Refused::Full,
                    TrySendError::Disconnected(_) => Refused::Stopped,
                })
            }
        }
    }

    /// Whether the worker is still running.
    pub fn worker_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }
}

/// Starts the worker thread that owns `model`. It stops once every [`Queue`] handle is dropped
/// and the requests already queued are answered: that is the drain of a graceful shutdown.
pub fn start(
    model: TextClassifier,
    pad_id: u32,
    settings: BatchSettings,
    metrics: Arc<Metrics>,
) -> std::io::Result<(Queue, JoinHandle<()>)> {
    let (tx, rx) = sync_channel(settings.queue_size);
    let alive = Arc::new(AtomicBool::new(true));
    let worker = Worker {
        model,
        pad_id,
        settings,
        metrics: metrics.clone(),
        _alive: AliveFlag(alive.clone()),
    };
    let handle = std::thread::Builder::new()
        .name("kd-serve-model".into())
        .spawn(move || worker.work(rx))?;
    Ok((Queue { tx, metrics, alive }, handle))
}

/// Clears the shared flag when the worker ends, however it ends (a panic included), so that
/// `/health` reports it.
struct AliveFlag(Arc<AtomicBool>);

impl Drop for AliveFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

struct Worker {
    model: TextClassifier,
    pad_id: u32,
    settings: BatchSettings,
    metrics: Arc<Metrics>,
    _alive: AliveFlag,
}

impl Worker {
    fn work(self, rx: Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            self.metrics.queue_depth.dec();
            let jobs = self.gather(first, &rx);
            self.run(jobs);
        }
        tracing::debug!("model worker: queue closed and drained");
    }

    /// `first` and whatever joins it within `--max-wait-ms`, up to `--max-batch` rows. Jobs
    /// already waiting join even after the wait is over: they cost no extra latency.
    fn gather(&self, first: Job, rx: &Receiver<Job>) -> Vec<Job> {
        let deadline = Instant::now() + self.settings.max_wait;
        let mut rows = first.rows();
        let mut jobs = vec![first];
        while rows < self.settings.max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = if left.is_zero() {
                rx.try_recv().ok()
            } else {
                rx.recv_timeout(left).ok()
            };
            let Some(job) = next else { break };
            self.metrics.queue_depth.dec();
            rows += job.rows();
            jobs.push(job);
        }
        jobs
    }

    /// One forward pass over the gathered jobs; each gets its own rows' logits back.
    fn run(&self, jobs: Vec<Job>) {
        let rows: usize = jobs.iter().map(Job::rows).sum();
        self.metrics.batch_rows.observe(rows as f64);
        if !self.settings.delay.is_zero() {
            std::thread::sleep(self.settings.delay);
        }
        let (encoded, replies): (Vec<Encoded>, Vec<_>) =
            jobs.into_iter().map(|j| (j.encoded, j.reply)).unzip();
        let counts: Vec<usize> = encoded.iter().map(|e| e.0.len()).collect();
        let started = Instant::now();
        let result = self.forward(encoded);
        self.metrics
            .inference
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(rows, requests = counts.len(), elapsed = ?started.elapsed(), "batch");
        let classes = self.model.num_labels();
        let mut offset = 0;
        for (reply, n) in replies.into_iter().zip(counts) {
            let answer = match &result {
                Ok(logits) => Ok(logits[offset * classes..(offset + n) * classes].to_vec()),
                Err(e) => Err(e.clone()),
            };
            offset += n;
            // A client that went away no longer waits for its answer: nothing to do.
            let _ = reply.send(answer);
        }
    }

    /// Logits of every row, in order. A panic in the pass (a bug in kd) fails this batch's
    /// requests, not the server.
    fn forward(&self, encoded: Vec<Encoded>) -> Answer {
        let (mut ids, mut segments) = (Vec::new(), Vec::new());
        for (i, s) in encoded {
            ids.extend(i);
            segments.extend(s);
        }
        let n = ids.len();
        let batcher = Batcher::new(ids, vec![None; n], self.pad_id).with_segments(segments);
        let all: Vec<usize> = (0..n).collect();
        let pass = std::panic::AssertUnwindSafe(|| {
            logits_by_length(&self.model, &batcher, &all, self.settings.max_batch, |_| {})
        });
        match std::panic::catch_unwind(pass) {
            Ok(Ok(logits)) => Ok(logits),
            Ok(Err(e)) => {
                tracing::error!("forward pass failed: {e}");
                Err(format!("the forward pass failed: {e}"))
            }
            Err(_) => Err("the forward pass panicked (a bug in kd; please report it)".into()),
        }
    }
}
