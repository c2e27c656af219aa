//! How many classes a dataset has, checked before anything is sized by it: labels must be
//! 0..K−1, with K declared (`--num-labels`) or else the training split's largest label + 1, and
//! every class must have training rows. A stray label (a 9 among 1–4 in AG News CSV, a JSONL
//! label of 1000000) is refused naming its file and row, not turned into extra classes.
use super::{Example, SplitFiles};
use crate::error::{KdError, Result};

/// The class count of `rows` (read from `files`), or the error naming the row at fault.
pub fn class_count(rows: &[Example], files: &SplitFiles, declared: Option<usize>) -> Result<usize> {
    let labels = || rows.iter().filter_map(|r| r.label);
    let k = match declared {
        Some(k) => {
            if k < 2 {
                return Err(KdError::Config(format!(
                    "--num-labels {k}: a classifier needs at least two classes"
                )));
            }
            if labels().any(|l| l as usize >= k) {
                return refuse_row(
                    files,
                    |l| l as usize >= k,
                    &format!("outside the {k} classes of --num-labels"),
                );
            }
            k
        }
        None => labels().max().map_or(0, |m| m as usize + 1),
    };
    if k < 2 {
        return Err(KdError::bad_file(
            &files.paths()[0],
            "fewer than two classes",
        ));
    }
    // Count per class without allocating K slots for a K that may be absurd: sort the labels.
    let mut seen: Vec<u32> = labels().collect();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() == k {
        return Ok(k);
    }
    let missing: Vec<usize> = (0..k)
        .filter(|c| seen.binary_search(&(*c as u32)).is_err())
        .take(k.min(5))
        .collect();
    let names = missing
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if declared.is_none() {
        // The largest label made the gap: name the first row carrying a label above the gap.
        let first_gap = missing[0] as u32;
        return refuse_row(
            files,
            |l| l > first_gap,
            &format!(
                "classes {names}{} have no training rows below it: a stray label? (pass --num-labels if the data really has {k} classes)",
                if seen.len() + missing.len() < k { ", …" } else { "" }
            ),
        );
    }
    Err(KdError::bad_file(
        &files.paths()[0],
        format!("class(es) {names} of {k} have no training rows"),
    ))
}

/// Maps string labels (`positive`, `entailment`) to class indices: by `declared` names
/// (`--label-names`) when given, else in sorted order, which the run folder records. Returns the
/// names when the labels were strings. A file mixing number and string labels, or a string
/// that `declared` lacks, is refused by row.
pub fn map_string_labels(
    rows: &mut [Example],
    files: &SplitFiles,
    declared: Option<&[String]>,
) -> Result<Option<Vec<String>>> {
    if rows.iter().all(|r| r.raw_label.is_none()) {
        return Ok(None);
    }
    if rows.iter().any(|r| r.label.is_some()) {
        return refuse_row(
            files,
            |_| true,
            "is a number, where other rows' labels are strings",
        )
        .map(|_| None);
    }
    let names: Vec<String> = match declared {
        Some(n) => n.to_vec(),
        None => {
            let mut n: Vec<String> = rows.iter().filter_map(|r| r.raw_label.clone()).collect();
            n.sort();
            n.dedup();
            n
        }
    };
    if let Some(bad) = rows
        .iter()
        .filter_map(|r| r.raw_label.as_ref())
        .find(|l| !names.contains(l))
    {
        return Err(files
            .read_checked(true, |r| {
                (r.raw_label.as_ref() == Some(bad)).then(|| {
                    format!(
                        "label `{bad}` is not among --label-names ({})",
                        names.join(", ")
                    )
                })
            })
            .err()
            .unwrap_or_else(|| KdError::bad_file(&files.paths()[0], format!("label `{bad}`"))));
    }
    for r in rows.iter_mut() {
        let raw = r.raw_label.take().expect("all labels are strings");
        r.label = names.iter().position(|n| *n == raw).map(|c| c as u32);
    }
    Ok(Some(names))
}

/// Class names, in class order: `declared` (`--label-names`), else the `datasets` features a
/// Hub Parquet file carries in its schema metadata (a `ClassLabel` `label` column: for
/// `fancyzhx/ag_news`, World, Sports, Business, Sci/Tech), else none. Refused when their count
/// is not the class count.
pub fn label_names(
    files: &SplitFiles,
    declared: Option<&[String]>,
    classes: usize,
) -> Result<Option<Vec<String>>> {
    let (names, source) = match declared {
        Some(names) => (Some(names.to_vec()), "--label-names".to_string()),
        None => {
            let first = &files.paths()[0];
            (
                parquet_class_names(first, files.columns().label_name())?,
                first.display().to_string(),
            )
        }
    };
    match names {
        Some(n) if n.len() != classes => Err(KdError::Config(format!(
            "{source} names {} classes ({}), the training split has {classes}",
            n.len(),
            n.join(", ")
        ))),
        Some(n) if (1..n.len()).any(|i| n[..i].contains(&n[i])) => Err(KdError::Config(format!(
            "{source} names two classes alike ({})",
            n.join(", ")
        ))),
        other => Ok(other),
    }
}

/// The `ClassLabel` names of the label column in a Parquet file's `huggingface` metadata.
fn parquet_class_names(path: &std::path::Path, column: &str) -> Result<Option<Vec<String>>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    if !path.to_string_lossy().ends_with(".parquet") {
        return Ok(None);
    }
    let file = std::fs::File::open(path).map_err(|e| KdError::io(path, e))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| KdError::bad_file(path, format!("not a Parquet file: {e}")))?;
    let meta = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned();
    let json = meta
        .into_iter()
        .flatten()
        .find(|kv| kv.key == "huggingface")
        .and_then(|kv| kv.value);
    let Some(json) = json else { return Ok(None) };
    let v: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| KdError::bad_file(path, format!("unreadable `huggingface` metadata: {e}")))?;
    Ok(v["info"]["features"][column]["names"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .map(|n| n.as_str().unwrap_or_default().to_string())
                .collect()
        }))
}

/// Re-reads `files` to name the first row whose label matches `bad` (only on the error path).
fn refuse_row(files: &SplitFiles, bad: impl Fn(u32) -> bool, why: &str) -> Result<usize> {
    let err = files
        .read_checked(true, |r| {
            let l = r.label?;
            bad(l).then(|| format!("label {l} {why}"))
        })
        .err();
    Err(err.unwrap_or_else(|| KdError::bad_file(&files.paths()[0], why.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &std::path::Path, name: &str, lines: &str) -> SplitFiles {
        let path = dir.join(name);
        std::fs::write(&path, lines).unwrap();
        SplitFiles::single(&path)
    }

    #[test]
    fn stray_and_missing_labels_are_refused_by_row() {
        let dir = tempfile::tempdir().unwrap();
        let ok = file(
            dir.path(),
            "ok.csv",
            "\"1\",\"a\",\"b\"\n\"2\",\"a\",\"b\"\n\"3\",\"a\",\"b\"\n",
        );
        assert_eq!(class_count(&ok.read(true).unwrap(), &ok, None).unwrap(), 3);
        assert_eq!(
            class_count(&ok.read(true).unwrap(), &ok, Some(3)).unwrap(),
            3
        );
        // A stray 9 among 1..3 (CSV classes are 1-based: label 8).
        let stray = file(
            dir.path(),
            "train.csv",
            "\"1\",\"a\",\"b\"\n\"2\",\"a\",\"b\"\n\"9\",\"a\",\"b\"\n\"3\",\"a\",\"b\"\n",
        );
        let err = class_count(&stray.read(true).unwrap(), &stray, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.csv, row 3") && err.contains("label 8") && err.contains("stray"),
            "{err}"
        );
        // Declared: a label outside, and a class without rows.
        let err = class_count(&ok.read(true).unwrap(), &ok, Some(2))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ok.csv, row 3") && err.contains("--num-labels"),
            "{err}"
        );
        let err = class_count(&ok.read(true).unwrap(), &ok, Some(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("3, 4 of 5 have no training rows"), "{err}");
        // A huge label is refused without sizing anything by it.
        let huge = file(
            dir.path(),
            "huge.csv",
            "\"1\",\"a\",\"b\"\n\"1000001\",\"a\",\"b\"\n",
        );
        let err = class_count(&huge.read(true).unwrap(), &huge, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("row 2") && err.contains("label 1000000"),
            "{err}"
        );
    }
}
