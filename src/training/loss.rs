//! Losses, as PyTorch defines them, as batch means over f32 logits.
use candle_core::{DType, Result, Tensor, D};
use candle_nn::ops::log_softmax;

fn precise(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(crate::model::ops::compute_dtype(t.dtype()))
}

/// `F.cross_entropy(logits, labels, label_smoothing=ε)`: per row
/// −(1−ε)·log p[y] − (ε/C)·Σ_c log p[c], averaged over the batch.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, smoothing: f64) -> Result<Tensor> {
    let classes = logits.dim(D::Minus1)? as f64;
    let logp = log_softmax(&precise(logits)?, D::Minus1)?;
    let picked = logp
        .gather(&labels.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
        .squeeze(1)?;
    let nll = picked.neg()?.mean_all()?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let uniform = logp.sum(D::Minus1)?.neg()?.mean_all()?;
    (nll * (1.0 - smoothing))? + (uniform * (smoothing / classes))?
}

/// KL(softmax(t/T) ‖ softmax(s/T)), summed over classes and averaged over the batch
/// (`F.kl_div(..., reduction="batchmean")`). Gradients flow into the student only.
pub fn kl_teacher_student(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let batch = student.dim(0)? as f64;
    let log_s = log_softmax(&(precise(student)? / temperature)?, D::Minus1)?;
    let log_t = log_softmax(
        &(teacher.to_dtype(log_s.dtype())?.detach() / temperature)?,
        D::Minus1,
    )?;
    let p_t = log_t.exp()?;
    (p_t * (log_t - log_s)?)?.sum_all()? / batch
}

/// The distillation objective: α·T²·KL(teacher ‖ student at T) + (1−α)·CE(labels, smoothing).
pub fn distillation(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    temperature: f64,
    alpha: f64,
    smoothing: f64,
) -> Result<Tensor> {
    let ce = cross_entropy(student, labels, smoothing)?;
    if alpha == 0.0 {
        return Ok(ce);
    }
    let kl = kl_teacher_student(student, teacher, temperature)?;
    (kl * (alpha * temperature * temperature))? + (ce * (1.0 - alpha))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cross_entropy_matches_hand_computation() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[2.0f32, 0.0, -1.0]], &dev)?;
        let labels = Tensor::new(&[0u32], &dev)?;
        let z = (2f64.exp() + 1.0 + (-1f64).exp()).ln();
        let logp = [2.0 - z, -z, -1.0 - z];
        let want = -(0.9 * logp[0]) - 0.1 / 3.0 * logp.iter().sum::<f64>();
        let got = cross_entropy(&logits, &labels, 0.1)?.to_scalar::<f32>()? as f64;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        Ok(())
    }

    #[test]
    fn kl_is_zero_for_equal_logits_and_positive_otherwise() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::new(&[[1.0f32, 2.0, 3.0], [0.5, 0.1, -1.0]], &dev)?;
        let b = Tensor::new(&[[3.0f32, 2.0, 1.0], [0.5, 0.1, -1.0]], &dev)?;
        assert!(kl_teacher_student(&a, &a, 2.0)?.to_scalar::<f32>()?.abs() < 1e-7);
        assert!(kl_teacher_student(&a, &b, 2.0)?.to_scalar::<f32>()? > 0.01);
        Ok(())
    }
}
