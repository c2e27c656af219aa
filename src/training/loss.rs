//! Losses, as PyTorch defines them, as batch means over f32 logits.
use candle_core::{DType, Result, Tensor, D};
use candle_nn::ops::log_softmax;

fn precise(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(crate::nn::compute_dtype(t.dtype()))
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

/// The distillation objective over a batch mixing labelled rows and unlabelled rows (a transfer
/// set): per row, α·T²·KL + (1−α)·CE for a labelled row and T²·KL alone for an unlabelled one,
/// averaged over the batch. An unlabelled row's stand-in label is multiplied by zero, so it
/// contributes no cross-entropy and no gradient through it. With every row labelled this is
/// [`distillation`], which is then used as it is.
pub fn distillation_mixed(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    labelled: &[bool],
    temperature: f64,
    alpha: f64,
    smoothing: f64,
) -> Result<Tensor> {
    if labelled.iter().all(|&l| l) {
        return distillation(student, teacher, labels, temperature, alpha, smoothing);
    }
    let device = student.device();
    let t2 = temperature * temperature;
    let kd_weight: Vec<f32> = labelled
        .iter()
        .map(|&l| (if l { alpha * t2 } else { t2 }) as f32)
        .collect();
    let ce_weight: Vec<f32> = labelled
        .iter()
        .map(|&l| if l { (1.0 - alpha) as f32 } else { 0.0 })
        .collect();
    let n = labelled.len();
    let kl = kl_rows(student, teacher, temperature)?;
    let ce = cross_entropy_rows(student, labels, smoothing)?;
    let kd_weight = Tensor::from_vec(kd_weight, n, device)?.to_dtype(kl.dtype())?;
    let ce_weight = Tensor::from_vec(ce_weight, n, device)?.to_dtype(ce.dtype())?;
    ((kl * kd_weight)? + (ce * ce_weight)?)?.mean_all()
}

/// Per-row KL(softmax(t/T) ‖ softmax(s/T)).
fn kl_rows(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let log_s = log_softmax(&(precise(student)? / temperature)?, D::Minus1)?;
    let log_t = log_softmax(
        &(teacher.to_dtype(log_s.dtype())?.detach() / temperature)?,
        D::Minus1,
    )?;
    (log_t.exp()? * (log_t - log_s)?)?.sum(D::Minus1)
}

/// Per-row label-smoothed cross-entropy.
fn cross_entropy_rows(logits: &Tensor, labels: &Tensor, smoothing: f64) -> Result<Tensor> {
    let classes = logits.dim(D::Minus1)? as f64;
    let logp = log_softmax(&precise(logits)?, D::Minus1)?;
    let picked = logp
        .gather(&labels.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
        .squeeze(1)?;
    let uniform = logp.sum(D::Minus1)?;
    (picked * (smoothing - 1.0))? - (uniform * (smoothing / classes))?
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

    #[test]
    fn unlabelled_rows_contribute_kd_alone() -> Result<()> {
        let dev = Device::Cpu;
        let s = Tensor::new(
            &[[1.0f32, 2.0, 0.5], [0.5, 0.1, -1.0], [0.0, 1.0, 2.0]],
            &dev,
        )?;
        let t = Tensor::new(
            &[[3.0f32, 2.0, 1.0], [0.5, 0.9, -1.0], [2.0, 0.0, 0.0]],
            &dev,
        )?;
        let (temp, alpha, eps) = (2.0, 0.5, 0.1);
        let labels = Tensor::new(&[2u32, 0, 1], &dev)?;
        let value = |l: &Tensor, mask: &[bool]| -> Result<f64> {
            Ok(distillation_mixed(&s, &t, l, mask, temp, alpha, eps)?.to_scalar::<f32>()? as f64)
        };
        // All labelled: exactly the batch-mean objective.
        let all = value(&labels, &[true; 3])?;
        let want = distillation(&s, &t, &labels, temp, alpha, eps)?.to_scalar::<f32>()? as f64;
        assert_eq!(all, want);
        // Row 1 unlabelled: its stand-in label changes nothing ...
        let mixed = value(&labels, &[true, false, true])?;
        let other = Tensor::new(&[2u32, 2, 1], &dev)?;
        assert_eq!(mixed, value(&other, &[true, false, true])?);
        // ... whereas a labelled row's label does.
        assert_ne!(all, value(&other, &[true; 3])?);
        // By hand: mean of α·T²·KL + (1−α)·CE (rows 0, 2) and T²·KL (row 1).
        let kl = |i: usize| -> Result<f64> {
            let (si, ti) = (s.narrow(0, i, 1)?, t.narrow(0, i, 1)?);
            Ok(kl_teacher_student(&si, &ti, temp)?.to_scalar::<f32>()? as f64)
        };
        let ce = |i: usize| -> Result<f64> {
            let li = labels.narrow(0, i, 1)?;
            Ok(cross_entropy(&s.narrow(0, i, 1)?, &li, eps)?.to_scalar::<f32>()? as f64)
        };
        let t2 = temp * temp;
        let by_hand = ((alpha * t2 * kl(0)? + (1.0 - alpha) * ce(0)?)
            + t2 * kl(1)?
            + (alpha * t2 * kl(2)? + (1.0 - alpha) * ce(2)?))
            / 3.0;
        assert!((mixed - by_hand).abs() < 1e-5, "{mixed} vs {by_hand}");
        Ok(())
    }
}
