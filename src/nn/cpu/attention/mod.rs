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
use super::row_runs::Runs;
use rayon::prelude::*;
pub mod training;

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Which queries attention answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queries {
    /// Every token's: q has the rows k and v have.
    Every,
    /// Each sequence's first token's only ([CLS] / `<s>`, all a classifier's head reads): q has
    /// one row per sequence. An encoder's last layer needs no other.
    First,
}

/// The shape of the activations attention reads: sequences of tokens one after another, each
/// token a row of heads·head_dim. Padded batches are sequences of equal length whose padding
/// the mask hides; packed ones are each as long as their own tokens.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape<'a> {
    /// Tokens of each sequence, in the order their rows follow one another.
    pub lengths: &'a [usize],
    pub queries: Queries,
    pub heads: usize,
    pub head_dim: usize,
}

impl AttentionShape<'_> {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Rows of k and v (and the mask's entries).
    fn keys(&self) -> usize {
        self.lengths.iter().sum()
    }

    /// Rows of q and of the context.
    fn query_rows(&self) -> usize {
        match self.queries {
            Queries::Every => self.keys(),
            Queries::First => self.lengths.len(),
        }
    }

    /// How the context's rows are cut into one run per sequence.
    fn query_runs(&self) -> Runs<'_> {
        match self.queries {
            Queries::Every => Runs::Lengths(self.lengths),
            Queries::First => Runs::Every(1),
        }
    }
}

/// The context softmax(scale·q·kᵀ + mask)·v per sequence and head, for k and v of (tokens,
/// heads·head_dim), q of (query rows, heads·head_dim) and a mask of one additive bias per token
/// (0 attended, a large negative value padded), as (query rows, heads·head_dim): HF's
/// self-attention with the heads split and merged in place.
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
    let sequence = sequence(q, k, v, mask, shape, scale);
    shape
        .query_runs()
        .split(&mut out, width)
        .into_par_iter()
        .enumerate()
        .for_each(|(s, (_, out))| sequence(s, out));
    out
}

/// (query rows, width), after checking that q, k, v and the mask have the shape's sizes.
fn check_inputs(qkv: [&[f32]; 3], mask: &[f32], shape: AttentionShape) -> (usize, usize) {
    let (keys, rows, width) = (shape.keys(), shape.query_rows(), shape.width());
    assert!(width > 0, "a token has a width");
    for (what, t, n) in [
        ("q", qkv[0], rows),
        ("k", qkv[1], keys),
        ("v", qkv[2], keys),
    ] {
        assert_eq!(t.len(), n * width, "{what} is {n} rows × width");
    }
    assert_eq!(mask.len(), keys, "the mask has a bias per token");
    (rows, width)
}

/// `f(s, out)`: the context of sequence `s`'s queries, into `out` (their rows).
fn sequence<'a>(
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    mask: &'a [f32],
    shape: AttentionShape<'a>,
    scale: f32,
) -> impl Fn(usize, &mut [f32]) + Sync + 'a {
    let width = shape.width();
    let starts = super::row_runs::starts(shape.lengths);
    move |s, out| {
        let keys = starts[s]..starts[s] + shape.lengths[s];
        let first_query = match shape.queries {
            Queries::Every => starts[s],
            Queries::First => s,
        };
        let q = &q[first_query * width..first_query * width + out.len()];
        let span = keys.start * width..keys.end * width;
        let (k, v) = (&k[span.clone()], &v[span]);
        attend(
            q,
            k,
            v,
            &mask[keys],
            shape.heads,
            shape.head_dim,
            scale,
            out,
        )
    }
}

/// [`attention`] and its output rows in the native kernels' bf16 layout, each sequence's rounded
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
    let sequence = sequence(q, k, v, mask, shape, scale);
    PackedRows::from_f32_computed(rows, width, shape.query_runs(), |s, _, out| {
        sequence(s, out)
    })
}

/// Keys (and value columns) a register holds.
const LANES: usize = 16;

multiversion! {
    /// Attention of one sequence's queries (q's rows) over its `mask.len()` keys, head by head,
    /// into `out` (q's rows × width).
    #[allow(clippy::too_many_arguments)]
    fn attend(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        mask: &[f32],
        heads: usize,
        d: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        let (seq, width) = (mask.len(), heads * d);
        let queries = q.len() / width;
        // The head's keys transposed, each column padded with zeros to whole registers.
        let seq_pad = seq.div_ceil(LANES) * LANES;
        let mut keys_t = vec![0f32; d * seq_pad];
        // Queries go two at a time (each key and value register loaded once for both).
        let mut scores = [vec![0f32; seq_pad], vec![0f32; seq_pad]];
        let mut probs = [vec![0f32; seq], vec![0f32; seq]];
        for head in 0..heads {
            let col = head * d;
            for (j, key) in k.chunks_exact(width).enumerate() {
                for (c, &x) in key[col..col + d].iter().enumerate() {
                    keys_t[c * seq_pad + j] = x;
                }
            }
            let pairs = q.chunks_exact(2 * width).zip(out.chunks_exact_mut(2 * width));
            for (pair, out_rows) in pairs {
                let (q0, q1) = pair.split_at(width);
                let (o0, o1) = out_rows.split_at_mut(width);
                let [s0, s1] = &mut scores;
                key_scores_pair([&q0[col..col + d], &q1[col..col + d]], &keys_t, [s0, s1]);
                let [p0, p1] = &mut probs;
                softmax(&s0[..seq], mask, scale, p0);
                softmax(&s1[..seq], mask, scale, p1);
                let context = [&mut o0[col..col + d], &mut o1[col..col + d]];
                weighted_values_pair([p0, p1], v, width, col, context);
            }
            if queries % 2 == 1 {
                let last = (queries - 1) * width;
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
    let (d, width) = (shape.head_dim, shape.width());
    let mut out = Vec::with_capacity(shape.query_rows() * width);
    let at = |t: &[f32], row: usize, c: usize| t[row * width + c] as f64;
    let starts = super::row_runs::starts(shape.lengths);
    for (s, (&first, &len)) in starts.iter().zip(shape.lengths).enumerate() {
        let (queries, q_first) = match shape.queries {
            Queries::Every => (len, first),
            Queries::First => (1, s),
        };
        for i in 0..queries {
            let mut row = vec![0f32; width];
            for h in 0..shape.heads {
                let logits: Vec<f64> = (first..first + len)
                    .map(|j| {
                        let dot: f64 = (0..d)
                            .map(|c| at(q, q_first + i, h * d + c) * at(k, j, h * d + c))
                            .sum();
                        dot * scale as f64 + mask[j] as f64
                    })
                    .collect();
                let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for c in 0..d {
                    let ctx: f64 = (0..len)
                        .map(|j| e[j] / total * at(v, first + j, h * d + c))
                        .sum();
                    row[h * d + c] = ctx as f32;
                }
            }
            out.extend(row);
        }
    }
    out
}

#[cfg(test)]
mod tests;
