//! The encoder's frozen LayerNorms: the tensor op (training, other devices), LayerNorm(dropout(x)
//! + residual) as one op on the CPU, and the fused inference path's kernels over plain rows.
use super::super::config::EncoderConfig;
use super::train_dropout;
use crate::nn::cpu::bf16_matmul::PackedRows;
use crate::nn::layer_norm;
use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use rand::rngs::StdRng;

/// A frozen LayerNorm (`weight`, `bias`).
#[derive(Clone, Debug)]
pub(super) struct FrozenLayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl FrozenLayerNorm {
    pub(super) fn load(vb: VarBuilder, cfg: &EncoderConfig) -> Result<Self> {
        Ok(Self {
            weight: vb.get(cfg.hidden_size, "weight")?,
            bias: vb.get(cfg.hidden_size, "bias")?,
            eps: cfg.layer_norm_eps,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, &self.weight, &self.bias, self.eps)
    }

    /// LayerNorm(dropout(x) + residual), dropout in training mode: one op on the CPU in f32
    /// ([`crate::nn::dropout_add_layer_norm`]), the three ops elsewhere.
    pub(super) fn residual_forward(
        &self,
        x: &Tensor,
        residual: &Tensor,
        p: f64,
        rng: &mut Option<&mut StdRng>,
    ) -> Result<Tensor> {
        let (weight, bias) = (&self.weight, &self.bias);
        let fused = crate::nn::dropout_add_layer_norm(
            x,
            residual,
            p,
            rng.as_deref_mut(),
            weight,
            bias,
            self.eps,
        )?;
        match fused {
            Some(y) => Ok(y),
            None => self.forward(&(train_dropout(x, p, rng)? + residual)?),
        }
    }

    /// ε in f32, for the CPU kernels.
    pub(super) fn eps(&self) -> f32 {
        self.eps as f32
    }

    /// γ and β in f32, for the CPU kernels.
    pub(super) fn f32_params(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let f32s = |t: &Tensor| t.to_dtype(DType::F32)?.to_vec1::<f32>();
        Ok((f32s(&self.weight)?, f32s(&self.bias)?))
    }

    /// [`Self::add_forward`] and its rows in the native kernels' bf16 layout (the next products'
    /// input), rounded as they are written.
    pub(super) fn add_forward_packed(
        &self,
        x: &[f32],
        residual: &[f32],
    ) -> Result<(Vec<f32>, PackedRows)> {
        let (gamma, beta) = self.f32_params()?;
        Ok(crate::nn::cpu::layer_norm::add_layer_norm_packed(
            x,
            residual,
            &gamma,
            &beta,
            self.eps(),
        ))
    }

    /// LayerNorm(x + residual) on rows of f32, without gradients.
    pub(super) fn add_forward(&self, x: &[f32], residual: &[f32]) -> Result<Vec<f32>> {
        let (gamma, beta) = self.f32_params()?;
        Ok(crate::nn::cpu::layer_norm::add_layer_norm(
            x,
            residual,
            &gamma,
            &beta,
            self.eps(),
        ))
    }
}
