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
mod step;
pub mod trainer;

pub use inference::{evaluate_examples, evaluate_file, FileEvaluation};
pub use log::MetricsLog;
pub use state::{Checkpoints, NoCheckpoints, TrainState};
pub use step::{new_optimizer, train_step, Objective, TrainSettings};
pub use trainer::{train, Progress, TrainReport};
