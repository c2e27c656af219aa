//! Training: losses, AdamW, the learning-rate schedule, the loop and metrics.
pub mod log;
pub mod loss;
pub mod metrics;
pub mod optimizer;
pub mod schedule;
pub mod selection;
pub mod trainer;

pub use log::MetricsLog;
pub use trainer::{
    new_optimizer, predict_logits, train, train_step, Objective, TrainReport, TrainSettings,
};
