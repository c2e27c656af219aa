//! Reading rows from the accepted dataset formats: AG News CSV (.csv/.csv.gz), JSONL
//! (.jsonl/.jsonl.gz) and Parquet with `text`/`label` columns, or any named columns: CSV with a
//! header row, JSON fields, Parquet columns (`--text-column`, `--label-column`). Labels are
//! integers (0-based) or strings (mapped to classes by the dataset, see `labels`).
pub use super::columns::Columns;
use super::columns::{parse_label, Numbered};
use super::csv_rows;
pub use super::csv_rows::Header;
use super::Example;
use crate::error::{KdError, Result};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// The extensions kd reads, in the order they are looked for.
pub const EXTENSIONS: &[&str] = &["csv", "csv.gz", "jsonl", "jsonl.gz", "parquet"];

/// Reads every row of `path` with the default columns. With `require_labels`, an unlabelled
/// row is an error.
pub fn read_examples(path: &Path, require_labels: bool) -> Result<Vec<Example>> {
    read_examples_with(path, require_labels, &Columns::default())
}

/// Reads every row of `path` from `columns`. With `require_labels`, an unlabelled row is an
/// error; an empty text always is.
pub fn read_examples_with(
    path: &Path,
    require_labels: bool,
    columns: &Columns,
) -> Result<Vec<Example>> {
    Ok(read_numbered(path, require_labels, columns)?.0)
}

/// Unlabelled rows to label, read as [`read_examples_with`] reads them except that a header
/// row of a CSV without named columns is detected, or declared by `header`, and never read as
/// a row: it would shift every row after it by one. A header alone is no rows.
pub fn read_rows_to_predict(
    path: &Path,
    columns: &Columns,
    header: Header,
) -> Result<Vec<Example>> {
    let name = path.to_string_lossy();
    let csv = name.ends_with(".csv") || name.ends_with(".csv.gz");
    if !csv && header != Header::Detect {
        return Err(KdError::Config(format!(
            "--header/--no-header apply to CSV files; {} has no header row",
            path.display()
        )));
    }
    if csv && columns.named() && header == Header::Absent {
        return Err(KdError::Config(format!(
            "--no-header: the run reads columns by name ({}), so {} must start with a header row",
            columns.text_names().join(", "),
            path.display()
        )));
    }
    Ok(read_numbered_with(path, false, columns, header)?.0)
}

/// [`read_examples_with`], with each row's number in its file as errors name it: a CSV record's
/// row as a spreadsheet shows it (a header is row 1, a quoted field spanning lines stays one
/// row), the line of a JSONL object (blank lines are skipped but counted), a Parquet row's
/// index + 1.
pub fn read_numbered(
    path: &Path,
    require_labels: bool,
    columns: &Columns,
) -> Result<(Vec<Example>, Vec<usize>)> {
    read_numbered_with(path, require_labels, columns, Header::Absent)
}

fn read_numbered_with(
    path: &Path,
    require_labels: bool,
    columns: &Columns,
    header: Header,
) -> Result<(Vec<Example>, Vec<usize>)> {
    let name = path.to_string_lossy();
    let (rows, lines) = if name.ends_with(".parquet") {
        super::parquet_rows::read_parquet(path, columns)?
    } else if name.ends_with(".csv") || name.ends_with(".csv.gz") {
        if columns.named() {
            csv_rows::read_csv_with_header(open(path)?, path, columns, require_labels)?
        } else {
            csv_rows::read_csv(open(path)?, path, header)?
        }
    } else if name.ends_with(".jsonl") || name.ends_with(".jsonl.gz") {
        read_jsonl(open(path)?, path, columns)?
    } else {
        return Err(KdError::bad_file(
            path,
            "unknown format: expected .csv, .csv.gz, .jsonl, .jsonl.gz or .parquet",
        ));
    };
    if rows.is_empty() {
        return Err(KdError::bad_file(path, "no rows"));
    }
    if let Some(i) = rows.iter().position(|r| r.text.trim().is_empty()) {
        return Err(KdError::BadRow {
            path: path.into(),
            row: lines[i],
            message: format!("empty text (columns {})", columns.text_names().join(", ")),
        });
    }
    if require_labels {
        if let Some(i) = rows.iter().position(|r| !r.is_labelled()) {
            return Err(KdError::BadRow {
                path: path.into(),
                row: lines[i],
                message: "no label (training and evaluation data must be labelled)".into(),
            });
        }
    }
    Ok((rows, lines))
}

/// Opens a file, decompressing `.gz` on the fly.
fn open(path: &Path) -> Result<Box<dyn Read>> {
    let file = std::fs::File::open(path).map_err(|e| KdError::io(path, e))?;
    if path.to_string_lossy().ends_with(".gz") {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(
            file,
        ))))
    } else {
        Ok(Box::new(BufReader::new(file)))
    }
}

/// One JSON object per line: `{"text": "...", "label": 2}` by default (label optional for
/// prediction), or the named fields; a label may be a number or a string.
fn read_jsonl(reader: Box<dyn Read>, path: &Path, columns: &Columns) -> Result<Numbered> {
    let (mut rows, mut lines) = (Vec::new(), Vec::new());
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.map_err(|e| KdError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        lines.push(i + 1);
        let bad = |message: String| KdError::BadRow {
            path: path.into(),
            row: i + 1,
            message,
        };
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        let mut parts = Vec::new();
        for name in columns.text_names() {
            match &v[name] {
                serde_json::Value::String(s) => parts.push(s.clone()),
                serde_json::Value::Null => return Err(bad(format!("no field `{name}`"))),
                other => return Err(bad(format!("field `{name}` is {other}, not a string"))),
            }
        }
        let pair = match columns.text_pair.as_deref() {
            None => None,
            Some(name) => match &v[name] {
                serde_json::Value::String(s) => Some(s.clone()),
                _ => return Err(bad(format!("no string field `{name}`"))),
            },
        };
        let (label, raw_label) = match &v[columns.label_name()] {
            serde_json::Value::Null => (None, None),
            serde_json::Value::String(s) => parse_label(s),
            serde_json::Value::Number(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => (Some(n), None),
                None => return Err(bad(format!("label {n} is not a class index 0..K−1"))),
            },
            other => {
                return Err(bad(format!(
                    "label {other} is neither an integer nor a string"
                )))
            }
        };
        rows.push(Example {
            text: parts.join(" "),
            pair,
            label,
            raw_label,
        });
    }
    Ok((rows, lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_row_as_the_file_numbers_it() {
        let dir = tempfile::tempdir().unwrap();
        let columns = Columns {
            text: vec!["sentence".into()],
            ..Default::default()
        };
        // A header CSV, CRLF line ends: the header is row 1, a quoted field spanning two lines
        // is one row (as a spreadsheet shows it).
        let csv = dir.path().join("h.csv");
        let text = "sentence,label\r\ngood,1\r\n\"two\r\nlines\",0\r\n  ,1\r\n";
        std::fs::write(&csv, text).unwrap();
        let err = read_examples_with(&csv, true, &columns)
            .unwrap_err()
            .to_string();
        assert!(err.contains("h.csv, row 4: empty text"), "{err}");
        let plain = dir.path().join("p.csv");
        std::fs::write(&plain, "\"1\",\"a\",\"b\"\r\n\"x\",\"a\",\"b\"\r\n").unwrap();
        let err = read_examples(&plain, true).unwrap_err().to_string();
        assert!(err.contains("p.csv, row 2: class `x`"), "{err}");
        // An empty text is refused even where labels are not required.
        assert!(read_numbered(&csv, false, &columns).is_err());
        // JSONL: blank lines are skipped but counted.
        let jsonl = dir.path().join("j.jsonl");
        std::fs::write(
            &jsonl,
            "{\"text\": \"a\", \"label\": 0}\n\n{\"text\": \"b\"}\n",
        )
        .unwrap();
        let err = read_examples_with(&jsonl, true, &Columns::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("j.jsonl, row 3: no label"), "{err}");
        let (rows, lines) = read_numbered(&jsonl, false, &Columns::default()).unwrap();
        assert_eq!((rows.len(), lines), (2, vec![1, 3]));
    }

    #[test]
    fn csv_rows_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(
            &path,
            "\"3\",\"Fears\",\"Unions \"\"say\"\"\"\n\"1\",\"a\",\"b\"\n",
        )
        .unwrap();
        let rows = read_examples(&path, true).unwrap();
        assert_eq!(rows[0].text, "Fears Unions \"say\"");
        assert_eq!(rows[0].label, Some(2));
        std::fs::write(&path, "\"1\",\"a\",\"b\"\n\"0\",\"a\",\"b\"\n").unwrap();
        let err = read_examples(&path, true).unwrap_err().to_string();
        assert!(
            err.contains("t.csv, row 2") && err.contains("class 0"),
            "{err}"
        );
        std::fs::write(&path, "\"a\",\"b\"\n").unwrap();
        assert!(read_examples(&path, false).unwrap()[0].label.is_none());
        let err = read_examples(&path, true).unwrap_err().to_string();
        assert!(err.contains("row 1") && err.contains("no label"), "{err}");
    }
}
