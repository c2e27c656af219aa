//! One optimizer step of a data-parallel run (`mpirun -np N kd teach …`).
//!
//! Every rank draws the same global batch from the same plan (N × `--batch-size` rows, as HF
//! Trainer counts) and takes its contiguous share of the rows ([`share`]). The share is padded
//! to the whole batch's longest row and marked as those rows of it for dropout
//! ([`dropout_rows`]), so each row is computed, masks included, as in one process training the
//! whole batch (f32 on CPUs; a GPU draws its masks on the device, and there they differ).
//!
//! Each rank's loss is the mean over its rows. Weighted by its share of the rows, the ranks'
//! gradients sum to the whole batch's mean gradient, also when the last batch of an epoch does
//! not split evenly. The sum is one all-reduce over one flat buffer: every trainable tensor's
//! gradient, then the weighted loss and the stop flag (so all ranks stop at the same step).
//! Clipping and AdamW then run on the same sum on every rank, so the weights stay the same on
//! every rank without ever being sent. Only rounding differs from one process: sums over rows
//! are split at other places.
use super::optimizer::AdamW;
use super::step::{apply_gradients, gradients, Objective, TrainSettings};
use crate::data::Batcher;
use crate::distributed::{share, Collective};
use crate::error::{KdError, Result};
use crate::interrupt::stop_requested;
use crate::model::{NamedVar, TextClassifier};
use crate::nn::dropout_rows;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use std::time::Instant;

/// What one shared step gives back: the same on every rank.
pub struct SharedStep {
    /// The whole batch's mean loss.
    pub loss: f64,
    /// Whether any rank was asked to stop before the all-reduce.
    pub stop: bool,
    /// Seconds this rank spent in the all-reduce (waiting for slower ranks included).
    pub reduce_seconds: f64,
}

/// Values after the gradients in the flat buffer: the weighted loss and the stop flag.
const EXTRA: usize = 2;

/// Bytes one all-reduce sends per step for `model`: every trainable scalar as f32, plus the
/// loss and the stop flag.
pub fn reduced_bytes(model: &TextClassifier) -> usize {
    (model.trainable_count() + EXTRA) * std::mem::size_of::<f32>()
}

/// The step on global batch `rows`: this rank's share forward and backward, one all-reduce,
/// then clipping and AdamW. `rng` is the step's dropout RNG (the same on every rank).
#[allow(clippy::too_many_arguments)]
pub fn shared_step(
    world: &dyn Collective,
    model: &TextClassifier,
    batcher: &Batcher,
    rows: &[usize],
    objective: &Objective,
    opt: &mut AdamW,
    lr: f64,
    s: &TrainSettings,
    rng: &mut StdRng,
) -> Result<SharedStep> {
    let mine = share(rows.len(), world.rank(), world.size());
    let weight = mine.len() as f64 / rows.len().max(1) as f64;
    let (loss, grads) = if mine.is_empty() {
        // Fewer rows than ranks (a last, short batch): this rank adds nothing to the sum.
        (0.0, GradStore::default())
    } else {
        let batch = batcher.batch_padded(&rows[mine.clone()], batcher.longest(rows));
        let _window = dropout_rows(mine.start, mine.len());
        let (loss, _, grads) = gradients(model, &batch, objective, s, rng)?;
        (loss.to_scalar::<f32>()? as f64, grads)
    };
    let extra = [
        (loss * weight) as f32,
        f32::from(u8::from(stop_requested())),
    ];
    let flat = flatten(model.trainable(), &grads, weight, &extra, model.device())?;
    let started = Instant::now();
    let summed = world.all_reduce_tensor(&flat)?;
    let extra = summed
        .narrow(0, summed.dim(0)? - EXTRA, EXTRA)?
        .to_vec1::<f32>()?;
    let reduce_seconds = started.elapsed().as_secs_f64();
    let mut grads = unflatten(model.trainable(), &summed)?;
    apply_gradients(opt, &mut grads, lr, s)?;
    Ok(SharedStep {
        loss: extra[0] as f64,
        stop: extra[1] > 0.0,
        reduce_seconds,
    })
}

/// Gives every rank rank 0's trainable tensors, as DDP does when it starts. Every rank already
/// initialises them from the same seed (or resumes the same checkpoint); this makes equal
/// weights a fact rather than an assumption (another kd version on one node, say).
pub fn share_weights(world: &dyn Collective, model: &TextClassifier) -> Result<()> {
    let params = model.trainable();
    let mut bytes = Vec::new();
    if world.leads() {
        for p in params {
            let values = p.var.as_tensor().to_dtype(DType::F32)?.flatten_all()?;
            bytes.extend(
                values
                    .to_vec1::<f32>()?
                    .iter()
                    .flat_map(|v| v.to_le_bytes()),
            );
        }
    }
    world.broadcast_bytes(&mut bytes)?;
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    let flat = Tensor::from_vec(floats, bytes.len() / 4, model.device())?;
    for (p, t) in params.iter().zip(split(params, &flat)?) {
        p.var.set(&t)?;
    }
    Ok(())
}

/// Every trainable tensor's gradient times `weight` (zeros where it has none), flattened in
/// `params` order, then `extra`: one f32 buffer on the model's device.
fn flatten(
    params: &[NamedVar],
    grads: &GradStore,
    weight: f64,
    extra: &[f32],
    device: &candle_core::Device,
) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(params.len() + 1);
    for p in params {
        let t = p.var.as_tensor();
        let part = match grads.get(t) {
            Some(g) => (g.to_dtype(DType::F32)?.flatten_all()? * weight)?,
            None => Tensor::zeros(t.elem_count(), DType::F32, device)?,
        };
        parts.push(part);
    }
    parts.push(Tensor::from_slice(extra, extra.len(), device)?);
    Ok(Tensor::cat(&parts, 0)?)
}

/// The gradients [`flatten`] packed, back in a store under their tensors, in their dtypes.
fn unflatten(params: &[NamedVar], flat: &Tensor) -> Result<GradStore> {
    let grads_only = flat.narrow(0, 0, flat.dim(0)?.saturating_sub(EXTRA))?;
    let mut grads = GradStore::default();
    for (p, g) in params.iter().zip(split(params, &grads_only)?) {
        grads.insert(p.var.as_tensor(), g);
    }
    Ok(grads)
}

/// `flat` cut into tensors of `params`' shapes and dtypes, in order; refused unless it holds
/// exactly their scalars.
fn split(params: &[NamedVar], flat: &Tensor) -> Result<Vec<Tensor>> {
    let total: usize = params.iter().map(|p| p.var.elem_count()).sum();
    if flat.dim(0)? != total {
        return Err(KdError::Internal(format!(
            "a flat buffer of {} floats for {total} trainable scalars",
            flat.dim(0)?
        )));
    }
    let mut at = 0;
    let mut out = Vec::with_capacity(params.len());
    for p in params {
        let t = p.var.as_tensor();
        let n = t.elem_count();
        out.push(
            flat.narrow(0, at, n)?
                .reshape(t.shape())?
                .to_dtype(t.dtype())?,
        );
        at += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn flat_buffers_round_trip_and_weigh_the_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let a = Var::new(&[[1f32, 2.0], [3.0, 4.0]], &dev)?;
        let b = Var::new(&[5f32, 6.0, 7.0], &dev)?;
        let params = vec![
            NamedVar {
                name: "a".into(),
                var: a.clone(),
            },
            NamedVar {
                name: "b".into(),
                var: b.clone(),
            },
        ];
        // Only `a` takes part in the loss: `b` gets a zero gradient.
        let grads = a.as_tensor().sqr()?.sum_all()?.backward()?;
        let flat = flatten(&params, &grads, 0.5, &[9.0, 1.0], &dev)?;
        assert_eq!(
            flat.to_vec1::<f32>()?,
            [1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 9.0, 1.0]
        );
        let back = unflatten(&params, &flat)?;
        let ga = back.get(a.as_tensor()).expect("a");
        assert_eq!(ga.to_vec2::<f32>()?, [[1.0, 2.0], [3.0, 4.0]]);
        assert_eq!(
            back.get(b.as_tensor()).expect("b").to_vec1::<f32>()?,
            [0.0; 3]
        );
        Ok(())
    }
}
