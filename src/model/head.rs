//! RoBERTa's classification head, used for every backbone: first token → dropout → dense H×H →
//! tanh → dropout → out_proj H×classes. Fully trainable.
use super::grad_mode::param;
use super::ops::dropout;
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::rngs::StdRng;
use rand::Rng;

/// The head's four trainable tensors.
#[derive(Clone, Debug)]
pub struct ClassificationHead {
    pub dense_weight: Var,
    pub dense_bias: Var,
    pub out_weight: Var,
    pub out_bias: Var,
    dropout: f64,
}

/// Draws from N(0, std²) by Box–Muller (HF initialises linear weights with std 0.02).
pub fn normal(rng: &mut StdRng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
            let u2: f32 = rng.random();
            std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect()
}

impl ClassificationHead {
    /// A fresh head initialised as HF does: weights N(0, 0.02²), biases zero.
    pub fn init(
        hidden: usize,
        classes: usize,
        dropout: f64,
        dtype: DType,
        device: &Device,
        rng: &mut StdRng,
    ) -> Result<Self> {
        let w = |rows, cols, rng: &mut StdRng| -> Result<Var> {
            let t = Tensor::from_vec(normal(rng, rows * cols, 0.02), (rows, cols), device)?;
            Var::from_tensor(&t.to_dtype(dtype)?)
        };
        Ok(Self {
            dense_weight: w(hidden, hidden, rng)?,
            dense_bias: Var::zeros(hidden, dtype, device)?,
            out_weight: w(classes, hidden, rng)?,
            out_bias: Var::zeros(classes, dtype, device)?,
            dropout,
        })
    }

    /// Number of classes.
    pub fn num_labels(&self) -> usize {
        self.out_bias.dim(0).expect("1-D bias")
    }

    /// Logits (batch, classes) in the head's dtype (f32) from the last hidden state (batch, seq, hidden).
    pub fn forward(&self, hidden: &Tensor, mut rng: Option<&mut StdRng>) -> Result<Tensor> {
        let mut drop = |x: Tensor| -> Result<Tensor> {
            match rng.as_deref_mut() {
                Some(r) => dropout(&x, self.dropout as f32, r),
                None => Ok(x),
            }
        };
        let first = hidden
            .narrow(1, 0, 1)?
            .squeeze(1)?
            .to_dtype(self.out_bias.dtype())?;
        let x = drop(first)?;
        let x = x
            .matmul(&param(&self.dense_weight).t()?)?
            .broadcast_add(&param(&self.dense_bias))?
            .tanh()?;
        let x = drop(x)?;
        x.matmul(&param(&self.out_weight).t()?)?
            .broadcast_add(&param(&self.out_bias))
    }
}
