//! Counting trainable parameters from `config.json` alone, exactly as PEFT counts them.
use super::config::{EncoderConfig, ModelKind};
use super::head::Pooler;
use super::lora::LoraSpec;

/// One line of the per-module breakdown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleCount {
    /// The module's name as PEFT sees it.
    pub module: String,
    /// Its trainable scalars.
    pub params: usize,
}

/// Every trainable module and its count: LoRA A (r×in) + B (out×r) per targeted linear layer,
/// then the head: RoBERTa's dense (H×H + H) and out_proj (H×C + C); BERT's pooler (H×H + H,
/// when it trains) and classifier (H×C + C).
pub fn trainable_breakdown(
    cfg: &EncoderConfig,
    lora: &LoraSpec,
    labels: usize,
) -> Vec<ModuleCount> {
    let h = cfg.hidden_size;
    let prefix = cfg.kind().prefix();
    let mut out = Vec::new();
    for i in 0..cfg.num_hidden_layers {
        let base = format!("{prefix}.encoder.layer.{i}");
        for (name, in_dim, out_dim) in cfg.linear_modules() {
            let module = format!("{base}.{name}");
            if lora.targets_module(&module) {
                out.push(ModuleCount {
                    module,
                    params: lora.r * (in_dim + out_dim),
                });
            }
        }
    }
    let (dense, output) = match cfg.kind() {
        ModelKind::Roberta => (Some("classifier.dense"), "classifier.out_proj"),
        ModelKind::Bert => (
            (lora.pooler == Pooler::Trainable).then_some("bert.pooler.dense"),
            "classifier",
        ),
    };
    if let Some(dense) = dense {
        out.push(ModuleCount {
            module: dense.into(),
            params: h * h + h,
        });
    }
    out.push(ModuleCount {
        module: output.into(),
        params: h * labels + labels,
    });
    out
}

/// The total trainable count.
pub fn trainable_count(cfg: &EncoderConfig, lora: &LoraSpec, labels: usize) -> usize {
    trainable_breakdown(cfg, lora, labels)
        .iter()
        .map(|m| m.params)
        .sum()
}

/// A readable table of the breakdown, for the over-budget error.
pub fn format_breakdown(rows: &[ModuleCount]) -> String {
    let total: usize = rows.iter().map(|m| m.params).sum();
    let mut s = String::new();
    for m in rows {
        s.push_str(&format!("  {:<55} {:>10}\n", m.module, m.params));
    }
    s.push_str(&format!("  {:<55} {:>10}", "total", total));
    s
}

/// The trainable count of a model that must stay under `budget`, or the over-budget error with
/// the per-module breakdown; checked before any weights are touched.
pub fn check_budget(
    cfg: &EncoderConfig,
    lora: &LoraSpec,
    labels: usize,
    budget: usize,
) -> crate::error::Result<usize> {
    check_training_budget(cfg, lora, labels, budget, &[])
}

/// What marks a module that is trained but not exported, in the breakdown.
pub const TRAINING_ONLY: &str = " (training only)";

/// [`check_budget`] for a student trained with `training_only` modules beside its own (the
/// representation projection). They are never exported, but they are trained, so they count
/// while training: the student's count plus theirs must stay under the budget. Returns the
/// student's own count, which is what it exports and what its summary reports.
pub fn check_training_budget(
    cfg: &EncoderConfig,
    lora: &LoraSpec,
    labels: usize,
    budget: usize,
    training_only: &[ModuleCount],
) -> crate::error::Result<usize> {
    let mut breakdown = trainable_breakdown(cfg, lora, labels);
    let own: usize = breakdown.iter().map(|m| m.params).sum();
    breakdown.extend(training_only.iter().map(|m| ModuleCount {
        module: format!("{}{TRAINING_ONLY}", m.module),
        params: m.params,
    }));
    let count: usize = breakdown.iter().map(|m| m.params).sum();
    if count >= budget {
        let while_training = if training_only.is_empty() {
            String::new()
        } else {
            format!(" while training ({own} of its own, which it exports, and {} in the modules marked{TRAINING_ONLY}, trained beside it but never exported)", count - own)
        };
        return Err(crate::error::KdError::OverBudget {
            count,
            budget,
            breakdown: format_breakdown(&breakdown),
            while_training,
        });
    }
    Ok(own)
}
