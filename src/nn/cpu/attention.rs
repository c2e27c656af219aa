//! Self-attention without gradients on the CPU, in one kernel: softmax(scale·q·kᵀ + mask)·v for
//! every row and head, reading q, k and v where the projections wrote them and writing the context
//! where the output projection reads it.
//!
//! Written with tensor ops (as training needs, for the backward) the same work is three copies
//! splitting the heads, a batched product for the scores, the softmax, a second batched product
//! and a copy merging the heads: five passes over memory and two small-matrix GEMMs per layer.
//! Here each (row, head) is worked in the L1 cache: the head's keys transposed once, then per
//! query its scores, the softmax ([`super::attention_softmax`]'s row kernel) and the weighted
//! values. Sums run over 16 lanes in a fixed order, so the results are the same bits on every
//! CPU; they differ from the GEMM path's only by the order of f32 sums.
use super::attention_softmax::softmax_rows;
use super::fast_math::multiversion;
use rayon::prelude::*;

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
    let (rows, width) = (shape.batch * shape.seq, shape.width());
    for (what, t) in [("q", q), ("k", k), ("v", v)] {
        assert_eq!(t.len(), rows * width, "{what} is (batch·seq) × width");
    }
    assert_eq!(mask.len(), rows, "the mask is batch × seq");
    let mut out = super::fast_math::vec_for_overwrite(rows * width);
    let block = (shape.seq * width).max(1);
    out.par_chunks_mut(block)
        .zip(q.par_chunks(block))
        .zip(k.par_chunks(block).zip(v.par_chunks(block)))
        .zip(mask.par_chunks(shape.seq.max(1)))
        .for_each(|(((out, q), (k, v)), mask)| attend(q, k, v, mask, shape, scale, out));
    out
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
        let mut scores = vec![0f32; seq_pad];
        let mut probs = vec![0f32; seq];
        for head in 0..shape.heads {
            let col = head * d;
            for (j, key) in k.chunks_exact(width).enumerate() {
                for (c, &x) in key[col..col + d].iter().enumerate() {
                    keys_t[c * seq_pad + j] = x;
                }
            }
            for (query, out_row) in q.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
                key_scores(&query[col..col + d], &keys_t, &mut scores);
                softmax_rows(&scores[..seq], mask, scale, &mut probs);
                weighted_values(&probs, v, width, col, &mut out_row[col..col + d]);
            }
        }
    }
}

/// scores[j] = q·k_j for 16 keys at a time, the sum over the head's columns kept in a register.
#[inline(always)]
fn key_scores(q: &[f32], keys_t: &[f32], scores: &mut [f32]) {
    let seq_pad = scores.len();
    for (block, s) in scores.chunks_exact_mut(LANES).enumerate() {
        let mut acc = [0f32; LANES];
        for (c, &qc) in q.iter().enumerate() {
            let k = &keys_t[c * seq_pad + block * LANES..][..LANES];
            for l in 0..LANES {
                acc[l] += qc * k[l];
            }
        }
        s.copy_from_slice(&acc);
    }
}

/// context = Σ_j p_j·v_j over the head's columns `col..col + context.len()` of the value rows,
/// 16 columns at a time in a register.
#[inline(always)]
fn weighted_values(probs: &[f32], v: &[f32], width: usize, col: usize, context: &mut [f32]) {
    let mut start = 0;
    for ctx in context.chunks_exact_mut(LANES) {
        let mut acc = [0f32; LANES];
        for (&p, row) in probs.iter().zip(v.chunks_exact(width)) {
            let x = &row[col + start..][..LANES];
            for l in 0..LANES {
                acc[l] += p * x[l];
            }
        }
        ctx.copy_from_slice(&acc);
        start += LANES;
    }
    // Head widths that are not a multiple of 16 (none of HF's BERTs or RoBERTas).
    for (c, ctx) in context.iter_mut().enumerate().skip(start) {
        *ctx = probs
            .iter()
            .zip(v.chunks_exact(width))
            .map(|(&p, row)| p * row[col + c])
            .sum();
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
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn matches_the_reference_on_odd_shapes_with_padding() {
        let mut rng = StdRng::seed_from_u64(3);
        for (batch, seq, heads, head_dim) in
            [(1, 1, 1, 1), (2, 7, 3, 5), (3, 19, 2, 32), (2, 40, 4, 16)]
        {
            let shape = AttentionShape {
                batch,
                seq,
                heads,
                head_dim,
            };
            let n = batch * seq * heads * head_dim;
            let mut random = || {
                (0..n)
                    .map(|_| rng.random_range(-2.0f32..2.0))
                    .collect::<Vec<_>>()
            };
            let (q, k, v) = (random(), random(), random());
            // Batch row b keeps its first seq - b tokens; the rest are padding, as HF masks it.
            let mask: Vec<f32> = (0..batch * seq)
                .map(|i| {
                    if i % seq < seq - (i / seq).min(seq - 1) {
                        0.0
                    } else {
                        f32::MIN
                    }
                })
                .collect();
            let scale = 1.0 / (head_dim as f32).sqrt();
            let got = attention(&q, &k, &v, &mask, shape, scale);
            let want = reference(&q, &k, &v, &mask, shape, scale);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 2e-6 * w.abs().max(1.0),
                    "{shape:?} [{i}]: {g} vs {w}"
                );
            }
        }
    }
}
