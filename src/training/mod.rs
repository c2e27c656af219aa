//! Training: losses, AdamW, the learning-rate schedule, the loop and metrics.
pub mod calibration;
mod epoch;
pub mod inference;
pub mod log;
pub mod loss;
pub mod metrics;
pub mod optimizer;
pub mod schedule;
pub mod selection;
pub mod state;
pub mod trainer;

pub use inference::{evaluate_examples, evaluate_file, FileEvaluation};
pub use log::MetricsLog;
pub use state::{Checkpoints, NoCheckpoints, TrainState};
pub use trainer::{
    new_optimizer, train, train_step, Objective, Progress, TrainReport, TrainSettings,
};
