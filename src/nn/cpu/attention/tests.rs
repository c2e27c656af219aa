use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[test]
fn the_avx512_softmax_returns_the_portable_bits() {
    if !super::super::features::x86_features().avx512f {
        return eprintln!("skipped: no AVX-512F here");
    }
    let mut rng = StdRng::seed_from_u64(4);
    for seq in [1, 5, 16, 17, 48, 63, 128] {
        let scores: Vec<f32> = (0..seq).map(|_| rng.random_range(-30.0f32..30.0)).collect();
        let mask: Vec<f32> = (0..seq)
            .map(|j| if j > 2 && j % 5 == 0 { f32::MIN } else { 0.0 })
            .collect();
        let (mut fast, mut portable) = (vec![0f32; seq], vec![0f32; seq]);
        softmax(&scores, &mask, 0.17, &mut fast);
        softmax_portable(&scores, &mask, 0.17, &mut portable);
        assert_eq!(fast, portable, "seq {seq}");
        assert!((fast.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}

fn portable_scores(q: &[f32], keys_t: &[f32], seq: usize) -> Vec<f32> {
    let mut s = vec![0f32; seq];
    key_scores_portable(q, keys_t, &mut s);
    s
}

#[test]
fn the_avx512_products_return_the_portable_bits() {
    if !super::super::features::x86_features().avx512f {
        return eprintln!("skipped: no AVX-512F here");
    }
    let mut rng = StdRng::seed_from_u64(9);
    for (d, seq) in [(16, 16), (32, 48), (33, 80), (64, 112), (5, 16)] {
        let mut random = |n: usize| {
            (0..n)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect::<Vec<_>>()
        };
        let (q, keys_t) = (random(d), random(d * seq));
        let (mut fast, mut portable) = (vec![0f32; seq], vec![0f32; seq]);
        key_scores(&q, &keys_t, &mut fast);
        key_scores_portable(&q, &keys_t, &mut portable);
        assert_eq!(fast, portable, "scores d {d} seq {seq}");
        let (probs, v) = (random(seq - 3), random((seq - 3) * (d + 7)));
        let (mut fast, mut portable) = (vec![0f32; d], vec![0f32; d]);
        weighted_values(&probs, &v, d + 7, 5, &mut fast);
        weighted_values_portable(&probs, &v, d + 7, 5, &mut portable);
        assert_eq!(fast, portable, "context d {d} seq {seq}");
        // Two queries at a time: each the bits of one at a time.
        let (q1, probs1) = (random(d), random(seq - 3));
        let (mut s0, mut s1, mut one) = (vec![0f32; seq], vec![0f32; seq], vec![0f32; seq]);
        key_scores_pair([&q, &q1], &keys_t, [&mut s0, &mut s1]);
        key_scores_portable(&q1, &keys_t, &mut one);
        assert_eq!(
            (&s0, &s1),
            (&portable_scores(&q, &keys_t, seq), &one),
            "pair d {d} seq {seq}"
        );
        let (mut c0, mut c1, mut one) = (vec![0f32; d], vec![0f32; d], vec![0f32; d]);
        weighted_values_pair([&probs, &probs1], &v, d + 7, 5, [&mut c0, &mut c1]);
        weighted_values_portable(&probs1, &v, d + 7, 5, &mut one);
        assert_eq!(
            (&c0, &c1),
            (&portable, &one),
            "pair context d {d} seq {seq}"
        );
    }
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

#[test]
fn matches_the_reference_on_odd_shapes_with_padding() {
    let mut rng = StdRng::seed_from_u64(3);
    for (batch, seq, heads, head_dim) in
        [(1, 1, 1, 1), (2, 7, 3, 5), (3, 19, 2, 32), (2, 40, 4, 16)]
    {
        let lengths = vec![seq; batch];
        let shape = AttentionShape {
            lengths: &lengths,
            queries: Queries::Every,
            heads,
            head_dim,
        };
        let n = batch * seq * heads * head_dim;
        let (q, k, v) = (
            random(&mut rng, n),
            random(&mut rng, n),
            random(&mut rng, n),
        );
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
        // The packed variant: the same f32 bits, and those rounded as from_f32 rounds them.
        let (f32s, packed) = attention_packed(&q, &k, &v, &mask, shape, scale);
        assert_eq!(f32s, got, "{shape:?}");
        let converted = PackedRows::from_f32(&got, batch * seq, heads * head_dim);
        assert_eq!(packed.raw(), converted.raw(), "{shape:?}, padding included");
    }
}

/// Sequences packed without padding (each as long as its tokens) give the bits the same
/// sequences give padded to the longest and masked, for every real token; asking for each
/// sequence's first query only gives those rows' bits too.
#[test]
fn packed_sequences_and_first_queries_give_the_padded_bits() {
    let mut rng = StdRng::seed_from_u64(5);
    for (heads, head_dim) in [(3, 5), (2, 32), (4, 16), (1, 64)] {
        let width = heads * head_dim;
        let lengths = [7usize, 1, 19, 16, 2, 33];
        let seq = *lengths.iter().max().unwrap();
        let padded_rows = lengths.len() * seq;
        let (q, k, v) = (
            random(&mut rng, padded_rows * width),
            random(&mut rng, padded_rows * width),
            random(&mut rng, padded_rows * width),
        );
        let mask: Vec<f32> = (0..padded_rows)
            .map(|i| {
                if i % seq < lengths[i / seq] {
                    0.0
                } else {
                    f32::MIN
                }
            })
            .collect();
        let scale = 1.0 / (head_dim as f32).sqrt();
        let every = vec![seq; lengths.len()];
        let padded_shape = AttentionShape {
            lengths: &every,
            queries: Queries::Every,
            heads,
            head_dim,
        };
        let padded = attention(&q, &k, &v, &mask, padded_shape, scale);
        // The real tokens' rows, sequence after sequence.
        let real = |t: &[f32]| -> Vec<f32> {
            let rows = lengths.iter().enumerate().flat_map(|(b, &len)| {
                (0..len).flat_map(move |i| t[(b * seq + i) * width..][..width].to_vec())
            });
            rows.collect()
        };
        let (pq, pk, pv) = (real(&q), real(&k), real(&v));
        let zeros = vec![0f32; lengths.iter().sum()];
        let shape = AttentionShape {
            lengths: &lengths,
            ..padded_shape
        };
        let got = attention(&pq, &pk, &pv, &zeros, shape, scale);
        assert_eq!(got, real(&padded), "heads {heads} × {head_dim}");
        let want = reference(&pq, &pk, &pv, &zeros, shape, scale);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 2e-6 * w.abs().max(1.0), "{g} vs {w}");
        }
        // First queries only: one query row per sequence, the first of each.
        let firsts: Vec<f32> = (0..lengths.len())
            .flat_map(|b| q[b * seq * width..][..width].to_vec())
            .collect();
        let first_shape = AttentionShape {
            queries: Queries::First,
            ..shape
        };
        let (first, packed) = attention_packed(&firsts, &pk, &pv, &zeros, first_shape, scale);
        let padded_firsts: Vec<f32> = (0..lengths.len())
            .flat_map(|b| padded[b * seq * width..][..width].to_vec())
            .collect();
        assert_eq!(
            first, padded_firsts,
            "first queries, heads {heads} × {head_dim}"
        );
        let converted = PackedRows::from_f32(&first, lengths.len(), width);
        assert_eq!(packed.raw(), converted.raw());
        let first_ref = reference(&firsts, &pk, &pv, &zeros, first_shape, scale);
        for (g, w) in first.iter().zip(&first_ref) {
            assert!((g - w).abs() <= 2e-6 * w.abs().max(1.0), "{g} vs {w}");
        }
    }
}
