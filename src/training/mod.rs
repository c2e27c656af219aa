//! Training: losses, AdamW, the learning-rate schedule, the loop and metrics.
pub(crate) mod calibration;
pub(crate) mod data_parallel;
pub(crate) mod inference;
pub(crate) mod log;
pub mod loss;
pub(crate) mod metrics;
pub mod optimizer;
pub mod repr;
pub mod schedule;
pub(crate) mod selection;
pub(crate) mod state;
mod step;
pub(crate) mod trainer;

pub use inference::{evaluate_examples, evaluate_file, evaluate_shared, FileEvaluation};
pub use log::MetricsLog;
pub use repr::{Projection, ReprLoss, ReprTerm};
pub use selection::Select;
pub use state::{Checkpoints, TrainState};
pub use step::{new_optimizer, step_loss, train_step, trained, Objective, StepLoss, TrainSettings};
pub use trainer::{train, Progress, TrainReport};
