//! Which epoch's weights a run keeps.
//!
//! Picking the epoch with the best validation score is only worth doing when the validation
//! slice can tell epochs apart: on 52 rows one row is 1.9 pt of accuracy and the "best" epoch is
//! a coin toss. So the kept epoch is the last one unless the chosen score (validation NLL by
//! default) is better at an earlier epoch by more than one standard error of the paired,
//! per-row difference, on a slice of at least [`MIN_VALIDATION_ROWS`] rows.
use super::metrics::{mean, sample_sd};
use serde::{Deserialize, Serialize};

/// A validation slice smaller than this never overrides the last epoch.
pub const MIN_VALIDATION_ROWS: usize = 500;

/// How the kept epoch is chosen (`--select`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Select {
    /// Always the last epoch.
    Last,
    /// The lowest validation negative log-likelihood (no label smoothing).
    #[default]
    Loss,
    /// The highest validation accuracy.
    Accuracy,
}

impl Select {
    fn what(self) -> &'static str {
        match self {
            Select::Last => "last epoch",
            Select::Loss => "validation loss",
            Select::Accuracy => "validation accuracy",
        }
    }
}

/// One epoch's validation scores, kept per row so that two epochs can be compared row by row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochScores {
    pub epoch: usize,
    /// −log p(label) per row.
    pub nll: Vec<f64>,
    /// Whether the arg-max is the label, per row.
    pub correct: Vec<bool>,
}

impl EpochScores {
    /// Scores from row-major logits (rows × classes) and the rows' labels.
    pub fn from_logits(epoch: usize, logits: &[f32], labels: &[u32], classes: usize) -> Self {
        let (mut nll, mut correct) = (Vec::new(), Vec::new());
        for (row, &label) in logits.chunks(classes).zip(labels) {
            let p = crate::model::probabilities(row, 1.0);
            nll.push(-p[label as usize].max(f64::MIN_POSITIVE).ln());
            let best = super::metrics::argmax_rows(row, classes)[0];
            correct.push(best == label);
        }
        Self {
            epoch,
            nll,
            correct,
        }
    }

    /// Mean NLL.
    pub fn loss(&self) -> f64 {
        mean(&self.nll)
    }

    /// Fraction of rows right.
    pub fn accuracy(&self) -> f64 {
        self.correct.iter().filter(|&&c| c).count() as f64 / self.correct.len().max(1) as f64
    }

    /// Per-row cost under `select` (lower is better).
    fn cost(&self, select: Select) -> Vec<f64> {
        match select {
            Select::Accuracy => self.correct.iter().map(|&c| f64::from(!c)).collect(),
            _ => self.nll.clone(),
        }
    }

    /// Whether these scores beat `other` under `select` (strictly).
    fn beats(&self, other: &EpochScores, select: Select) -> bool {
        // A non-finite score (a NaN logit) never wins.
        let score = |s: &EpochScores| {
            let m = mean(&s.cost(select));
            if m.is_finite() {
                m
            } else {
                f64::INFINITY
            }
        };
        score(self) < score(other)
    }
}

/// The outcome: which epoch is kept, and one line saying why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub rule: Select,
    pub epoch: usize,
    pub reason: String,
}

/// Follows the epochs of one run and decides which one to keep.
#[derive(Debug)]
pub struct EpochSelector {
    rule: Select,
    best: Option<EpochScores>,
}

impl EpochSelector {
    pub fn new(rule: Select) -> Self {
        Self { rule, best: None }
    }

    /// Continues with the best epoch of an interrupted run.
    pub fn remember(&mut self, best: Option<&EpochScores>) {
        self.best = best.cloned();
    }

    /// Records an epoch's scores; true when it is the best so far (the caller then keeps a copy
    /// of the weights). Never true under `--select last`.
    pub fn observe(&mut self, scores: &EpochScores) -> bool {
        if self.rule == Select::Last {
            return false;
        }
        let better = self
            .best
            .as_ref()
            .is_none_or(|b| scores.beats(b, self.rule));
        if better {
            self.best = Some(scores.clone());
        }
        better
    }

    /// The decision once training has ended. `last` holds the final epoch's scores (None when
    /// there was no validation slice); `last_epoch` its number.
    pub fn decide(&self, last: Option<&EpochScores>, last_epoch: usize) -> Decision {
        let keep_last = |reason: String| Decision {
            rule: self.rule,
            epoch: last_epoch,
            reason,
        };
        let (Some(last), Some(best)) = (last, self.best.as_ref()) else {
            return keep_last(match self.rule {
                Select::Last => "--select last: keeping the last epoch".into(),
                _ => "no validation rows: keeping the last epoch".into(),
            });
        };
        let n = last.nll.len();
        if n < MIN_VALIDATION_ROWS {
            return keep_last(format!(
                "the validation slice ({n} rows) is too small to choose an epoch (under {MIN_VALIDATION_ROWS}): keeping the last epoch"
            ));
        }
        if best.epoch == last.epoch {
            return keep_last(format!("the last epoch has the best {}", self.rule.what()));
        }
        // Paired over rows: how much worse the last epoch is than the best one.
        let diff: Vec<f64> = last
            .cost(self.rule)
            .iter()
            .zip(best.cost(self.rule))
            .map(|(l, b)| l - b)
            .collect();
        let (gap, se) = (mean(&diff), standard_error(&diff));
        // An undecidable comparison (NaN) keeps the last epoch too.
        if gap.partial_cmp(&se) != Some(std::cmp::Ordering::Greater) {
            return keep_last(format!(
                "epoch {}'s {} is within one standard error of the last epoch's ({gap:.4} ≤ {se:.4}): keeping the last epoch",
                best.epoch,
                self.rule.what()
            ));
        }
        Decision {
            rule: self.rule,
            epoch: best.epoch,
            reason: format!(
                "epoch {} has the best {}, better than the last epoch's by {gap:.4} (standard error {se:.4})",
                best.epoch,
                self.rule.what()
            ),
        }
    }
}

/// The standard error of the mean of `v` (infinite for fewer than two values).
fn standard_error(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return f64::INFINITY;
    }
    sample_sd(v) / (v.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores of `n` rows where the first `wrong` rows are wrong with NLL `bad`, the rest right
    /// with NLL `good`.
    fn scores(epoch: usize, n: usize, wrong: usize, good: f64, bad: f64) -> EpochScores {
        EpochScores {
            epoch,
            nll: (0..n).map(|i| if i < wrong { bad } else { good }).collect(),
            correct: (0..n).map(|i| i >= wrong).collect(),
        }
    }

    #[test]
    fn nll_and_accuracy_from_logits() {
        let s = EpochScores::from_logits(1, &[2.0, 0.0, 0.0, 1.0], &[0, 0], 2);
        let p = (2f64.exp() / (2f64.exp() + 1.0)).ln();
        assert!((s.nll[0] + p).abs() < 1e-9);
        assert!((s.nll[1] - (1f64.exp() + 1.0).ln() + 0.0).abs() < 1e-9);
        assert_eq!(s.correct, [true, false]);
        assert_eq!(s.accuracy(), 0.5);
    }

    #[test]
    fn a_small_slice_keeps_the_last_epoch() {
        let mut sel = EpochSelector::new(Select::Accuracy);
        let (e1, e2) = (scores(1, 52, 5, 0.1, 2.0), scores(2, 52, 6, 0.1, 2.0));
        assert!(sel.observe(&e1));
        assert!(!sel.observe(&e2));
        let d = sel.decide(Some(&e2), 2);
        assert_eq!(d.epoch, 2);
        assert!(
            d.reason.contains("52 rows") && d.reason.contains("too small"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn a_clear_gain_keeps_the_better_epoch_and_noise_does_not() {
        // 600 rows; epoch 1 is far better than the last: kept.
        let mut sel = EpochSelector::new(Select::Loss);
        let (e1, e2) = (scores(1, 600, 30, 0.1, 2.0), scores(2, 600, 120, 0.3, 2.5));
        sel.observe(&e1);
        sel.observe(&e2);
        let d = sel.decide(Some(&e2), 2);
        assert_eq!(d.epoch, 1, "{}", d.reason);
        // Epoch 1 better by one row out of 600: within the standard error, the last is kept.
        let mut sel = EpochSelector::new(Select::Accuracy);
        let (e1, e2) = (scores(1, 600, 30, 0.1, 2.0), scores(2, 600, 31, 0.1, 2.0));
        sel.observe(&e1);
        sel.observe(&e2);
        let d = sel.decide(Some(&e2), 2);
        assert_eq!(d.epoch, 2);
        assert!(d.reason.contains("standard error"), "{}", d.reason);
    }

    #[test]
    fn last_and_no_validation_keep_the_last_epoch() {
        let mut sel = EpochSelector::new(Select::Last);
        let e1 = scores(1, 600, 0, 0.1, 2.0);
        assert!(!sel.observe(&e1));
        assert_eq!(sel.decide(Some(&e1), 3).epoch, 3);
        let sel = EpochSelector::new(Select::Loss);
        let d = sel.decide(None, 4);
        assert_eq!(d.epoch, 4);
        assert!(d.reason.contains("no validation rows"));
    }
}
