//! The classification heads transformers puts on each family, with its tensor names:
//! - RoBERTa (`RobertaClassificationHead`): first token → dropout → dense H×H → tanh → dropout →
//!   out_proj H×classes, all fresh and trainable, named `classifier.dense` / `classifier.out_proj`.
//! - BERT (`BertForSequenceClassification`): the checkpoint's pooler (first token → dense H×H →
//!   tanh, `bert.pooler.dense`) → dropout → `classifier` H×classes. The pooler is trainable
//!   (PEFT's `modules_to_save=["classifier", "pooler"]`, kd's default) or frozen (PEFT's
//!   default, `modules_to_save=["classifier"]`).
use super::config::ModelKind;
use crate::nn::param;
use crate::nn::{dropout, FrozenLinear};
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Whether a BERT-family pooler is trained (`[lora] pooler`, `--pooler`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pooler {
    /// Trained with the classifier (PEFT: `modules_to_save=["classifier", "pooler"]`).
    #[default]
    Trainable,
    /// Kept as the checkpoint has it (PEFT's default for BertForSequenceClassification).
    Frozen,
}

/// The H×H layer before the output layer: RoBERTa's `classifier.dense`, BERT's pooler.
#[derive(Clone, Debug)]
enum Dense {
    Trainable { weight: Var, bias: Var },
    Frozen(FrozenLinear),
}

/// A head's tensors and the family whose layout it follows.
#[derive(Clone, Debug)]
pub struct ClassificationHead {
    kind: ModelKind,
    dense: Dense,
    out_weight: Var,
    out_bias: Var,
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

/// A (rows × cols) weight drawn as HF initialises linear layers: N(0, 0.02²).
fn init_weight(
    rows: usize,
    cols: usize,
    dtype: DType,
    device: &Device,
    rng: &mut StdRng,
) -> Result<Tensor> {
    Tensor::from_vec(normal(rng, rows * cols, 0.02), (rows, cols), device)?.to_dtype(dtype)
}

/// What a head is: the family's layout, its widths and its dropout.
#[derive(Clone, Copy, Debug)]
pub struct HeadLayout {
    pub kind: ModelKind,
    pub hidden: usize,
    pub classes: usize,
    pub dropout: f64,
    /// BERT only: whether the pooler trains (RoBERTa's dense layer always does).
    pub pooler: Pooler,
}

impl ClassificationHead {
    /// A head laid out as `layout`. `pooler` holds the checkpoint's `pooler.dense` (weight, bias)
    /// for BERT; when there is none the dense layer is initialised as HF does (weights
    /// N(0, 0.02²), biases zero), like every RoBERTa head. The output layer is always fresh.
    pub fn new(
        layout: HeadLayout,
        pooler: Option<(Tensor, Tensor)>,
        dtype: DType,
        device: &Device,
        rng: &mut StdRng,
    ) -> Result<Self> {
        let HeadLayout {
            kind,
            hidden,
            classes,
            dropout,
            ..
        } = layout;
        let trainable_dense = kind == ModelKind::Roberta || layout.pooler == Pooler::Trainable;
        let (weight, bias) = match pooler.filter(|_| kind == ModelKind::Bert) {
            Some((w, b)) => (w.to_dtype(dtype)?, b.to_dtype(dtype)?),
            None => (
                init_weight(hidden, hidden, dtype, device, rng)?,
                Tensor::zeros(hidden, dtype, device)?,
            ),
        };
        let dense = if trainable_dense {
            Dense::Trainable {
                weight: Var::from_tensor(&weight)?,
                bias: Var::from_tensor(&bias)?,
            }
        } else {
            Dense::Frozen(FrozenLinear::new(weight, Some(bias))?)
        };
        Ok(Self {
            kind,
            dense,
            out_weight: Var::from_tensor(&init_weight(classes, hidden, dtype, device, rng)?)?,
            out_bias: Var::zeros(classes, dtype, device)?,
            dropout,
        })
    }

    /// The trainable tensors under their names in a `*ForSequenceClassification` model.
    pub fn named_trainable(&self) -> Vec<(String, Var)> {
        let (dense, out) = match self.kind {
            ModelKind::Roberta => ("classifier.dense", "classifier.out_proj"),
            ModelKind::Bert => ("bert.pooler.dense", "classifier"),
        };
        let mut named = Vec::new();
        if let Dense::Trainable { weight, bias } = &self.dense {
            named.push((format!("{dense}.weight"), weight.clone()));
            named.push((format!("{dense}.bias"), bias.clone()));
        }
        named.push((format!("{out}.weight"), self.out_weight.clone()));
        named.push((format!("{out}.bias"), self.out_bias.clone()));
        named
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
        // RoBERTa drops out the first token before its dense layer; BERT's pooler does not.
        let x = match self.kind {
            ModelKind::Roberta => drop(first)?,
            ModelKind::Bert => first,
        };
        let x = match &self.dense {
            Dense::Trainable { weight, bias } => {
                x.matmul(&param(weight).t()?)?.broadcast_add(&param(bias))?
            }
            Dense::Frozen(linear) => linear.forward(&x)?,
        };
        let x = drop(x.tanh()?)?;
        x.matmul(&param(&self.out_weight).t()?)?
            .broadcast_add(&param(&self.out_bias))
    }
}
