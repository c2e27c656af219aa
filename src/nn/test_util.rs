//! Helpers for the tests of kd's ops against the separate ops they replace.
use candle_core::Tensor;

/// max|a − b| / max(1, max|b|): how far an op's result lies from its reference, relative to the
/// reference's size (absolute where the reference is under 1).
pub fn max_relative_diff(a: &Tensor, b: &Tensor) -> f32 {
    let max_abs = |t: &Tensor| -> f32 {
        t.abs()
            .and_then(|t| t.max_all())
            .and_then(|t| t.to_scalar::<f32>())
            .expect("an f32 tensor")
    };
    max_abs(&(a - b).expect("the same shapes")) / max_abs(b).max(1.0)
}
