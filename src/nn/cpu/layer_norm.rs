//! LayerNorm(x + residual) without gradients on the CPU: the residual sum and the norm in one
//! pass per row.
//!
//! As tensor ops (what training keeps, for the backward) this is an add over the whole activation
//! and candle's LayerNorm, whose sums run one element at a time; here each row is summed once
//! into the output over 16 lanes in a fixed order (the same bits on every CPU), its variance taken
//! about the mean (two passes over a row in the L1 cache, as PyTorch does, rather than E[x²]−μ²).
use super::fast_math::{lane_sum, multiversion};
use rayon::prelude::*;

/// LayerNorm(x + residual) over rows of `gamma.len()`, with weight `gamma` and bias `beta`.
pub fn add_layer_norm(
    x: &[f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Vec<f32> {
    let width = gamma.len();
    assert!(
        width > 0 && beta.len() == width,
        "gamma and beta are the row's width"
    );
    assert!(
        x.len() == residual.len() && x.len().is_multiple_of(width),
        "x and residual are rows × width"
    );
    let mut out = super::fast_math::vec_for_overwrite(x.len());
    // ~16 rows a task: enough work to spread, few enough tasks to stay cheap.
    let chunk = width * 16;
    out.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk).zip(residual.par_chunks(chunk)))
        .for_each(|(out, (x, residual))| norm_rows(x, residual, gamma, beta, eps, out));
    out
}

multiversion! {
    fn norm_rows(x: &[f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
        let width = gamma.len();
        let rows = x.chunks_exact(width).zip(residual.chunks_exact(width));
        for ((x, r), o) in rows.zip(out.chunks_exact_mut(width)) {
            for ((o, &x), &r) in o.iter_mut().zip(x).zip(r) {
                *o = x + r;
            }
            let mean = lane_sum(o, |v| v) / width as f32;
            let var = lane_sum(o, |v| (v - mean) * (v - mean)) / width as f32;
            let inv_std = 1.0 / (var + eps).sqrt();
            for ((o, &g), &b) in o.iter_mut().zip(gamma).zip(beta) {
                *o = (*o - mean) * inv_std * g + b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn matches_f64_on_odd_widths() {
        let mut rng = StdRng::seed_from_u64(5);
        for (rows, width) in [(1, 1), (3, 7), (5, 17), (40, 384), (3, 1000)] {
            let mut random = |n: usize| {
                (0..n)
                    .map(|_| rng.random_range(-3.0f32..3.0))
                    .collect::<Vec<_>>()
            };
            let (x, r) = (random(rows * width), random(rows * width));
            let (g, b) = (random(width), random(width));
            let got = add_layer_norm(&x, &r, &g, &b, 1e-12);
            for i in 0..rows {
                let row: Vec<f64> = (0..width)
                    .map(|j| x[i * width + j] as f64 + r[i * width + j] as f64)
                    .collect();
                let mean = row.iter().sum::<f64>() / width as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
                for j in 0..width {
                    let want = (row[j] - mean) / (var + 1e-12).sqrt() * g[j] as f64 + b[j] as f64;
                    let got = got[i * width + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "{rows}x{width} [{i}][{j}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}
