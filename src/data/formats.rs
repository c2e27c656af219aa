//! Reading rows from the accepted dataset formats: AG News CSV (.csv/.csv.gz), JSONL
//! (.jsonl/.jsonl.gz) and Parquet with `text`/`label` columns.
use super::Example;
use crate::error::{KdError, Result};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// The extensions kd reads, in the order they are looked for.
pub const EXTENSIONS: &[&str] = &["csv", "csv.gz", "jsonl", "jsonl.gz", "parquet"];

/// Reads every row of `path`. With `require_labels`, an unlabelled row is an error.
pub fn read_examples(path: &Path, require_labels: bool) -> Result<Vec<Example>> {
    let name = path.to_string_lossy();
    let rows = if name.ends_with(".parquet") {
        read_parquet(path)?
    } else if name.ends_with(".csv") || name.ends_with(".csv.gz") {
        read_csv(open(path)?, path)?
    } else if name.ends_with(".jsonl") || name.ends_with(".jsonl.gz") {
        read_jsonl(open(path)?, path)?
    } else {
        return Err(KdError::bad_file(
            path,
            "unknown format: expected .csv, .csv.gz, .jsonl, .jsonl.gz or .parquet",
        ));
    };
    if rows.is_empty() {
        return Err(KdError::bad_file(path, "no rows"));
    }
    if require_labels {
        if let Some(i) = rows.iter().position(|r| r.label.is_none()) {
            return Err(KdError::BadRow {
                path: path.into(),
                row: i + 1,
                message: "no label (training and evaluation data must be labelled)".into(),
            });
        }
    }
    Ok(rows)
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

/// AG News CSV, no header: `"class","title","description"` with class 1..K (label = class − 1);
/// unlabelled rows may omit the class (`"title","description"`) or be a single text column.
fn read_csv(reader: Box<dyn Read>, path: &Path) -> Result<Vec<Example>> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(reader);
    let mut rows = Vec::new();
    for (i, record) in csv.records().enumerate() {
        let row = i + 1;
        let bad = |message: String| KdError::BadRow {
            path: path.into(),
            row,
            message,
        };
        let record = record.map_err(|e| bad(format!("not valid CSV: {e}")))?;
        let example = match record.len() {
            3 => {
                let class: u32 = record[0]
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("class `{}` is not a number 1..K", &record[0])))?;
                if class == 0 {
                    return Err(bad("class 0: AG News classes start at 1".into()));
                }
                Example {
                    text: format!("{} {}", &record[1], &record[2]),
                    label: Some(class - 1),
                }
            }
            2 => Example {
                text: format!("{} {}", &record[0], &record[1]),
                label: None,
            },
            1 => Example {
                text: record[0].to_string(),
                label: None,
            },
            n => {
                return Err(bad(format!(
                    "{n} fields, expected \"class\",\"title\",\"description\""
                )))
            }
        };
        rows.push(example);
    }
    Ok(rows)
}

/// One JSON object per line: `{"text": "...", "label": 2}` (label optional for prediction).
fn read_jsonl(reader: Box<dyn Read>, path: &Path) -> Result<Vec<Example>> {
    #[derive(serde::Deserialize)]
    struct Line {
        text: String,
        #[serde(default)]
        label: Option<u32>,
    }
    let mut rows = Vec::new();
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.map_err(|e| KdError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&line).map_err(|e| KdError::BadRow {
            path: path.into(),
            row: i + 1,
            message: format!("expected {{\"text\": string, \"label\": integer}}: {e}"),
        })?;
        rows.push(Example {
            text: parsed.text,
            label: parsed.label,
        });
    }
    Ok(rows)
}

/// Parquet with a string column `text` and an integer column `label` (the Hub's ag_news layout).
fn read_parquet(path: &Path) -> Result<Vec<Example>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let file = std::fs::File::open(path).map_err(|e| KdError::io(path, e))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| KdError::bad_file(path, format!("not a Parquet file: {e}")))?;
    let iter = reader
        .get_row_iter(None)
        .map_err(|e| KdError::bad_file(path, e.to_string()))?;
    let mut rows = Vec::new();
    for (i, row) in iter.enumerate() {
        let bad = |message: String| KdError::BadRow {
            path: path.into(),
            row: i + 1,
            message,
        };
        let row = row.map_err(|e| bad(e.to_string()))?;
        let (mut text, mut label) = (None, None);
        for (name, field) in row.get_column_iter() {
            match (name.as_str(), field) {
                ("text", Field::Str(s)) => text = Some(s.clone()),
                ("label", Field::Null) => {}
                ("label", f) => {
                    label =
                        Some(integer_field(f).ok_or_else(|| {
                            bad(format!("label `{f}` is not a non-negative integer"))
                        })?)
                }
                _ => {}
            }
        }
        let text = text.ok_or_else(|| bad("no string column `text`".into()))?;
        rows.push(Example { text, label });
    }
    Ok(rows)
}

fn integer_field(f: &parquet::record::Field) -> Option<u32> {
    use parquet::record::Field;
    let v: i64 = match f {
        Field::Byte(v) => *v as i64,
        Field::Short(v) => *v as i64,
        Field::Int(v) => *v as i64,
        Field::Long(v) => *v,
        Field::UByte(v) => *v as i64,
        Field::UShort(v) => *v as i64,
        Field::UInt(v) => *v as i64,
        Field::ULong(v) => *v as i64,
        _ => return None,
    };
    u32::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
