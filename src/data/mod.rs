//! Data: reading datasets, holding out a validation slice, tokenizing and batching.
pub mod batching;
pub mod dataset;
pub mod formats;
pub mod labels;
pub mod tokenize;

pub use batching::{Batch, Batcher};
pub use dataset::{DataFiles, Dataset, SplitFiles};
pub use tokenize::{tokenize_rows, TextTokenizer};

/// One row: a text and, for labelled data, its class index (0-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub text: String,
    pub label: Option<u32>,
}
