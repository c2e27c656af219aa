//! AdamW exactly as `torch.optim.AdamW` steps, with PEFT-style parameter groups (no weight
//! decay on biases and LayerNorm weights) and `clip_grad_norm_`.
use crate::model::NamedVar;
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};

/// AdamW hyper-parameters.
#[derive(Clone, Debug)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

struct Slot {
    param: NamedVar,
    decay: bool,
    m: Tensor,
    v: Tensor,
}

/// The optimizer and its state.
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    step: i32,
}

/// Whether a tensor is decayed: not a bias, not a LayerNorm weight.
pub fn decays(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !(name.ends_with("bias") || lower.contains("layernorm") || lower.contains("layer_norm"))
}

impl AdamW {
    /// Zero-initialised moments for every trainable tensor.
    pub fn new(params: &[NamedVar], cfg: AdamWConfig) -> Result<Self> {
        let slots = params
            .iter()
            .map(|p| {
                Ok(Slot {
                    decay: decays(&p.name),
                    m: p.var.zeros_like()?,
                    v: p.var.zeros_like()?,
                    param: p.clone(),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg,
            slots,
            step: 0,
        })
    }

    /// Scales the gradients so that their global L2 norm is at most `max_norm` (torch's
    /// `clip_grad_norm_`, including its 1e-6), returning the norm before clipping.
    /// The step count and copies of the first and second moments, in parameter order.
    pub fn state(&self) -> Result<(i32, Vec<Tensor>, Vec<Tensor>)> {
        let m = self
            .slots
            .iter()
            .map(|s| s.m.copy())
            .collect::<Result<_>>()?;
        let v = self
            .slots
            .iter()
            .map(|s| s.v.copy())
            .collect::<Result<_>>()?;
        Ok((self.step, m, v))
    }

    /// Continues from a saved [`AdamW::state`].
    pub fn restore(&mut self, step: i32, m: &[Tensor], v: &[Tensor]) -> Result<()> {
        if m.len() != self.slots.len() || v.len() != self.slots.len() {
            candle_core::bail!(
                "optimizer state for {} tensors, the model has {}",
                m.len(),
                self.slots.len()
            );
        }
        for ((s, m), v) in self.slots.iter_mut().zip(m).zip(v) {
            s.m = m.to_device(s.m.device())?.to_dtype(s.m.dtype())?;
            s.v = v.to_device(s.v.device())?.to_dtype(s.v.dtype())?;
        }
        self.step = step;
        Ok(())
    }

    pub fn clip_grad_norm(&self, grads: &mut GradStore, max_norm: f64) -> Result<f64> {
        // One reduction on the device and one read, not a host sync per tensor.
        let mut squares = Vec::new();
        for s in &self.slots {
            if let Some(g) = grads.get(s.param.var.as_tensor()) {
                squares.push(g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?);
            }
        }
        if squares.is_empty() {
            return Ok(0.0);
        }
        let norm = Tensor::stack(&squares, 0)?
            .sum_all()?
            .to_scalar::<f64>()?
            .sqrt();
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for s in &self.slots {
                if let Some(g) = grads.remove(s.param.var.as_tensor()) {
                    grads.insert(s.param.var.as_tensor(), (g * coef)?);
                }
            }
        }
        Ok(norm)
    }

    /// One update at learning rate `lr`. A tensor without a gradient is left untouched.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(self.step);
        let bc2_sqrt = (1.0 - b2.powi(self.step)).sqrt();
        for s in &mut self.slots {
            let Some(g) = grads.get(s.param.var.as_tensor()) else {
                continue;
            };
            let p = s.param.var.as_tensor();
            // torch: p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
            // p ← p − (lr/bc1)·m / (√v/√bc2 + ε)
            let p = if s.decay && self.cfg.weight_decay != 0.0 {
                (p * (1.0 - lr * self.cfg.weight_decay))?
            } else {
                p.clone()
            };
            s.m = ((&s.m * b1)? + (g * (1.0 - b1))?)?;
            s.v = ((&s.v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denom = ((s.v.sqrt()? / bc2_sqrt)? + self.cfg.eps)?;
            let update = ((&s.m / denom)? * (lr / bc1))?;
            s.param.var.set(&(p - update)?)?;
        }
        Ok(())
    }
}
