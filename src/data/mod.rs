//! Data: reading datasets, holding out a validation slice, tokenizing and batching.
pub mod augment;
pub(crate) mod batching;
mod columns;
mod csv_rows;
pub(crate) mod dataset;
pub(crate) mod formats;
pub(crate) mod labels;
mod parquet_rows;
pub(crate) mod tokenize;
pub(crate) mod transfer_file;

pub use batching::{Batch, Batcher};
pub use dataset::{DataFiles, Dataset, SplitFiles};
pub use formats::{read_examples, Columns};
pub use tokenize::{tokenize_rows, TextTokenizer, TokenizerFiles};

/// One row: a text and, for labelled data, its class index (0-based).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Example {
    pub text: String,
    /// The second text of a sentence pair (tokenized as transformers does a pair: its tokens
    /// get token type 1).
    pub pair: Option<String>,
    pub label: Option<u32>,
    /// A label the file spells as a string (`"positive"`), until the dataset maps it to a class
    /// index (see `labels::map_string_labels`).
    pub raw_label: Option<String>,
}

impl Example {
    /// Whether the row carries a label, as a number or a string.
    pub fn is_labelled(&self) -> bool {
        self.label.is_some() || self.raw_label.is_some()
    }
}
