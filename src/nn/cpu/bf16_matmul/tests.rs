use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn kernels_here() -> Vec<Kernel> {
    let found: Vec<Kernel> = [Kernel::Amx, Kernel::Avx512Bf16]
        .into_iter()
        .filter(|k| k.available())
        .collect();
    if found.is_empty() {
        eprintln!("skipped: this CPU has neither AMX-BF16 nor AVX-512 BF16");
    }
    found
}

fn random(len: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

/// |C − reference| ≤ 2⁻¹⁸·Σ|a·b| + 1e-6: f32 accumulation in another order, plus the
/// instructions' own rounding of partial sums.
fn assert_close(kernel: Kernel, a: &[f32], m: usize, b: &PackedMatrix, bias: Option<&[f32]>) {
    let (k, n) = b.dims();
    let got = matmul(kernel, a, m, b, bias);
    let want = reference(a, m, b, bias);
    for i in 0..m {
        for j in 0..n {
            let scale: f64 = (0..k)
                .map(|kk| (bf16_value(bf16_bits(a[i * k + kk])) * b.get(kk, j)).abs() as f64)
                .sum::<f64>()
                + bias.map_or(0.0, |b| b[j].abs() as f64);
            let err = (got[i * n + j] as f64 - want[i * n + j] as f64).abs();
            assert!(
                err <= scale / 262_144.0 + 1e-6,
                "{kernel:?} {m}x{k}x{n}: C[{i}][{j}] = {} vs {} (scale {scale})",
                got[i * n + j],
                want[i * n + j]
            );
        }
    }
}

#[test]
fn kernels_match_the_reference_on_odd_shapes() {
    let mut rng = StdRng::seed_from_u64(7);
    // Rows, depths and columns below, at and above the 16/32 tile edges, none a multiple.
    let shapes = [
        (1, 1, 1),
        (3, 5, 7),
        (17, 31, 15),
        (33, 33, 17),
        (31, 64, 33),
        (70, 100, 50),
        (65, 384, 96),
        (130, 40, 300),
        // Deeper than one AMX pass (AMX_DEPTH_BLOCK steps), with a partial last pass.
        (37, 300, 45),
        // Rows 2 KiB apart, which the layout strides one cache line further (row_stride).
        (40, 1024, 40),
    ];
    for kernel in kernels_here() {
        for &(m, k, n) in &shapes {
            let a = random(m * k, &mut rng);
            let w: Vec<u16> = random(n * k, &mut rng).into_iter().map(bf16_bits).collect();
            let bias = random(n, &mut rng);
            // Forward x·Wᵀ + b (W is n × k), and the input gradient g·W (W read as k' × n').
            let fwd = PackedMatrix::from_weight_transposed(&w, n, k);
            assert_close(kernel, &a, m, &fwd, Some(&bias));
            let bwd = PackedMatrix::from_weight(&w, n, k);
            let g = random(m * n, &mut rng);
            assert_close(kernel, &g, m, &bwd, None);
        }
    }
}

/// Passes over the depth keep their sums in f32 between passes, so any pass length gives the bits
/// of one pass, in both sinks (f32 C and GELU in bf16); column chunks and row parts are crossed.
#[test]
fn passes_over_the_depth_give_the_bits_of_one_pass() {
    let mut rng = StdRng::seed_from_u64(13);
    let (m, k, n) = (67, 333, 290);
    let a = random(m * k, &mut rng);
    let w: Vec<u16> = random(n * k, &mut rng).into_iter().map(bf16_bits).collect();
    let bias = random(n, &mut rng);
    let b = PackedMatrix::from_weight_transposed(&w, n, k);
    let rows = PackedRows::from_f32(&a, m, k);
    for kernel in kernels_here() {
        let whole = rows::matmul_rows_in_passes(kernel, &rows, &b, Some(&bias), usize::MAX);
        let whole_gelu =
            rows::matmul_rows_gelu_in_passes(kernel, &rows, &b, Some(&bias), usize::MAX);
        for depth_block in [1, 2, 3, 8] {
            let passes = rows::matmul_rows_in_passes(kernel, &rows, &b, Some(&bias), depth_block);
            assert!(
                passes
                    .iter()
                    .zip(&whole)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{kernel:?}: passes of {depth_block} steps"
            );
            let gelu =
                rows::matmul_rows_gelu_in_passes(kernel, &rows, &b, Some(&bias), depth_block);
            for i in 0..m {
                assert_eq!(gelu.row(i), whole_gelu.row(i), "{kernel:?} GELU row {i}");
            }
        }
    }
}

#[test]
fn packing_reads_the_weight_both_ways() {
    let w: Vec<u16> = (0..6).map(|v| bf16_bits(v as f32)).collect(); // W = [[0,1,2],[3,4,5]]
    let t = PackedMatrix::from_weight_transposed(&w, 2, 3);
    assert_eq!(t.dims(), (3, 2));
    assert_eq!((t.get(2, 0), t.get(0, 1), t.get(2, 1)), (2.0, 3.0, 5.0));
    let s = PackedMatrix::from_weight(&w, 2, 3);
    assert_eq!(s.dims(), (2, 3));
    assert_eq!((s.get(0, 2), s.get(1, 0), s.get(1, 2)), (2.0, 3.0, 5.0));
}

#[test]
fn rounding_matches_half_and_keeps_nan() {
    let mut rng = StdRng::seed_from_u64(3);
    let specials = [
        0.0f32,
        -0.0,
        1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        1e-40,
    ];
    // Ties: 1 + 2⁻⁸ rounds down to 1 (even), 1 + 3·2⁻⁸ up.
    let ties = [1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0];
    for x in specials
        .into_iter()
        .chain(ties)
        .chain((0..10_000).map(|_| f32::from_bits(rng.random::<u32>() & 0x7f7f_ffff)))
    {
        assert_eq!(bf16_bits(x), half::bf16::from_f32(x).to_bits(), "{x:e}");
    }
    assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
}

#[test]
fn empty_and_single_thread_parts_are_handled() {
    let w = vec![bf16_bits(1.0); 4 * 3];
    let b = PackedMatrix::from_weight_transposed(&w, 4, 3);
    for kernel in kernels_here() {
        assert!(matmul(kernel, &[], 0, &b, None).is_empty());
        let depthless = PackedMatrix::from_weight_transposed(&[], 2, 0);
        assert_eq!(
            matmul(kernel, &[], 3, &depthless, Some(&[1.0, 2.0])),
            [1.0, 2.0].repeat(3)
        );
        let out = matmul(kernel, &[1.0, 2.0, 3.0], 1, &b, Some(&[0.5; 4]));
        assert_eq!(out, vec![6.5; 4]);
    }
}

#[test]
fn the_instruction_rounds_as_the_software_does() {
    let mut rng = StdRng::seed_from_u64(5);
    // Normal numbers (the instruction flushes denormals), ties included, and a 16-lane tail.
    let src: Vec<f32> = (0..1003)
        .map(|i| match i % 3 {
            0 => rng.random_range(-1e4f32..1e4),
            1 => 1.0 + (2 * (i % 128) + 1) as f32 / 256.0,
            _ => f32::from_bits(rng.random::<u32>() & 0x7f7f_ffff | 0x0080_0000),
        })
        .collect();
    let mut got = vec![std::mem::MaybeUninit::new(0u16); src.len()];
    rows::convert_row(&src, &mut got);
    for (x, g) in src.iter().zip(got) {
        // SAFETY: initialised above.
        assert_eq!(unsafe { g.assume_init() }, bf16_bits(*x), "{x:e}");
    }
}

#[test]
fn gelu_epilogue_feeds_the_next_product_as_converting_in_f32_would() {
    let mut rng = StdRng::seed_from_u64(11);
    // (rows, depth, intermediate width, output width): part edges, block edges, odd widths.
    for kernel in kernels_here() {
        for &(m, k, n, n2) in &[
            (1, 3, 5, 2),
            (33, 40, 70, 9),
            (70, 64, 96, 33),
            (129, 31, 300, 17),
            // The intermediate 1,024 wide: its rows strided one line past their padding.
            (35, 40, 1024, 9),
        ] {
            let a = random(m * k, &mut rng);
            let w1: Vec<u16> = random(n * k, &mut rng).into_iter().map(bf16_bits).collect();
            let w2: Vec<u16> = random(n2 * n, &mut rng)
                .into_iter()
                .map(bf16_bits)
                .collect();
            let bias = random(n, &mut rng);
            let (b1, b2) = (
                PackedMatrix::from_weight_transposed(&w1, n, k),
                PackedMatrix::from_weight_transposed(&w2, n2, n),
            );
            let rows = PackedRows::from_f32(&a, m, k);
            let fused = matmul_rows_gelu(kernel, &rows, &b1, Some(&bias));
            // The unfused way: C in f32, GELU in f32, then converted for the next product.
            let mut g = matmul_rows(kernel, &rows, &b1, Some(&bias));
            let c = g.clone();
            super::super::fast_math::gelu_slice(&c, &mut g);
            let unfused = PackedRows::from_f32(&g, m, n);
            assert_eq!(fused.dims(), (m, n));
            // The AVX-512 epilogue's GELU rounds as training's does but next to a rounding
            // boundary, where the two land one bf16 step apart; in the left tail (values under
            // 1e-2) its 1 + erf cancels, to within 2e-6 once rounded.
            let mut differ = 0;
            for i in 0..m {
                for (f, u) in fused.row(i).iter().zip(unfused.row(i)) {
                    if *f == u {
                        continue;
                    }
                    let step = (bf16_bits(*f) as i32 - bf16_bits(u) as i32).abs();
                    let tail = u.abs() < 1e-2 && (f - u).abs() <= 2e-6;
                    differ += usize::from(!tail);
                    assert!(
                        step == 1 || tail,
                        "{kernel:?} {m}x{k}x{n}: row {i}: {f} vs {u}"
                    );
                }
            }
            assert!(
                differ * 100 <= m * n,
                "{differ} of {} values of 1e-2 or more rounded apart",
                m * n
            );
            let next = matmul_rows(kernel, &fused, &b2, None);
            let want = matmul_rows(kernel, &unfused, &b2, None);
            for (x, y) in next.iter().zip(&want) {
                assert!(
                    (x - y).abs() <= 1e-2 * y.abs().max(1.0),
                    "{m}x{n}x{n2}: {x} vs {y}"
                );
            }
        }
    }
}
