//! Vectorizable f32 exp and normal CDF, and the slice kernels built on them (GELU, its gradient).
//!
//! libm's `expf`/`erff` are scalar calls with branches, so loops over them never vectorize: in a
//! CPU profile of `kd teach` they were ~15% of the time (GELU) and ~7% (softmax). These versions
//! are branch-free (selects only), so LLVM vectorizes them. Each slice kernel is compiled three
//! times (AVX-512, AVX2 + FMA, baseline x86-64) and picked at run time. These use only plain IEEE
//! multiplies and adds (Rust never contracts them into FMAs), so every version returns the same
//! bits on every CPU; kernels that call `f32::mul_add` get one rounding per step in all versions
//! (a hardware FMA in the first two, libm's exact `fmaf` in the baseline one).
//!
//! Accuracy (checked against f64 in the tests): `exp` within 2 ulp; GELU and its derivative
//! within 3e-7·max(1, |x|) absolute; `normal_cdf` within 6e-7 relative for x ≥ −2 (2e-5 in the
//! far left tail, where Φ < 1e-3). PyTorch's own vectorized GELU (Abramowitz–Stegun erf) is
//! within 5.3e-7 of the exact erf.

/// Runs `$body` compiled for the best instruction set this CPU has.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn portable($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) {
                    portable($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    portable($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (which implies FMA).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// The f32 elements of a CPU custom op's input, which must be contiguous; `what` names the op
/// and input in the error.
pub(crate) fn contiguous_f32<'a>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(data) = s else {
        candle_core::bail!("{what}: f32 expected")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: contiguous input expected"),
    }
}

/// A vector of `len` f32 for a kernel that writes every element before anything reads it.
/// Skipping `vec![0.0; len]`'s memset saves a pass over memory as large as the output (8–10% of a
/// CPU profile: every activation is fresh); the same pattern as candle's own uninitialised
/// allocations (`alloc_uninit`).
pub(crate) fn vec_for_overwrite(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: f32 has no invalid bit patterns, and every caller writes all `len` elements
    // (whole-slice maps: `par_chunks_mut` over the full length) before the vector is read.
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(len)
    };
    v
}

/// Σ f(v) over 16 lanes in a fixed order (lane sums, then the lanes in order, then the tail), so
/// that it vectorizes and returns the same bits on every CPU.
#[inline(always)]
pub(crate) fn lane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += f(c[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Below this, e^x is returned as 0 (e^-87.3 is the smallest normal f32).
const EXP_LOWEST: f32 = -87.33;
/// Inputs above this are clamped to it (e^88.37 ≈ 2.4e38, under f32::MAX), so `exp` saturates
/// instead of returning +∞; kd only calls it with arguments ≤ 0.
const EXP_HIGHEST: f32 = 88.37;

/// e^x (Cephes' expf: x = n·ln2 + r, |r| ≤ ln2/2, a degree-6 polynomial for e^r, 2^n from the
/// exponent bits). NaN stays NaN; 0 below −87.33; saturates at e^88.37 above.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // Adding 1.5·2^23 rounds to an integer and leaves that integer in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let underflow = x < EXP_LOWEST;
    let xc = if x > EXP_HIGHEST { EXP_HIGHEST } else { x };
    let xc = if underflow { 0.0 } else { xc };
    let shifted = xc * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let n_bits = (shifted.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits((n_bits.wrapping_add(127) << 23) as u32);
    if underflow {
        0.0
    } else {
        y * scale
    }
}

/// erfc(x) (Numerical Recipes' `erfcc`: a Chebyshev fit with fractional error below 1.2e-7
/// everywhere).
#[inline(always)]
fn erfc(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = 0.170_872_77_f32;
    p = p * t - 0.822_152_23;
    p = p * t + 1.488_515_9;
    p = p * t - 1.135_204;
    p = p * t + 0.278_868_07;
    p = p * t - 0.186_288_06;
    p = p * t + 0.096_784_18;
    p = p * t + 0.374_091_96;
    p = p * t + 1.000_023_7;
    p = p * t - 1.265_512_2;
    let ans = t * exp(p - z * z);
    if x >= 0.0 {
        ans
    } else {
        2.0 - ans
    }
}

/// Φ(x), the standard normal CDF: ½·erfc(−x/√2).
#[inline(always)]
pub(crate) fn normal_cdf(x: f32) -> f32 {
    0.5 * erfc(-x * std::f32::consts::FRAC_1_SQRT_2)
}

/// 1/√(2π).
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

multiversion! {
    /// out = gelu(x) = x·Φ(x), elementwise (`out` as long as `x`).
    pub fn gelu_slice(x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v * normal_cdf(v);
        }
    }
}

multiversion! {
    /// out = grad·gelu'(x) = grad·(Φ(x) + x·φ(x)), elementwise.
    pub fn gelu_grad_slice(x: &[f32], grad: &[f32], out: &mut [f32]) {
        for ((o, &v), &g) in out.iter_mut().zip(x).zip(grad) {
            let pdf = FRAC_1_SQRT_2PI * exp(-0.5 * v * v);
            *o = g * (normal_cdf(v) + v * pdf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(lo: f64, hi: f64, n: usize) -> Vec<f32> {
        (0..=n)
            .map(|i| (lo + (hi - lo) * i as f64 / n as f64) as f32)
            .collect()
    }

    fn ulps(a: f32, b: f64) -> f64 {
        let b32 = b as f32;
        (a as f64 - b).abs() / (b32.next_up() - b32).max(f32::MIN_POSITIVE) as f64
    }

    #[test]
    fn exp_is_within_two_ulp_and_saturates() {
        for x in grid(-87.0, 88.3, 400_001) {
            let u = ulps(exp(x), (x as f64).exp());
            assert!(u <= 2.0, "exp({x}) off by {u} ulp");
        }
        assert_eq!(exp(-88.0), 0.0);
        assert_eq!(exp(f32::MIN), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(100.0).is_finite());
        assert_eq!(exp(0.0), 1.0);
    }

    fn erf64(x: f64) -> f64 {
        candle_core::cpu::erf::erf_f64(x)
    }

    #[test]
    fn normal_cdf_and_gelu_match_f64() {
        let xs = grid(-12.0, 12.0, 600_001);
        let mut gelu = vec![0f32; xs.len()];
        gelu_slice(&xs, &mut gelu);
        let ones = vec![1f32; xs.len()];
        let mut grad = vec![0f32; xs.len()];
        gelu_grad_slice(&xs, &ones, &mut grad);
        let mut worst = [0f64; 24];
        for (i, &x) in xs.iter().enumerate() {
            let x64 = x as f64;
            let cdf = 0.5 * (1.0 + erf64(x64 / std::f64::consts::SQRT_2));
            // For x < -5 the f64 erf itself is 1 − ε: compare Φ through erfc there.
            let cdf = if x64 < -5.0 {
                0.5 * erfc_f64_tail(-x64 / std::f64::consts::SQRT_2)
            } else {
                cdf
            };
            let rel = (normal_cdf(x) as f64 - cdf).abs() / cdf.max(1e-30);
            let band = ((x64 + 12.0) as usize).min(23);
            worst[band] = worst[band].max(rel);
            let bound = 3e-7 * x64.abs().max(1.0);
            assert!((gelu[i] as f64 - x64 * cdf).abs() <= bound, "gelu({x})");
            let pdf = (-0.5 * x64 * x64).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let want = cdf + x64 * pdf;
            assert!((grad[i] as f64 - want).abs() <= bound, "gelu'({x})");
        }
        // Relative error of Φ by unit band of x: small where Φ matters for GELU; larger in the
        // far left tail (f32 cancellation in the Chebyshev sum and the rounding of x²), where
        // Φ < 1e-3 and the absolute error is below 1e-9.
        for (band, &w) in worst.iter().enumerate() {
            let lo = band as f64 - 12.0;
            let bound = if lo >= -2.0 { 6e-7 } else { 2e-5 };
            assert!(
                w <= bound,
                "Φ on [{lo}, {}): relative error {w:e}",
                lo + 1.0
            );
        }
    }

    /// erfc in f64 for large arguments, where 1 − erf loses everything: the continued fraction
    /// erfc(z) = e^{−z²}/√π · 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + …)))), evaluated from the tail
    /// backwards (200 terms; it converges fast for z > 3).
    fn erfc_f64_tail(z: f64) -> f64 {
        let mut f = 0.0;
        for k in (1..200).rev() {
            f = (k as f64 / 2.0) / (z + f);
        }
        (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + f)
    }

    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        // The dispatched kernel against the portable loop run here without target features.
        let xs = grid(-9.0, 9.0, 10_007);
        let mut dispatched = vec![0f32; xs.len()];
        gelu_slice(&xs, &mut dispatched);
        let portable: Vec<f32> = xs.iter().map(|&v| v * normal_cdf(v)).collect();
        assert_eq!(dispatched, portable);
    }
}
