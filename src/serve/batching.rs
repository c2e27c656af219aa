//! Dynamic batching. One worker thread owns the model (a forward pass already uses every core,
//! so two at once would only contend); requests wait in a bounded queue, and the worker
//! takes the first with those already waiting (waiting up to `--max-wait-ms` for `--max-batch`
//! rows when that is above its default 0: by default the requests that arrive while a pass runs
//! make the next), runs them in passes of equal size of at most `--max-batch` rows and answers
//! each request as soon as its rows are done.
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
    /// Rows per forward pass: the worker gathers this many before it runs (more when they are
    /// already waiting) and runs them length-sorted in passes of at most this many rows.
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

    /// `first` and whatever joins it within `--max-wait-ms`, up to `--max-batch` rows; then the
    /// requests already waiting, up to [`WAITING_PASSES`] × `--max-batch` rows (they cost no
    /// extra wait).
    fn gather(&self, first: Job, rx: &Receiver<Job>) -> Vec<Job> {
        let deadline = Instant::now() + self.settings.max_wait;
        let max_batch = self.settings.max_batch;
        let mut rows = first.rows();
        let mut jobs = vec![first];
        while rows < WAITING_PASSES * max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = if left.is_zero() || rows >= max_batch {
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

    /// The gathered rows in passes of equal size, at most `--max-batch` rows each, sorted by
    /// length as `kd predict` batches (a pass packs its rows' real tokens, so the sort only
    /// groups the embeddings' padded lookup); each request is answered as soon as the pass
    /// holding its last row is done.
    fn run(&self, jobs: Vec<Job>) {
        if !self.settings.delay.is_zero() {
            std::thread::sleep(self.settings.delay);
        }
        let (mut ids, mut segments, mut owner) = (Vec::new(), Vec::new(), Vec::new());
        let mut pending: Vec<Pending> = Vec::with_capacity(jobs.len());
        for (j, job) in jobs.into_iter().enumerate() {
            let (i, s) = job.encoded;
            pending.push(Pending {
                first: ids.len(),
                rows: i.len(),
                rows_left: i.len(),
                reply: Some(job.reply),
            });
            owner.extend(std::iter::repeat_n(j, i.len()));
            ids.extend(i);
            segments.extend(s);
        }
        let n = ids.len();
        let batcher = Batcher::new(ids, vec![None; n], self.pad_id).with_segments(segments);
        let classes = self.model.num_labels();
        let mut logits = vec![0f32; n * classes];
        let all: Vec<usize> = (0..n).collect();
        // Passes of equal size (40 rows: two of 20, not 32 and 8): a pass's fixed costs weigh
        // most on a small one, and packed tokens make no pass pay for another's lengths.
        let max_batch = self.settings.max_batch.max(1);
        let per_pass = n.div_ceil(n.div_ceil(max_batch).max(1)).max(1);
        for pass in batcher.eval_plan(&all, per_pass) {
            self.metrics.batch_rows.observe(pass.len() as f64);
            let started = Instant::now();
            let result = self.forward(&batcher, &pass);
            self.metrics
                .inference
                .observe(started.elapsed().as_secs_f64());
            tracing::debug!(rows = pass.len(), elapsed = ?started.elapsed(), "pass");
            let values = match result {
                Ok(values) => values,
                Err(e) => {
                    // This pass failed: every request still waiting gets the error.
                    for p in &mut pending {
                        p.answer(Err(e.clone()));
                    }
                    return;
                }
            };
            for (k, &row) in pass.iter().enumerate() {
                logits[row * classes..(row + 1) * classes]
                    .copy_from_slice(&values[k * classes..(k + 1) * classes]);
                let p = &mut pending[owner[row]];
                p.rows_left -= 1;
                if p.rows_left == 0 {
                    let (start, end) = (p.first * classes, (p.first + p.rows) * classes);
                    p.answer(Ok(logits[start..end].to_vec()));
                }
            }
        }
    }

    /// Logits of `rows` of `batcher`, in that order, as one padded batch. A panic in the pass (a
    /// bug in kd) fails this pass's requests, not the server.
    fn forward(&self, batcher: &Batcher, rows: &[usize]) -> Answer {
        let pass = std::panic::AssertUnwindSafe(|| {
            logits_by_length(&self.model, batcher, rows, rows.len().max(1), |_| {})
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

/// How many passes' worth of rows (`--max-batch` each) the worker takes from requests already
/// waiting. More rows make fuller passes, at the price of the last pass's requests waiting for
/// the passes before theirs.
const WAITING_PASSES: usize = 4;

/// A gathered request until it is answered.
struct Pending {
    /// Its first row among the gathered rows (its rows are consecutive), and how many it has.
    first: usize,
    rows: usize,
    /// Its rows not yet scored.
    rows_left: usize,
    reply: Option<oneshot::Sender<Answer>>,
}

impl Pending {
    /// Sends the answer, once; a client that went away no longer waits for it.
    fn answer(&mut self, answer: Answer) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(answer);
        }
    }
}
