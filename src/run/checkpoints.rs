//! Checkpoints of a run being written, kept in its staging folder: `checkpoint.safetensors`
//! (weights, AdamW moments, the best epoch's weights; the rest as JSON metadata), beside the
//! caching pass's finished chunks (`cache-chunk-K.bin`, written by [`crate::cache::Pass`]).
//! Rerunning the same command finds them and goes on; a checkpoint made under other settings or
//! data is set aside (the run starts over).
use super::config::RunConfig;
use crate::cache::is_chunk_file;
use crate::error::{KdError, Result};
use crate::fsutil::write_atomic;
use crate::training::selection::EpochScores;
use crate::training::{Checkpoints, TrainState};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The checkpoint file in a staging folder.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// Without `--checkpoint-every`, a checkpoint after this much training time (and every epoch).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

/// The scalars of a [`TrainState`] and what the checkpoint was made for.
#[derive(Serialize, Deserialize)]
struct Meta {
    settings: String,
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
}

/// Writes checkpoints into a staging folder: every `every_steps` steps if set, else every
/// [`DEFAULT_INTERVAL`] of training, and at the end of every epoch.
pub struct RunCheckpoints {
    path: PathBuf,
    settings: String,
    names: Vec<String>,
    every_steps: Option<usize>,
    last_saved: Instant,
}

impl RunCheckpoints {
    /// Checkpoints for a run with these `settings` (see [`settings_key`]) and trainable tensor
    /// names, in `dir`.
    pub fn new(
        dir: &Path,
        settings: String,
        names: Vec<String>,
        every_steps: Option<usize>,
    ) -> Self {
        Self {
            path: dir.join(CHECKPOINT),
            settings,
            names,
            every_steps,
            last_saved: Instant::now(),
        }
    }

    /// The state saved by an interrupted run of the same settings, if there is one. A checkpoint
    /// of other settings is removed, saying so.
    pub fn load(&self) -> Result<Option<TrainState>> {
        if !self.path.is_file() {
            return Ok(None);
        }
        let bad = |m: String| {
            KdError::bad_file(
                &self.path,
                format!("{m} (rerun with --fresh to start over)"),
            )
        };
        let bytes = std::fs::read(&self.path).map_err(|e| KdError::io(&self.path, e))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("unreadable checkpoint: {e}")))?;
        let meta: Meta = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("kd"))
            .ok_or_else(|| bad("not a kd checkpoint".into()))
            .and_then(|j| serde_json::from_str(j).map_err(|e| bad(e.to_string())))?;
        if meta.settings != self.settings || meta.names != self.names {
            tracing::warn!(path = %self.path.display(), "the checkpoint was made with other settings or data: starting over");
            std::fs::remove_file(&self.path).map_err(|e| KdError::io(&self.path, e))?;
            return Ok(None);
        }
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
        let take = |prefix: &str| -> Result<Vec<Tensor>> {
            (0..self.names.len())
                .map(|i| {
                    tensors
                        .get(&format!("{prefix}.{i}"))
                        .cloned()
                        .ok_or_else(|| bad(format!("missing `{prefix}.{i}`")))
                })
                .collect()
        };
        let best = match meta.best {
            Some(scores) => Some((scores, take("best")?)),
            None => None,
        };
        Ok(Some(TrainState {
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
        }))
    }
}

impl Checkpoints for RunCheckpoints {
    fn due(&mut self, step: usize, epoch_end: bool) -> bool {
        epoch_end
            || match self.every_steps {
                Some(n) => step.is_multiple_of(n.max(1)),
                None => self.last_saved.elapsed() >= DEFAULT_INTERVAL,
            }
    }

    fn save(&mut self, st: &TrainState) -> Result<()> {
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
        };
        let json = serde_json::to_string(&meta).expect("serialisable");
        write_atomic(&self.path, |tmp| {
            safetensors::serialize_to_file(
                &tensors,
                Some(HashMap::from([("kd".to_string(), json)])),
                tmp,
            )
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
