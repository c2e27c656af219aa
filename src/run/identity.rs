//! What a run was made from, by content rather than by path: the base model's files, the rows,
//! the test split, each teacher's logits and the dtype and kernels. A staged checkpoint records
//! these [`Inputs`] and is resumed only by a run of the same ones; a finished run records them
//! in summary.json, which is how `kd sweep` tells a finished point from one whose teacher, data
//! or base model has changed in place since; the caching pass's chunks and parts record the
//! base model and kernels too (see `cache::pass`).
use super::config::RunConfig;
use super::prepare::Prepared;
use crate::cache::{fingerprint, fingerprint_hex, read_checksum, read_header};
use crate::data::{Example, TokenizerFiles};
use crate::error::{KdError, Result};
use crate::model::Checkpoint;
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// The identity of everything a run reads that changes what it computes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    /// The base model's files (config, weights, tokenizer), each as "CRC-32 …, N bytes".
    pub model: BTreeMap<String, String>,
    /// Fingerprint of every row the run trains on or scores (labelled, validation, unlabelled).
    pub data: String,
    /// Fingerprint of the test split's rows, which the summary's test scores were measured on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// Each teacher a student learns from: its folder, run id and the CRC-32 of its logits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teachers: Vec<String>,
    /// The frozen weights' dtype and the kernels the products ran on.
    pub kernels: String,
}

impl Inputs {
    /// The inputs of the run of `cfg` on what `p` prepared.
    pub fn of(cfg: &RunConfig, p: &Prepared) -> Result<Self> {
        Ok(Self {
            model: model_files(&p.checkpoint)?,
            data: rows_id(&p.data.rows),
            test: p.test.as_deref().map(rows_id),
            teachers: teachers(cfg)?,
            kernels: kernels(&p.device, p.dtype),
        })
    }

    /// The base model's files in one short fingerprint.
    pub fn base_model(&self) -> String {
        base_model_id(&self.model)
    }

    /// What differs from `then` to `self`, one phrase each (the test split only with `test`:
    /// training does not read it).
    pub fn changes_since(&self, then: &Inputs, test: bool) -> Vec<String> {
        let mut out = Vec::new();
        let files: std::collections::BTreeSet<&String> =
            then.model.keys().chain(self.model.keys()).collect();
        let changed: Vec<&str> = files
            .into_iter()
            .filter(|f| then.model.get(*f) != self.model.get(*f))
            .map(String::as_str)
            .collect();
        if !changed.is_empty() {
            out.push(format!("the base model's {}", changed.join(", ")));
        }
        if then.data != self.data {
            out.push(format!("the rows ({} → {})", then.data, self.data));
        }
        if test && then.test != self.test {
            out.push("the test split".into());
        }
        if then.teachers != self.teachers {
            out.push(format!(
                "the teacher's logits ({} → {})",
                listed(&then.teachers),
                listed(&self.teachers)
            ));
        }
        if then.kernels != self.kernels {
            out.push(format!(
                "the dtype and kernels ({} → {})",
                then.kernels, self.kernels
            ));
        }
        out
    }
}

fn listed(items: &[String]) -> String {
    match items {
        [] => "none".into(),
        _ => items.join("; "),
    }
}

/// The fingerprint of `rows` as the run records it.
pub fn rows_id(rows: &[Example]) -> String {
    fingerprint_hex(fingerprint(rows))
}

/// The dtype and kernels of `device`, as recorded: [`crate::nn::kernels_used`] on the CPU; on a
/// GPU the device's name and dtype (candle's own description of a CUDA device holds a counter
/// of the process, not the GPU).
pub fn kernels(device: &Device, dtype: DType) -> String {
    if device.is_cpu() {
        crate::nn::kernels_used(device, dtype)
    } else {
        format!("{}: {dtype:?}", crate::device::name(device))
    }
}

/// The teachers a student of `cfg` learns from (none when α = 0: the labels alone), each as its
/// folder, run id and the checksum of its logits: a teacher retrained, or re-cached, in place
/// has another.
pub fn teachers(cfg: &RunConfig) -> Result<Vec<String>> {
    let Some(d) = cfg.distill.as_ref().filter(|d| d.alpha > 0.0) else {
        return Ok(Vec::new());
    };
    d.teacher
        .iter()
        .map(|t| {
            let logits = t.join(super::files::LOGITS);
            let run = read_header(&logits)?.run_id;
            let crc = read_checksum(&logits)?;
            Ok(format!(
                "{}: run {}, logits CRC-32 {}{}",
                t.display(),
                run.as_deref().unwrap_or("(none)"),
                crc.map_or("(none)".into(), |c| format!("{c:08x}")),
                representations(t, d.repr_weight)?
            ))
        })
        .collect()
}

/// ", representations CRC-32 …" when the student matches the teacher's representations
/// (β > 0): they are an input then, and re-caching them changes what it learns.
fn representations(teacher: &Path, weight: f64) -> Result<String> {
    let path = teacher.join(super::files::REPRESENTATIONS);
    if weight == 0.0 || !path.is_file() {
        return Ok(String::new());
    }
    let crc = crate::cache::repr::read_checksum(&path)?;
    Ok(format!(", representations CRC-32 {crc:08x}"))
}

/// The base model's files, each fingerprinted by its content.
pub fn model_files(ck: &Checkpoint) -> Result<BTreeMap<String, String>> {
    let mut paths = vec![ck.config_path.clone(), ck.weights.clone()];
    match &ck.tokenizer {
        TokenizerFiles::Json(p) => paths.push(p.clone()),
        TokenizerFiles::VocabMerges { vocab, merges } => {
            paths.extend([vocab.clone(), merges.clone()])
        }
    }
    paths
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            Ok((name.into_owned(), file_id(p)?))
        })
        .collect()
}

/// [`model_files`] in one short fingerprint.
pub fn base_model_id(files: &BTreeMap<String, String>) -> String {
    let mut h = crc32fast::Hasher::new();
    for (name, id) in files {
        h.update(format!("{name}={id}\n").as_bytes());
    }
    format!("{:08x}", h.finalize())
}

/// A file's size and modification time, which a file changed since it was hashed differs in.
type Stamp = (u64, Option<SystemTime>);

/// Files already fingerprinted by this process: their stamp when hashed, and their id.
static SEEN: Mutex<BTreeMap<PathBuf, (Stamp, String)>> = Mutex::new(BTreeMap::new());

/// A file's content fingerprint: the CRC-32 of every byte, and its size.
///
/// Why a full hash and not size + mtime + a sampled hash: on kd's 2-core development machine,
/// CRC-32 (crc32fast) streamed over a 500 MB file in the page cache takes 0.14–0.18 s (6.5 GB/s
/// over memory), next to the seconds a model takes to load and the minutes training takes;
/// loading reads every byte of the weights anyway, so a cold file is read from disk once either
/// way. A sampled hash misses edits outside its samples (one retrained tensor, a LayerNorm), and
/// an mtime both misses edits that keep it (`cp -p`, `rsync -t`) and flags copies that changed
/// nothing (a fresh download), which would throw away a resumable run for nothing. Each file is
/// hashed once per process (a sweep asks for it once per point).
fn file_id(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| KdError::io(path, e))?;
    let stamp: Stamp = (meta.len(), meta.modified().ok());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((then, id)) = seen.get(path) {
        if *then == stamp {
            return Ok(id.clone());
        }
    }
    let mut file = std::fs::File::open(path).map_err(|e| KdError::io(path, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| KdError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    let id = format!("CRC-32 {:08x}, {len} bytes", hasher.finalize());
    seen.insert(path.to_path_buf(), (stamp, id.clone()));
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_changed_in_place_gets_another_id_and_changes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, vec![7u8; 3000]).unwrap();
        let before = file_id(&path).unwrap();
        assert_eq!(file_id(&path).unwrap(), before);
        let mut bytes = vec![7u8; 3000];
        bytes[1234] = 8;
        std::fs::write(&path, &bytes).unwrap();
        // Same size; the modification time may not have moved within the clock's tick, so
        // forget the memo as a new process would.
        SEEN.lock().unwrap().clear();
        assert_ne!(file_id(&path).unwrap(), before);

        let then = Inputs {
            model: BTreeMap::from([("model.safetensors".into(), before)]),
            data: "aa".into(),
            test: Some("t".into()),
            teachers: vec!["t: run 1".into()],
            kernels: "CPU: F32".into(),
        };
        let now = Inputs {
            model: BTreeMap::from([("model.safetensors".into(), file_id(&path).unwrap())]),
            test: Some("u".into()),
            teachers: vec!["t: run 2".into()],
            ..then.clone()
        };
        let other_kernels = Inputs {
            kernels: "CPU: bf16 products on AMX-BF16".into(),
            ..then.clone()
        };
        assert_eq!(
            other_kernels.changes_since(&then, false),
            ["the dtype and kernels (CPU: F32 → CPU: bf16 products on AMX-BF16)"]
        );
        let changes = now.changes_since(&then, false);
        assert_eq!(
            changes,
            [
                "the base model's model.safetensors",
                "the teacher's logits (t: run 1 → t: run 2)"
            ]
        );
        assert_eq!(now.changes_since(&then, true).len(), 3);
        assert!(then.changes_since(&then, true).is_empty());
        assert_ne!(then.base_model(), now.base_model());
    }
}
