//! LoRA exactly as PEFT defines it: y = W·x + (α/r)·B·A·dropout(x), targets chosen by module-name
//! suffix (or a regular expression) and an optional list of layers.
use crate::nn::param;
use crate::nn::{adapted_linear, compute_dtype, dropout, FrozenLinear};
use candle_core::{Result, Tensor, Var};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Which modules get an adapter, in PEFT's two forms: a list of names matched by suffix, or one
/// regular expression that must match the whole module name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// PEFT matches `t` when the module name equals `t` or ends with `.t`.
    Suffixes(Vec<String>),
    /// `re.fullmatch(pattern, name)`.
    Regex(String),
}

/// A LoRA configuration (the fields of PEFT's `LoraConfig` that kd uses): the `[lora]` table of
/// a config, where an unknown key is refused rather than dropped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    /// Rank r.
    pub r: usize,
    /// α: the update is scaled by α/r (or α/√r with rsLoRA).
    pub alpha: f64,
    /// Dropout applied to the adapter's input during training.
    #[serde(default)]
    pub dropout: f64,
    /// Target modules.
    pub targets: TargetModules,
    /// Only these layer indices (PEFT's `layers_to_transform`); all layers when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<usize>>,
    /// PEFT's `use_rslora`.
    #[serde(default)]
    pub use_rslora: bool,
    /// BERT-family models: whether the pooler trains with the classifier (PEFT's
    /// `modules_to_save` holds "pooler" when it does).
    #[serde(default)]
    pub pooler: super::head::Pooler,
}

impl LoraSpec {
    /// LoRA on query and value, PEFT's usual choice for BERT-family classifiers.
    pub fn query_value(r: usize, alpha: f64) -> Self {
        Self {
            r,
            alpha,
            dropout: 0.1,
            targets: TargetModules::Suffixes(vec!["query".into(), "value".into()]),
            layers: None,
            use_rslora: false,
            pooler: super::head::Pooler::Trainable,
        }
    }

    /// The factor applied to B·A·x.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// Whether PEFT would put an adapter on `module_name` (the full name inside the
    /// `*ForSequenceClassification` model, e.g. `roberta.encoder.layer.3.attention.self.query`).
    pub fn targets_module(&self, module_name: &str) -> bool {
        // PEFT applies layers_to_transform only to suffix matches: a regex or an exact full
        // name selects its modules by itself.
        let list = match &self.targets {
            TargetModules::Regex(pattern) => {
                return regex::Regex::new(&format!("^(?:{pattern})$"))
                    .is_ok_and(|re| re.is_match(module_name));
            }
            TargetModules::Suffixes(list) => list,
        };
        if list.iter().any(|t| t == module_name) {
            return true;
        }
        if !list.iter().any(|t| module_name.ends_with(&format!(".{t}"))) {
            return false;
        }
        match &self.layers {
            None => true,
            Some(layers) => layer_index(module_name).is_some_and(|i| layers.contains(&i)),
        }
    }

    /// Checks the values a user can get wrong.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.r == 0 {
            return Err("LoRA rank r must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("LoRA dropout {} is not in [0, 1)", self.dropout));
        }
        if let TargetModules::Regex(p) = &self.targets {
            regex::Regex::new(p).map_err(|e| format!("LoRA target regex `{p}`: {e}"))?;
        }
        Ok(())
    }
}

/// PEFT's default layer pattern: the number after the last `.<word>.` in the name.
fn layer_index(module_name: &str) -> Option<usize> {
    let parts: Vec<&str> = module_name.split('.').collect();
    // The last numeric component that has a component before and after it.
    (1..parts.len().saturating_sub(1))
        .rev()
        .find_map(|i| parts[i].parse::<usize>().ok())
}

/// A linear layer with its frozen base weight and, when targeted, a trainable LoRA adapter.
#[derive(Clone, Debug)]
pub struct AdaptedLinear {
    base: FrozenLinear,
    adapter: Option<LoraAdapter>,
}

/// The trainable pair A (r × in) and B (out × r).
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    /// A, Kaiming-uniform initialised.
    pub a: Var,
    /// B, zero initialised.
    pub b: Var,
    scaling: f64,
    dropout: f32,
}

impl AdaptedLinear {
    /// A frozen layer, with an adapter when `spec` targets `module_name`.
    pub fn new(
        base: FrozenLinear,
        module_name: &str,
        spec: &LoraSpec,
        rng: &mut StdRng,
    ) -> Result<Self> {
        let adapter = if spec.targets_module(module_name) {
            Some(LoraAdapter::init(&base, spec, rng)?)
        } else {
            None
        };
        Ok(Self { base, adapter })
    }

    /// The adapter, if this module is targeted.
    pub fn adapter(&self) -> Option<&LoraAdapter> {
        self.adapter.as_ref()
    }

    /// The frozen base layer.
    pub fn base(&self) -> &FrozenLinear {
        &self.base
    }

    /// y = base(x) + (α/r)·B·A·dropout(x); dropout only when `rng` is given (training).
    pub fn forward(&self, x: &Tensor, mut rng: Option<&mut StdRng>) -> Result<Tensor> {
        if let Some(lora) = &self.adapter {
            let (a, b) = (param(&lora.a), param(&lora.b));
            let (s, p) = (lora.scaling, lora.dropout);
            let one_op = adapted_linear(x, &self.base, &a, &b, s, p, rng.as_deref_mut())?;
            if let Some(y) = one_op {
                return Ok(y);
            }
        }
        let y = self.base.forward(x)?;
        let Some(lora) = &self.adapter else {
            return Ok(y);
        };
        let dtype = x.dtype();
        // The adapter path runs in the adapter's dtype (f32) whatever the activations are.
        let x = x.to_dtype(lora.a.dtype())?;
        let x = match rng {
            Some(rng) => dropout(&x, lora.dropout, rng)?,
            None => x,
        };
        let mut out_shape = y.dims().to_vec();
        let update = lora.update(&x)?;
        *out_shape.last_mut().expect("non-empty") = update.dim(1)?;
        y + update.reshape(out_shape)?.to_dtype(dtype)?
    }
}

impl LoraAdapter {
    /// (α/r)·B·A·x for `x` of shape (..., in) in the adapter's dtype, as (rows, out): the
    /// adapter's part of the output, without dropout.
    pub fn update(&self, x: &Tensor) -> Result<Tensor> {
        let (a, b) = (param(&self.a), param(&self.b));
        let (_, in_dim) = a.dims2()?;
        let rows = x.elem_count() / in_dim;
        x.reshape((rows, in_dim))?
            .matmul(&a.t()?)?
            // Scaling the rank-r intermediate keeps one fewer full-width tensor in the graph.
            .affine(self.scaling, 0.0)?
            .matmul(&b.t()?)
    }

    /// The factor applied to B·A·x (α/r, or α/√r with rsLoRA).
    pub fn scaling(&self) -> f64 {
        self.scaling
    }

    fn init(base: &FrozenLinear, spec: &LoraSpec, rng: &mut StdRng) -> Result<Self> {
        let (in_dim, out_dim) = base.dims();
        let device = &base.device();
        // Adapters train in f32 (f64 for an f64 model) whatever the frozen weights' dtype.
        let dtype = compute_dtype(base.dtype());
        // nn.init.kaiming_uniform_(a=√5): bound = 1/√fan_in.
        let bound = 1.0 / (in_dim as f32).sqrt();
        let a: Vec<f32> = (0..spec.r * in_dim)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let a = Tensor::from_vec(a, (spec.r, in_dim), device)?.to_dtype(dtype)?;
        let b = Tensor::zeros((out_dim, spec.r), dtype, device)?;
        Ok(Self {
            a: Var::from_tensor(&a)?,
            b: Var::from_tensor(&b)?,
            scaling: spec.scaling(),
            dropout: spec.dropout as f32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_matching_follows_peft() {
        let spec = LoraSpec {
            targets: TargetModules::Suffixes(vec!["output.dense".into()]),
            ..LoraSpec::query_value(8, 16.0)
        };
        // PEFT's suffix rule makes `output.dense` match the attention output too.
        assert!(spec.targets_module("roberta.encoder.layer.0.attention.output.dense"));
        assert!(spec.targets_module("roberta.encoder.layer.0.output.dense"));
        assert!(!spec.targets_module("roberta.encoder.layer.0.intermediate.dense"));
        let full = LoraSpec {
            targets: TargetModules::Suffixes(vec!["encoder.layer.10.output.dense".into()]),
            ..spec.clone()
        };
        assert!(full.targets_module("roberta.encoder.layer.10.output.dense"));
        assert!(!full.targets_module("roberta.encoder.layer.10.attention.output.dense"));
    }

    #[test]
    fn layers_and_regex() {
        let spec = LoraSpec {
            layers: Some(vec![0, 2]),
            ..LoraSpec::query_value(4, 16.0)
        };
        assert!(spec.targets_module("bert.encoder.layer.2.attention.self.query"));
        assert!(!spec.targets_module("bert.encoder.layer.1.attention.self.query"));
        assert!(!spec.targets_module("bert.encoder.layer.12.attention.self.query"));
        let re = LoraSpec {
            targets: TargetModules::Regex(r".*layer\.[01]\.attention\.self\.(query|key)".into()),
            ..LoraSpec::query_value(4, 16.0)
        };
        assert!(re.targets_module("roberta.encoder.layer.1.attention.self.key"));
        assert!(!re.targets_module("roberta.encoder.layer.2.attention.self.key"));
        assert!(!re.targets_module("roberta.encoder.layer.1.attention.self.value"));
    }
}
