//! Training: losses, AdamW, the learning-rate schedule, the loop and metrics.
pub mod calibration;
pub mod inference;
pub mod log;
pub mod loss;
pub mod metrics;
pub mod optimizer;
pub mod schedule;
pub mod selection;
pub mod state;
pub mod trainer;

pub use inference::{
    cache_logits, evaluate_examples, evaluate_file, predict_logits, FileEvaluation, Shard,
    CACHE_CHUNK_ROWS,
};
pub use log::MetricsLog;
pub use state::{Checkpoints, NoCheckpoints, TrainState};
pub use trainer::{
    new_optimizer, train, train_step, Objective, Progress, TrainReport, TrainSettings,
};
