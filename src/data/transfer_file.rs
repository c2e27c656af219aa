//! Writing unlabelled rows as a transfer file that `kd teach --unlabelled` and `kd cache
//! --unlabelled` read back as the same rows, under the columns those commands read with: the
//! teacher reads a transfer file with its own columns, so a file made for it must use them.
//! Bytes depend on the rows alone (no timestamps, fields in a fixed order), so the same rows
//! make the same file.
use super::columns::Columns;
use super::Example;
use crate::error::{KdError, Result};
use std::io::Write;
use std::path::Path;

/// The formats a transfer file is written in, chosen by the file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferFormat {
    /// One JSON object per line, the text under the text column's name (`text` by default).
    Jsonl,
    /// CSV: with named columns a header row, then the rows; with the default columns one quoted
    /// text per line, as AG News' headerless reader takes a single text column.
    Csv,
}

impl TransferFormat {
    /// The format `path` names: `.jsonl` or `.csv` (kd reads `.gz` too, but writes plain
    /// files: a compressed file's bytes would depend on the compressor's version).
    pub fn of(path: &Path, flag: &str) -> Result<Self> {
        let name = path.to_string_lossy();
        if name.ends_with(".jsonl") {
            Ok(Self::Jsonl)
        } else if name.ends_with(".csv") {
            Ok(Self::Csv)
        } else {
            Err(KdError::Config(format!(
                "{flag} {name}: write a .jsonl or .csv file (kd reads both back as a transfer set)"
            )))
        }
    }
}

/// Whether `columns` can be written: one text column (the written text is one string; split
/// over several columns it would come back joined with a space nobody wrote).
pub fn check_columns(columns: &Columns) -> Result<()> {
    if columns.text.len() > 1 {
        return Err(KdError::Config(format!(
            "--text-column names {} columns ({}): a transfer file written by kd holds one text (and a pair), so its rows would not read back as written; join the columns into one first",
            columns.text.len(),
            columns.text.join(", ")
        )));
    }
    Ok(())
}

/// Writes `rows` (texts and pairs; labels are not written) to `path` in `format`.
pub fn write(
    path: &Path,
    rows: &[Example],
    columns: &Columns,
    format: TransferFormat,
) -> Result<()> {
    check_columns(columns)?;
    let file = std::fs::File::create(path).map_err(|e| KdError::io(path, e))?;
    let mut out = std::io::BufWriter::new(file);
    let text = columns.text_names()[0];
    let pair = columns.text_pair.as_deref();
    match format {
        TransferFormat::Jsonl => write_jsonl(&mut out, rows, text, pair),
        TransferFormat::Csv => write_csv(&mut out, rows, columns.named().then_some(text), pair),
    }
    .map_err(|e| KdError::io(path, e))?;
    let file = out
        .into_inner()
        .map_err(|e| KdError::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| KdError::io(path, e))
}

fn write_jsonl(
    out: &mut impl Write,
    rows: &[Example],
    text: &str,
    pair: Option<&str>,
) -> std::io::Result<()> {
    let key = |k: &str| serde_json::to_string(k).expect("a string serializes");
    let (text_key, pair_key) = (key(text), pair.map(key));
    for r in rows {
        let value = serde_json::to_string(&r.text).expect("a string serializes");
        write!(out, "{{{text_key}: {value}")?;
        if let (Some(k), Some(p)) = (&pair_key, &r.pair) {
            let p = serde_json::to_string(p).expect("a string serializes");
            write!(out, ", {k}: {p}")?;
        }
        writeln!(out, "}}")?;
    }
    Ok(())
}

/// `header`: the text column's name when the columns are named (a pair needs them named).
fn write_csv(
    out: &mut impl Write,
    rows: &[Example],
    header: Option<&str>,
    pair: Option<&str>,
) -> std::io::Result<()> {
    let mut csv = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .flexible(true)
        .from_writer(out);
    if let Some(text) = header {
        csv.write_record(std::iter::once(text).chain(pair))?;
    }
    for r in rows {
        let cells = std::iter::once(r.text.as_str()).chain(pair.and(r.pair.as_deref()));
        csv.write_record(cells)?;
    }
    csv.flush()
}

#[cfg(test)]
mod tests {
    use super::super::formats::read_numbered;
    use super::*;

    fn rows(pair: bool) -> Vec<Example> {
        let texts = [
            "plain words",
            "a \"quoted\", comma",
            "text,label",
            "ünïcode \u{2028} ☃",
        ];
        texts
            .iter()
            .map(|t| Example {
                text: t.to_string(),
                pair: pair.then(|| format!("second {t}")),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn rows_read_back_as_written_in_every_format_and_columns() {
        let dir = tempfile::tempdir().unwrap();
        let named = Columns {
            text: vec!["sentence".into()],
            text_pair: Some("hypothesis".into()),
            label: Some("gold".into()),
        };
        let cases = [(Columns::default(), false), (named, true)];
        for (columns, pair) in cases {
            for (name, format) in [
                ("t.jsonl", TransferFormat::Jsonl),
                ("t.csv", TransferFormat::Csv),
            ] {
                let path = dir.path().join(name);
                assert_eq!(TransferFormat::of(&path, "--out").unwrap(), format);
                write(&path, &rows(pair), &columns, format).unwrap();
                let first = std::fs::read(&path).unwrap();
                let (back, _) = read_numbered(&path, false, &columns).unwrap();
                assert_eq!(back, rows(pair), "{name} {columns:?}");
                write(&path, &rows(pair), &columns, format).unwrap();
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    first,
                    "same rows, same bytes"
                );
            }
        }
        let text = std::fs::read_to_string(dir.path().join("t.jsonl")).unwrap();
        assert!(
            text.starts_with(
                "{\"sentence\": \"plain words\", \"hypothesis\": \"second plain words\"}\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn other_names_and_several_text_columns_are_refused() {
        let err = TransferFormat::of(Path::new("aug.jsonl.gz"), "--out").unwrap_err();
        assert!(err.to_string().contains(".jsonl or .csv"), "{err}");
        assert!(TransferFormat::of(Path::new("aug.parquet"), "--out").is_err());
        let two = Columns {
            text: vec!["title".into(), "body".into()],
            ..Default::default()
        };
        let err = check_columns(&two).unwrap_err().to_string();
        assert!(
            err.contains("title, body") && err.contains("one text"),
            "{err}"
        );
    }
}
