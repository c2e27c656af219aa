//! Attention for training on the CPU that keeps nothing but its inputs for the backward pass.
//!
//! Written with tensor ops, a layer's attention leaves five (batch, heads, seq, seq) or (batch,
//! seq, width) tensors in candle's graph until the step ends (the scores, the probabilities,
//! their dropped copy, the context and its heads merged), plus a head-split copy of q, k and v:
//! candle's graph holds every op's inputs. Here one op computes context = dropout(softmax(scale·
//! q·kᵀ + mask))·v per batch row and head straight from q, k, v in (batch·seq, heads·head_dim)
//! rows, and the backward recomputes each row's probabilities (the same arithmetic, so the same
//! bits) instead of storing them. The softmax is [`super::super::attention_softmax`]'s, the
//! dropout mask [`super::super::dropout`]'s hash of the element's index in the (batch, heads,
//! seq, seq) probabilities, so masks and probabilities are those of the tensor path; the products
//! differ from its GEMMs by the order of f32 sums.
use super::super::attention_softmax::row_dot as dot;
use super::super::dropout::keeps;
use super::super::fast_math::{self, multiversion};
use rayon::prelude::*;

/// The attention's shape and its dropout.
#[derive(Clone, Copy, Debug)]
pub struct TrainingAttention {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// (seed, p, index of this batch's first probability in the whole batch's): dropout on the
    /// probabilities, as [`super::super::dropout::hashed_dropout_at`] draws it.
    pub dropout: Option<(u64, f32, u32)>,
}

impl TrainingAttention {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    fn check(&self, q: &[f32], k: &[f32], v: &[f32], mask: &[f32]) {
        let rows = self.batch * self.seq;
        for (what, t) in [("q", q), ("k", k), ("v", v)] {
            assert_eq!(
                t.len(),
                rows * self.width(),
                "{what} is (batch·seq) × width"
            );
        }
        assert_eq!(mask.len(), rows, "the mask is batch × seq");
    }

    /// Where row `i` of head `h` of batch row `b` starts among the probabilities' elements.
    #[inline(always)]
    fn first_index(&self, b: usize, h: usize, i: usize) -> u32 {
        let local = ((b * self.heads + h) * self.seq + i) * self.seq;
        let first = self.dropout.map_or(0, |(_, _, first)| first);
        first.wrapping_add(local as u32)
    }

    /// The probabilities of query `i` of head `h` (batch row `b`) into `p`, and in `pd` the
    /// dropped ones (scaled by 1/(1−p); `pd` is `p` when there is no dropout). `kt` holds the
    /// head's keys transposed (head_dim rows of `seq`), so each score sum runs across keys in
    /// vector lanes.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn probs(
        &self,
        b: usize,
        h: usize,
        i: usize,
        q: &[f32],
        kt: &[f32],
        mask: &[f32],
        p: &mut [f32],
        pd: &mut [f32],
    ) {
        let (d, w, seq) = (self.head_dim, self.width(), self.seq);
        let qi = &q[i * w + h * d..][..d];
        p.fill(0.0);
        for (c, &x) in qi.iter().enumerate() {
            axpy(x, &kt[c * seq..(c + 1) * seq], p);
        }
        for (s, &m) in p.iter_mut().zip(mask) {
            *s = *s * self.scale + m;
        }
        let max = p
            .iter()
            .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
        for s in p.iter_mut() {
            *s = fast_math::exp(*s - max);
        }
        let inv = 1.0 / fast_math::lane_sum(p, |x| x);
        for s in p.iter_mut() {
            *s *= inv;
        }
        match self.dropout {
            Some((seed, rate, _)) => {
                let (first, keep_scale) = (self.first_index(b, h, i), 1.0 / (1.0 - rate));
                for (j, (o, &x)) in pd.iter_mut().zip(p.iter()).enumerate() {
                    let kept = keeps(seed, rate, first.wrapping_add(j as u32));
                    *o = if kept { x * keep_scale } else { 0.0 };
                }
            }
            None => pd.copy_from_slice(p),
        }
    }

    /// Head `h`'s columns of `rows` (seq × width) transposed into `out` (head_dim × seq).
    #[inline(always)]
    fn transpose_head(&self, rows: &[f32], h: usize, out: &mut [f32]) {
        let (d, w, seq) = (self.head_dim, self.width(), self.seq);
        for (j, row) in rows.chunks_exact(w).enumerate() {
            for (c, &x) in row[h * d..(h + 1) * d].iter().enumerate() {
                out[c * seq + j] = x;
            }
        }
    }
}

/// y += a·x.
#[inline(always)]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// The context (batch·seq, heads·head_dim).
pub fn forward(q: &[f32], k: &[f32], v: &[f32], mask: &[f32], a: &TrainingAttention) -> Vec<f32> {
    a.check(q, k, v, mask);
    let block = a.seq * a.width();
    let mut out = vec![0f32; q.len()];
    if block == 0 {
        return out;
    }
    out.par_chunks_mut(block).enumerate().for_each(|(b, out)| {
        let r = b * block..(b + 1) * block;
        let m = &mask[b * a.seq..(b + 1) * a.seq];
        forward_row(&q[r.clone()], &k[r.clone()], &v[r], m, a, b, out);
    });
    out
}

multiversion! {
    fn forward_row(q: &[f32], k: &[f32], v: &[f32], mask: &[f32], a: &TrainingAttention, b: usize, out: &mut [f32]) {
        let (d, w, seq) = (a.head_dim, a.width(), a.seq);
        let (mut p, mut pd, mut kt) = (vec![0f32; seq], vec![0f32; seq], vec![0f32; d * seq]);
        for h in 0..a.heads {
            a.transpose_head(k, h, &mut kt);
            for i in 0..seq {
                a.probs(b, h, i, q, &kt, mask, &mut p, &mut pd);
                let o = &mut out[i * w + h * d..][..d];
                for (j, &x) in pd.iter().enumerate() {
                    if x != 0.0 {
                        axpy(x, &v[j * w + h * d..][..d], o);
                    }
                }
            }
        }
    }
}

/// The gradients of q, k and v, given the context's gradient `grad`.
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &[f32],
    grad: &[f32],
    a: &TrainingAttention,
) -> [Vec<f32>; 3] {
    a.check(q, k, v, mask);
    assert_eq!(grad.len(), q.len(), "the gradient is the context's shape");
    let block = a.seq * a.width();
    let (mut dq, mut dk, mut dv) = (
        vec![0f32; q.len()],
        vec![0f32; q.len()],
        vec![0f32; q.len()],
    );
    if block == 0 {
        return [dq, dk, dv];
    }
    dq.par_chunks_mut(block)
        .zip(dk.par_chunks_mut(block))
        .zip(dv.par_chunks_mut(block))
        .enumerate()
        .for_each(|(b, ((dq, dk), dv))| {
            let r = b * block..(b + 1) * block;
            let m = &mask[b * a.seq..(b + 1) * a.seq];
            let inputs = [&q[r.clone()], &k[r.clone()], &v[r.clone()], &grad[r]];
            backward_row(inputs, m, a, b, [dq, dk, dv]);
        });
    [dq, dk, dv]
}

multiversion! {
    fn backward_row(inputs: [&[f32]; 4], mask: &[f32], a: &TrainingAttention, b: usize, grads: [&mut [f32]; 3]) {
        let [q, k, v, g] = inputs;
        let [dq, dk, dv] = grads;
        let (d, w, seq) = (a.head_dim, a.width(), a.seq);
        let keep_scale = a.dropout.map_or(1.0, |(_, rate, _)| 1.0 / (1.0 - rate));
        let (mut p, mut pd, mut dp) = (vec![0f32; seq], vec![0f32; seq], vec![0f32; seq]);
        let (mut kt, mut vt) = (vec![0f32; d * seq], vec![0f32; d * seq]);
        for h in 0..a.heads {
            a.transpose_head(k, h, &mut kt);
            a.transpose_head(v, h, &mut vt);
            for i in 0..seq {
                a.probs(b, h, i, q, &kt, mask, &mut p, &mut pd);
                let gi = &g[i * w + h * d..][..d];
                // dV_j += pd_j·g_i.
                for (j, &x) in pd.iter().enumerate() {
                    if x != 0.0 {
                        axpy(x, gi, &mut dv[j * w + h * d..][..d]);
                    }
                }
                // dP_j = g_i·v_j through the dropout mask (summed across keys in lanes).
                dp.fill(0.0);
                for (c, &x) in gi.iter().enumerate() {
                    axpy(x, &vt[c * seq..(c + 1) * seq], &mut dp);
                }
                if let Some((seed, rate, _)) = a.dropout {
                    let first = a.first_index(b, h, i);
                    for (j, x) in dp.iter_mut().enumerate() {
                        let kept = keeps(seed, rate, first.wrapping_add(j as u32));
                        *x = if kept { *x * keep_scale } else { 0.0 };
                    }
                }
                // dS_j = scale·p_j·(dP_j − Σ dP·p).
                let total = dot(&dp, &p);
                let qi = &q[i * w + h * d..][..d];
                let dqi = &mut dq[i * w + h * d..][..d];
                for j in 0..seq {
                    let ds = (dp[j] - total) * p[j] * a.scale;
                    if ds != 0.0 {
                        axpy(ds, &k[j * w + h * d..][..d], dqi);
                        axpy(ds, qi, &mut dk[j * w + h * d..][..d]);
                    }
                }
            }
        }
    }
}
