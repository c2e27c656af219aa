//! Linear warmup then cosine decay, as `transformers.get_cosine_schedule_with_warmup`.

/// The learning-rate multiplier at optimizer step `step` (0-based): step/warmup during warmup,
/// then ½·(1 + cos(π·progress)).
pub fn warmup_cosine(step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
}

/// Warmup steps for a ratio of the total, as HF's `get_warmup_steps` (ceil).
pub fn warmup_steps(total: usize, ratio: f64) -> usize {
    (total as f64 * ratio).ceil() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_of_the_schedule() {
        assert_eq!(warmup_cosine(0, 2, 10), 0.0);
        assert_eq!(warmup_cosine(1, 2, 10), 0.5);
        assert_eq!(warmup_cosine(2, 2, 10), 1.0);
        assert!((warmup_cosine(6, 2, 10) - 0.5).abs() < 1e-12);
        assert!(warmup_cosine(10, 2, 10).abs() < 1e-12);
        assert_eq!(warmup_steps(1000, 0.06), 60);
    }
}
