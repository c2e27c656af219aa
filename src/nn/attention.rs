//! Self-attention as one differentiable op on the CPU in f32 ([`attention`]): its backward
//! recomputes the probabilities instead of keeping them ([`crate::nn::cpu::attention::training`]).
use super::autograd::grad_if_tracked;
use super::cpu::attention::training::{self, TrainingAttention};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};
use rand::Rng;

/// dropout(softmax(scale·q·kᵀ + mask))·v with the heads split and merged in place, for q, k, v
/// of shape (batch, seq, heads·head_dim) and a mask of (batch, 1, 1, seq) additive biases;
/// dropout at `p` when `rng` is given. `None` where the op does not apply (not f32 on the CPU):
/// the caller takes the tensor path.
pub fn attention<R: Rng>(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask_bias: &Tensor,
    heads: usize,
    p: f64,
    rng: Option<&mut R>,
) -> Result<Option<Tensor>> {
    let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if ![q, k, v].iter().all(|t| cpu_f32(t)) || tensor_path_asked() {
        return Ok(None);
    }
    let (batch, seq, width) = q.dims3()?;
    let head_dim = width / heads;
    let dropout = match rng {
        Some(rng) => super::ops::dropout_mask(batch * heads * seq * seq, p as f32, rng)?,
        None => None,
    };
    let shape = TrainingAttention {
        batch,
        seq,
        heads,
        head_dim,
        scale: (1.0 / (head_dim as f64).sqrt()) as f32,
        dropout,
    };
    let mask = mask_bias
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let op = Attention { shape, mask };
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    Ok(Some(q.apply_op3(&k, &v, op)?))
}

/// `KD_TENSOR_ATTENTION=1` keeps the separate ops this op, [`super::dropout_add_layer_norm`] and
/// [`super::adapted_linear`] replace (benchmarks of one against the other; the arithmetic of runs
/// made before them). [`super::frozen_feed_forward`] returns its separate ops' bits and ignores it.
pub(super) fn tensor_path_asked() -> bool {
    static ASKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ASKED.get_or_init(|| std::env::var_os("KD_TENSOR_ATTENTION").is_some_and(|v| v == "1"))
}

struct Attention {
    shape: TrainingAttention,
    /// (batch × seq) additive biases.
    mask: Vec<f32>,
}

/// The f32 elements of a contiguous CPU tensor.
fn data<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    super::cpu::contiguous_f32(storage, layout, "kd-attention")
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "kd-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (data(qs, ql)?, data(ks, kl)?, data(vs, vl)?);
        let out = training::forward(q, k, v, &self.mask, &self.shape);
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (gs, gl) = grad.storage_and_layout();
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let [dq, dk, dv] = match (&*qs, &*ks, &*vs, &*gs) {
            (Storage::Cpu(qs), Storage::Cpu(ks), Storage::Cpu(vs), Storage::Cpu(gs)) => {
                training::backward(
                    data(qs, ql)?,
                    data(ks, kl)?,
                    data(vs, vl)?,
                    &self.mask,
                    data(gs, gl)?,
                    &self.shape,
                    k.track_op(),
                )
            }
            _ => candle_core::bail!("kd-attention: CPU tensors expected"),
        };
        Ok((
            grad_if_tracked(dq, q)?,
            grad_if_tracked(dk, k)?,
            grad_if_tracked(dv, v)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::test_util::max_relative_diff;
    use candle_core::{Device, Var};
    use rand::SeedableRng;

    /// The tensor path this op replaces: heads split, q·kᵀ, masked softmax, dropout, ·v, merged.
    fn tensor_path<R: Rng>(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        heads: usize,
        p: f64,
        rng: Option<&mut R>,
    ) -> Result<Tensor> {
        let (b, l, w) = q.dims3()?;
        let d = w / heads;
        let split = |t: &Tensor| t.reshape((b, l, heads, d))?.transpose(1, 2)?.contiguous();
        let (q, k, v) = (split(q)?, split(k)?, split(v)?);
        let probs = crate::nn::masked_softmax(&q.matmul(&k.t()?)?, 1.0 / (d as f64).sqrt(), mask)?;
        let probs = match rng {
            Some(rng) => crate::nn::dropout(&probs, p as f32, rng)?,
            None => probs,
        };
        probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, l, w))
    }

    /// Values and the gradients of q, k and v against the tensor path, on odd sizes, padded rows
    /// and with and without dropout (the same masks: the same hash of the same indices).
    #[test]
    fn matches_the_tensor_path_forward_and_backward() -> Result<()> {
        // Small and odd, then head-sized blocks past gemm's micro-tiles.
        matches_the_tensor_path_at(3, 7, 2, 5, [7, 4, 1])?;
        matches_the_tensor_path_at(2, 37, 3, 16, [37, 20, 0])
    }

    fn matches_the_tensor_path_at(
        b: usize,
        l: usize,
        heads: usize,
        d: usize,
        lens: [usize; 3],
    ) -> Result<()> {
        let dev = Device::Cpu;
        let var = |seed: u64| -> Result<Var> {
            let mut r = rand::rngs::StdRng::seed_from_u64(seed);
            let data: Vec<f32> = (0..b * l * heads * d)
                .map(|_| r.random::<f32>() * 2.0 - 1.0)
                .collect();
            Var::from_vec(data, (b, l, heads * d), &dev)
        };
        let (q, k, v) = (var(1)?, var(2)?, var(3)?);
        let mask: Vec<f32> = lens[..b]
            .iter()
            .flat_map(|&n| (0..l).map(move |j| if j < n { 0.0 } else { f32::MIN }))
            .collect();
        let mask = Tensor::from_vec(mask, (b, 1, 1, l), &dev)?;
        let weights = Tensor::from_vec(
            (0..b * l * heads * d)
                .map(|i| ((i * 7) % 11) as f32 - 5.0)
                .collect::<Vec<_>>(),
            (b, l, heads * d),
            &dev,
        )?;
        for p in [0.0, 0.3] {
            let mut r1 = rand::rngs::StdRng::seed_from_u64(9);
            let mut r2 = rand::rngs::StdRng::seed_from_u64(9);
            let fused =
                attention(&q, &k, &v, &mask, heads, p, Some(&mut r1))?.expect("f32 on the CPU");
            let reference = tensor_path(&q, &k, &v, &mask, heads, p, Some(&mut r2))?;
            let diff = max_relative_diff(&fused, &reference);
            assert!(diff < 1e-6, "p = {p}: values differ by {diff}");
            let gf = (&fused * &weights)?.sum_all()?.backward()?;
            let gr = (&reference * &weights)?.sum_all()?.backward()?;
            for (name, t) in [("q", &q), ("k", &k), ("v", &v)] {
                let (a, c) = (
                    gf.get(t).expect("a gradient"),
                    gr.get(t).expect("a gradient"),
                );
                let diff = max_relative_diff(a, c);
                assert!(diff < 1e-5, "p = {p}: d{name} differs by {diff} (relative)");
            }
        }
        Ok(())
    }
}
