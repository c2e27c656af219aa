//! LayerNorm(dropout(x) + residual) on the CPU: the residual sum and the norm in one pass per
//! row, forward ([`add_layer_norm`] without gradients, [`dropout_add_layer_norm`] in training)
//! and backward ([`dropout_add_layer_norm_grad`]).
//!
//! As tensor ops this is a dropout and an add over the whole activation and candle's LayerNorm,
//! whose sums run one element at a time, and a backward of about ten ops more; candle's graph
//! keeps the dropped copy and the sum until the step's backward. Here each row is summed once
//! into the output over 16 lanes in a fixed order (the same bits on every CPU), its variance taken
//! about the mean (two passes over a row in the L1 cache, as PyTorch does, rather than E[x²]−μ²);
//! the backward recomputes the row's sum from `x` and `residual` instead of keeping it.
use super::bf16_matmul::PackedRows;
use super::dropout::{mask_slice, DropoutMask};
use super::fast_math::{lane_sum, multiversion};
use super::row_runs::Runs;
use rayon::prelude::*;

/// LayerNorm(x + residual) over rows of `gamma.len()`, with weight `gamma` and bias `beta`.
pub fn add_layer_norm(
    x: &[f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Vec<f32> {
    dropout_add_layer_norm(x, residual, None, gamma, beta, eps)
}

/// [`add_layer_norm`] and its rows rounded to bf16 in the native kernels' layout, each task's rows
/// rounded while still in cache (inference: the next products' input).
pub fn add_layer_norm_packed(
    x: &[f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> (Vec<f32>, PackedRows) {
    let width = check(x, residual, gamma, Some(beta));
    let rows = x.len() / width;
    PackedRows::from_f32_computed(rows, width, Runs::Every(ROWS_PER_TASK), |_, first, out| {
        let span = first * width..first * width + out.len();
        norm_rows(
            &x[span.clone()],
            &residual[span],
            None,
            gamma,
            beta,
            eps,
            out,
        )
    })
}

/// ~16 rows a task: enough work to spread, few enough tasks to stay cheap.
const ROWS_PER_TASK: usize = 16;

/// The row width (γ's), after checking that x and the residual are rows of it and β (where
/// given) has it too.
fn check(x: &[f32], residual: &[f32], gamma: &[f32], beta: Option<&[f32]>) -> usize {
    let width = gamma.len();
    assert!(width > 0, "a row has at least one element");
    assert!(
        x.len() == residual.len() && x.len().is_multiple_of(width),
        "x and residual are rows × width"
    );
    if let Some(beta) = beta {
        assert_eq!(beta.len(), width, "gamma and beta are the row's width");
    }
    width
}

/// The mask of the task whose first element is `offset`.
fn dropout_at(dropout: DropoutMask, offset: usize) -> DropoutMask {
    dropout.map(|(seed, p, first)| (seed, p, first.wrapping_add(offset as u32)))
}

/// LayerNorm(dropout(x) + residual) over rows of `gamma.len()`.
pub fn dropout_add_layer_norm(
    x: &[f32],
    residual: &[f32],
    dropout: DropoutMask,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Vec<f32> {
    let width = check(x, residual, gamma, Some(beta));
    let mut out = super::fast_math::vec_for_overwrite(x.len());
    let chunk = width * ROWS_PER_TASK;
    out.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk).zip(residual.par_chunks(chunk)))
        .enumerate()
        .for_each(|(t, (out, (x, residual)))| {
            let dropout = dropout_at(dropout, t * chunk);
            norm_rows(x, residual, dropout, gamma, beta, eps, out)
        });
    out
}

/// The gradients of x and of the residual, given the output's gradient `grad`.
pub fn dropout_add_layer_norm_grad(
    x: &[f32],
    residual: &[f32],
    dropout: DropoutMask,
    gamma: &[f32],
    eps: f32,
    grad: &[f32],
) -> [Vec<f32>; 2] {
    let width = check(x, residual, gamma, None);
    assert_eq!(grad.len(), x.len(), "the gradient is the output's shape");
    let (mut dx, mut dr) = (vec![0f32; x.len()], vec![0f32; x.len()]);
    let chunk = width * ROWS_PER_TASK;
    dx.par_chunks_mut(chunk)
        .zip(dr.par_chunks_mut(chunk))
        .zip(x.par_chunks(chunk).zip(residual.par_chunks(chunk)))
        .zip(grad.par_chunks(chunk))
        .enumerate()
        .for_each(|(t, (((dx, dr), (x, residual)), grad))| {
            let dropout = dropout_at(dropout, t * chunk);
            grad_rows([x, residual, grad], dropout, gamma, eps, [dx, dr])
        });
    [dx, dr]
}

/// `out` = dropout(x) + residual, the row at `row` of the task.
#[inline(always)]
fn residual_sum(x: &[f32], residual: &[f32], dropout: DropoutMask, at: usize, out: &mut [f32]) {
    match dropout {
        Some((seed, p, first)) => {
            let first = first.wrapping_add(at as u32);
            mask_slice(x, seed, p, 1.0 / (1.0 - p), first, out);
            for (o, &r) in out.iter_mut().zip(residual) {
                *o += r;
            }
        }
        None => {
            for ((o, &x), &r) in out.iter_mut().zip(x).zip(residual) {
                *o = x + r;
            }
        }
    }
}

/// The mean and 1/σ of a row.
#[inline(always)]
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let width = row.len() as f32;
    let mean = lane_sum(row, |v| v) / width;
    let var = lane_sum(row, |v| (v - mean) * (v - mean)) / width;
    (mean, 1.0 / (var + eps).sqrt())
}

multiversion! {
    fn norm_rows(x: &[f32], residual: &[f32], dropout: DropoutMask, gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
        let width = gamma.len();
        let rows = x.chunks_exact(width).zip(residual.chunks_exact(width));
        for (i, ((x, r), o)) in rows.zip(out.chunks_exact_mut(width)).enumerate() {
            residual_sum(x, r, dropout, i * width, o);
            let (mean, inv_std) = moments(o, eps);
            for ((o, &g), &b) in o.iter_mut().zip(gamma).zip(beta) {
                *o = (*o - mean) * inv_std * g + b;
            }
        }
    }
}

multiversion! {
    /// Per row: dr = (g − mean(g) − x̂·mean(g·x̂))/σ with g = grad·γ and x̂ the normalised sum,
    /// and dx = dr through the dropout mask.
    fn grad_rows(inputs: [&[f32]; 3], dropout: DropoutMask, gamma: &[f32], eps: f32, grads: [&mut [f32]; 2]) {
        let [x, residual, grad] = inputs;
        let [dx, dr] = grads;
        let width = gamma.len();
        let n = width as f32;
        for i in 0..x.len() / width {
            let row = i * width..(i + 1) * width;
            let (dx, dr, grad) = (&mut dx[row.clone()], &mut dr[row.clone()], &grad[row.clone()]);
            residual_sum(&x[row.clone()], &residual[row], dropout, i * width, dr);
            let (mean, inv_std) = moments(dr, eps);
            for v in dr.iter_mut() {
                *v = (*v - mean) * inv_std;
            }
            let (mut g_sum, mut gx_sum) = ([0f32; 16], [0f32; 16]);
            for (j, ((&d, &g), &x_hat)) in grad.iter().zip(gamma).zip(dr.iter()).enumerate() {
                g_sum[j % 16] += d * g;
                gx_sum[j % 16] += d * g * x_hat;
            }
            let g_mean = g_sum.iter().sum::<f32>() / n;
            let gx_mean = gx_sum.iter().sum::<f32>() / n;
            for ((v, &d), &g) in dr.iter_mut().zip(grad).zip(gamma) {
                *v = (d * g - g_mean - *v * gx_mean) * inv_std;
            }
            match dropout {
                Some((seed, p, first)) => {
                    let first = first.wrapping_add((i * width) as u32);
                    mask_slice(dr, seed, p, 1.0 / (1.0 - p), first, dx);
                }
                None => dx.copy_from_slice(dr),
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
            // The packed variant: the same f32 bits, and those rounded as from_f32 rounds them
            // (its tasks end mid-part on these odd row counts).
            let (f32s, packed) = add_layer_norm_packed(&x, &r, &g, &b, 1e-12);
            assert_eq!(f32s, got, "{rows}x{width}");
            let converted = PackedRows::from_f32(&got, rows, width);
            assert_eq!(
                packed.raw(),
                converted.raw(),
                "{rows}x{width}, padding included"
            );
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
