//! What a run reports as it goes: `metrics.jsonl` (one JSON object per line, every N steps and
//! after every evaluation). The progress bars are in [`crate::progress`].
use crate::error::{KdError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An append-only metrics log.
pub struct MetricsLog {
    file: Option<std::fs::File>,
    path: PathBuf,
    /// Bytes written so far.
    len: u64,
}

impl MetricsLog {
    /// Starts a fresh log at `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let file = std::fs::File::create(path).map_err(|e| KdError::io(path, e))?;
        Ok(Self {
            file: Some(file),
            path: path.to_path_buf(),
            len: 0,
        })
    }

    /// A log that writes nothing (the ranks after 0 of a data-parallel run).
    pub fn discard() -> Self {
        Self {
            file: None,
            path: PathBuf::new(),
            len: 0,
        }
    }

    /// Reopens the log of an interrupted run, cut back to the `len` bytes its checkpoint saw.
    pub fn resume(path: &Path, len: u64) -> Result<Self> {
        let io = |e| KdError::io(path, e);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io)?;
        file.set_len(len).map_err(io)?;
        let mut log = Self {
            file: Some(file),
            path: path.to_path_buf(),
            len,
        };
        if let Some(f) = &mut log.file {
            use std::io::Seek;
            f.seek(std::io::SeekFrom::Start(len)).map_err(io)?;
        }
        Ok(log)
    }

    /// Appends one record.
    pub fn write(&mut self, record: serde_json::Value) -> Result<()> {
        if let Some(f) = &mut self.file {
            let line = format!("{record}\n");
            f.write_all(line.as_bytes())
                .map_err(|e| KdError::io(&self.path, e))?;
            self.len += line.len() as u64;
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One training-loss record: the mean loss over the steps since the previous one.
#[derive(Clone, Debug, PartialEq)]
pub struct LossPoint {
    pub step: u64,
    pub epoch: u64,
    pub loss: f64,
}

/// One end-of-epoch validation record.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidationPoint {
    pub step: u64,
    pub epoch: u64,
    pub loss: f64,
    pub accuracy: f64,
}

/// What a run's metrics.jsonl recorded, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub training: Vec<LossPoint>,
    pub validation: Vec<ValidationPoint>,
}

/// Reads a metrics.jsonl written by [`MetricsLog`]; records of other kinds (the run id) are
/// skipped, a line that is not JSON is an error naming the line.
pub fn read_history(path: &Path) -> Result<History> {
    let text = std::fs::read_to_string(path).map_err(|e| KdError::io(path, e))?;
    let mut h = History::default();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |message: String| KdError::BadRow {
            path: path.to_path_buf(),
            row: i + 1,
            message,
        };
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let num = |key: &str| v.get(key).and_then(|x| x.as_f64());
        // Records without a step (the run id) are not points; a loss that diverged was written
        // as null (JSON has no NaN) and is read back as NaN.
        let Some(step) = num("step") else {
            continue;
        };
        let loss = num("loss").unwrap_or(f64::NAN);
        let (step, epoch) = (step as u64, num("epoch").unwrap_or(0.0) as u64);
        if v.get("eval").is_some() {
            let accuracy = num("accuracy").ok_or_else(|| bad("no accuracy".into()))?;
            h.validation.push(ValidationPoint {
                step,
                epoch,
                loss,
                accuracy,
            });
        } else {
            h.training.push(LossPoint { step, epoch, loss });
        }
    }
    Ok(h)
}
