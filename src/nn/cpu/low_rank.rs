//! y += s·(x·Aᵀ)·Bᵀ for a rank r far below the widths: a LoRA adapter's update without gradients.
//!
//! As two GEMMs (the tensor path) the rank-r products are too thin for a GEMM kernel, and each
//! call copies its input into a tensor and its output back: in a profile of `kd cache` on
//! all-MiniLM-L6-v2 that was ~13% of the time for adapters on query and value. Here each row's r
//! dot products and its update are done in the L1 cache, rows spread over the threads. The sums
//! run over 16 lanes in a fixed order with fused multiply-adds, so every CPU gets the same bits;
//! they differ from the GEMMs' only in that order.
use super::fast_math::multiversion;
use rayon::prelude::*;

const LANES: usize = 16;

/// An adapter's factors in f32: A (rank × in), Bᵀ (rank × out), and the scaling s.
pub struct LowRank<'a> {
    pub rank: usize,
    pub a: &'a [f32],
    pub b_t: &'a [f32],
    pub scale: f32,
}

/// y (rows × out) += s·(x·Aᵀ)·Bᵀ for x (rows × in).
pub fn add_low_rank(x: &[f32], f: &LowRank, y: &mut [f32]) {
    assert!(f.rank > 0, "a rank-r adapter has r ≥ 1");
    let (inp, out) = (f.a.len() / f.rank, f.b_t.len() / f.rank);
    assert!(inp > 0 && out > 0, "the adapter has widths");
    let rows = x.len() / inp;
    assert_eq!(
        (x.len(), y.len()),
        (rows * inp, rows * out),
        "x is rows × in, y rows × out"
    );
    // ~32 rows a task: enough to spread, few enough tasks to stay cheap.
    y.par_chunks_mut(out * 32)
        .zip(x.par_chunks(inp * 32))
        .for_each(|(y, x)| update_rows(x, f.a, f.b_t, f.rank, f.scale, y));
}

multiversion! {
    fn update_rows(x: &[f32], a: &[f32], b_t: &[f32], rank: usize, scale: f32, y: &mut [f32]) {
        let (inp, out) = (a.len() / rank, b_t.len() / rank);
        let mut u = vec![0f32; rank];
        for (x, y) in x.chunks_exact(inp).zip(y.chunks_exact_mut(out)) {
            // Four of the r dot products at a time: four independent chains of multiply-adds
            // (one is bound by the multiply-add's latency), each summed as `dot` sums it.
            let quads = u.chunks_exact_mut(4).zip(a.chunks_exact(4 * inp));
            for (u, a) in quads {
                let [a0, a1, a2, a3] = [0, 1, 2, 3].map(|k| &a[k * inp..(k + 1) * inp]);
                let sums = dot4(x, [a0, a1, a2, a3]);
                for (u, s) in u.iter_mut().zip(sums) {
                    *u = s * scale;
                }
            }
            let done = rank / 4 * 4;
            for (u, a) in u[done..].iter_mut().zip(a[done * inp..].chunks_exact(inp)) {
                *u = dot(x, a) * scale;
            }
            // Each element of y takes its r updates in order, loaded and stored once.
            let full = out / LANES * LANES;
            for c in (0..full).step_by(LANES) {
                let y = &mut y[c..c + LANES];
                let mut acc: [f32; LANES] = (&*y).try_into().expect("16 lanes");
                for (&u, b) in u.iter().zip(b_t.chunks_exact(out)) {
                    let b: &[f32; LANES] = b[c..c + LANES].try_into().expect("16 lanes");
                    for l in 0..LANES {
                        acc[l] = u.mul_add(b[l], acc[l]);
                    }
                }
                y.copy_from_slice(&acc);
            }
            for (&u, b) in u.iter().zip(b_t.chunks_exact(out)) {
                for (y, &b) in y[full..].iter_mut().zip(&b[full..]) {
                    *y = u.mul_add(b, *y);
                }
            }
        }
    }
}

/// Σ a·b over 16 lanes, each a chain of fused multiply-adds, the lanes then added in order.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(0f32, |s, (&x, &y)| x.mul_add(y, s));
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// [`dot`] of `x` with four rows at once, each sum in `dot`'s order (the same bits).
#[inline(always)]
fn dot4(x: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
    let lanes =
        |v: &[f32], c: usize| -> [f32; LANES] { v[c..c + LANES].try_into().expect("16 lanes") };
    let mut acc = [[0f32; LANES]; 4];
    let full = x.len() / LANES * LANES;
    for c in (0..full).step_by(LANES) {
        let xc = lanes(x, c);
        let [r0, r1, r2, r3] = rows.map(|r| lanes(r, c));
        for l in 0..LANES {
            acc[0][l] = xc[l].mul_add(r0[l], acc[0][l]);
            acc[1][l] = xc[l].mul_add(r1[l], acc[1][l]);
            acc[2][l] = xc[l].mul_add(r2[l], acc[2][l]);
            acc[3][l] = xc[l].mul_add(r3[l], acc[3][l]);
        }
    }
    let mut sums = [0f32; 4];
    for ((s, acc), row) in sums.iter_mut().zip(&acc).zip(rows) {
        let tail = x[full..]
            .iter()
            .zip(&row[full..])
            .fold(0f32, |s, (&x, &y)| x.mul_add(y, s));
        *s = acc.iter().sum::<f32>() + tail;
    }
    sums
}

/// The reference [`add_low_rank`] is tested against: the same maths in f64.
pub fn reference(x: &[f32], f: &LowRank, y: &[f32]) -> Vec<f32> {
    let (inp, out) = (f.a.len() / f.rank, f.b_t.len() / f.rank);
    let mut y = y.to_vec();
    for (x, y) in x.chunks_exact(inp).zip(y.chunks_exact_mut(out)) {
        for k in 0..f.rank {
            let u: f64 = (0..inp)
                .map(|i| x[i] as f64 * f.a[k * inp + i] as f64)
                .sum::<f64>()
                * f.scale as f64;
            for (o, y) in y.iter_mut().enumerate() {
                *y = (*y as f64 + u * f.b_t[k * out + o] as f64) as f32;
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// x (rows × in), A (rank × in), Bᵀ (rank × out) and y (rows × out), uniform in [−1, 1).
    fn random_case(
        rng: &mut StdRng,
        rows: usize,
        inp: usize,
        out: usize,
        rank: usize,
    ) -> [Vec<f32>; 4] {
        [rows * inp, rank * inp, rank * out, rows * out]
            .map(|n| (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect())
    }

    #[test]
    fn matches_f64_on_odd_shapes() {
        let mut rng = StdRng::seed_from_u64(8);
        for (rows, inp, out, rank) in [
            (1, 1, 1, 1),
            (3, 17, 5, 2),
            (70, 384, 384, 8),
            (33, 100, 47, 4),
        ] {
            let [x, a, b_t, y0] = random_case(&mut rng, rows, inp, out, rank);
            let f = LowRank {
                rank,
                a: &a,
                b_t: &b_t,
                scale: 4.0,
            };
            let mut y = y0.clone();
            add_low_rank(&x, &f, &mut y);
            let want = reference(&x, &f, &y0);
            for (g, w) in y.iter().zip(&want) {
                let bound = 1e-5 * (inp as f32).sqrt() * w.abs().max(1.0);
                assert!(
                    (g - w).abs() <= bound,
                    "{rows}x{inp}x{out} r{rank}: {g} vs {w}"
                );
            }
        }
    }

    /// Four dot products at a time and y updated once per 16 lanes return the bits of one dot
    /// product and one pass over y per rank (what this kernel did first), ranks 1 to 9.
    #[test]
    fn grouped_sums_keep_the_one_at_a_time_bits() {
        let mut rng = StdRng::seed_from_u64(3);
        for rank in 1..=9 {
            let (rows, inp, out) = (5, 37, 23);
            let [x, a, b_t, y0] = random_case(&mut rng, rows, inp, out, rank);
            let f = LowRank {
                rank,
                a: &a,
                b_t: &b_t,
                scale: 2.0,
            };
            let mut y = y0.clone();
            add_low_rank(&x, &f, &mut y);
            let mut want = y0.clone();
            for (x, y) in x.chunks_exact(inp).zip(want.chunks_exact_mut(out)) {
                for (a, b) in a.chunks_exact(inp).zip(b_t.chunks_exact(out)) {
                    let u = dot(x, a) * 2.0;
                    for (y, &b) in y.iter_mut().zip(b) {
                        *y = u.mul_add(b, *y);
                    }
                }
            }
            assert_eq!(y, want, "rank {rank}");
        }
    }
}
