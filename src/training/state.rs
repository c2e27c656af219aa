//! What a training run is at a step boundary, so that it can stop and go on to the same bits.
//!
//! Randomness is a function of (seed, step): each epoch's batch plan is drawn from an RNG seeded
//! by (seed, epoch) and each step's dropout from one seeded by (seed, step), on the CPU and on a
//! GPU alike. So the state to keep is the step, the weights, AdamW's moments, the epoch selector's
//! memory and the log's counters; no RNG state needs saving. The training loop hands this state to
//! a [`Checkpoints`] implementation (the run folder's, in `run/checkpoints.rs`), which decides
//! where and when it is written.
use super::optimizer::AdamW;
use super::selection::EpochScores;
use super::selection::EpochSelector;
use crate::error::Result;
use crate::model::{NamedVar, TextClassifier};
use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Everything the loop needs to continue after `step` steps.
#[derive(Clone, Debug)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: usize,
    /// The trainable tensors, in `TextClassifier::trainable` order.
    pub params: Vec<Tensor>,
    /// AdamW's step count and first and second moments, in the same order.
    pub adam_step: i32,
    pub adam_m: Vec<Tensor>,
    pub adam_v: Vec<Tensor>,
    /// The best epoch so far (its scores and weights) and the last epoch's scores.
    pub best: Option<(EpochScores, Vec<Tensor>)>,
    pub last: Option<EpochScores>,
    /// Loss sum and steps since the last metrics line; training seconds, samples and tokens.
    pub window: (f64, usize),
    pub seconds: f64,
    pub samples: usize,
    pub tokens: usize,
    /// Bytes of metrics.jsonl written so far (a resumed log is cut back to this).
    pub metrics_len: u64,
}

/// Where training state goes. `due` is asked after every step (`epoch_end` after the epoch's
/// validation too); when it says yes the loop builds the state and calls `save`.
pub trait Checkpoints {
    fn due(&mut self, step: usize, epoch_end: bool) -> bool;
    fn save(&mut self, state: &TrainState) -> Result<()>;
}

/// An RNG for one purpose: `tag` 1 = an epoch's batch plan (index = epoch), 2 = a step's dropout
/// (index = step).
pub fn rng_for(seed: u64, tag: u64, index: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (tag << 56) ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Puts a checkpoint's weights, AdamW moments and selector memory back. Checkpoints are read
/// onto the CPU; the model may live on a GPU.
pub(super) fn resume(
    model: &TextClassifier,
    params: &[NamedVar],
    opt: &mut AdamW,
    selector: &mut EpochSelector,
    mut st: TrainState,
    total: usize,
) -> Result<TrainState> {
    for (nv, t) in params.iter().zip(&st.params) {
        nv.var
            .set(&t.to_device(model.device())?.to_dtype(nv.var.dtype())?)?;
    }
    if let Some((_, snapshot)) = &mut st.best {
        for t in snapshot.iter_mut() {
            *t = t.to_device(model.device())?;
        }
    }
    opt.restore(st.adam_step, &st.adam_m, &st.adam_v)?;
    selector.remember(st.best.as_ref().map(|b| &b.0));
    tracing::info!(step = st.step, total, "resuming");
    Ok(st)
}

pub(super) fn fresh_state() -> TrainState {
    TrainState {
        step: 0,
        params: Vec::new(),
        adam_step: 0,
        adam_m: Vec::new(),
        adam_v: Vec::new(),
        best: None,
        last: None,
        window: (0.0, 0),
        seconds: 0.0,
        samples: 0,
        tokens: 0,
        metrics_len: 0,
    }
}

/// Copies of the trained tensors (a snapshot that later steps do not change).
pub(super) fn copy_params(params: &[NamedVar]) -> Result<Vec<Tensor>> {
    Ok(params
        .iter()
        .map(|nv| nv.var.as_tensor().copy())
        .collect::<candle_core::Result<Vec<_>>>()?)
}
