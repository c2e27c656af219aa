//! CSV rows: AG News' headerless form and files whose first row names the columns. Every
//! record goes through [`QuoteScan`], so a quote that is never closed (csv then reads the rest
//! of the file as one field, without an error) is reported as an unbalanced quote with its row.
use super::columns::Columns;
use super::columns::{parse_label, Numbered};
use super::Example;
use crate::error::{KdError, Result};
use std::io::Read;
use std::path::Path;

/// Whether the first row of a CSV without named columns names its columns (rows to predict
/// often start with `title,description` or `text`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Header {
    /// A first row whose every cell is a known column name is a header.
    #[default]
    Detect,
    /// The first row is a header (`--header`).
    Present,
    /// The first row is a row (`--no-header`).
    Absent,
}

/// The column names a header row of rows to predict is recognised by (AG News' own included).
const KNOWN_COLUMNS: &[&str] = &[
    "text",
    "title",
    "description",
    "label",
    "class",
    "class index",
    "class_index",
    "sentence",
];

/// AG News CSV, no header: `"class","title","description"` with class 1..K (label = class − 1);
/// unlabelled rows may omit the class (`"title","description"`) or be a single text column.
/// A first row that is a header (see [`Header`]) is skipped.
pub(super) fn read_csv(reader: Box<dyn Read>, path: &Path, header: Header) -> Result<Numbered> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(QuoteScan::new(reader));
    let (mut rows, mut lines) = (Vec::new(), Vec::new());
    let mut skipped = None;
    // Records, not lines: csv's line positions are off by one in CRLF files.
    for_each_record(&mut csv, path, 1, |record, row| {
        if row == 1 && is_header(record, header) {
            skipped = Some(record.iter().collect::<Vec<_>>().join(","));
            return Ok(());
        }
        rows.push(ag_news_row(record, path, row)?);
        lines.push(row);
        Ok(())
    })?;
    if let Some(names) = skipped {
        if rows.is_empty() {
            return Err(KdError::bad_file(
                path,
                format!("holds only a header row (`{names}`): no rows to read"),
            ));
        }
        tracing::info!(
            "{}: row 1 (`{names}`) is a header, not a row (--no-header reads it as a row)",
            path.display()
        );
    }
    Ok((rows, lines))
}

fn is_header(record: &csv::StringRecord, header: Header) -> bool {
    match header {
        Header::Present => true,
        Header::Absent => false,
        Header::Detect => record
            .iter()
            .all(|c| KNOWN_COLUMNS.contains(&c.trim().to_lowercase().as_str())),
    }
}

/// One AG News record: class, title, description; or title, description; or one text.
fn ag_news_row(record: &csv::StringRecord, path: &Path, row: usize) -> Result<Example> {
    let bad = |message: String| KdError::BadRow {
        path: path.into(),
        row,
        message,
    };
    Ok(match record.len() {
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
                ..Default::default()
            }
        }
        2 => Example {
            text: format!("{} {}", &record[0], &record[1]),
            ..Default::default()
        },
        1 => Example {
            text: record[0].to_string(),
            ..Default::default()
        },
        n => {
            return Err(bad(format!(
                "{n} fields, expected \"class\",\"title\",\"description\""
            )))
        }
    })
}

/// A CSV file whose first row names its columns.
pub(super) fn read_csv_with_header(
    reader: Box<dyn Read>,
    path: &Path,
    columns: &Columns,
    require_labels: bool,
) -> Result<Numbered> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(QuoteScan::new(reader));
    let header = csv
        .headers()
        .map_err(|e| KdError::bad_file(path, format!("no header row: {e}")))?
        .clone();
    let (text, label, pair) = match header_columns(&header, path, columns, require_labels) {
        Ok(found) => found,
        Err(e) => {
            // A quote left open in the header swallows the whole file into it.
            let mut records = 0;
            let rest = for_each_record(&mut csv, path, 2, |_, _| {
                records += 1;
                Ok(())
            });
            return Err(rest.err().filter(|_| records == 0).unwrap_or(e));
        }
    };
    let (mut rows, mut lines) = (Vec::new(), Vec::new());
    for_each_record(&mut csv, path, 2, |record, row| {
        lines.push(row);
        let cell = |k: usize| record.get(k).unwrap_or("");
        let parts: Vec<&str> = text.iter().map(|&k| cell(k)).collect();
        let (label, raw_label) = label.map_or((None, None), |k| parse_label(cell(k)));
        rows.push(Example {
            text: parts.join(" "),
            pair: pair.map(|k| cell(k).to_string()),
            label,
            raw_label,
        });
        Ok(())
    })?;
    Ok((rows, lines))
}

/// Where the text columns, the label column and the pair column are in `header`.
fn header_columns(
    header: &csv::StringRecord,
    path: &Path,
    columns: &Columns,
    require_labels: bool,
) -> Result<(Vec<usize>, Option<usize>, Option<usize>)> {
    let find = |name: &str| -> Result<usize> {
        header.iter().position(|h| h.trim() == name).ok_or_else(|| {
            KdError::bad_file(
                path,
                format!(
                    "no column `{name}` (columns: {})",
                    header.iter().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    };
    let text: Vec<usize> = columns
        .text_names()
        .iter()
        .map(|n| find(n))
        .collect::<Result<_>>()?;
    // Unlabelled files (a transfer set, rows to predict) may leave the label column out.
    let label = match &columns.label {
        Some(name) if require_labels => Some(find(name)?),
        Some(name) => header.iter().position(|h| h.trim() == name),
        None => header.iter().position(|h| h.trim() == "label"),
    };
    let pair = columns.text_pair.as_deref().map(find).transpose()?;
    Ok((text, label, pair))
}

/// Calls `each` with every record of `csv` and its row number (`first` for the first). A
/// quoted field that goes on after its closing quote is refused at its row: csv would guess at
/// it (`"2,"title","text"` reads as two fields, reported as "no label"). A quote left open
/// swallows the rest of the file into one field, so the rows after it vanish and the damage
/// shows up (if at all) as some other fault of the last row: that is reported as what it is;
/// a fault in an earlier row is reported as it stands.
fn for_each_record<R: Read>(
    csv: &mut csv::Reader<QuoteScan<R>>,
    path: &Path,
    first: usize,
    mut each: impl FnMut(&csv::StringRecord, usize) -> Result<()>,
) -> Result<()> {
    let unbalanced = |row: usize, why: &str| KdError::BadRow {
        path: path.into(),
        row,
        message: format!("unbalanced quote: {why}; write a quote inside a quoted field as \"\""),
    };
    const GOES_ON: &str = "a quoted field goes on after its closing quote";
    if csv.get_ref().stray_before(csv.position().byte()) {
        return Err(unbalanced(first - 1, GOES_ON)); // in the header row
    }
    let mut record = csv::StringRecord::new();
    let (mut row, mut failed) = (first - 1, None);
    loop {
        let more = csv.read_record(&mut record).map_err(|e| KdError::BadRow {
            path: path.into(),
            row: row + 1,
            message: format!("not valid CSV: {e}"),
        })?;
        if !more {
            break;
        }
        row += 1;
        if failed.is_some() {
            continue; // read on only to see whether the last row's quote closes
        }
        if csv.get_ref().stray_before(csv.position().byte()) {
            return Err(unbalanced(row, GOES_ON));
        }
        failed = each(&record, row).err().map(|e| (row, e));
    }
    if csv.get_ref().open() && failed.as_ref().is_none_or(|(r, _)| *r == row) {
        let why = "a field opened with \" is never closed, so the rest of the file would be read as this one field";
        return Err(unbalanced(row.max(1), why));
    }
    failed.map_or(Ok(()), |(_, e)| Err(e))
}

/// Follows the csv crate's quoting (RFC 4180: a field that starts with `"` is quoted until a
/// `"` that is not doubled, and a comma or line end follows it) over the bytes it reads, to
/// catch what csv itself accepts without an error: a quote never closed (csv reads the rest of
/// the file into that field) and a quoted field that goes on after its closing quote.
struct QuoteScan<R> {
    inner: R,
    state: Quote,
    /// Bytes read so far.
    offset: u64,
    /// Where a quoted field first went on after its closing quote.
    stray: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    FieldStart,
    Bare,
    InQuotes,
    /// A `"` inside a quoted field: closing it, or the first of a doubled pair.
    ClosingOrDoubled,
}

impl<R> QuoteScan<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            state: Quote::FieldStart,
            offset: 0,
            stray: None,
        }
    }

    /// Whether a quoted field is open (at the end of the file: never closed).
    fn open(&self) -> bool {
        self.state == Quote::InQuotes
    }

    /// Whether a quoted field went on after its closing quote before byte `end`.
    fn stray_before(&self, end: u64) -> bool {
        self.stray.is_some_and(|at| at < end)
    }
}

impl<R: Read> Read for QuoteScan<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for (i, &b) in buf[..n].iter().enumerate() {
            self.state = match (self.state, b) {
                (Quote::InQuotes, b'"') => Quote::ClosingOrDoubled,
                (Quote::InQuotes, _) => Quote::InQuotes,
                (Quote::ClosingOrDoubled | Quote::FieldStart, b'"') => Quote::InQuotes,
                (_, b',' | b'\n' | b'\r') => Quote::FieldStart,
                (Quote::ClosingOrDoubled, _) => {
                    self.stray.get_or_insert(self.offset + i as u64);
                    Quote::Bare
                }
                _ => Quote::Bare,
            };
        }
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::formats::{read_examples, read_rows_to_predict};
    use super::*;

    #[test]
    fn an_unclosed_quote_is_named_with_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        // Row 2's class lost its closing quote: csv reads `2,title"` and `desc`, two fields, and
        // this used to be reported as "no label".
        let text = "\"1\",\"a\",\"b\"\n\"2,\"title\",\"desc\"\n\"3\",\"c\",\"d\"\n";
        std::fs::write(&path, text).unwrap();
        let err = read_examples(&path, true).unwrap_err().to_string();
        assert!(
            err.contains("t.csv, row 2: unbalanced quote: a quoted field goes on"),
            "{err}"
        );
        // Row 2 opens a quote that nothing closes: csv reads rows 2..3 as one field.
        std::fs::write(&path, "\"1\",\"a\",\"b\"\n\"2\",\"Fears, x\n3,c,d\n").unwrap();
        let err = read_examples(&path, true).unwrap_err().to_string();
        assert!(
            err.contains("row 2: unbalanced quote: a field opened"),
            "{err}"
        );
        // Unlabelled too (it used to be a row short and say nothing).
        let err = read_examples(&path, false).unwrap_err().to_string();
        assert!(err.contains("row 2: unbalanced quote"), "{err}");
        // A fault in an earlier row is reported as it stands.
        std::fs::write(&path, format!("\"0\",\"a\",\"b\"\n{text}")).unwrap();
        let err = read_examples(&path, true).unwrap_err().to_string();
        assert!(err.contains("row 1") && err.contains("class 0"), "{err}");
        // Doubled quotes, quotes inside unquoted text and CRLF are not unbalanced.
        let fine = "\"1\",\"say \"\"hi\"\"\",\"b\"\r\n\"2\",5\" screen,\"d\"\r\n";
        std::fs::write(&path, fine).unwrap();
        assert_eq!(read_examples(&path, true).unwrap().len(), 2);
        // A header CSV: the row as the file numbers it; a header that swallows everything is row 1.
        let columns = Columns {
            text: vec!["text".into()],
            ..Default::default()
        };
        std::fs::write(&path, "text,label\ngood,1\n\"bad,0\nworse,1\n").unwrap();
        let err = read_rows_to_predict(&path, &columns, Header::Detect)
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 3: unbalanced quote"), "{err}");
        std::fs::write(&path, "\"text,label\ngood,1\n").unwrap();
        let err = read_rows_to_predict(&path, &columns, Header::Detect)
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 1: unbalanced quote"), "{err}");
    }

    #[test]
    fn a_header_row_is_detected_or_declared_and_never_a_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        let read = |text: &str, header| {
            std::fs::write(&path, text).unwrap();
            read_rows_to_predict(&path, &Columns::default(), header)
                .map(|rows| rows.into_iter().map(|r| r.text).collect::<Vec<_>>())
        };
        let rows = vec!["a b".to_string(), "c d".to_string()];
        let plain = "\"a\",\"b\"\n\"c\",\"d\"\n";
        assert_eq!(read(plain, Header::Detect).unwrap(), rows);
        for header in [
            "title,description\n",
            "Title, Description\n",
            "\"Class Index\",\"Title\",\"Description\"\n",
        ] {
            let text = format!("{header}{plain}");
            assert_eq!(read(&text, Header::Detect).unwrap(), rows, "{header}");
        }
        assert_eq!(read("text\nx\n", Header::Detect).unwrap(), vec!["x"]);
        // Declared: --no-header reads it as a row, --header skips any first row.
        assert_eq!(
            read("text\nx\n", Header::Absent).unwrap(),
            vec!["text", "x"]
        );
        assert_eq!(read("words\nx\n", Header::Present).unwrap(), vec!["x"]);
        // A header alone is no rows.
        let err = read("title,description\n", Header::Detect)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("holds only a header row (`title,description`)"),
            "{err}"
        );
        // The flags mean nothing to JSONL, and --no-header nothing to named columns.
        let jsonl = dir.path().join("p.jsonl");
        std::fs::write(&jsonl, "{\"text\": \"a\"}\n").unwrap();
        assert!(read_rows_to_predict(&jsonl, &Columns::default(), Header::Present).is_err());
        let named = Columns {
            text: vec!["sentence".into()],
            ..Default::default()
        };
        std::fs::write(&path, "sentence\nx\n").unwrap();
        assert!(read_rows_to_predict(&path, &named, Header::Absent).is_err());
        assert_eq!(
            read_rows_to_predict(&path, &named, Header::Detect)
                .unwrap()
                .len(),
            1
        );
    }
}
