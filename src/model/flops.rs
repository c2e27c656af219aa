//! FLOPs of a forward or training step of an encoder with frozen weights and LoRA, for
//! throughput figures (TFLOP/s, MFU) that compare with the PyTorch peer's.
use super::params::trainable_breakdown;
use super::{EncoderConfig, LoraSpec};

/// The peer's `frozen_base_lora_v1` count, over the shapes actually run: with
/// N = L·(4H² + 2HF) frozen matmul weights, a training step costs 4·N·T (forward + activation
/// gradients, no weight gradients) + 12·L·H·Σ(B·S²) (attention) + 6·N_lora·T, and inference
/// 2·N·T + 4·L·H·Σ(B·S²), with T = Σ B·S padded tokens.
pub struct FlopModel {
    n: f64,
    n_lora: f64,
    lh: f64,
}

impl FlopModel {
    /// The name figures computed with this model carry.
    pub const FORMULA: &'static str = "frozen_base_lora_v1";

    pub fn new(cfg: &EncoderConfig, lora: &LoraSpec) -> Self {
        let (l, h, f) = (
            cfg.num_hidden_layers as f64,
            cfg.hidden_size as f64,
            cfg.intermediate_size as f64,
        );
        let n_lora: usize = trainable_breakdown(cfg, lora, 4)
            .iter()
            .filter(|m| !m.module.starts_with("classifier"))
            .map(|m| m.params)
            .sum();
        Self {
            n: l * (4.0 * h * h + 2.0 * h * f),
            n_lora: n_lora as f64,
            lh: l * h,
        }
    }

    /// One training step over a batch of `b` rows padded to `s` tokens.
    pub fn train(&self, b: usize, s: usize) -> f64 {
        let t = (b * s) as f64;
        4.0 * self.n * t + 12.0 * self.lh * (b * s * s) as f64 + 6.0 * self.n_lora * t
    }

    /// One forward pass (no gradients) over `b` rows padded to `s` tokens.
    pub fn infer(&self, b: usize, s: usize) -> f64 {
        2.0 * self.n * (b * s) as f64 + 4.0 * self.lh * (b * s * s) as f64
    }
}
