//! Attention for training on the CPU that keeps nothing but its inputs for the backward pass.
//!
//! Written with tensor ops, a layer's attention leaves five (batch, heads, seq, seq) or (batch,
//! seq, width) tensors in candle's graph until the step ends (the scores, the probabilities,
//! their dropped copy, the context and its heads merged), plus a head-split copy of q, k and v:
//! candle's graph holds every op's inputs. Here one op computes context = dropout(softmax(scale·
//! q·kᵀ + mask))·v per batch row and head straight from q, k, v in (batch·seq, heads·head_dim)
//! rows, and the backward recomputes each head's probabilities (the same arithmetic, so the same
//! bits) instead of storing them. Per head: the scores as one product on gemm's micro-kernels over
//! strided views of q and k ([`super::super::strided_matmul`]), each row's softmax (the inference
//! attention's, [`super::softmax`]), the dropout mask ([`super::super::dropout`]'s hash of the
//! element's index in the (batch, heads, seq, seq) probabilities: the tensor path's masks), and
//! the context or the gradients as products again, the head's (seq × seq) probabilities held in
//! the cache between them. Results differ from the tensor path by the order of f32 sums and the
//! softmax's fused multiply-adds. Written as per-query row updates instead, the backward spent a
//! third of a training step storing and reloading rows of dk.
use super::super::attention_softmax::row_dot as dot;
use super::super::dropout::{mask_slice, DropoutMask};
use super::super::fast_math::multiversion;
use super::super::strided_matmul::{matmul, View};
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
    pub dropout: DropoutMask,
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

    /// Where head `h` of batch row `b` starts among the probabilities' elements.
    #[inline(always)]
    fn first_index(&self, b: usize, h: usize) -> u32 {
        let local = (b * self.heads + h) * self.seq * self.seq;
        let first = self.dropout.map_or(0, |(_, _, first)| first);
        first.wrapping_add(local as u32)
    }

    /// Head `h`'s probabilities for every query of batch row `b` into `p` (seq × seq), and in
    /// `pd` the dropped ones (scaled by 1/(1−p); `pd` is `p` when there is no dropout): the
    /// scores as one product of the head's q and k blocks, then each row's softmax.
    #[allow(clippy::too_many_arguments)]
    fn head_probs(
        &self,
        b: usize,
        h: usize,
        q: &[f32],
        k: &[f32],
        mask: &[f32],
        p: &mut [f32],
        pd: &mut [f32],
    ) {
        let seq = self.seq;
        let block = self.head(h);
        // The scores go into `pd` first, the softmax reads them from there into `p`.
        matmul(
            pd,
            View::rows(0, seq, seq, seq),
            q,
            block,
            k,
            block.t(),
            false,
        );
        softmax_rows(pd, mask, self.scale, seq, p);
        match self.dropout {
            // The head's probabilities are consecutive elements of the whole batch's.
            Some((seed, rate, _)) => {
                let first = self.first_index(b, h);
                mask_slice(p, seed, rate, 1.0 / (1.0 - rate), first, pd);
            }
            None => pd.copy_from_slice(p),
        }
    }

    /// Head `h`'s columns of (seq, width) rows: a seq × head_dim view.
    fn head(&self, h: usize) -> View {
        View::rows(h * self.head_dim, self.seq, self.head_dim, self.width())
    }
}

multiversion! {
    /// Each row's softmax (the inference attention's row kernel, inlined here so that its
    /// portable version is compiled for AVX2 + FMA where the CPU has them).
    fn softmax_rows(scores: &[f32], mask: &[f32], scale: f32, seq: usize, p: &mut [f32]) {
        let row = seq.max(1);
        for (s, p) in scores.chunks_exact(row).zip(p.chunks_exact_mut(row)) {
            super::softmax(s, mask, scale, p);
        }
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

/// Attention over one batch row, head by head: probabilities, then context = pd·v.
fn forward_row(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &[f32],
    a: &TrainingAttention,
    b: usize,
    out: &mut [f32],
) {
    let seq = a.seq;
    let (mut p, mut pd) = (vec![0f32; seq * seq], vec![0f32; seq * seq]);
    for h in 0..a.heads {
        a.head_probs(b, h, q, k, mask, &mut p, &mut pd);
        let block = a.head(h);
        matmul(
            out,
            block,
            &pd,
            View::rows(0, seq, seq, seq),
            v,
            block,
            false,
        );
    }
}

/// The gradients of q, k and v, given the context's gradient `grad`; k's only when
/// `key_grad` (empty otherwise: the first layer's keys come from frozen embeddings).
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &[f32],
    grad: &[f32],
    a: &TrainingAttention,
    key_grad: bool,
) -> [Vec<f32>; 3] {
    a.check(q, k, v, mask);
    assert_eq!(grad.len(), q.len(), "the gradient is the context's shape");
    let block = a.seq * a.width();
    let (mut dq, mut dk, mut dv) = (
        vec![0f32; q.len()],
        vec![0f32; if key_grad { q.len() } else { 0 }],
        vec![0f32; q.len()],
    );
    if block == 0 {
        return [dq, dk, dv];
    }
    let dk_rows: Vec<Option<&mut [f32]>> = if key_grad {
        dk.chunks_mut(block).map(Some).collect()
    } else {
        (0..q.len() / block).map(|_| None).collect()
    };
    dq.par_chunks_mut(block)
        .zip(dv.par_chunks_mut(block))
        .zip(dk_rows.into_par_iter())
        .enumerate()
        .for_each(|(b, ((dq, dv), dk))| {
            let r = b * block..(b + 1) * block;
            let m = &mask[b * a.seq..(b + 1) * a.seq];
            let inputs = [&q[r.clone()], &k[r.clone()], &v[r.clone()], &grad[r]];
            backward_row(inputs, m, a, b, (dq, dk, dv));
        });
    [dq, dk, dv]
}

/// The gradients of one batch row's q, k and v, head by head: the probabilities recomputed,
/// then dv = pdᵀ·g, dpd = g·vᵀ, ds = scale·p⊙(dp − Σⱼ dp·p) with dp = dpd through the dropout
/// mask, dq = ds·k and dk = dsᵀ·q, each a product of views of the head's columns.
fn backward_row(
    inputs: [&[f32]; 4],
    mask: &[f32],
    a: &TrainingAttention,
    b: usize,
    grads: (&mut [f32], Option<&mut [f32]>, &mut [f32]),
) {
    let [q, k, v, g] = inputs;
    let (dq, mut dk, dv) = grads;
    let seq = a.seq;
    let keep_scale = a.dropout.map_or(1.0, |(_, rate, _)| 1.0 / (1.0 - rate));
    let square = View::rows(0, seq, seq, seq);
    let (mut p, mut pd, mut ds) = (
        vec![0f32; seq * seq],
        vec![0f32; seq * seq],
        vec![0f32; seq * seq],
    );
    for h in 0..a.heads {
        let block = a.head(h);
        a.head_probs(b, h, q, k, mask, &mut p, &mut pd);
        matmul(dv, block, &pd, square.t(), g, block, false);
        matmul(&mut ds, square, g, block, v, block.t(), false);
        score_grads(&mut ds, &p, &pd, seq, keep_scale, a.scale);
        matmul(dq, block, &ds, square, k, block, false);
        if let Some(dk) = dk.as_deref_mut() {
            matmul(dk, block, &ds, square.t(), q, block, false);
        }
    }
}

multiversion! {
    /// The scores' gradient in place of `ds`, which holds the dropped probabilities' gradient:
    /// through the dropout mask (an element was dropped where `pd` is 0 and `p` is not; where
    /// `p` is 0 the gradient is 0 either way), then ds = scale·p⊙(dp − Σⱼ dp·p) per row.
    fn score_grads(ds: &mut [f32], p: &[f32], pd: &[f32], seq: usize, keep_scale: f32, scale: f32) {
        let seq = seq.max(1);
        for ((ds, p), pd) in ds.chunks_exact_mut(seq).zip(p.chunks_exact(seq)).zip(pd.chunks_exact(seq)) {
            for (x, &kept) in ds.iter_mut().zip(pd) {
                *x = if kept != 0.0 { *x * keep_scale } else { 0.0 };
            }
            let total = dot(ds, p);
            for (x, &p) in ds.iter_mut().zip(p) {
                *x = (*x - total) * p * scale;
            }
        }
    }
}
