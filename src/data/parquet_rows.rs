//! Reading Parquet rows (the Hub's dataset layout): named text and label columns, integer or
//! string labels.
use super::columns::{parse_label, Columns, Numbered};
use super::Example;
use crate::error::{KdError, Result};
use std::path::Path;

/// Parquet with a string column `text` and an integer column `label` (the Hub's ag_news
/// layout), or the named columns; a label may be an integer or a string.
pub(super) fn read_parquet(path: &Path, columns: &Columns) -> Result<Numbered> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let file = std::fs::File::open(path).map_err(|e| KdError::io(path, e))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| KdError::bad_file(path, format!("not a Parquet file: {e}")))?;
    let iter = reader
        .get_row_iter(None)
        .map_err(|e| KdError::bad_file(path, e.to_string()))?;
    let (mut rows, mut lines) = (Vec::new(), Vec::new());
    for (i, row) in iter.enumerate() {
        lines.push(i + 1);
        let bad = |message: String| KdError::BadRow {
            path: path.into(),
            row: i + 1,
            message,
        };
        let row = row.map_err(|e| bad(e.to_string()))?;
        let text_names = columns.text_names();
        let mut parts: Vec<Option<String>> = vec![None; text_names.len()];
        let (mut label, mut raw_label, mut pair) = (None, None, None);
        for (name, field) in row.get_column_iter() {
            if Some(name.as_str()) == columns.text_pair.as_deref() {
                if let Field::Str(s) = field {
                    pair = Some(s.clone());
                }
            }
            if let Some(k) = text_names.iter().position(|t| t == name) {
                if let Field::Str(s) = field {
                    parts[k] = Some(s.clone());
                }
            }
            if name == columns.label_name() {
                match field {
                    Field::Null => {}
                    Field::Str(s) => (label, raw_label) = parse_label(s),
                    f => {
                        label = Some(integer_field(f).ok_or_else(|| {
                            bad(format!("label `{f}` is not a non-negative integer"))
                        })?)
                    }
                }
            }
        }
        let parts = parts
            .into_iter()
            .zip(&text_names)
            .map(|(p, name)| p.ok_or_else(|| bad(format!("no string column `{name}`"))))
            .collect::<Result<Vec<_>>>()?;
        if let (Some(name), None) = (&columns.text_pair, &pair) {
            return Err(bad(format!("no string column `{name}`")));
        }
        rows.push(Example {
            text: parts.join(" "),
            pair,
            label,
            raw_label,
        });
    }
    Ok((rows, lines))
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
