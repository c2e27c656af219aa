//! Self-attention without gradients on the CPU, in one kernel: softmax(scale·q·kᵀ + mask)·v for
//! every row and head, reading q, k and v where the projections wrote them and writing the context
//! where the output projection reads it.
//!
//! Written with tensor ops (as training needs, for the backward) the same work is three copies
//! splitting the heads, a batched product for the scores, the softmax, a second batched product
//! and a copy merging the heads: five passes over memory and two small-matrix GEMMs per layer.
//! Here each (row, head) is worked in the L1 cache: the head's keys transposed once, then per
//! query its scores, the softmax ([`super::attention_softmax`]'s row kernel) and the weighted
//! values. Sums run over 16 lanes in a fixed order with fused multiply-adds (one rounding a step,
//! in every compiled version), so the results are the same bits on every CPU; they differ from
//! the GEMM path's only by the order and rounding of f32 sums.
use super::bf16_matmul::PackedRows;
use super::fast_math::multiversion;
use rayon::prelude::*;
pub mod training;

#[cfg(target_arch = "x86_64")]
mod avx512;

/// The shape of the activations attention reads: (batch·seq) rows of heads·head_dim.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// The context softmax(scale·q·kᵀ + mask)·v per batch row and head, for q, k and v of shape
/// (batch·seq, heads·head_dim) and a mask of (batch, seq) additive biases (0 attended, a large
/// negative value padded), as (batch·seq, heads·head_dim): HF's self-attention with the heads
/// split and merged in place.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &[f32],
    shape: AttentionShape,
    scale: f32,
) -> Vec<f32> {
    let (rows, width) = check_inputs([q, k, v], mask, shape);
    let mut out = super::fast_math::vec_for_overwrite(rows * width);
    let batch_row = batch_row(q, k, v, mask, shape, scale);
    out.par_chunks_mut((shape.seq * width).max(1))
        .enumerate()
        .for_each(|(b, out)| batch_row(b * shape.seq, out));
    out
}

/// (batch·seq, width), after checking that q, k, v and the mask have the shape's sizes.
fn check_inputs(qkv: [&[f32]; 3], mask: &[f32], shape: AttentionShape) -> (usize, usize) {
    let (rows, width) = (shape.batch * shape.seq, shape.width());
    for (what, t) in ["q", "k", "v"].into_iter().zip(qkv) {
        assert_eq!(t.len(), rows * width, "{what} is (batch·seq) × width");
    }
    assert_eq!(mask.len(), rows, "the mask is batch × seq");
    (rows, width)
}

/// `f(first, out)`: the context of the batch row whose tokens start at row `first`, into `out`
/// (its seq rows).
fn batch_row<'a>(
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    mask: &'a [f32],
    shape: AttentionShape,
    scale: f32,
) -> impl Fn(usize, &mut [f32]) + Sync + 'a {
    let width = shape.width();
    move |first, out| {
        let span = first * width..first * width + out.len();
        let (q, k, v) = (&q[span.clone()], &k[span.clone()], &v[span]);
        attend(q, k, v, &mask[first..first + shape.seq], shape, scale, out)
    }
}

/// [`attention`] and its output rows in the native kernels' bf16 layout, each batch row's rounded
/// while still in cache (the output projection's input).
pub fn attention_packed(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &[f32],
    shape: AttentionShape,
    scale: f32,
) -> (Vec<f32>, PackedRows) {
    let (rows, width) = check_inputs([q, k, v], mask, shape);
    let batch_row = batch_row(q, k, v, mask, shape, scale);
    PackedRows::from_f32_computed(rows, width, shape.seq, batch_row)
}

/// Keys (and value columns) a register holds.
const LANES: usize = 16;

multiversion! {
    /// Attention over one batch row's `seq` tokens, head by head, into `out` (seq × width).
    fn attend(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        mask: &[f32],
        shape: AttentionShape,
        scale: f32,
        out: &mut [f32],
    ) {
        let (seq, d, width) = (shape.seq, shape.head_dim, shape.width());
        // The head's keys transposed, each column padded with zeros to whole registers.
        let seq_pad = seq.div_ceil(LANES) * LANES;
        let mut keys_t = vec![0f32; d * seq_pad];
        // Queries go two at a time (each key and value register loaded once for both).
        let mut scores = [vec![0f32; seq_pad], vec![0f32; seq_pad]];
        let mut probs = [vec![0f32; seq], vec![0f32; seq]];
        for head in 0..shape.heads {
            let col = head * d;
            for (j, key) in k.chunks_exact(width).enumerate() {
                for (c, &x) in key[col..col + d].iter().enumerate() {
                    keys_t[c * seq_pad + j] = x;
                }
            }
            let pairs = q.chunks_exact(2 * width).zip(out.chunks_exact_mut(2 * width));
            for (queries, out_rows) in pairs {
                let (q0, q1) = queries.split_at(width);
                let (o0, o1) = out_rows.split_at_mut(width);
                let [s0, s1] = &mut scores;
                key_scores_pair([&q0[col..col + d], &q1[col..col + d]], &keys_t, [s0, s1]);
                let [p0, p1] = &mut probs;
                softmax(&s0[..seq], mask, scale, p0);
                softmax(&s1[..seq], mask, scale, p1);
                let context = [&mut o0[col..col + d], &mut o1[col..col + d]];
                weighted_values_pair([p0, p1], v, width, col, context);
            }
            if seq % 2 == 1 {
                let last = (seq - 1) * width;
                let query = &q[last + col..last + col + d];
                key_scores(query, &keys_t, &mut scores[0]);
                softmax(&scores[0][..seq], mask, scale, &mut probs[0]);
                let context = &mut out[last + col..last + col + d];
                weighted_values(&probs[0], v, width, col, context);
            }
        }
    }
}

/// probs = softmax(scale·scores + mask) over one row: the maximum, e^x of
/// [`super::fma_math`] and the sum over 16 lanes added up in a fixed tree ([`lane_total`]), so
/// the AVX-512 version ([`avx512::softmax`]) returns the same bits.
#[inline(always)]
fn softmax(scores: &[f32], mask: &[f32], scale: f32, probs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::features::x86_features().avx512f {
        // SAFETY: the CPU has AVX-512F; the three rows have the same length.
        return unsafe { avx512::softmax(scores, mask, scale, probs) };
    }
    softmax_portable(scores, mask, scale, probs);
}

#[inline(always)]
fn softmax_portable(scores: &[f32], mask: &[f32], scale: f32, probs: &mut [f32]) {
    let mut max = f32::NEG_INFINITY;
    for ((p, &s), &m) in probs.iter_mut().zip(scores).zip(mask) {
        *p = s.mul_add(scale, m);
        max = if *p > max { *p } else { max };
    }
    let mut lanes = [0f32; LANES];
    for (j, p) in probs.iter_mut().enumerate() {
        *p = super::fma_math::exp(*p - max);
        lanes[j % LANES] += *p;
    }
    let inv = 1.0 / lane_total(lanes);
    for p in probs.iter_mut() {
        *p *= inv;
    }
}

/// The 16 lanes' sum in a fixed tree: halves added pairwise down to one.
#[inline(always)]
fn lane_total(mut lanes: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
        width /= 2;
    }
    lanes[0]
}

/// scores[j] = q·k_j in registers of 16 keys, each register's sum over the head's columns split
/// in two (even and odd columns) and added at the end. [`avx512::key_scores`] is this in
/// intrinsics, with up to 4 registers of keys at once; the two return the same bits.
#[inline(always)]
fn key_scores(q: &[f32], keys_t: &[f32], scores: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::features::x86_features().avx512f {
        // SAFETY: the CPU has AVX-512F; keys_t holds q.len() rows of scores.len() keys.
        return unsafe { avx512::key_scores([q], keys_t, [scores]) };
    }
    key_scores_portable(q, keys_t, scores);
}

/// [`key_scores`] for two queries of the head (the same bits as one at a time).
#[inline(always)]
fn key_scores_pair(q: [&[f32]; 2], keys_t: &[f32], scores: [&mut [f32]; 2]) {
    #[cfg(target_arch = "x86_64")]
    if super::features::x86_features().avx512f {
        // SAFETY: the CPU has AVX-512F; keys_t holds d rows of scores.len() keys.
        return unsafe { avx512::key_scores(q, keys_t, scores) };
    }
    let [s0, s1] = scores;
    key_scores_portable(q[0], keys_t, s0);
    key_scores_portable(q[1], keys_t, s1);
}

#[inline(always)]
fn key_scores_portable(q: &[f32], keys_t: &[f32], scores: &mut [f32]) {
    let seq_pad = scores.len();
    for (b, s) in scores.chunks_exact_mut(LANES).enumerate() {
        let mut acc = [[0f32; LANES]; 2];
        for (c, &qc) in q.iter().enumerate() {
            let k = &keys_t[c * seq_pad + b * LANES..][..LANES];
            for l in 0..LANES {
                acc[c % 2][l] = qc.mul_add(k[l], acc[c % 2][l]);
            }
        }
        for l in 0..LANES {
            s[l] = acc[0][l] + acc[1][l];
        }
    }
}

/// context = Σ_j p_j·v_j over the head's columns `col..col + context.len()` of the value rows,
/// each column's sum split in two (even and odd keys) and added at the end.
/// [`avx512::weighted_values`] is this in intrinsics for head widths of 16, 32 and 64.
#[inline(always)]
fn weighted_values(probs: &[f32], v: &[f32], width: usize, col: usize, context: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::features::x86_features().avx512f && matches!(context.len(), 16 | 32 | 64) {
        // SAFETY: the CPU has AVX-512F; v holds probs.len() rows of `width` ≥ col + d.
        return unsafe { avx512::weighted_values([probs], v, width, col, [context]) };
    }
    weighted_values_portable(probs, v, width, col, context);
}

/// [`weighted_values`] for two queries of the head (the same bits as one at a time).
#[inline(always)]
fn weighted_values_pair(
    probs: [&[f32]; 2],
    v: &[f32],
    width: usize,
    col: usize,
    context: [&mut [f32]; 2],
) {
    #[cfg(target_arch = "x86_64")]
    if super::features::x86_features().avx512f && matches!(context[0].len(), 16 | 32 | 64) {
        // SAFETY: the CPU has AVX-512F; v holds probs' rows of `width` ≥ col + d.
        return unsafe { avx512::weighted_values(probs, v, width, col, context) };
    }
    let [c0, c1] = context;
    weighted_values_portable(probs[0], v, width, col, c0);
    weighted_values_portable(probs[1], v, width, col, c1);
}

#[inline(always)]
fn weighted_values_portable(
    probs: &[f32],
    v: &[f32],
    width: usize,
    col: usize,
    context: &mut [f32],
) {
    for (c, ctx) in context.iter_mut().enumerate() {
        let mut acc = [0f32; 2];
        for (j, (&p, row)) in probs.iter().zip(v.chunks_exact(width)).enumerate() {
            acc[j % 2] = p.mul_add(row[col + c], acc[j % 2]);
        }
        *ctx = acc[0] + acc[1];
    }
}

/// The reference [`attention`] is tested against: the same maths in f64, head by head.
pub fn reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &[f32],
    shape: AttentionShape,
    scale: f32,
) -> Vec<f32> {
    let (seq, d, width) = (shape.seq, shape.head_dim, shape.width());
    let mut out = vec![0f32; shape.batch * seq * width];
    let at = |t: &[f32], b: usize, i: usize, c: usize| t[(b * seq + i) * width + c] as f64;
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            for i in 0..seq {
                let logits: Vec<f64> = (0..seq)
                    .map(|j| {
                        let dot: f64 = (0..d)
                            .map(|c| at(q, b, i, h * d + c) * at(k, b, j, h * d + c))
                            .sum();
                        dot * scale as f64 + mask[b * seq + j] as f64
                    })
                    .collect();
                let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for c in 0..d {
                    let ctx: f64 = (0..seq)
                        .map(|j| e[j] / total * at(v, b, j, h * d + c))
                        .sum();
                    out[(b * seq + i) * width + h * d + c] = ctx as f32;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
