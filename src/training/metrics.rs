//! Classification metrics: accuracy, macro-F1, per-class precision/recall/F1, confusion matrix.
use serde::{Deserialize, Serialize};

/// Per-class scores.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// Every metric kd reports for one evaluation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Evaluation {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub per_class: Vec<ClassScores>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    pub rows: usize,
}

/// The index of the largest logit in each row of a row-major (rows × classes) matrix.
pub fn argmax_rows(logits: &[f32], classes: usize) -> Vec<u32> {
    logits
        .chunks(classes)
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}

/// Scores `predicted` against `labels` over `classes` classes.
pub fn evaluate(predicted: &[u32], labels: &[u32], classes: usize) -> Evaluation {
    let mut confusion = vec![vec![0usize; classes]; classes];
    for (&p, &t) in predicted.iter().zip(labels) {
        confusion[t as usize][p as usize] += 1;
    }
    let per_class: Vec<ClassScores> = (0..classes)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let support: usize = confusion[c].iter().sum();
            let predicted_c: usize = confusion.iter().map(|row| row[c]).sum();
            let precision = if predicted_c > 0 {
                tp / predicted_c as f64
            } else {
                0.0
            };
            let recall = if support > 0 {
                tp / support as f64
            } else {
                0.0
            };
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassScores {
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    let correct: usize = (0..classes).map(|c| confusion[c][c]).sum();
    Evaluation {
        accuracy: correct as f64 / labels.len().max(1) as f64,
        macro_f1: per_class.iter().map(|c| c.f1).sum::<f64>() / classes as f64,
        per_class,
        confusion,
        rows: labels.len(),
    }
}

/// The fraction of rows on which two prediction lists agree.
pub fn agreement(a: &[u32], b: &[u32]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}

/// The mean of `v` (0 for none).
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The sample standard deviation of `v` (0 for fewer than two values).
pub fn sample_sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_on_a_small_case() {
        let e = evaluate(&[0, 1, 1, 0], &[0, 1, 0, 0], 2);
        assert_eq!(e.accuracy, 0.75);
        assert_eq!(e.confusion, vec![vec![2, 1], vec![0, 1]]);
        assert!((e.per_class[0].recall - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(e.per_class[1].precision, 0.5);
        assert_eq!(argmax_rows(&[0.1, 0.9, 2.0, -1.0], 2), vec![1, 0]);
        assert_eq!(agreement(&[1, 2, 3], &[1, 0, 3]), 2.0 / 3.0);
    }
}
