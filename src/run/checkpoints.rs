//! Checkpoints of a run being written, kept in its staging folder: `checkpoint.safetensors`
//! (weights, AdamW moments, the best epoch's weights; the rest as JSON metadata), beside the
//! caching pass's finished chunks (`cache-chunk-K.bin`, written by [`crate::cache::Pass`]).
//! Rerunning the same command finds them and goes on; a checkpoint made under other settings or
//! from other inputs (see [`Inputs`]: base model, rows, teachers, dtype and kernels) is set
//! aside with a warning naming what changed (the run starts over). A CRC-32 over the metadata
//! and every tensor's name, dtype, shape and bytes is checked before anything is resumed: a
//! damaged checkpoint is refused by name, never trained on.
use super::config::RunConfig;
use super::identity::Inputs;
use crate::cache::is_chunk_file;
use crate::error::{KdError, Result};
use crate::fsutil::write_atomic;
use crate::training::selection::EpochScores;
use crate::training::{Checkpoints, TrainState};
use candle_core::{Device, Tensor};
use safetensors::{SafeTensors, View};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The checkpoint file in a staging folder.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// Without `--checkpoint-every`, a checkpoint after this much training time (and every epoch).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// The metadata keys of the state's scalars and of the checksum over everything.
const META_KEY: &str = "kd";
const CRC_KEY: &str = "kd_crc32";
/// What to do about a damaged checkpoint.
const FRESH: &str = "rerun with --fresh to start over";

/// The scalars of a [`TrainState`] and what the checkpoint was made for.
#[derive(Serialize, Deserialize)]
struct Meta {
    settings: String,
    /// None in checkpoints of a kd that did not record them: never resumed.
    #[serde(default)]
    inputs: Option<Inputs>,
    names: Vec<String>,
    step: usize,
    adam_step: i32,
    window: (f64, usize),
    seconds: f64,
    samples: usize,
    tokens: usize,
    metrics_len: u64,
    best: Option<EpochScores>,
    last: Option<EpochScores>,
    /// The ranks that trained it (1 in checkpoints from before data-parallel runs).
    #[serde(default = "one_rank")]
    ranks: usize,
}

fn one_rank() -> usize {
    1
}

/// Writes checkpoints into a staging folder: every `every_steps` steps if set, else every
/// [`DEFAULT_INTERVAL`] of training, and at the end of every epoch.
pub struct RunCheckpoints {
    path: PathBuf,
    settings: String,
    inputs: Inputs,
    names: Vec<String>,
    every_steps: Option<usize>,
    last_saved: Instant,
    /// The ranks of the run (a checkpoint of another number is refused).
    ranks: usize,
    /// False on the ranks after 0 of a data-parallel run: they never write.
    writes: bool,
}

impl RunCheckpoints {
    /// Checkpoints for a run with these `settings` (see [`settings_key`]), `inputs` and
    /// trainable tensor names, in `dir`.
    pub fn new(
        dir: &Path,
        settings: String,
        inputs: Inputs,
        names: Vec<String>,
        every_steps: Option<usize>,
    ) -> Self {
        Self {
            path: dir.join(CHECKPOINT),
            settings,
            inputs,
            names,
            every_steps,
            last_saved: Instant::now(),
            ranks: 1,
            writes: true,
        }
    }

    /// Checkpoints of a run on `ranks` ranks.
    pub fn with_ranks(mut self, ranks: usize) -> Self {
        self.ranks = ranks;
        self
    }

    /// The checkpoints of a rank after 0: never due, never written; it resumes from the bytes
    /// rank 0 loaded ([`RunCheckpoints::state_from`]).
    pub fn follower(names: Vec<String>) -> Self {
        let mut c = Self::new(Path::new(""), String::new(), Inputs::default(), names, None);
        c.writes = false;
        c
    }

    fn damaged(&self, problem: String) -> KdError {
        KdError::Damaged {
            path: self.path.clone(),
            problem,
            remedy: FRESH.into(),
        }
    }

    /// The state saved by an interrupted run of the same settings and inputs, if there is one.
    /// A checkpoint of other settings or inputs is removed, saying what changed; a damaged one
    /// (truncated, or not matching its checksum) is refused.
    /// With the state, the checkpoint's bytes (what rank 0 hands the other ranks).
    pub fn load(&self) -> Result<Option<(TrainState, Vec<u8>)>> {
        if !self.path.is_file() {
            return Ok(None);
        }
        let bytes = std::fs::read(&self.path).map_err(|e| KdError::io(&self.path, e))?;
        let (meta, ..) = self.meta(&bytes)?;
        if let Some(why) = self.made_otherwise(&meta) {
            tracing::warn!("{} {why}: starting over", self.path.display());
            std::fs::remove_file(&self.path).map_err(|e| KdError::io(&self.path, e))?;
            return Ok(None);
        }
        if meta.ranks != self.ranks {
            return Err(KdError::RanksChanged {
                path: self.path.clone(),
                then: meta.ranks,
                now: self.ranks,
            });
        }
        Ok(Some((self.state_from(&bytes)?, bytes)))
    }

    /// The checkpoint's scalars, its metadata's JSON and the checksum it records.
    fn meta(&self, bytes: &[u8]) -> Result<(Meta, String, String)> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| {
            self.damaged(format!("unreadable checkpoint (truncated or corrupt): {e}"))
        })?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let json = metadata
            .get(META_KEY)
            .ok_or_else(|| self.damaged("not a kd checkpoint".into()))?;
        let meta: Meta = serde_json::from_str(json)
            .map_err(|e| self.damaged(format!("unreadable state: {e}")))?;
        let crc = metadata
            .get(CRC_KEY)
            .cloned()
            .unwrap_or_else(|| "none".into());
        Ok((meta, json.clone(), crc))
    }

    /// The state held by checkpoint `bytes`, once its checksum is verified.
    pub fn state_from(&self, bytes: &[u8]) -> Result<TrainState> {
        let (meta, json, recorded) = self.meta(bytes)?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            self.damaged(format!("unreadable checkpoint (truncated or corrupt): {e}"))
        })?;
        let got = format!("{:08x}", checksum(&json, st.tensors()));
        if got != recorded {
            return Err(self.damaged(format!(
                "does not match its checksum (CRC-32 {got}, recorded {recorded}): the file was damaged after kd wrote it"
            )));
        }
        self.state(meta, &st)
    }

    /// Why a checkpoint with `meta` is not this run's to resume, if it is not.
    fn made_otherwise(&self, meta: &Meta) -> Option<String> {
        if meta.settings != self.settings || meta.names != self.names {
            return Some("was made with other settings or data".into());
        }
        let Some(then) = &meta.inputs else {
            return Some("was written by an older kd, which did not record its inputs".into());
        };
        let changes = self.inputs.changes_since(then, false);
        (!changes.is_empty()).then(|| {
            format!(
                "was made from other inputs ({} changed)",
                changes.join(", ")
            )
        })
    }

    /// The training state a checked checkpoint holds.
    fn state(&self, meta: Meta, st: &SafeTensors) -> Result<TrainState> {
        use candle_core::safetensors::Load;
        let take = |prefix: &str| -> Result<Vec<Tensor>> {
            (0..self.names.len())
                .map(|i| {
                    let name = format!("{prefix}.{i}");
                    let view = st
                        .tensor(&name)
                        .map_err(|_| self.damaged(format!("missing `{name}`")))?;
                    Ok(view.load(&Device::Cpu)?)
                })
                .collect()
        };
        let best = match meta.best {
            Some(scores) => Some((scores, take("best")?)),
            None => None,
        };
        Ok(TrainState {
            step: meta.step,
            params: take("param")?,
            adam_step: meta.adam_step,
            adam_m: take("adam_m")?,
            adam_v: take("adam_v")?,
            best,
            last: meta.last,
            window: meta.window,
            seconds: meta.seconds,
            samples: meta.samples,
            tokens: meta.tokens,
            metrics_len: meta.metrics_len,
        })
    }
}

/// CRC-32 over a checkpoint's state (its JSON) and every tensor's name, dtype, shape and bytes,
/// in name order: any flipped bit that would change what is resumed changes it.
fn checksum<V: View>(meta: &str, mut tensors: Vec<(String, V)>) -> u32 {
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = crc32fast::Hasher::new();
    h.update(meta.as_bytes());
    for (name, t) in &tensors {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(format!("{:?}", t.dtype()).as_bytes());
        for d in t.shape() {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(&t.data());
    }
    h.finalize()
}

impl Checkpoints for RunCheckpoints {
    fn due(&mut self, step: usize, epoch_end: bool) -> bool {
        let due = epoch_end
            || match self.every_steps {
                Some(n) => step.is_multiple_of(n.max(1)),
                None => self.last_saved.elapsed() >= DEFAULT_INTERVAL,
            };
        self.writes && due
    }

    fn save(&mut self, st: &TrainState) -> Result<()> {
        if !self.writes {
            return Ok(());
        }
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        let mut put = |prefix: &str, list: &[Tensor]| -> Result<()> {
            for (i, t) in list.iter().enumerate() {
                tensors.insert(format!("{prefix}.{i}"), t.to_device(&Device::Cpu)?);
            }
            Ok(())
        };
        put("param", &st.params)?;
        put("adam_m", &st.adam_m)?;
        put("adam_v", &st.adam_v)?;
        if let Some((_, snapshot)) = &st.best {
            put("best", snapshot)?;
        }
        let meta = Meta {
            settings: self.settings.clone(),
            inputs: Some(self.inputs.clone()),
            names: self.names.clone(),
            step: st.step,
            adam_step: st.adam_step,
            window: st.window,
            seconds: st.seconds,
            samples: st.samples,
            tokens: st.tokens,
            metrics_len: st.metrics_len,
            best: st.best.as_ref().map(|b| b.0.clone()),
            last: st.last.clone(),
            ranks: self.ranks,
        };
        let json = serde_json::to_string(&meta).expect("serialisable");
        let crc = checksum(&json, tensors.iter().map(|(n, t)| (n.clone(), t)).collect());
        let metadata = HashMap::from([
            (META_KEY.to_string(), json),
            (CRC_KEY.to_string(), format!("{crc:08x}")),
        ]);
        write_atomic(&self.path, |tmp| {
            safetensors::serialize_to_file(&tensors, Some(metadata), tmp)
                .map_err(|e| KdError::bad_file(tmp, e.to_string()))
        })?;
        self.last_saved = Instant::now();
        tracing::debug!(step = st.step, "checkpoint");
        Ok(())
    }
}

/// What a checkpoint must agree with to be resumed: the resolved settings (less the run folder,
/// device and checkpoint interval, which do not change the maths) and the data's fingerprint.
pub fn settings_key(cfg: &RunConfig, data_fingerprint: &str) -> String {
    let mut c = cfg.clone();
    c.run_id = None;
    c.out = PathBuf::new();
    c.device = String::new();
    c.train.checkpoint_every = None;
    c.train.fresh = false;
    let text = toml::to_string(&c).unwrap_or_default();
    format!(
        "{:08x}|{data_fingerprint}",
        crc32fast::hash(text.as_bytes())
    )
}

/// The files of an interrupted run that a finished run folder does not keep.
pub fn is_resume_file(name: &str) -> bool {
    name == CHECKPOINT || is_chunk_file(name)
}
