//! Which columns of a file hold the text and the label, and how a label cell reads: shared by
//! the CSV/JSONL readers (formats.rs) and the Parquet reader (parquet_rows.rs).
use super::Example;

/// Which columns hold the text and the label. The default reads AG News CSV (no header:
/// class, title, description) and `text`/`label` in JSONL and Parquet.
/// In a config's `[columns]` table an unknown key is refused rather than dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    /// Text columns, joined with a space (CSV files then start with a header row).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text: Vec<String>,
    /// The second text of a sentence pair (NLI's hypothesis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_pair: Option<String>,
    /// The label column: integers 0..K−1 or strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl Columns {
    /// Whether the columns are named (CSV files then have a header row).
    pub fn named(&self) -> bool {
        !self.text.is_empty() || self.label.is_some() || self.text_pair.is_some()
    }

    pub(super) fn text_names(&self) -> Vec<&str> {
        if self.text.is_empty() {
            vec!["text"]
        } else {
            self.text.iter().map(String::as_str).collect()
        }
    }

    /// The label column's name (`label` by default).
    pub fn label_name(&self) -> &str {
        self.label.as_deref().unwrap_or("label")
    }
}

/// A label cell: an integer class index, or a string to be mapped to one.
pub(super) fn parse_label(cell: &str) -> (Option<u32>, Option<String>) {
    let cell = cell.trim();
    if cell.is_empty() {
        return (None, None);
    }
    match cell.parse::<u32>() {
        Ok(n) => (Some(n), None),
        Err(_) => (None, Some(cell.to_string())),
    }
}

/// Rows and their numbers in the file.
pub(super) type Numbered = (Vec<Example>, Vec<usize>);
