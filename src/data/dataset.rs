//! Locating a dataset (a folder or a Hub id), loading its splits, and holding out a stratified
//! validation slice of the training rows.
use super::formats::{read_examples_with, read_numbered, Columns, EXTENSIONS};
use super::labels::{class_count, map_string_labels};
use super::Example;
use crate::error::{KdError, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};

/// The files of a dataset's splits.
#[derive(Clone, Debug)]
pub struct DataFiles {
    /// How the user named the dataset.
    pub id: String,
    pub train: Option<SplitFiles>,
    /// `validation.*` or `val.*` (the HF datasets convention), when the dataset has one.
    pub validation: Option<SplitFiles>,
    pub test: Option<SplitFiles>,
}

/// One split: a single file, or the Hub's Parquet shards (`train-00000-of-00002.parquet`, ...)
/// in name order, read one after the other as one table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct SplitFiles(Vec<PathBuf>, #[serde(skip)] Columns);

impl SplitFiles {
    /// One file.
    pub fn single(path: &Path) -> Self {
        Self(vec![path.to_path_buf()], Columns::default())
    }

    /// The columns the files are read from.
    pub fn columns(&self) -> &Columns {
        &self.1
    }

    /// The same files, read from `columns`.
    pub fn with_columns(self, columns: &Columns) -> Self {
        Self(self.0, columns.clone())
    }

    /// The files, in reading order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.0
    }

    /// Every row of every file, in order (errors name the file and its row).
    pub fn read(&self, require_labels: bool) -> Result<Vec<Example>> {
        self.read_checked(require_labels, |_| None)
    }

    /// Like [`SplitFiles::read`], refusing the first row for which `reject` gives a reason; the
    /// error names that row's file and its row within the file.
    pub fn read_checked(
        &self,
        require_labels: bool,
        reject: impl Fn(&Example) -> Option<String>,
    ) -> Result<Vec<Example>> {
        let mut rows = Vec::new();
        for path in &self.0 {
            let (part, lines) = read_numbered(path, require_labels, &self.1)?;
            let refused = part
                .iter()
                .zip(&lines)
                .find_map(|(r, &line)| Some((line, reject(r)?)));
            if let Some((row, message)) = refused {
                return Err(KdError::BadRow {
                    path: path.clone(),
                    row,
                    message,
                });
            }
            rows.extend(part);
        }
        Ok(rows)
    }

    /// Every row, each labelled with a class in `0..classes`, string labels mapped through
    /// `names` (the training split's classes); a label outside them is refused by file and row.
    pub fn read_labelled(&self, classes: usize, names: Option<&[String]>) -> Result<Vec<Example>> {
        let mut rows = self.read_checked(true, |r| {
            if let Some(raw) = &r.raw_label {
                return match names {
                    Some(n) if n.contains(raw) => None,
                    Some(n) => Some(format!(
                        "label `{raw}` never seen in training (classes: {})",
                        n.join(", ")
                    )),
                    None => Some(format!("label `{raw}` is a string, training's are numbers")),
                };
            }
            let label = r.label.unwrap_or(0);
            (label as usize >= classes).then(|| {
                format!(
                    "label {label} is outside the {classes} classes (0..{})",
                    classes - 1
                )
            })
        })?;
        if let Some(names) = names {
            for r in &mut rows {
                if let Some(raw) = r.raw_label.take() {
                    r.label = names.iter().position(|n| *n == raw).map(|c| c as u32);
                }
            }
        }
        Ok(rows)
    }

    /// The first file, and how many shards follow it.
    pub fn describe(&self) -> String {
        match self.0.len() {
            1 => self.0[0].display().to_string(),
            n => format!("{} (+{} more shards)", self.0[0].display(), n - 1),
        }
    }
}

impl DataFiles {
    /// Resolves `--data`: a folder holding `train.*`/`test.*` (or the Hub's
    /// `data/{train,test}-*.parquet`), or a Hub dataset id found in the HF cache or downloaded.
    pub fn resolve(data: &str) -> Result<Self> {
        let path = Path::new(data);
        let dir = if path.is_dir() {
            path.to_path_buf()
        } else {
            hub_dataset_dir(data).map_err(|why| {
                KdError::NotFound(format!(
                    "dataset `{data}` is not a local folder, not in the Hugging Face cache, and could not be downloaded ({why}): pass a folder with train.csv.gz and test.csv.gz (see data/README.md)"
                ))
            })?
        };
        let files = Self {
            id: data.to_string(),
            train: find_split(&dir, "train"),
            validation: find_split(&dir, "validation").or_else(|| find_split(&dir, "val")),
            test: find_split(&dir, "test"),
        };
        if files.train.is_none() && files.test.is_none() {
            return Err(KdError::NotFound(format!(
                "{}: no train.* or test.* file (accepted: {})",
                dir.display(),
                EXTENSIONS.join(", ")
            )));
        }
        Ok(files)
    }

    /// Every split read from `columns`.
    pub fn with_columns(self, columns: &Columns) -> Self {
        let set = |s: Option<SplitFiles>| s.map(|s| s.with_columns(columns));
        Self {
            id: self.id,
            train: set(self.train),
            validation: set(self.validation),
            test: set(self.test),
        }
    }

    /// The training split, or an error naming the dataset.
    pub fn train_split(&self) -> Result<&SplitFiles> {
        self.train
            .as_ref()
            .ok_or_else(|| KdError::NotFound(format!("dataset `{}` has no train split", self.id)))
    }

    /// The test split, or an error naming the dataset.
    pub fn test_split(&self) -> Result<&SplitFiles> {
        self.test
            .as_ref()
            .ok_or_else(|| KdError::NotFound(format!("dataset `{}` has no test split", self.id)))
    }
}

fn find_split(dir: &Path, split: &str) -> Option<SplitFiles> {
    for ext in EXTENSIONS {
        let p = dir.join(format!("{split}.{ext}"));
        if p.is_file() {
            return Some(SplitFiles::single(&p));
        }
    }
    // The Hub's Parquet layout: data/train-00000-of-00001.parquet, every shard of the split.
    let sub = dir.join("data");
    let mut shards: Vec<PathBuf> = std::fs::read_dir(&sub)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&format!("{split}-")) && name.ends_with(".parquet")
        })
        .collect();
    shards.sort();
    (!shards.is_empty()).then_some(SplitFiles(shards, Columns::default()))
}

/// A Hub dataset's snapshot folder: from the local HF cache, else downloaded with hf-hub.
fn hub_dataset_dir(id: &str) -> std::result::Result<PathBuf, String> {
    let cache = hf_hub::Cache::from_env();
    let folder = cache
        .path()
        .join(format!("datasets--{}", id.replace('/', "--")));
    if let Ok(rev) = std::fs::read_to_string(folder.join("refs").join("main")) {
        let snap = folder.join("snapshots").join(rev.trim());
        if snap.is_dir() {
            return Ok(snap);
        }
    }
    let api = crate::hub::online_api()?;
    let repo = api.dataset(id.to_string());
    let info = repo.info().map_err(|e| e.to_string())?;
    let mut dir = None;
    for file in info.siblings.iter().map(|s| &s.rfilename) {
        let name = file.rsplit('/').next().unwrap_or(file);
        let split = ["train", "validation", "test"]
            .iter()
            .any(|s| name.starts_with(s));
        if split && name.ends_with(".parquet") {
            let local = repo.get(file).map_err(|e| e.to_string())?;
            let depth = file.matches('/').count() + 1;
            dir = local.ancestors().nth(depth).map(Path::to_path_buf);
        }
    }
    dir.ok_or_else(|| format!("`{id}` has no train/test Parquet files"))
}

/// A labelled training set with its validation rows and, for distillation, unlabelled rows (a
/// transfer set), plus the number of classes.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Every row, in file order: the training split's, then the validation split's when the
    /// dataset has one, then the unlabelled files' (the logit cache follows this order).
    pub rows: Vec<Example>,
    /// How many of `rows` are labelled (they come first).
    pub labelled: usize,
    /// Indices into `rows` used for training.
    pub train: Vec<usize>,
    /// Indices into `rows` used to choose the kept epoch: the validation split, or a stratified
    /// slice of the training split.
    pub val: Vec<usize>,
    /// Indices into `rows` of the unlabelled rows (`labelled..rows.len()`).
    pub unlabelled: Vec<usize>,
    /// The unlabelled files, in order.
    pub unlabelled_files: Vec<PathBuf>,
    /// Number of classes (declared, or the largest label + 1; every class has training rows).
    pub num_labels: usize,
    /// Class names when the labels were strings (their sorted order, or --label-names').
    pub label_names: Option<Vec<String>>,
}

impl Dataset {
    /// Loads the training split and its validation rows: the dataset's own validation split
    /// when it has one, else `val_fraction` of each class held out (seeded). A fraction of 0
    /// means no validation at all (every training row trains).
    pub fn load(
        files: &SplitFiles,
        validation: Option<&SplitFiles>,
        val_fraction: f64,
        seed: u64,
    ) -> Result<Self> {
        Self::load_with_unlabelled(files, validation, &[], val_fraction, seed, None, None)
    }

    /// [`Dataset::load`], then the rows of `unlabelled` files (a transfer set; labels in them,
    /// if any, are not used). `num_labels` declares the class count (else the training split's
    /// largest label + 1; see [`class_count`]).
    pub fn load_with_unlabelled(
        files: &SplitFiles,
        validation: Option<&SplitFiles>,
        unlabelled: &[PathBuf],
        val_fraction: f64,
        seed: u64,
        num_labels: Option<usize>,
        label_names: Option<&[String]>,
    ) -> Result<Self> {
        if !(0.0..1.0).contains(&val_fraction) {
            return Err(KdError::Config(format!(
                "--val-fraction {val_fraction} is not in [0, 1)"
            )));
        }
        let mut rows = files.read(true)?;
        let label_names = map_string_labels(&mut rows, files, label_names)?;
        // Declared names declare the class count too (a name no row carries is a class
        // without training rows).
        let declared = num_labels.or(label_names.as_ref().map(Vec::len));
        let num_labels = class_count(&rows, files, declared)?;
        // A validation split's rows are always among the labelled rows (so a teacher's cache
        // holds them whatever --val-fraction each run used); with --val-fraction 0 they are not
        // used to choose an epoch.
        let (train, val) = match validation {
            Some(split) => {
                let extra = split.read_labelled(num_labels, label_names.as_deref())?;
                let n = rows.len();
                tracing::info!(
                    file = %split.describe(), rows = extra.len(),
                    "validation split (--val-fraction does not cut train)"
                );
                rows.extend(extra);
                let val = if val_fraction > 0.0 {
                    (n..rows.len()).collect()
                } else {
                    Vec::new()
                };
                ((0..n).collect(), val)
            }
            None => stratified_split(&rows, num_labels, val_fraction, seed),
        };
        let labelled = rows.len();
        for path in unlabelled {
            let part = read_examples_with(path, false, &files.1)?;
            if part.iter().any(|r| r.label.is_some()) {
                tracing::info!(file = %path.display(), "labels in an unlabelled file are not used");
            }
            rows.extend(part.into_iter().map(|r| Example {
                label: None,
                raw_label: None,
                ..r
            }));
        }
        Ok(Self {
            label_names,
            unlabelled: (labelled..rows.len()).collect(),
            unlabelled_files: unlabelled.to_vec(),
            rows,
            labelled,
            train,
            val,
            num_labels,
        })
    }

    /// The label of row `i` (a training or validation row: those are labelled).
    pub fn label(&self, i: usize) -> u32 {
        self.rows[i].label.expect("training rows are labelled")
    }

    /// The labelled rows (training and validation), then the unlabelled rows.
    pub fn parts(&self) -> (&[Example], &[Example]) {
        self.rows.split_at(self.labelled)
    }
}

/// Per class, a seeded shuffle and the first ⌈n·fraction⌉ rows to validation (none when the
/// fraction is 0). Both index lists come back sorted.
fn stratified_split(
    rows: &[Example],
    num_labels: usize,
    fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut by_class = vec![Vec::new(); num_labels];
    for (i, r) in rows.iter().enumerate() {
        by_class[r.label.expect("labelled") as usize].push(i);
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0005_eed0_f7a1);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for mut idx in by_class {
        idx.shuffle(&mut rng);
        let n_val = (idx.len() as f64 * fraction).round() as usize;
        let n_val = n_val.min(idx.len().saturating_sub(1));
        val.extend_from_slice(&idx[..n_val]);
        train.extend_from_slice(&idx[n_val..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stratified_and_seeded() {
        let rows: Vec<Example> = (0..400)
            .map(|i| Example {
                text: format!("t{i}"),
                label: Some((i % 4) as u32),
                ..Default::default()
            })
            .collect();
        let (train, val) = stratified_split(&rows, 4, 0.05, 7);
        assert_eq!(val.len(), 20);
        assert_eq!(train.len() + val.len(), 400);
        for c in 0..4 {
            assert_eq!(val.iter().filter(|&&i| i % 4 == c).count(), 5);
        }
        assert_eq!(stratified_split(&rows, 4, 0.05, 7).1, val);
        assert_ne!(stratified_split(&rows, 4, 0.05, 8).1, val);
    }

    #[test]
    fn shards_read_in_order_and_refusals_name_file_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
        std::fs::write(&a, "\"1\",\"x\",\"y\"\n\"2\",\"x\",\"y\"\n").unwrap();
        std::fs::write(&b, "\"3\",\"x\",\"y\"\n\"4\",\"x\",\"y\"\n").unwrap();
        let split = SplitFiles(vec![a, b], Columns::default());
        let labels: Vec<_> = split.read(true).unwrap().iter().map(|r| r.label).collect();
        assert_eq!(labels, [Some(0), Some(1), Some(2), Some(3)]);
        let err = split
            .read_checked(true, |r| (r.label == Some(3)).then(|| "too big".into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("b.csv, row 2") && err.contains("too big"),
            "{err}"
        );
    }
}
