//! Representation distillation: the student's sentence representation (its first token's last
//! hidden state, its own width) goes through a learned linear projection to the teacher's width
//! and is matched to the teacher's cached representation, by cosine (DistilBERT's
//! `CosineEmbeddingLoss`) or mean squared error; the term is weighted by β (`--repr-weight`).
//!
//! The projection is trained with the student (AdamW, the student's learning rate, clipped with
//! it, checkpointed and resumed with it) but never exported: only the student's own adapters
//! and head are saved. It counts against the parameter budget while training (see
//! [`crate::model::params::check_training_budget`]).
use crate::cache::ReprCache;
use crate::model::head::normal;
use crate::model::NamedVar;
use crate::nn::param;
use candle_core::{DType, Device, Result, Tensor, Var, D};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// How the projected student representation is compared with the teacher's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ReprLoss {
    /// 1 − cos(projected student, teacher), averaged over rows (DistilBERT's cosine loss):
    /// bounded by 2 and blind to the teacher's scale.
    #[default]
    Cosine,
    /// Squared error averaged over rows and dimensions (TinyBERT's hidden-state loss).
    Mse,
}

/// The names the projection's tensors are checkpointed under (never exported).
pub const PROJECTION: &str = "kd.repr_projection";

/// A trainable linear map from the student's width to the teacher's.
#[derive(Clone, Debug)]
pub struct Projection {
    weight: Var,
    bias: Var,
}

impl Projection {
    /// Trainable scalars of a projection from `student` to `teacher` dimensions.
    pub fn count(student: usize, teacher: usize) -> usize {
        student * teacher + teacher
    }

    /// A fresh projection, drawn from `seed` (so a rerun draws the same one). The weight is
    /// N(0, 1/student): the projected rows start with about the student's own scale, which
    /// the MSE term then has to move only as far as the teacher's.
    pub fn new(
        student: usize,
        teacher: usize,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x7265_7072_5f70_726f);
        let std = (1.0 / student as f32).sqrt();
        let w = Tensor::from_vec(
            normal(&mut rng, student * teacher, std),
            (teacher, student),
            device,
        )?;
        Ok(Self {
            weight: Var::from_tensor(&w.to_dtype(dtype)?)?,
            bias: Var::zeros(teacher, dtype, device)?,
        })
    }

    /// The tensors under their checkpoint names (weight, then bias: the bias is not decayed).
    pub fn named(&self) -> Vec<NamedVar> {
        [("weight", &self.weight), ("bias", &self.bias)]
            .into_iter()
            .map(|(part, var)| NamedVar {
                name: format!("{PROJECTION}.{part}"),
                var: var.clone(),
            })
            .collect()
    }

    /// (batch, student) → (batch, teacher).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = param(&self.weight);
        x.to_dtype(w.dtype())?
            .matmul(&w.t()?)?
            .broadcast_add(&param(&self.bias))
    }
}

/// The loss between projected student rows and teacher rows (both batch × width), a batch mean.
pub fn repr_loss(projected: &Tensor, teacher: &Tensor, kind: ReprLoss) -> Result<Tensor> {
    let teacher = teacher.to_dtype(projected.dtype())?.detach();
    match kind {
        ReprLoss::Mse => (projected - &teacher)?.sqr()?.mean_all(),
        ReprLoss::Cosine => {
            let dot = (projected * &teacher)?.sum(D::Minus1)?;
            let norms = (projected.sqr()?.sum(D::Minus1)? * teacher.sqr()?.sum(D::Minus1)?)?;
            // torch's cosine_similarity: the product of norms is kept at least eps (1e-8).
            let cos = (dot / norms.sqrt()?.clamp(1e-8, f64::MAX)?)?;
            cos.affine(-1.0, 1.0)?.mean_all()
        }
    }
}

/// The representation term of a distillation objective: the teacher's cache, the weight β,
/// the comparison and the projection being trained.
pub struct ReprTerm<'a> {
    pub cache: &'a ReprCache,
    pub weight: f64,
    pub loss: ReprLoss,
    pub projection: Projection,
}

impl ReprTerm<'_> {
    /// The unweighted loss of the student's representations `student` (batch × student width)
    /// of the cache rows `rows`.
    pub fn loss(&self, student: &Tensor, rows: &[usize]) -> Result<Tensor> {
        let width = self.cache.header().width;
        let teacher = Tensor::from_vec(
            self.cache.gather(rows),
            (rows.len(), width),
            student.device(),
        )?;
        repr_loss(&self.projection.forward(student)?, &teacher, self.loss)
    }

    /// The most the unweighted term can be on a healthy run, for the divergence check: 2 for
    /// the cosine (its range), unbounded for the MSE (only non-finite values are refused).
    pub fn ceiling(&self) -> f64 {
        match self.loss {
            ReprLoss::Cosine => 2.0,
            ReprLoss::Mse => f64::INFINITY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_and_mse_are_the_textbook_values() -> Result<()> {
        let dev = Device::Cpu;
        let p = Tensor::new(&[[1.0f32, 0.0], [0.0, 2.0]], &dev)?;
        let t = Tensor::new(&[[2.0f32, 0.0], [0.0, -1.0]], &dev)?;
        // Rows: same direction (1 − 1 = 0), opposite (1 − (−1) = 2): mean 1.
        let cos = repr_loss(&p, &t, ReprLoss::Cosine)?.to_scalar::<f32>()?;
        assert!((cos - 1.0).abs() < 1e-6, "{cos}");
        // Squared errors 1, 0, 0, 9: mean 2.5.
        let mse = repr_loss(&p, &t, ReprLoss::Mse)?.to_scalar::<f32>()?;
        assert!((mse - 2.5).abs() < 1e-6, "{mse}");
        let proj = Projection::new(3, 5, 1, DType::F32, &dev)?;
        assert_eq!(
            proj.forward(&Tensor::zeros((2, 3), DType::F32, &dev)?)?
                .dims(),
            [2, 5]
        );
        assert_eq!(Projection::count(3, 5), 20);
        Ok(())
    }
}
