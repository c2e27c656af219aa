use super::*;

/// Deterministic values in (−1, 1) with a few larger ones, so rows have different scales.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            if i % 37 == 0 {
                u * 6.0
            } else {
                u
            }
        })
        .collect()
}

fn kernels() -> Vec<Int8Kernel> {
    [Int8Kernel::Amx, Int8Kernel::Vnni, Int8Kernel::Portable]
        .into_iter()
        .filter(|k| {
            let ok = k.available();
            if !ok {
                eprintln!("skipped: {} is not available on this CPU", k.name());
            }
            ok
        })
        .collect()
}

#[test]
fn every_kernel_returns_the_references_bits_on_odd_shapes() {
    for &(m, k, n) in &[
        (1, 1, 1),
        (5, 7, 3),
        (33, 64, 17),
        (31, 100, 40),
        (70, 385, 70),
        (64, 130, 32),
        (3, 1536, 33),
    ] {
        let a = values(m * k, (m * 31 + k) as u64);
        let w = values(n * k, (n * 7 + k) as u64);
        let bias = values(n, n as u64 + 5);
        let qa = QuantizedRows::from_f32(&a, m, k);
        let qb = QuantizedMatrix::from_weight_transposed(&w, n, k);
        let want = reference(&qa, &qb, Some(&bias));
        for kernel in kernels() {
            let got = matmul(kernel, &qa, &qb, Some(&bias));
            assert_eq!(got.len(), m * n);
            for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    r.to_bits(),
                    "{} {m}x{k}x{n} at {i}: {g} vs {r}",
                    kernel.name()
                );
            }
        }
    }
}

#[test]
fn quantized_product_is_close_to_the_f32_one() {
    let (m, k, n) = (40, 384, 96);
    let a = values(m * k, 3);
    let w = values(n * k, 4);
    let qa = QuantizedRows::from_f32(&a, m, k);
    let qb = QuantizedMatrix::from_weight_transposed(&w, n, k);
    let got = matmul(int8_kernel(), &qa, &qb, None);
    let (mut err, mut norm) = (0f64, 0f64);
    for i in 0..m {
        for j in 0..n {
            let exact: f64 = (0..k)
                .map(|kk| a[i * k + kk] as f64 * w[j * k + kk] as f64)
                .sum();
            err += (got[i * n + j] as f64 - exact).powi(2);
            norm += exact.powi(2);
        }
    }
    // Every 37th value is 6× the others, so a row's step is 6/127 where most values lie in ±1:
    // ~2.3% relative error; rows without such outliers do better.
    let rel = (err / norm).sqrt();
    assert!(rel < 0.03, "relative error {rel}");
}

#[test]
fn rows_quantize_within_half_a_step_and_keep_signs() {
    let x = [0.5f32, -1.27, 0.0, 1.27, 0.004, -0.006];
    let q = QuantizedRows::from_f32(&x, 1, x.len());
    let back = q.row(0);
    let step = 1.27 / 127.0;
    for (v, b) in x.iter().zip(&back) {
        assert!((v - b).abs() <= step / 2.0 + 1e-7, "{v} -> {b}");
    }
    assert_eq!(back[1], -back[3], "symmetric");
    let w = QuantizedMatrix::from_weight_transposed(&x, 1, x.len());
    assert_eq!(w.value(1, 0), back[1]);
}

#[test]
fn a_row_of_zeros_gives_the_bias_and_a_nan_row_stays_nan() {
    let (k, n) = (5, 3);
    let a = [0f32, 0.0, 0.0, 0.0, 0.0, 1.0, f32::NAN, 0.0, 0.0, 0.0];
    let w = values(n * k, 9);
    let bias = [0.25f32, -1.0, 2.0];
    let qa = QuantizedRows::from_f32(&a, 2, k);
    let qb = QuantizedMatrix::from_weight_transposed(&w, n, k);
    for kernel in kernels() {
        let c = matmul(kernel, &qa, &qb, Some(&bias));
        assert_eq!(&c[..3], &bias, "{}", kernel.name());
        assert!(c[3..].iter().all(|v| v.is_nan()), "{}", kernel.name());
    }
}

#[test]
fn the_avx512_row_quantizer_returns_the_portable_ones_bits() {
    let mut rows = vec![
        values(333, 1),
        vec![0.0; 17],
        vec![1.0, -0.5, 0.25, 0.5 / 127.0, 1.5 / 127.0, -2.5 / 127.0],
        vec![0.1; 40],
    ];
    let mut poisoned = values(50, 2);
    poisoned[41] = f32::NAN;
    rows.push(poisoned);
    let mut infinite = values(20, 3);
    infinite[3] = f32::INFINITY;
    rows.push(infinite);
    for x in rows {
        let (mut a, mut b) = (vec![0i8; x.len()], vec![0i8; x.len()]);
        let sa = quantize_row(&x, &mut a);
        let sb = quantize_row_portable(&x, &mut b);
        assert_eq!(sa.to_bits(), sb.to_bits(), "scale of {x:?}");
        assert_eq!(a, b, "values of {x:?}");
    }
}
