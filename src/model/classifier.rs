//! The full text classifier: a frozen encoder with LoRA adapters and a trainable head.
use super::checkpoint::Checkpoint;
use super::config::{EncoderConfig, ModelKind, LINEAR_MODULES};
use super::encoder::Encoder;
use super::head::{ClassificationHead, HeadLayout, Pooler};
use super::lora::LoraSpec;
use crate::data::Batch;
use crate::error::{KdError, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// PEFT's prefix for every tensor of a `PeftModelForSequenceClassification`.
pub const PEFT_PREFIX: &str = "base_model.model";

/// A trainable tensor and the name PEFT gives it in `adapter_model.safetensors`.
#[derive(Clone, Debug)]
pub struct NamedVar {
    pub name: String,
    pub var: Var,
}

/// Encoder + head, with the trainable tensors listed under their PEFT names.
pub struct TextClassifier {
    encoder: Encoder,
    head: ClassificationHead,
    config: EncoderConfig,
    lora: LoraSpec,
    trainable: Vec<NamedVar>,
    device: Device,
    /// A BERT-family checkpoint without pooler weights: the pooler started from random values.
    fresh_pooler: bool,
}

impl TextClassifier {
    /// Whether this BERT-family model's pooler started from random values (its checkpoint has no
    /// `pooler.dense`): training says so; a loaded run's adapter replaces it anyway.
    pub fn has_fresh_pooler(&self) -> bool {
        self.fresh_pooler
    }

    /// Loads the checkpoint's frozen weights (memory-mapped, cast to `dtype`) and creates fresh
    /// adapters and head from `seed`.
    pub fn load(
        checkpoint: &Checkpoint,
        lora: &LoraSpec,
        num_labels: usize,
        device: &Device,
        dtype: DType,
        seed: u64,
    ) -> Result<Self> {
        lora.validate().map_err(KdError::Config)?;
        // SAFETY: the file is memory-mapped read-only; kd never writes checkpoint files.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&checkpoint.weights], dtype, device)? };
        let vb = checkpoint_root(vb);
        check_fits(&vb, checkpoint, lora)?;
        // The two pooler refusals of `load_pooler`, as errors about the user's choice.
        if lora.pooler == Pooler::Frozen {
            if checkpoint.config.kind() == ModelKind::Roberta {
                return Err(KdError::Config(
                    "--pooler frozen applies to BERT-family models: RoBERTa's classification head has no pooler".into(),
                ));
            }
            if !vb.contains_tensor("pooler.dense.weight") {
                return Err(KdError::bad_file(&checkpoint.weights, NO_POOLER_TO_FREEZE));
            }
        }
        Self::from_var_builder(vb, &checkpoint.config, lora, num_labels, seed).map_err(|e| {
            KdError::bad_file(
                &checkpoint.weights,
                format!("does not match {}: {e}", checkpoint.config_path.display()),
            )
        })
    }

    /// Builds the model from frozen weights under `vb` (positioned at the encoder's root).
    pub fn from_var_builder(
        vb: VarBuilder,
        config: &EncoderConfig,
        lora: &LoraSpec,
        num_labels: usize,
        seed: u64,
    ) -> candle_core::Result<Self> {
        let device = vb.device().clone();
        let head_dtype = crate::nn::compute_dtype(vb.dtype());
        let mut rng = StdRng::seed_from_u64(seed);
        let pooler = load_pooler(&vb, config, lora.pooler)?;
        let fresh_pooler = config.kind() == ModelKind::Bert && pooler.is_none();
        let encoder = Encoder::load(vb, config, lora, &mut rng)?;
        let layout = HeadLayout {
            kind: config.kind(),
            hidden: config.hidden_size,
            classes: num_labels,
            dropout: config.head_dropout(),
            pooler: lora.pooler,
        };
        let head = ClassificationHead::new(layout, pooler, head_dtype, &device, &mut rng)?;
        let mut model = Self {
            encoder,
            head,
            config: config.clone(),
            lora: lora.clone(),
            trainable: Vec::new(),
            device,
            fresh_pooler,
        };
        model.trainable = model.collect_trainable();
        Ok(model)
    }

    fn collect_trainable(&self) -> Vec<NamedVar> {
        let prefix = self.config.kind().prefix();
        let mut out = Vec::new();
        for (module, layer) in self.encoder.adapted_modules(prefix) {
            if let Some(adapter) = layer.adapter() {
                for (part, var) in [("lora_A", &adapter.a), ("lora_B", &adapter.b)] {
                    out.push(NamedVar {
                        name: format!("{PEFT_PREFIX}.{module}.{part}.weight"),
                        var: var.clone(),
                    });
                }
            }
        }
        for (name, var) in self.head.named_trainable() {
            out.push(NamedVar {
                name: format!("{PEFT_PREFIX}.{name}"),
                var,
            });
        }
        out
    }

    /// Logits (batch, classes) in f32. `rng` switches on dropout (training mode).
    pub fn forward(&self, batch: &Batch, mut rng: Option<&mut StdRng>) -> Result<Tensor> {
        let hidden = self.encoder.forward_first(batch, rng.as_deref_mut())?;
        Ok(self.head.forward(&hidden, rng)?)
    }

    /// Logits (batch, classes) and the sentence representation (batch, hidden), both in f32.
    ///
    /// The representation is the first token's ([CLS] / `<s>`) last hidden state, before the
    /// head: what DistilBERT's cosine loss matches, and the same for both families. The pooler
    /// (BERT) or dense layer (RoBERTa) after it belongs to the task head, which the KD term
    /// already teaches through the logits.
    pub fn forward_with_representation(
        &self,
        batch: &Batch,
        mut rng: Option<&mut StdRng>,
    ) -> Result<(Tensor, Tensor)> {
        let hidden = self.encoder.forward_first(batch, rng.as_deref_mut())?;
        let first = hidden
            .narrow(1, 0, 1)?
            .squeeze(1)?
            .to_dtype(crate::nn::compute_dtype(hidden.dtype()))?;
        Ok((self.head.forward(&hidden, rng)?, first))
    }

    /// The width of the encoder's hidden states (of [`Self::forward_with_representation`]).
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// The trainable tensors in a fixed order (adapters layer by layer, then the head).
    pub fn trainable(&self) -> &[NamedVar] {
        &self.trainable
    }

    /// The number of trainable scalars (PEFT's `print_trainable_parameters` count).
    pub fn trainable_count(&self) -> usize {
        self.trainable.iter().map(|v| v.var.elem_count()).sum()
    }

    /// Overwrites trainable tensors with `tensors` (PEFT names); every trainable tensor must be
    /// present with its exact shape.
    pub fn set_trainable(
        &self,
        tensors: &std::collections::HashMap<String, Tensor>,
        source: &std::path::Path,
    ) -> Result<()> {
        for nv in &self.trainable {
            let t = tensors.get(&nv.name).ok_or_else(|| {
                KdError::bad_file(source, format!("missing tensor `{}`", nv.name))
            })?;
            if t.dims() != nv.var.dims() {
                return Err(KdError::bad_file(
                    source,
                    format!(
                        "tensor `{}` has shape {:?}, the model expects {:?}",
                        nv.name,
                        t.dims(),
                        nv.var.dims()
                    ),
                ));
            }
            nv.var
                .set(&t.to_dtype(nv.var.dtype())?.to_device(&self.device)?)?;
        }
        Ok(())
    }

    /// The encoder (frozen weights and adapters).
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Quantizes the encoder's layers to int8 for inference ([`Encoder::quantize_int8`]); the
    /// pooler and the head stay in f32.
    pub fn quantize_int8(&mut self) -> Result<&super::encoder::Int8Layers> {
        Ok(self.encoder.quantize_int8()?)
    }

    /// The encoder configuration.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// The LoRA configuration.
    pub fn lora(&self) -> &LoraSpec {
        &self.lora
    }

    /// Number of classes.
    pub fn num_labels(&self) -> usize {
        self.head.num_labels()
    }

    /// The device the model lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }
}

/// Refuses what would otherwise train silently wrong: LoRA targets or layers that match no
/// module (the head alone would train), and weights holding more layers than config.json says
/// (the extra layers would be dropped).
fn check_fits(vb: &VarBuilder, checkpoint: &Checkpoint, lora: &LoraSpec) -> Result<()> {
    let cfg = &checkpoint.config;
    let layers = cfg.num_hidden_layers;
    if let Some(bad) = lora.layers.iter().flatten().find(|&&l| l >= layers) {
        return Err(KdError::Config(format!(
            "--layers {bad}: the model has {layers} layers (0..{})",
            layers - 1
        )));
    }
    let adapted = super::params::trainable_breakdown(cfg, lora, 2)
        .iter()
        .filter(|m| m.module.contains(".encoder.layer."))
        .count();
    if adapted == 0 {
        let names: Vec<&str> = LINEAR_MODULES.iter().map(|m| m.path).collect();
        return Err(KdError::Config(format!(
            "LoRA targets {:?} match no module of this model (its linear modules: {})",
            lora.targets,
            names.join(", ")
        )));
    }
    // Any of a layer's tensors would show it; its first linear module's is one.
    let beyond = format!("encoder.layer.{layers}.{}.weight", LINEAR_MODULES[0].path);
    if vb.contains_tensor(&beyond) {
        return Err(KdError::bad_file(
            &checkpoint.weights,
            format!(
                "holds encoder layer {layers} and beyond, but {} says num_hidden_layers = {layers}",
                checkpoint.config_path.display()
            ),
        ));
    }
    Ok(())
}

const NO_POOLER_TO_FREEZE: &str =
    "the checkpoint has no pooler.dense weights to freeze: use --pooler trainable";

/// A BERT checkpoint's `pooler.dense` (weight, bias), when it has one. RoBERTa's head has no
/// pooler, so there is nothing to freeze; a frozen pooler needs the checkpoint's weights (a
/// random frozen projection would silently cost accuracy).
fn load_pooler(
    vb: &VarBuilder,
    config: &EncoderConfig,
    pooler: Pooler,
) -> candle_core::Result<Option<(Tensor, Tensor)>> {
    if config.kind() == ModelKind::Roberta {
        if pooler == Pooler::Frozen {
            candle_core::bail!("--pooler frozen applies to BERT-family models: RoBERTa's classification head has no pooler");
        }
        return Ok(None);
    }
    let h = config.hidden_size;
    let vb = vb.pp("pooler").pp("dense");
    if !vb.contains_tensor("weight") {
        if pooler == Pooler::Frozen {
            candle_core::bail!("{NO_POOLER_TO_FREEZE}");
        }
        return Ok(None);
    }
    Ok(Some((vb.get((h, h), "weight")?, vb.get(h, "bias")?)))
}

/// Positions `vb` at the encoder's root: checkpoints saved from a task model carry a
/// `roberta.`/`bert.` prefix (roberta-base's does), bare encoders carry none (the MiniLMs').
pub fn checkpoint_root(vb: VarBuilder) -> VarBuilder {
    for prefix in ["roberta", "bert"] {
        if vb.contains_tensor(&format!("{prefix}.embeddings.word_embeddings.weight")) {
            return vb.pp(prefix);
        }
    }
    vb
}
